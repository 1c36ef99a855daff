"""What a benchmark run is asked to do: every option, its default and its bounds, once.

Light on purpose (no numpy, no torch): the CLI reads the defaults and bounds from here
at import time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from mfn_deploy.errors import MfnError

# Inclusive bounds of every numeric option. Beyond them the runner or the runtimes
# misbehave (100000 threads crash ncnn's OpenMP pool) or a run never ends.
LIMITS: dict[str, tuple[float, float]] = {
    "threads": (1, 64),
    "powersave": (0, 2),
    "loops": (1, 10_000),
    "warmup": (0, 1_000),
    "cooldown": (0, 600),
    "chunk": (1, 10_000),
}
AUTO = "auto"  # --cooldown: wait for the phone instead of a fixed sleep
TARGETS = ("adb", "host")  # where bench measures; the first is the default
# The host runtimes compared (bench/host.py), by the one name each has in options,
# results and reports: the mfn-bench runner, ncnn's Python binding, onnxruntime, torch
# (every export) ...
HOST_BACKENDS = ("ncnn-runner", "ncnn-python", "onnxruntime", "torch")
# ... and LiteRT with XNNPACK, for an export whose weights came from a TFLite file
# (`export --pretrained`, an `import-tflite` checkpoint): that file is what it times.
TFLITE_BACKENDS = ("litert",)
ALL_HOST_BACKENDS = HOST_BACKENDS + TFLITE_BACKENDS  # what --backends accepts


@dataclass(frozen=True)
class BenchOptions:
    """The protocol of one run (the paper's: 4 threads, big cores); checked on creation."""

    threads: int = 4
    powersave: int = 2  # ncnn: 0 all cores, 1 little, 2 big (the paper pins big cores)
    loops: int = 50
    warmup: int = 10
    cooldown: float | None = None  # None: "auto"; else seconds the runner sleeps after loading
    fp16: bool = False
    chunk: int = 10  # runs per runner invocation on the phone (progress granularity)

    def __post_init__(self) -> None:
        for key, (low, high) in LIMITS.items():
            value = getattr(self, key)
            if value is None and key == "cooldown":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise MfnError(f"--{key} {value!r}: expected a number in {low:g}..{high:g}")
            if not low <= value <= high:
                raise MfnError(f"--{key} {value!r} out of range {low:g}..{high:g}")

    @classmethod
    def default(cls, key: str) -> object:
        """The default of one option, as the CLI shows it."""
        value = next(f.default for f in fields(cls) if f.name == key)
        return AUTO if key == "cooldown" and value is None else value

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cooldown"] = AUTO if self.cooldown is None else self.cooldown
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BenchOptions:
        known = {f.name for f in fields(cls)}
        kw = {f.name: f.default for f in fields(cls)}
        kw |= {k: v for k, v in d.items() if k in known}
        if kw["cooldown"] == AUTO:
            kw["cooldown"] = None
        # A results file records what ran; reading it does not judge it again.
        options = object.__new__(cls)
        for key, value in kw.items():
            object.__setattr__(options, key, value)
        return options


def parse_cooldown(text: str | float | None) -> float | None:
    """``auto`` (None) or seconds; the bounds are checked by BenchOptions."""
    if text is None or text == AUTO:
        return None
    try:
        return float(text)
    except ValueError:
        raise MfnError(f"--cooldown {text!r}: expected 'auto' or seconds >= 0") from None
