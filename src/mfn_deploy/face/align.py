"""Five-point alignment: a similarity transform onto the contract's face template.

One implementation shared by every backend: the landmarks may come from torch,
onnxruntime or ncnn; the template, the warp and the normalisation are always the
contract's (``contract.InputSpec``, read from the model or from an export's manifest).
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from mfn_deploy.contract import TEMPLATE_112, TEMPLATE_SIDE, InputSpec, template
from mfn_deploy.errors import MfnError
from mfn_deploy.images import normalize

__all__ = [
    "TEMPLATE_112",
    "TEMPLATE_SIDE",
    "align",
    "aligned_input",
    "similarity_matrix",
    "template",
]


def similarity_matrix(
    landmarks: np.ndarray, size: tuple[int, int], target: np.ndarray | None = None
) -> np.ndarray:
    """2x3 least-squares similarity (Umeyama) mapping the landmarks onto the template.

    ``target``: the five template points in the crop (default: ``template(size)``).
    """
    target = template(size) if target is None else target
    tform = SimilarityTransform.from_estimate(np.asarray(landmarks, np.float64), target)
    if not tform:
        raise MfnError("degenerate landmarks: no similarity transform maps them to the template")
    return tform.params[:2].astype(np.float64)


def align(
    image_bgr: np.ndarray,
    landmarks: np.ndarray,
    size: tuple[int, int],
    target: np.ndarray | None = None,
) -> np.ndarray:
    """The aligned H x W BGR face crop."""
    h, w = size
    m = similarity_matrix(landmarks, size, target)
    return cv2.warpAffine(image_bgr, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def aligned_input(image_bgr: np.ndarray, landmarks: np.ndarray, spec: InputSpec) -> np.ndarray:
    """3 x H x W float32 network input: aligned onto ``spec``'s template, then normalised."""
    return normalize(align(image_bgr, landmarks, spec.size, spec.template()), spec)
