"""What the face commands are asked to do: backends and detector settings, once.

Light on purpose (no numpy, no OpenCV): the CLI reads the defaults from here at import
time, as it reads the benchmark's from ``bench.options``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mfn_deploy.errors import MfnError

# The runtimes a face command runs the networks in, by the one name each has everywhere
# (bench's host backends call onnxruntime the same). The first is the default: ncnn is
# what the phone runs.
BACKENDS = ("ncnn", "onnxruntime", "torch")
DEFAULT_BACKEND = BACKENDS[0]
# Names accepted for compatibility: "onnx" was onnxruntime's name before bench and the
# face commands agreed on one.
ALIASES = {"onnx": "onnxruntime"}


def backend_name(backend: str) -> str:
    """The one name of ``backend`` (an alias becomes it), or a one-line MfnError."""
    name = ALIASES.get(backend, backend)
    if name not in BACKENDS:
        raise MfnError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    return name


@dataclass(frozen=True)
class DetectorConfig:
    """The usual MTCNN settings (Zhang et al.; facenet-pytorch's defaults), checked."""

    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # P-, R-, O-Net scores
    scale_factor: float = 0.709
    nms: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7)  # per scale, P, R, O

    def __post_init__(self) -> None:
        t = self.thresholds
        if len(t) != 3 or not all(0 <= v <= 1 for v in t):
            shown = ",".join(f"{v:g}" for v in t)
            raise MfnError(f"--detector-thresholds {shown}: expected three numbers in [0, 1]")
        if self.min_face_size < 12:  # P-Net's window: a smaller face is never seen whole
            raise MfnError(f"--min-face-size {self.min_face_size} is below P-Net's 12 pixels")
