"""The faces int8 calibrates on and is judged on, prepared for the export below.

The export sits below the face pipeline, so it cannot detect faces itself: this
module does, and hands it arrays (``export.int8.Calibration``).

- Calibration, from ``--calib DIR`` (sorted, so the same folder gives the same
  scales): face photos are detected with MTCNN and aligned (the best face of each;
  photos without a face are listed in a warning and skipped), images already at the
  network's input size are taken as aligned crops, and ``.npy`` files hold inputs
  already normalised, (3, H, W) or (N, 3, H, W). An unreadable file, a wrong
  ``.npy`` shape, or a folder with no usable face is one error line.
- Without ``--calib``: the bundled sample faces (the astronaut and LFW faces 0-4)
  and augmentations of each (mirror, brightness, contrast, small rotations and
  rescales of the alignment), 36 inputs; a warning says that is small.
- The held-out set the int8 gate judges: other LFW faces (from index 10) and their
  mirror images, never calibrated on.
- The real pairs set (``face.sample_pairs.write_real_pairs``, what ``sample-pairs
  --real`` writes and ``verify-report`` judges), detected (MTCNN, the largest face)
  and aligned here: the gate's third line counts the verify/reject decisions int8
  flips against fp32 on it, at fp32's threshold. Its faces are neither calibrated on
  nor in the held-out set.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

import cv2
import numpy as np

from mfn_deploy.contract import InputSpec
from mfn_deploy.errors import MfnError
from mfn_deploy.evaluate import load_pairs
from mfn_deploy.export.int8 import Calibration, Pairs
from mfn_deploy.face.align import align
from mfn_deploy.face.detect import detect
from mfn_deploy.face.mtcnn import torch_nets
from mfn_deploy.face.sample_pairs import REAL_SET, write_real_pairs
from mfn_deploy.face.samples import lfw_face
from mfn_deploy.images import load_image, normalize, sample_photos

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
BUILTIN_LFW = range(5)  # LFW faces of the built-in calibration set (with the astronaut)
HOLDOUT_LFW = range(10, 22)  # LFW faces the gate judges (those MTCNN finds)
SMALL_SET_WARNING = (
    "warning: int8 calibrates on the 36 built-in sample inputs (6 faces and their "
    "augmentations), a small set; pass --calib DIR with a few hundred faces for a real model"
)


@functools.cache
def _detected(name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(BGR image, 5x2 landmarks of the best face) of a bundled face, None if none found."""
    img = load_image(sample_photos()[0]) if name == "astronaut" else lfw_face(int(name))
    faces = detect(img, torch_nets())
    return (img, faces[0].landmarks) if faces else None


def _turned(landmarks: np.ndarray, degrees: float, scale: float) -> np.ndarray:
    """Landmarks rotated and scaled about their centre: a jittered alignment."""
    centre = landmarks.mean(axis=0)
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), degrees, scale)
    return landmarks @ m[:, :2].T + m[:, 2]


def _augmented(img: np.ndarray, marks: np.ndarray, spec: InputSpec) -> list[np.ndarray]:
    """Six aligned crops of one face: as it is, mirrored, brighter, lower contrast, and
    aligned turned by -6 and +6 degrees at 90% and 110% scale."""
    crop = align(img, marks, spec.size, spec.template())
    return [
        crop,
        cv2.flip(crop, 1),
        cv2.convertScaleAbs(crop, alpha=1.0, beta=30),
        cv2.convertScaleAbs(crop, alpha=0.7, beta=20),
        align(img, _turned(marks, -6, 0.9), spec.size, spec.template()),
        align(img, _turned(marks, 6, 1.1), spec.size, spec.template()),
    ]


def builtin_calibration(spec: InputSpec) -> tuple[np.ndarray, list[str]]:
    """The built-in calibration inputs (N, 3, H, W) and their names."""
    crops, names = [], []
    for name in ["astronaut", *map(str, BUILTIN_LFW)]:
        found = _detected(name)
        if found is None:  # bundled faces: MTCNN finds them all
            raise RuntimeError(f"MTCNN found no face in bundled sample {name}")
        variants = _augmented(*found, spec)
        crops += variants
        names += [f"{name}#{k}" for k in range(len(variants))]
    return np.stack([normalize(c, spec) for c in crops]), names


def holdout_faces(spec: InputSpec) -> tuple[np.ndarray, list[str]]:
    """The faces the int8 gate judges, with their mirror images: none calibrated on."""
    crops, names = [], []
    for i in HOLDOUT_LFW:
        found = _detected(str(i))
        if found is None:
            continue
        crop = align(*found, spec.size, spec.template())
        crops += [crop, cv2.flip(crop, 1)]
        names += [f"lfw_subset[{i}]", f"lfw_subset[{i}] mirrored"]
    return np.stack([normalize(c, spec) for c in crops]), names


