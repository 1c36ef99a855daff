"""Real images and the one preprocessing every backend shares.

Sample photos ship inside scikit-image and are read straight from its data
folder (no download, no import of skimage itself). The normalisation itself is the
contract's (``contract.Pixels``); the aligned sample faces the embedder's parity runs
on are built in ``face.samples``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from mfn_deploy.contract import InputSpec
from mfn_deploy.errors import MfnError

SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
log = logging.getLogger(__name__)


def skimage_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")  # locates without importing
    if spec is None or not spec.submodule_search_locations:
        raise MfnError("scikit-image is not installed; it provides the sample photos")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sample_photos() -> list[Path]:
    data = skimage_data_dir()
    paths = [data / name for name in SAMPLE_PHOTOS]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise MfnError(f"{missing[0]}: sample photo missing from scikit-image")
    return paths


def load_image(path: Path) -> np.ndarray:
    """An 8-bit BGR image, or a one-line error naming the file."""
    if not path.is_file():
        raise MfnError(f"{path}: image file not found")
    img, said = _imread_quietly(path)
    if img is None:
        why = f" ({said.splitlines()[-1]})" if said else ""
        raise MfnError(f"{path}: not an image OpenCV can read{why}")
    if said:  # libpng / libjpeg warnings ("iCCP: known incorrect sRGB profile", ...)
        log.debug("%s: %s", path, " / ".join(said.splitlines()))
    return img


def _imread_quietly(path: Path) -> tuple[np.ndarray | None, str]:
    """cv2.imread, with what libpng and libjpeg print straight to fd 2 caught, not shown."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        said = caught.read().decode("utf-8", "replace").strip()
    return img, said


def center_crop_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    ih, iw = img.shape[:2]
    scale = min(ih / h, iw / w)
    ch, cw = round(h * scale), round(w * scale)
    y, x = (ih - ch) // 2, (iw - cw) // 2
    crop = img[y : y + ch, x : x + cw]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)


def normalize(img_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """HxWx3 BGR uint8 at the network's size -> 3xHxW float32, as ``spec``'s contract says."""
    if img_bgr.shape[:2] != spec.size:
        raise ValueError(f"image is {img_bgr.shape[:2]}, network expects {spec.size}")
    return spec.pixels.from_bgr(img_bgr)


def photo_inputs(spec: InputSpec, paths: list[Path] | None = None) -> tuple[np.ndarray, list[str]]:
    """(N, 3, H, W) float32 network inputs from photos, and their file names."""
    paths = paths if paths is not None else sample_photos()
    batch = [normalize(center_crop_resize(load_image(p), spec.size), spec) for p in paths]
    return np.stack(batch), [p.name for p in paths]


def random_inputs(spec: InputSpec, n: int, seed: int) -> np.ndarray:
    """Seeded inputs spanning the normalised range of 8-bit pixels."""
    lo, hi = spec.pixels.value_range()
    rng = np.random.default_rng(seed)
    return rng.uniform(lo, hi, size=(n, 3, *spec.size)).astype(np.float32)
