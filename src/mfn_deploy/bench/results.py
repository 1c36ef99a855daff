"""Benchmark results as data: dataclasses, one status enum, one format, a JSON round trip.

The results file (``bench --out``) is ``Results.to_dict()``; ``load_results`` reads it
back, files written before these types existed included (same format string: the
layout did not change, ``partial`` is new and reads as False when absent). Summary
figures (median, IQR, ...) are derived from the runs every time a record is written,
never stored apart from them.

Layout, one object per level:

- ``Results``: format, target (``adb`` | ``host``), created/finished, options, the host
  environment, ``partial`` (True while the run goes on and when it was interrupted:
  not every model was measured), ``devices``;
- ``DeviceResult``: a phone (or the host): serial, status, error, getprop info, runner,
  baseline clocks, ``models``;
- ``ModelResult``: a network (name, title, params, MAdds, paper ms, export files) at
  one thread count (``threads``; a ``--threads 1,2,4`` run has one record per network
  and count, absent in older files: the options' count) and its ``Timing``: on a
  phone the record itself (flattened), on the host one per runtime under ``backends``;
- ``Timing``: status, error, every run's ms and their summary, parity with host
  onnxruntime, on the host what ran (``runtime``, for litert: delegate, threads,
  input shape, the TFLite file), and on a phone the clocks before/after, cool-down
  and throttle flag. Start-up figures where the runtime gives them: load time (the
  runner: param and bin apart), the first inference after loading (``cold_ms``, not
  among the runs) and peak resident memory (the runner's VmHWM, after loading and
  at the end).
"""

from __future__ import annotations

import json
import os
import platform
import threading
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import numpy as np

from mfn_deploy.bench.options import BenchOptions
from mfn_deploy.errors import MfnError
from mfn_deploy.export.manifest import tool_versions
from mfn_deploy.files import write_json

FORMAT = "mfn-deploy/bench-v1"


class Status(StrEnum):
    RUNNING = "running"  # being measured; a file written mid-run shows it
    OK = "ok"
    PARTIAL = "partial"  # some of its models (a device) or runtimes (a host model) failed
    FAILED = "failed"
    KILLED = "killed"  # the runner died from a signal; the next model ran
    INCOMPLETE = "incomplete"  # the phone went away during it; the runs so far are kept
    DISCONNECTED = "disconnected"  # the phone went away
    INTERRUPTED = "interrupted"  # the user stopped bench (^C, SIGTERM) during it


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def summarize(times: list[float]) -> dict:
    """Median and spread of per-run milliseconds (IQR: p75 - p25)."""
    if not times:
        return {"n": 0, "median_ms": None}
    t = np.asarray(times, np.float64)
    p = np.percentile(t, [10, 25, 50, 75, 90])
    return {
        "n": len(times),
        "median_ms": round(float(p[2]), 4),
        "min_ms": round(float(t.min()), 4),
        "p10_ms": round(float(p[0]), 4),
        "p90_ms": round(float(p[4]), 4),
        "max_ms": round(float(t.max()), 4),
        "mean_ms": round(float(t.mean()), 4),
        "std_ms": round(float(t.std()), 4),
        "iqr_ms": round(float(p[3] - p[1]), 4),
    }


def _known(cls: type, d: dict) -> dict:
    return {f.name: d[f.name] for f in fields(cls) if f.name in d}


