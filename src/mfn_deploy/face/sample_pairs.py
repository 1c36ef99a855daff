"""A small LFW-layout verification set built from the faces scikit-image ships.

``mfn-deploy sample-pairs --out DIR`` writes it, so ``evaluate`` can be tried without
downloading LFW; the tests use the same set. Identities: the astronaut portrait and
five LFW faces; each gets augmented copies (mirror, rescale, brightness, small
rotation, shifted crop). Nothing is downloaded; the images are real faces, the
default weights are not trained, so this checks plumbing, never accuracy.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from mfn_deploy.errors import MfnError
from mfn_deploy.face.samples import lfw_face
from mfn_deploy.files import umask
from mfn_deploy.images import load_image, sample_photos


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


def write_sample_pairs(out: Path) -> Path:
    """The set in a new directory ``out``, which appears complete or not at all."""
    if out.exists():
        raise MfnError(f"{out}: already exists; give a new directory")
    if not out.parent.is_dir():
        raise MfnError(f"{out}: folder {out.parent} does not exist")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    except OSError as e:
        raise MfnError(f"{out}: cannot write: {e.strerror}") from None
    try:
        write_lfw_layout(tmp)
        tmp.chmod(0o777 & ~umask())
        tmp.rename(out)
    except OSError as e:
        raise MfnError(f"{out}: cannot write: {e.strerror}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "pairs.txt"
