"""What a benchmark run is asked to do: every option, its default and its bounds, once.

Light on purpose (no numpy, no torch): the CLI reads the defaults and bounds from here
at import time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

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
    "pace_ms": (0, 60_000),
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
    """The protocol of one run (the paper's: 4 threads, big cores); checked on creation.

    ``threads`` is one count, or a tuple of counts (``--threads 1,2,4``) that the run
    measures one after the other, network by network, for a thread-scaling curve.
    """

    threads: int | tuple[int, ...] = 4
    powersave: int = 2  # ncnn: 0 all cores, 1 little, 2 big (the paper pins big cores)
    loops: int = 50
    warmup: int = 10
    cooldown: float | None = None  # None: "auto"; else seconds the runner sleeps after loading
    fp16: bool = False
    int8: bool = False  # time the export's int8 pair (``export --int8``) instead of fp32
    chunk: int = 10  # runs per runner invocation on the phone (progress granularity)
    pace_ms: int = 0  # > 0: runs start this far apart, like camera frames (the runner)
    profile: bool = False  # the runner's per-layer times, into each result's "profile"

    def __post_init__(self) -> None:
        if self.int8 and self.fp16:
            raise MfnError("--int8 times the int8 pair in fp32 elsewhere; leave --fp16 off")
        counts = self.threads if isinstance(self.threads, tuple) else (self.threads,)
        if len(set(counts)) != len(counts) or not counts:
            raise MfnError(f"--threads {_join(counts)}: give each count once")
        for key, (low, high) in LIMITS.items():
            if key == "threads":
                for n in counts:
                    _check(key, n, low, high)
                continue
            value = getattr(self, key)
            if value is None and key == "cooldown":
                continue
            _check(key, value, low, high)

    @property
    def precision(self) -> str:
        """Which of the export's ncnn pairs runs: ``fp32``, ``fp16`` or ``int8``."""
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"

    @property
    def thread_counts(self) -> tuple[int, ...]:
        """Every thread count the run measures, in the order given."""
        return self.threads if isinstance(self.threads, tuple) else (self.threads,)

    def with_threads(self, n: int) -> BenchOptions:
        """The same protocol at one thread count: what a single measurement runs with."""
        return replace(self, threads=n)

    @classmethod
    def default(cls, key: str) -> object:
        """The default of one option, as the CLI shows it."""
        value = next(f.default for f in fields(cls) if f.name == key)
        return AUTO if key == "cooldown" and value is None else value

    def to_dict(self) -> dict:
        d = asdict(self)
        d["threads"] = list(self.threads) if isinstance(self.threads, tuple) else self.threads
        d["cooldown"] = AUTO if self.cooldown is None else self.cooldown
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BenchOptions:
        known = {f.name for f in fields(cls)}
        kw = {f.name: f.default for f in fields(cls)}
        kw |= {k: v for k, v in d.items() if k in known}
        if kw["cooldown"] == AUTO:
            kw["cooldown"] = None
        if isinstance(kw["threads"], list):
            kw["threads"] = tuple(kw["threads"])
        # A results file records what ran; reading it does not judge it again.
        options = object.__new__(cls)
        for key, value in kw.items():
            object.__setattr__(options, key, value)
        return options


def _check(key: str, value: object, low: float, high: float) -> None:
    key = key.replace("_", "-")  # as the option is spelled
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MfnError(f"--{key} {value!r}: expected a number in {low:g}..{high:g}")
    if not low <= value <= high:
        raise MfnError(f"--{key} {value!r} out of range {low:g}..{high:g}")


def _join(counts: tuple[int, ...]) -> str:
    return ",".join(str(n) for n in counts)


def parse_threads(text: str | int) -> int | tuple[int, ...]:
    """``--threads``: one count (``4``) or a comma-separated list (``1,2,4``); the bounds
    are checked by BenchOptions."""
    if isinstance(text, int):
        return text
    parts = [p.strip() for p in str(text).split(",")]
    try:
        counts = tuple(int(p) for p in parts)
    except ValueError:
        raise MfnError(f"--threads {text!r}: expected a count or a list such as 1,2,4") from None
    return counts[0] if len(counts) == 1 else counts


def format_threads(threads: int | tuple[int, ...]) -> str:
    return _join(threads) if isinstance(threads, tuple) else str(threads)


def parse_cooldown(text: str | float | None) -> float | None:
    """``auto`` (None) or seconds; the bounds are checked by BenchOptions."""
    if text is None or text == AUTO:
        return None
    try:
        return float(text)
    except ValueError:
        raise MfnError(f"--cooldown {text!r}: expected 'auto' or seconds >= 0") from None