@dataclass
class Timing:
    """One timed series: a model on a phone, or one runtime of a model on the host."""

    status: Status = Status.RUNNING
    error: str | None = None
    runs_ms: list[float] = field(default_factory=list)
    parity: dict | None = None  # vs host onnxruntime: ok, cos, max_abs, rel_l2, tolerance
    load_ms: float | None = None
    load_ms_param: float | None = None  # the runner: load_ms split into its two files
    load_ms_bin: float | None = None
    cold_ms: float | None = None  # the first inference after loading, not in runs_ms
    load_peak_rss_kb: int | None = None  # the runner's VmHWM after loading
    peak_rss_kb: int | None = None  # ... and at its end (a phone: the largest of its chunks)
    ncnn_version: str | None = None
    profile: dict | None = None  # the runner's --profile: per-layer ms and share
    runtime: dict | None = None  # host litert: version, delegate, threads, input, TFLite file
    # On a phone only:
    pushed: dict | None = None  # file name -> pushed now (False: the same bytes were there)
    cooldown: dict | None = None
    before: dict | None = None  # probe.snapshot: every core's clocks, the hottest zone
    after: dict | None = None
    throttled: bool | None = None
    throttle_reason: str | None = None
    cpu_count: dict | None = None

    def add_runner_output(self, out: dict) -> None:
        """One mfn-bench invocation's JSON: its runs, and the start-up figures of the
        first invocation (a phone's later chunks reload a warm model); peak memory is
        the largest of them all."""
        self.runs_ms += out["times_ms"]
        for key in ("load_ms", "load_ms_param", "load_ms_bin", "cold_ms", "load_peak_rss_kb"):
            if getattr(self, key) is None:
                setattr(self, key, out.get(key))
        peaks = [p for p in (self.peak_rss_kb, out.get("peak_rss_kb")) if p is not None]
        self.peak_rss_kb = max(peaks) if peaks else None
        self.ncnn_version = out.get("ncnn_version")
        if out.get("profile"):
            self.profile = out["profile"]

    @property
    def median_ms(self) -> float | None:
        return summarize(self.runs_ms)["median_ms"]

    @property
    def iqr_ms(self) -> float | None:
        return summarize(self.runs_ms).get("iqr_ms")

    def to_dict(self) -> dict:
        d = {"status": str(self.status), "error": self.error, "runs_ms": list(self.runs_ms)}
        d |= summarize(self.runs_ms)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in d and value is not None:
                d[f.name] = value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Timing:
        return cls(**_known(cls, d) | {"status": Status(d.get("status", Status.OK))})


