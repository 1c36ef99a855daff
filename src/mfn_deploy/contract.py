"""The preprocessing contract: how a photo becomes what a network was trained on.

Channel order, mean and scale, the input size, the tensor and blob names, and the
five-point alignment template live here and nowhere else in the code. Every
manifest records them (an embedder's ``input`` and ``alignment``, a detector's
``input``), and everything that feeds a network reads them from here or from the
manifest, so a model trained on other preprocessing only has to say so.
"""

from __future__ import annotations

import math
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


# A mean or scale: one value for every channel, or one per tensor channel (in channel order).
Channels = float | tuple[float, float, float]


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _channels(key: str, value: object, positive: bool) -> Channels:
    """One number, or three (a list or tuple, kept as a tuple: the contract stays hashable)."""
    several = isinstance(value, list | tuple)
    values = list(value) if several else [value]
    if (
        (several and len(values) != 3)
        or not all(map(_is_number, values))
        or (positive and not all(v > 0 for v in values))
    ):
        kind = "positive numbers" if positive else "finite numbers"
        raise MfnError(f"{key} must be a number or a list of 3 {kind}, got {value!r}")
    return tuple(map(float, values)) if several else float(value)


def _text(value: Channels) -> str:
    return (
        f"{value:g}" if not isinstance(value, tuple) else f"({', '.join(f'{v:g}' for v in value)})"
    )


@dataclass(frozen=True)
class Pixels:
    """8-bit pixels -> network values: reorder the channels, then (x - mean) * scale.

    ``mean`` and ``scale`` are one number, or three: one per channel of the tensor
    (that is, in ``channel_order``), as torchvision's Normalize takes them.
    """

    channel_order: str = "RGB"
    mean: Channels = MEAN
    scale: Channels = SCALE

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise MfnError(
                f"channel order {self.channel_order!r}; valid: {', '.join(CHANNEL_ORDERS)}"
            )
        # frozen: normalise lists to tuples and ints to floats once, here.
        object.__setattr__(self, "mean", _channels("preprocessing mean", self.mean, False))
        object.__setattr__(self, "scale", _channels("preprocessing scale", self.scale, True))

    def ordered(self, bgr: np.ndarray) -> np.ndarray:
        """(..., 3) BGR pixels (OpenCV's order) in this contract's channel order."""
        return bgr[..., ::-1] if self.channel_order == "RGB" else bgr

    def values(self, x: np.ndarray) -> np.ndarray:
        """(..., H, W, 3) pixels already in channel order -> float32 (..., 3, H, W)."""
        mean = np.asarray(self.mean, np.float32)  # (3,) broadcasts over the channel axis
        scale = np.asarray(self.scale, np.float32)
        x = (np.asarray(x).astype(np.float32) - mean) * scale
        return np.ascontiguousarray(np.moveaxis(x, -1, -3))

    def from_bgr(self, bgr: np.ndarray) -> np.ndarray:
        """(..., H, W, 3) BGR pixels -> float32 (..., 3, H, W) network input."""
        return self.values(self.ordered(bgr))

    def per_channel(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Mean and scale as three values each, in tensor channel order."""
        mean, scale = self.mean, self.scale
        return (
            mean if isinstance(mean, tuple) else (mean,) * 3,
            scale if isinstance(scale, tuple) else (scale,) * 3,
        )

    def value_range(self) -> tuple[float, float]:
        """The lowest and highest network value of an 8-bit pixel, over all channels."""
        ends = [(p - m) * s for m, s in zip(*self.per_channel(), strict=True) for p in (0, 255)]
        return min(ends), max(ends)

    def describe(self) -> str:
        scale = self.scale
        divisor = tuple(1 / v for v in scale) if isinstance(scale, tuple) else 1 / scale
        return f"{self.channel_order}, (x - {_text(self.mean)}) / {_text(divisor)}"

    def to_dict(self) -> dict:
        """As manifests record it: a scalar stays a number, per-channel values are a list."""
        as_json = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
        return {
            "channel_order": self.channel_order,
            "mean": as_json(self.mean),
            "scale": as_json(self.scale),
        }

    @classmethod
    def from_record(cls, record: object, key: str = "input", strict: bool = False) -> Pixels:
        """The pixels a manifest's ``key`` record declares, or a one-line MfnError naming the
        field. Without ``strict`` a missing field means the default (older manifests)."""
        if not isinstance(record, dict):
            raise MfnError(f"{key} must be an object, got {record!r}")
        if record.get("layout", LAYOUT) != LAYOUT:
            raise MfnError(f"{key}.layout must be {LAYOUT}, got {record['layout']!r}")
        default = cls()
        for k in ("channel_order", "mean", "scale"):
            if strict and k not in record:
                raise MfnError(f"{key}.{k} missing")
        order = record.get("channel_order", default.channel_order)
        if order not in CHANNEL_ORDERS:
            raise MfnError(
                f"{key}.channel_order must be {' or '.join(CHANNEL_ORDERS)}, got {order!r}"
            )
        return cls(
            order,
            _channels(f"{key}.mean", record.get("mean", default.mean), positive=False),
            _channels(f"{key}.scale", record.get("scale", default.scale), positive=True),
        )


# What MTCNN's pretrained weights (facenet-pytorch) expect.
MTCNN = Pixels()


def _points(key: str, value: object) -> tuple[tuple[float, float], ...]:
    """Five [x, y] landmark positions, or a one-line MfnError naming ``key``."""
    if not (
        isinstance(value, list | tuple)
        and len(value) == len(LANDMARKS)
        and all(
            isinstance(p, list | tuple) and len(p) == 2 and all(map(_is_number, p)) for p in value
        )
    ):
        raise MfnError(f"{key} must be {len(LANDMARKS)} [x, y] pairs of numbers, got {value!r}")
    return tuple((float(x), float(y)) for x, y in value)


@dataclass(frozen=True)
class InputSpec:
    """What a face network expects: an aligned H x W crop, normalised as ``pixels`` says."""

    height: int
    width: int
    channel_order: str = "RGB"
    mean: Channels = MEAN
    scale: Channels = SCALE
    # Five (x, y) points in the crop; None: the standard template's window (``template``).
    landmarks: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        pixels = Pixels(self.channel_order, self.mean, self.scale)  # validates them
        object.__setattr__(self, "mean", pixels.mean)  # lists -> tuples, as Pixels keeps them
        object.__setattr__(self, "scale", pixels.scale)
        if self.landmarks is not None:
            object.__setattr__(self, "landmarks", _points("alignment template", self.landmarks))

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
    def from_dict(
        cls, d: dict, landmarks: list | None = None, key: str = "input", strict: bool = False
    ) -> InputSpec:
        """The inverse of ``to_dict``; a missing normalisation key means the default unless
        ``strict``. A bad value is a one-line MfnError naming ``key``'s field."""
        pixels = Pixels.from_record(d, key, strict)
        landmarks = d.get("template") if landmarks is None else landmarks
        return cls(
            int(d["height"]),
            int(d["width"]),
            pixels.channel_order,
            pixels.mean,
            pixels.scale,
            None if landmarks is None else _points("alignment.template", landmarks),
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
    def from_manifest(cls, manifest: dict, strict: bool = False) -> InputSpec:
        """The contract an export recorded (older exports: the standard template), checked;
        ``strict``: every normalisation field must be recorded."""
        alignment = manifest.get("alignment")
        landmarks = None  # exports made before manifests recorded it: the standard template
        if alignment is not None:
            points = alignment.get("template") if isinstance(alignment, dict) else alignment
            landmarks = _points("alignment.template", points)
        return cls.from_dict(manifest["input"], landmarks, "input", strict)
