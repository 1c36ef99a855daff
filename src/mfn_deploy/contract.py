"""The preprocessing contract: how a photo becomes what a network was trained on.

Channel order, mean and scale, the input size, the tensor and blob names, and the
five-point alignment template live here and nowhere else in the code. Every
manifest records them (an embedder's ``input`` and ``alignment``, a detector's
``input``), and everything that feeds a network reads them from here or from the
manifest, so a model trained on other preprocessing only has to say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfn_deploy.errors import MfnError

# The usual face-model normalisation (InsightFace, MobileFaceNet, MTCNN's weights).
MEAN = 127.5
SCALE = 1 / 128
CHANNEL_ORDERS = ("RGB", "BGR")
LAYOUT = "NCHW"
ONNX_INPUT, ONNX_OUTPUT = "data", "embedding"
# pnnx's names for a one-input, one-output graph; the Android engine feeds and reads them.
NCNN_INPUT, NCNN_OUTPUT = "in0", "out0"

# The standard 112x112 template (ArcFace / InsightFace): left eye, right eye,
# nose tip, left and right mouth corners, in pixels.
LANDMARKS = ("left eye", "right eye", "nose tip", "mouth left", "mouth right")
TEMPLATE_SIDE = 112
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


def template(size: tuple[int, int]) -> np.ndarray:
    """The template for an H x W crop: the centred H x W window of the 112x112 frame.

    This gives the usual 112x96 template (x - 8, as SphereFace/CosFace use) and,
    for 96x96, the same face cropped 8 pixels tighter on every side.
    """
    h, w = size
    return TEMPLATE_112 - [(TEMPLATE_SIDE - w) / 2, (TEMPLATE_SIDE - h) / 2]


@dataclass(frozen=True)
class Pixels:
    """8-bit pixels -> network values: reorder the channels, then (x - mean) * scale."""

    channel_order: str = "RGB"
    mean: float = MEAN
    scale: float = SCALE

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise MfnError(
                f"channel order {self.channel_order!r}; valid: {', '.join(CHANNEL_ORDERS)}"
            )
        if not self.scale > 0:
            raise MfnError(f"preprocessing scale {self.scale!r} must be positive")

    def ordered(self, bgr: np.ndarray) -> np.ndarray:
        """(..., 3) BGR pixels (OpenCV's order) in this contract's channel order."""
        return bgr[..., ::-1] if self.channel_order == "RGB" else bgr

    def values(self, x: np.ndarray) -> np.ndarray:
        """(..., H, W, 3) pixels already in channel order -> float32 (..., 3, H, W)."""
        x = (np.asarray(x).astype(np.float32) - self.mean) * self.scale
        return np.ascontiguousarray(np.moveaxis(x, -1, -3))

    def from_bgr(self, bgr: np.ndarray) -> np.ndarray:
        """(..., H, W, 3) BGR pixels -> float32 (..., 3, H, W) network input."""
        return self.values(self.ordered(bgr))

    def value_range(self) -> tuple[float, float]:
        """The network values of pixels 0 and 255."""
        return (0 - self.mean) * self.scale, (255 - self.mean) * self.scale

    def describe(self) -> str:
        return f"{self.channel_order}, (x - {self.mean:g}) / {1 / self.scale:g}"

    def to_dict(self) -> dict:
        return {"channel_order": self.channel_order, "mean": self.mean, "scale": self.scale}


# What MTCNN's pretrained weights (facenet-pytorch) expect.
MTCNN = Pixels()


@dataclass(frozen=True)
class InputSpec:
    """What a face network expects: an aligned H x W crop, normalised as ``pixels`` says."""

    height: int
    width: int
    channel_order: str = "RGB"
    mean: float = MEAN
    scale: float = SCALE
    # Five (x, y) points in the crop; None: the standard template's window (``template``).
    landmarks: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        Pixels(self.channel_order, self.mean, self.scale)  # validates order and scale
        if self.landmarks is not None and np.shape(self.landmarks) != (len(LANDMARKS), 2):
            raise MfnError(f"alignment template must be {len(LANDMARKS)} (x, y) points")

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def pixels(self) -> Pixels:
        return Pixels(self.channel_order, self.mean, self.scale)

    def template(self) -> np.ndarray:
        """Where the five landmarks go in the crop."""
        if self.landmarks is None:
            return template(self.size)
        return np.asarray(self.landmarks, np.float64)

    def to_dict(self) -> dict:
        """Size and normalisation (and a template other than the standard), as checkpoints
        record them."""
        d = {"height": self.height, "width": self.width, **self.pixels.to_dict()}
        return d if self.landmarks is None else d | {"template": self.template().tolist()}

    @classmethod
    def from_dict(cls, d: dict, landmarks: list | None = None) -> InputSpec:
        """The inverse of ``to_dict``; a missing normalisation key means the default."""
        default = Pixels()
        landmarks = d.get("template") if landmarks is None else landmarks
        return cls(
            int(d["height"]),
            int(d["width"]),
            d.get("channel_order", default.channel_order),
            float(d.get("mean", default.mean)),
            float(d.get("scale", default.scale)),
            None if landmarks is None else tuple(tuple(map(float, p)) for p in landmarks),
        )

    # --- the embedder manifest's records of the contract -----------------------------

    def manifest_input(self) -> dict:
        return {"height": self.height, "width": self.width, **self.pixels.to_dict()} | {
            "layout": LAYOUT,
            "onnx_input": ONNX_INPUT,
            "onnx_output": ONNX_OUTPUT,
        }

    def manifest_alignment(self) -> dict:
        return {
            "landmarks": list(LANDMARKS),
            "template": self.template().tolist(),
            "method": "least-squares similarity (Umeyama) onto the template, bilinear warp",
        }

    @classmethod
    def from_manifest(cls, manifest: dict) -> InputSpec:
        """The contract an export recorded (older exports: the standard template)."""
        landmarks = (manifest.get("alignment") or {}).get("template")
        return cls.from_dict(manifest["input"], landmarks)
