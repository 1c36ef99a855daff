"""Five-point alignment: a similarity transform onto the standard face template.

One implementation shared by every backend: the landmarks may come from torch,
onnxruntime or ncnn; the warp and the normalisation are always these.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from mfn_deploy.errors import MfnError
from mfn_deploy.images import normalize
from mfn_deploy.models import InputSpec

# The standard 112x112 template (ArcFace / InsightFace): left eye, right eye,
# nose tip, left and right mouth corners, in pixels.
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float64,
)
TEMPLATE_SIDE = 112


def template(size: tuple[int, int]) -> np.ndarray:
    """The template for an H x W crop: the centred H x W window of the 112x112 frame.

    This gives the usual 112x96 template (x - 8, as SphereFace/CosFace use) and,
    for 96x96, the same face cropped 8 pixels tighter on every side.
    """
    h, w = size
    return TEMPLATE_112 - [(TEMPLATE_SIDE - w) / 2, (TEMPLATE_SIDE - h) / 2]


def similarity_matrix(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """2x3 least-squares similarity (Umeyama) mapping the landmarks onto the template."""
    tform = SimilarityTransform.from_estimate(np.asarray(landmarks, np.float64), template(size))
    if not tform:
        raise MfnError("degenerate landmarks: no similarity transform maps them to the template")
    return tform.params[:2].astype(np.float64)


def align(image_bgr: np.ndarray, landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The aligned H x W BGR face crop."""
    h, w = size
    m = similarity_matrix(landmarks, size)
    return cv2.warpAffine(image_bgr, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def aligned_input(image_bgr: np.ndarray, landmarks: np.ndarray, spec: InputSpec) -> np.ndarray:
    """3 x H x W float32 network input: aligned, RGB, (x - 127.5) / 128."""
    return normalize(align(image_bgr, landmarks, spec.size), spec)