@functools.cache
def _real_pairs_detected() -> tuple[list, list[tuple[int, int, bool]], int]:
    """The real pairs set, detected once: [(image, landmarks)], pairs by index, pairs
    whose images had no face (left out)."""
    with tempfile.TemporaryDirectory(prefix="mfn-int8-pairs-") as tmp:
        pairs = load_pairs(write_real_pairs(Path(tmp)), Path(tmp))
        nets = torch_nets()
        found, index = [], {}
        for path in sorted({p.a for p in pairs} | {p.b for p in pairs}):
            img = load_image(path)
            faces = detect(img, nets)
            if faces:
                best = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
                index[path] = len(found)
                found.append((img, best.landmarks))
    used = [(index[p.a], index[p.b], p.same) for p in pairs if p.a in index and p.b in index]
    return found, used, len(pairs) - len(used)


def real_pairs(spec: InputSpec) -> Pairs | None:
    """The real pairs set aligned for ``spec``; None if it lacks genuine or impostor pairs."""
    found, used, missing = _real_pairs_detected()
    same = np.array([s for _, _, s in used], bool)
    if not same.any() or same.all():
        log.warning("warning: the real pairs set is unusable here; int8 flips are not judged")
        return None
    images = np.stack(
        [normalize(align(img, m, spec.size, spec.template()), spec) for img, m in found]
    )
    return Pairs(
        images,
        np.array([a for a, _, _ in used]),
        np.array([b for _, b, _ in used]),
        same,
        {
            "source": "built-in real pairs set (sample-pairs --real)",
            "photos": REAL_SET,
            "pairs_without_face": missing,
        },
    )


def _npy(path: Path, spec: InputSpec) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise MfnError(f"{path}: not a readable .npy file ({e})") from None
    shape = (3, *spec.size)
    if x.shape == shape:
        x = x[None]
    if x.ndim != 4 or x.shape[1:] != shape or not np.issubdtype(x.dtype, np.floating):
        raise MfnError(
            f"{path}: {x.dtype} array of shape {x.shape}; calibration .npy files hold "
            f"normalised float inputs of shape (3, {spec.height}, {spec.width}) or "
            f"(N, 3, {spec.height}, {spec.width})"
        )
    if not np.isfinite(x).all():
        raise MfnError(f"{path}: holds NaN or infinite values")
    return x.astype(np.float32)


def calibration_dir(folder: Path, spec: InputSpec) -> tuple[np.ndarray, dict]:
    """Calibration inputs from ``folder`` and what was taken and skipped, or one error."""
    if not folder.is_dir():
        raise MfnError(f"--calib {folder}: not a directory")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (*IMAGE_SUFFIXES, ".npy")
    )
    if not files:
        raise MfnError(
            f"--calib {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) or .npy files in it"
        )
    batches, used, skipped = [], [], []
    nets = None
    for path in files:
        if path.suffix.lower() == ".npy":
            batches.append(_npy(path, spec))
        else:
            img = load_image(path)  # one line naming an unreadable file
            if img.shape[:2] == spec.size:  # already an aligned crop
                batches.append(normalize(img, spec)[None])
            else:
                nets = nets or torch_nets()
                faces = detect(img, nets)
                if not faces:
                    skipped.append(path.name)
                    continue
                crop = align(img, faces[0].landmarks, spec.size, spec.template())
                batches.append(normalize(crop, spec)[None])
        used.append(path.name)
    if skipped:
        log.warning("warning: --calib: no face found in %s; skipped", ", ".join(skipped))
    if not batches:
        raise MfnError(f"--calib {folder}: no face found in any of its {len(files)} images")
    calib = np.concatenate(batches)
    return calib, {"source": str(folder), "files": used, "skipped_no_face": skipped}


def int8_calibration(folder: Path | None, spec: InputSpec, pairs: bool = True) -> Calibration:
    """What ``export --int8`` hands the export: calibration and held-out faces, and
    (``pairs``) the real pairs set the gate counts decision flips on."""
    if folder is None:
        log.warning(SMALL_SET_WARNING)
        calib, names = builtin_calibration(spec)
        info = {"source": "built-in sample faces and augmentations", "files": names}
    else:
        calib, info = calibration_dir(folder, spec)  # a bad folder fails before anything slow
    holdout, holdout_names = holdout_faces(spec)
    return Calibration(calib, holdout, info, holdout_names, real_pairs(spec) if pairs else None)