@dataclass
class ModelResult:
    """A network as measured on one device: on a phone one ``timing``, on the host one
    per runtime in ``backends``."""

    name: str
    title: str | None = None
    params: int | None = None
    madds: int | None = None
    paper_ms: float | None = None
    export: dict = field(default_factory=dict)
    threads: int | None = None  # None: the run's one --threads count
    timing: Timing | None = None
    backends: dict[str, Timing] | None = None

    @property
    def status(self) -> Status:
        if self.timing is not None:
            return self.timing.status
        states = {t.status for t in (self.backends or {}).values()}
        if not states or Status.RUNNING in states:
            return Status.RUNNING
        if Status.INTERRUPTED in states:
            return Status.INTERRUPTED
        return Status.OK if states == {Status.OK} else Status.PARTIAL

    def series(self, backend: str | None = None) -> Timing | None:
        """The timing of ``backend`` (host), or the phone's (None)."""
        return self.timing if backend is None else (self.backends or {}).get(backend)

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "title": self.title,
            "params": self.params,
            "madds": self.madds,
            "paper_ms": self.paper_ms,
            "export": self.export,
        }
        if self.threads is not None:
            d["threads"] = self.threads
        if self.timing is not None:
            return d | self.timing.to_dict()
        return d | {
            "status": str(self.status),
            "backends": {b: t.to_dict() for b, t in (self.backends or {}).items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelResult:
        kw = _known(cls, d)
        if "backends" in d:
            kw["backends"] = {b: Timing.from_dict(r) for b, r in d["backends"].items()}
        else:
            kw["timing"] = Timing.from_dict(d)
        return cls(**kw)


@dataclass
class DeviceResult:
    """A phone (or this machine) and every model measured on it, in order."""

    serial: str
    status: Status = Status.RUNNING
    error: str | None = None
    info: dict | None = None  # probe.device_info on a phone; CPU model and cores on the host
    runner: dict | None = None  # phone: abi, sha256, remote path, version, pushed
    baseline: dict | None = None  # phone: the session's first snapshot (cool-down target)
    backends: list[str] | None = None  # host: the runtimes compared
    models: list[ModelResult] = field(default_factory=list)

    def settle(self) -> None:
        """The device's status once its models ran: ok, or partial if any is not ok."""
        bad = any(m.status != Status.OK for m in self.models)
        self.status = Status.PARTIAL if bad else Status.OK

    def to_dict(self) -> dict:
        d: dict = {"serial": self.serial, "status": str(self.status), "error": self.error}
        d["info"] = self.info
        for key in ("runner", "baseline", "backends"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        d["models"] = [m.to_dict() for m in list(self.models)]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DeviceResult:
        kw = _known(cls, d) | {"status": Status(d["status"])}
        kw["models"] = [ModelResult.from_dict(m) for m in d.get("models", [])]
        return cls(**kw)


@dataclass
class Results:
    """One ``bench`` run: what was asked, where it ran, every device's results."""

    target: str  # "adb" | "host"
    options: BenchOptions
    host: dict  # host_environment()
    created: str
    devices: list[DeviceResult] = field(default_factory=list)
    finished: str | None = None
    partial: bool = True  # until the run ends; stays True when it was interrupted
    extra: dict = field(default_factory=dict)  # keys of other writers, kept on a round trip

    def to_dict(self) -> dict:
        d = {
            "format": FORMAT,
            "target": self.target,
            "created": self.created,
            "options": self.options.to_dict(),
            "host": self.host,
            "devices": [dev.to_dict() for dev in list(self.devices)],
            "partial": self.partial,
        }
        if self.finished is not None:
            d["finished"] = self.finished
        return d | {k: v for k, v in self.extra.items() if k not in d}

    @classmethod
    def from_dict(cls, d: dict) -> Results:
        known = {f.name for f in fields(cls)} | {"format"}
        return cls(
            target=d["target"],
            options=BenchOptions.from_dict(d.get("options", {})),
            host=d.get("host", {}),
            created=d.get("created", "?"),
            devices=[DeviceResult.from_dict(dev) for dev in d["devices"]],
            finished=d.get("finished"),
            partial=bool(d.get("partial", False)),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def interrupt(self) -> None:
        """Mark whatever was under way as interrupted (the run stays ``partial``)."""
        self.partial = True
        for dev in self.devices:
            if dev.status == Status.RUNNING:
                dev.status, dev.error = Status.INTERRUPTED, dev.error or "interrupted"
            for m in dev.models:
                for t in [m.timing, *(m.backends or {}).values()]:
                    if t is not None and t.status == Status.RUNNING:
                        t.status, t.error = (
                            Status.INTERRUPTED,
                            f"interrupted after {len(t.runs_ms)} runs",
                        )

    def measured(self) -> bool:
        """Whether any device has at least one timed run."""
        return any(
            t is not None and t.runs_ms
            for dev in self.devices
            for m in dev.models
            for t in [m.timing, *(m.backends or {}).values()]
        )

    def problems(self) -> list[str]:
        """One line per device, model or host runtime that did not finish cleanly."""
        out = []
        if self.partial:
            out.append(f"{self.target}: interrupted before every model was measured")
        for d in self.devices:
            if d.status in (Status.FAILED, Status.DISCONNECTED, Status.INTERRUPTED):
                out.append(f"{d.serial}: {d.status}: {d.error}")
            for m in d.models:
                where = f"{d.serial}: {m.name}"
                timing = m.timing
                if timing is not None and timing.status == Status.INCOMPLETE:
                    out.append(f"{where}: incomplete, {len(timing.runs_ms)} runs kept")
                elif timing is not None and timing.status not in (Status.OK, Status.RUNNING):
                    out.append(f"{where}: {timing.status}: {timing.error}")
                parts = [("", timing)] + [(f" [{b}]", t) for b, t in (m.backends or {}).items()]
                for label, t in parts:
                    if t is None:
                        continue
                    if label and t.status not in (Status.OK, Status.RUNNING):
                        out.append(f"{where}{label}: {t.status}: {t.error}")
                    elif t.parity is not None and t.parity.get("ok") is False:
                        out.append(f"{where}{label}: parity with onnxruntime failed: {t.parity}")
        return out


def host_environment() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "tools": tool_versions(),
    }


def new_results(target: str, options: BenchOptions) -> Results:
    return Results(target, options, host_environment(), created=now())


def load_results(path: Path) -> Results:
    """A results file, or one line naming the file and what is wrong with it."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MfnError(f"{path}: no such results file") from None
    except IsADirectoryError:
        raise MfnError(f"{path}: is a directory, not a results file") from None
    except json.JSONDecodeError as e:
        raise MfnError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MfnError(f"{path}: not an mfn-deploy bench results file (format {FORMAT})")
    if not isinstance(data.get("devices"), list):
        raise MfnError(f"{path}: no 'devices' list: not a complete bench results file")
    try:
        return Results.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise MfnError(f"{path}: malformed bench results ({type(e).__name__}: {e})") from None


class ResultsFile:
    """The results of a run in progress, rewritten atomically whenever a model finishes:
    an interrupted or crashed run leaves every model measured so far, marked partial."""

    def __init__(self, path: Path, results: Results) -> None:
        self.path = path
        self.results = results
        self._lock = threading.Lock()  # phones run in parallel threads

    def save(self) -> None:
        with self._lock:
            write_json(self.path, self.results.to_dict())
