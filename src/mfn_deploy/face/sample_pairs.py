"""Small LFW-layout verification sets built from face photos that ship in installed packages.

``mfn-deploy sample-pairs --out DIR`` writes the plumbing set (``write_lfw_layout``), so
``evaluate`` can be tried without downloading LFW; the tests use the same set.
Identities: the astronaut portrait and five LFW faces; each gets augmented copies
(mirror, rescale, brightness, small rotation, shifted crop).

``write_real_pairs`` writes the *real pairs set* ``verify-report`` judges a trained
export on (``sample-pairs --real``): every face photo found in installed packages
(scikit-image's astronaut and cameraman, matplotlib's Grace Hopper, LFW faces of
scikit-image's ``lfw_subset`` that neither int8 calibration nor its gate uses), each
with label-preserving augmentations (mirror, downscale, brightness, JPEG re-encoding,
small rotation) written as separate files, so each is detected anew by MTCNN.
Genuine pairs: a photo against each of its augmentations; impostor pairs: different
people. Nothing is downloaded. It is a few photos, not LFW.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np

from mfn_deploy.errors import MfnError
from mfn_deploy.face.samples import lfw_face
from mfn_deploy.files import umask
from mfn_deploy.images import load_image, sample_photos, skimage_data_dir

# LFW faces for the real set: indices 0-4 calibrate int8 and 10-21 are its gate's
# held-out faces (``face.calibration``); these are used by neither.
REAL_LFW = tuple(range(22, 28))
REAL_SET = (
    "skimage astronaut.png (Eileen Collins) and camera.png, matplotlib grace_hopper.jpg, "
    f"skimage lfw_subset.npy faces {REAL_LFW[0]}-{REAL_LFW[-1]}; each photo plus "
    "mirror, 0.6x downscale, brightness, JPEG q35 and -8 degree rotation copies"
)


def variants(img: np.ndarray) -> list[np.ndarray]:
    h, w = img.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), 6, 1.0)
    return [
        img,
        cv2.flip(img, 1),
        cv2.resize(img, (int(w * 0.75), int(h * 0.75)), interpolation=cv2.INTER_AREA),
        cv2.convertScaleAbs(img, alpha=1.0, beta=30),
        cv2.warpAffine(img, rot, (w, h), borderMode=cv2.BORDER_REPLICATE),
        img[h // 20 :, w // 20 :],
    ]


def identities(n_lfw: int = 5) -> dict[str, list[np.ndarray]]:
    ids = {"Astronaut": variants(load_image(sample_photos()[0]))}
    for i in range(n_lfw):
        ids[f"Lfw_{i:03d}"] = variants(lfw_face(i))
    return ids


def write_lfw_layout(root: Path, n_sets: int = 10, per_kind: int = 3) -> Path:
    """Write ROOT/name/name_XXXX.png images and ROOT/pairs.txt; return pairs.txt."""
    ids = identities()
    for name, imgs in ids.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k, img in enumerate(imgs, start=1):
            path = root / name / f"{name}_{k:04d}.png"
            if not cv2.imwrite(str(path), img):
                raise MfnError(f"{path}: cannot write image")
    names = list(ids)
    rng = np.random.default_rng(0)
    lines = [f"{n_sets}\t{per_kind}"]
    for _ in range(n_sets):
        for _ in range(per_kind):
            name = names[rng.integers(len(names))]
            i, j = rng.choice(len(ids[name]), 2, replace=False) + 1
            lines.append(f"{name}\t{i}\t{j}")
        for _ in range(per_kind):
            a, b = rng.choice(len(names), 2, replace=False)
            i, j = rng.integers(len(ids[names[a]])) + 1, rng.integers(len(ids[names[b]])) + 1
            lines.append(f"{names[a]}\t{i}\t{names[b]}\t{j}")
    pairs = root / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return pairs


def jpeg(img: np.ndarray, quality: int = 35) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise MfnError("cannot JPEG-encode an image")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def augmentations(img: np.ndarray) -> dict[str, np.ndarray]:
    """Label-preserving copies of one photo: same person, new pixels, new detection."""
    h, w = img.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), -8, 1.0)
    return {
        "mirror": cv2.flip(img, 1),
        "scale": cv2.resize(img, (int(w * 0.6), int(h * 0.6)), interpolation=cv2.INTER_AREA),
        "bright": cv2.convertScaleAbs(img, alpha=1.15, beta=25),
        "jpeg": jpeg(img),
        "rotate": cv2.warpAffine(img, rot, (w, h), borderMode=cv2.BORDER_REPLICATE),
    }


def _package_photo(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locates without importing
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return path if path.is_file() else None


def real_photos() -> dict[str, np.ndarray]:
    """One photo per person, from installed packages: name -> BGR image."""
    photos = {"Eileen_Collins": load_image(sample_photos()[0])}  # skimage's astronaut
    hopper = _package_photo("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")
    if hopper is not None:
        photos["Grace_Hopper"] = load_image(hopper)
    camera = skimage_data_dir() / "camera.png"
    if camera.is_file():
        photos["Cameraman"] = load_image(camera)
    for i in REAL_LFW:
        photos[f"Lfw_{i:03d}"] = lfw_face(i)
    return photos


def write_real_pairs(root: Path) -> Path:
    """The real pairs set in ROOT (LFW layout): image 1 is the photo, 2.. its augmentations.

    Genuine: the photo vs each augmentation. Impostor: every two people, photo vs
    photo, and again augmentation vs augmentation (a different kind each time).
    """
    photos = real_photos()
    kinds = 0
    for name, img in photos.items():
        imgs = [img, *augmentations(img).values()]
        kinds = len(imgs)
        (root / name).mkdir(parents=True, exist_ok=True)
        for k, im in enumerate(imgs, start=1):
            path = root / name / f"{name}_{k:04d}.png"
            if not cv2.imwrite(str(path), im):
                raise MfnError(f"{path}: cannot write image")
    names = list(photos)
    genuine = [f"{n}\t1\t{k}" for n in names for k in range(2, kinds + 1)]
    impostor = [f"{a}\t1\t{b}\t1" for a, b in combinations(names, 2)]
    impostor += [
        f"{a}\t{2 + (i % (kinds - 1))}\t{b}\t{2 + ((i + 1) % (kinds - 1))}"
        for i, (a, b) in enumerate(combinations(names, 2))
    ]
    lines = [f"1\t{len(genuine)}\t{len(impostor)}", *genuine, *impostor]
    pairs = root / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return pairs


def write_sample_pairs(out: Path, real: bool = False) -> Path:
    """The set in a new directory ``out``, which appears complete or not at all.

    ``real``: the real pairs set (``write_real_pairs``), else the plumbing set."""
    if out.exists():
        raise MfnError(f"{out}: already exists; give a new directory")
    if not out.parent.is_dir():
        raise MfnError(f"{out}: folder {out.parent} does not exist")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    except OSError as e:
        raise MfnError(f"{out}: cannot write: {e.strerror}") from None
    try:
        write_real_pairs(tmp) if real else write_lfw_layout(tmp)
        tmp.chmod(0o777 & ~umask())
        tmp.rename(out)
    except OSError as e:
        raise MfnError(f"{out}: cannot write: {e.strerror}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "pairs.txt"
