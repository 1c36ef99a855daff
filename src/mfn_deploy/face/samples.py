"""Real faces that ship with scikit-image, for parity checks and tests.

``astronaut.png`` (one 512x512 portrait) and the first LFW faces of
``lfw_subset.npy`` (25x25 grayscale crops, upscaled 4x with a replicated border so
MTCNN sees a whole head). Nothing is downloaded. ``face_inputs`` is what the
export's parity runs on (``export.plan.export(..., faces=face_inputs)``).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from mfn_deploy.contract import InputSpec
from mfn_deploy.face.align import aligned_input
from mfn_deploy.face.detect import detect
from mfn_deploy.face.mtcnn import torch_nets
from mfn_deploy.images import load_image, sample_photos, skimage_data_dir

LFW_FACES = 3  # how many LFW faces join the astronaut
LFW_UPSCALE = 4
LFW_BORDER = 30


def lfw_face(index: int) -> np.ndarray:
    """Face ``index`` (0-99) of scikit-image's LFW subset as a BGR image."""
    faces = np.load(skimage_data_dir() / "lfw_subset.npy")
    gray = (faces[index] * 255).round().astype(np.uint8)
    side = gray.shape[0] * LFW_UPSCALE
    big = cv2.resize(gray, (side, side), interpolation=cv2.INTER_CUBIC)
    bgr = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
    return cv2.copyMakeBorder(bgr, *[LFW_BORDER] * 4, cv2.BORDER_REPLICATE)


@functools.cache
def sample_faces() -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
    """(name, BGR image, 5x2 landmarks) for each sample face, detected with torch MTCNN."""
    nets = torch_nets()
    images = [("astronaut.png", load_image(sample_photos()[0]))]
    images += [(f"lfw_subset[{i}]", lfw_face(i)) for i in range(LFW_FACES)]
    out = []
    for name, img in images:
        faces = detect(img, nets)
        if not faces:
            raise RuntimeError(f"{name}: MTCNN found no face in a bundled sample")
        out.append((name, img, faces[0].landmarks))
    return tuple(out)


def face_inputs(spec: InputSpec) -> tuple[np.ndarray, list[str]]:
    """(N, 3, H, W) inputs from the bundled sample faces, detected, aligned, normalised."""
    faces = sample_faces()
    batch = [aligned_input(img, marks, spec) for _, img, marks in faces]
    return np.stack(batch), [name for name, _, _ in faces]
