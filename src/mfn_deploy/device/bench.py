"""The latency harness on phones over adb, and the results JSON both targets share.

Protocol per phone (one model at a time, phones in parallel):
1. read device info; the ABI picks the runner build;
2. push runner, model pair and the fixed input to
   ``/data/local/tmp/mfn-deploy/<sha256[:16]>/<file>`` (skipped when the same bytes are
   there: the size is checked and the directory name is the content hash);
3. per model: cool down (``auto``: wait for temperature and clock caps to recover,
   bounded; or the runner's fixed sleep), snapshot governors/clocks/thermal, run the
   timed loops, snapshot again, flag throttling (probe.throttled), pull the embedding
   the runner dumped for the fixed face and compare it with host onnxruntime.

Progress: the runner prints its times only when it exits, so the loops run in chunks
of ``chunk`` runs (the model is loaded once per chunk; the first chunk does the full
warm-up, later ones one untimed run to re-warm caches after the reload).
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mfn_deploy.device.adb import AdbError, Device, DeviceLostError
from mfn_deploy.device.models import ModelJob
from mfn_deploy.device.probe import device_info, pick_abi, snapshot, throttled, wait_cooldown
from mfn_deploy.errors import MfnError
from mfn_deploy.export.manifest import tool_versions
from mfn_deploy.export.parity import compare
from mfn_deploy.export.stages import STAGES
from mfn_deploy.files import sha256_of
from mfn_deploy.native import RunnerOptions, parse_output, read_dump, runner_args, runner_path

FORMAT = "mfn-deploy/bench-v1"
REMOTE_ROOT = "/data/local/tmp/mfn-deploy"
RUN_TIMEOUT_S = 1800  # one chunk; a hung phone still ends


class RunKilledError(AdbError):
    """The runner died from a signal (OOM killer, a user's kill) while timing."""


@dataclass(frozen=True)
class BenchOptions:
    threads: int = 4
    powersave: int = 2  # ncnn: 0 all cores, 1 little, 2 big (the paper pins big cores)
    loops: int = 50
    warmup: int = 10
    cooldown: float | None = None  # None: "auto"; else seconds the runner sleeps after loading
    fp16: bool = False
    chunk: int = 10  # runs per runner invocation on the phone (progress granularity)

    def validate(self) -> None:
        checks = {
            "--threads": self.threads >= 1,
            "--powersave": self.powersave in (0, 1, 2),
            "--loops": self.loops >= 1,
            "--warmup": self.warmup >= 0,
            "--cooldown": self.cooldown is None or self.cooldown >= 0,
            "chunk": self.chunk >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                value = getattr(self, key.strip("-"))
                raise MfnError(f"{key} {value!r} out of range (threads/loops >= 1, powersave 0-2)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cooldown"] = "auto" if self.cooldown is None else self.cooldown
        return d


def parse_cooldown(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise MfnError(f"--cooldown {text!r}: expected 'auto' or seconds >= 0")
    return value


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


def parity_of(output: np.ndarray, job: ModelJob, fp16: bool) -> dict:
    tol = STAGES["ncnn_fp16" if fp16 else "ncnn"].tolerance
    if output.size != job.reference.size:
        return {"ok": False, "error": f"{output.size} values, expected {job.reference.size}"}
    m = compare(output.reshape(1, -1), job.reference.reshape(1, -1))
    return {
        "ok": m.within(tol),
        "cos": m.cos_min,
        "max_abs": m.max_abs,
        "rel_l2": m.rel_l2_max,
        "tolerance": asdict(tol),
        "reference": "host onnxruntime, unoptimised, same face input",
    }


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


def new_results(target: str, options: BenchOptions) -> dict:
    return {
        "format": FORMAT,
        "target": target,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": options.to_dict(),
        "host": host_environment(),
        "devices": [],
    }


@dataclass
class Progress:
    device: str
    model: str
    index: int  # 1-based model number
    n_models: int
    done: int  # timed runs finished
    total: int
    phase: str  # "push", "cooldown", "run", "done", "failed"
    median_ms: float | None = None


ProgressFn = Callable[[Progress], None]


# --- adb ------------------------------------------------------------------------------


def _ensure_on_device(dev: Device, local: Path, executable: bool = False) -> tuple[str, bool]:
    """Remote path of ``local`` under its content hash; (path, whether it was pushed now)."""
    remote_dir = f"{REMOTE_ROOT}/{sha256_of(local)[:16]}"
    remote = f"{remote_dir}/{local.name}"
    there = dev.shell(["stat", "-c", "%s", remote], check=False)
    if there.returncode == 0 and there.stdout.strip() == str(local.stat().st_size):
        return remote, False
    partial = f"{remote}.part"  # a push cut short never looks complete
    dev.shell(["mkdir", "-p", remote_dir])
    dev.push(local, partial)
    if executable:
        dev.shell(["chmod", "755", partial])
    dev.shell(["mv", "-f", partial, remote])
    return remote, True


def _chunks(loops: int, chunk: int) -> list[int]:
    n = math.ceil(loops / chunk)
    return [chunk] * (n - 1) + [loops - chunk * (n - 1)]


def _run_chunk(dev: Device, argv: list[str], what: str) -> dict:
    proc = dev.shell(argv, timeout=RUN_TIMEOUT_S, check=False)
    if proc.returncode >= 128 or proc.returncode == 3:  # 3: the runner caught a fatal signal
        sig = proc.returncode - 128 if proc.returncode >= 128 else "fatal"
        raise RunKilledError(f"{dev.serial}: {what}: runner killed midway (signal {sig})")
    return parse_output(proc, f"{dev.serial}: {what}")


def bench_model(
    dev: Device,
    runner: str,
    job: ModelJob,
    opts: BenchOptions,
    baseline: dict,
    record: dict,
    report: Callable[[str, int], None],
) -> None:
    """Benchmark one model, filling ``record`` in place so a disconnect keeps what ran."""
    record.update(job.describe(opts.fp16), status="running", runs_ms=[], error=None)
    report("push", 0)
    with tempfile.TemporaryDirectory() as tmp:
        face_file = Path(tmp) / f"{job.name}.face.bin"
        np.ascontiguousarray(job.face, "<f4").tofile(face_file)
        pushed = {}
        remote = {}
        for key, path in (("param", job.param), ("bin", job.binary), ("input", face_file)):
            remote[key], pushed[path.name] = _ensure_on_device(dev, path)
        record["pushed"] = pushed
        dump = f"{remote['bin'].rsplit('/', 1)[0]}/{job.name}.out.bin"

        report("cooldown", 0)
        if opts.cooldown is None:
            record["cooldown"], before = wait_cooldown(dev, baseline)
        else:
            record["cooldown"], before = {"mode": "fixed", "seconds": opts.cooldown}, snapshot(dev)
        record["before"] = before

        sizes = _chunks(opts.loops, opts.chunk)
        for i, n in enumerate(sizes):
            options = RunnerOptions(
                threads=opts.threads,
                powersave=opts.powersave,
                warmup=opts.warmup if i == 0 else min(1, opts.warmup),
                loops=n,
                cooldown=(opts.cooldown or 0.0) if i == 0 else 0.0,
                fp16=opts.fp16,
            )
            args = runner_args(
                remote["param"],
                remote["bin"],
                job.shape,
                options,
                input_file=remote["input"],
                dump=dump if i == len(sizes) - 1 else None,
            )
            out = _run_chunk(dev, [runner, *args], f"{job.name} chunk {i + 1}/{len(sizes)}")
            record["runs_ms"] += out["times_ms"]
            record.setdefault("load_ms", out.get("load_ms"))
            record["ncnn_version"] = out.get("ncnn_version")
            record["cpu_count"] = {k: out.get(k) for k in ("cpu_count", "big_cpu_count")}
            report("run", len(record["runs_ms"]))

        after = snapshot(dev)
        record["after"] = after
        record["throttle_reason"] = throttled(before, after)
        record["throttled"] = record["throttle_reason"] is not None
        local_dump = Path(tmp) / "out.bin"
        dev.pull(dump, local_dump)
        record["parity"] = parity_of(read_dump(local_dump), job, opts.fp16)
    record.update(summarize(record["runs_ms"]), status="ok")


def bench_device(
    serial: str, jobs: list[ModelJob], opts: BenchOptions, on_progress: ProgressFn
) -> dict:
    """All models on one phone; never raises: problems land in the entry's status/error."""
    dev = Device(serial)
    entry: dict = {"serial": serial, "status": "running", "error": None, "info": None}
    entry["models"] = []
    current: dict | None = None
    try:
        info = device_info(dev)
        entry["info"] = info
        abi = pick_abi(info)
        if abi is None:
            offered = ", ".join(info["abilist"] or [str(info["abi"])])
            raise AdbError(
                f"{serial}: unsupported ABI ({offered}); runner builds: arm64-v8a, armeabi-v7a"
            )
        local = runner_path(abi)
        remote, pushed = _ensure_on_device(dev, local, executable=True)
        version = dev.shell([remote, "--version"]).stdout.strip()
        entry["runner"] = {
            "abi": abi,
            "sha256": sha256_of(local),
            "remote": remote,
            "version": version,
            "pushed": pushed,
        }
        entry["baseline"] = baseline = snapshot(dev)
        for i, job in enumerate(jobs, 1):
            current = {}
            entry["models"].append(current)
            total = opts.loops

            def report(phase: str, done: int, i=i, job=job, rec=current, total=total) -> None:
                runs = rec.get("runs_ms") or []
                median = float(np.median(runs)) if runs else None
                on_progress(Progress(serial, job.name, i, len(jobs), done, total, phase, median))

            try:
                bench_model(dev, remote, job, opts, baseline, current, report)
                report("done", opts.loops)
            except DeviceLostError:
                raise
            except AdbError as e:  # killed or failed run: keep going with the next model
                current.update(summarize(current.get("runs_ms") or []))
                current.update(status="killed" if isinstance(e, RunKilledError) else "failed")
                current["error"] = str(e)
                report("failed", len(current.get("runs_ms") or []))
        bad = [m["name"] for m in entry["models"] if m["status"] != "ok"]
        entry["status"] = "partial" if bad else "ok"
    except DeviceLostError as e:
        entry.update(status="disconnected", error=str(e))
        if current is not None and current.get("status") == "running":
            current.update(summarize(current.get("runs_ms") or []))
            current.update(status="incomplete", error=str(e))
    except MfnError as e:
        entry.update(status="failed", error=str(e))
    return entry


def bench_adb(
    serials: list[str],
    jobs: list[ModelJob],
    opts: BenchOptions,
    on_progress: ProgressFn = lambda _p: None,
) -> dict:
    """Every phone in parallel, one run per phone at a time; entries in ``serials`` order."""
    opts.validate()
    results = new_results("adb", opts)
    with ThreadPoolExecutor(max_workers=max(1, len(serials))) as pool:
        results["devices"] = list(
            pool.map(lambda s: bench_device(s, jobs, opts, on_progress), serials)
        )
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def problems(results: dict) -> list[str]:
    """One line per device, model or host backend that did not finish cleanly."""
    out = []
    for d in results["devices"]:
        if d["status"] in ("failed", "disconnected"):
            out.append(f"{d['serial']}: {d['status']}: {d['error']}")
        for m in d["models"]:
            where = f"{d['serial']}: {m['name']}"
            if m.get("status") == "incomplete":
                out.append(f"{where}: incomplete, {m.get('n', 0)} runs kept")
            elif m.get("status") in ("failed", "killed"):
                out.append(f"{where}: {m['status']}: {m.get('error')}")
            parts = [("", m)] + [(f" [{b}]", r) for b, r in m.get("backends", {}).items()]
            for label, rec in parts:
                if rec.get("status") == "failed" and label:
                    out.append(f"{where}{label}: failed: {rec.get('error')}")
                elif rec.get("parity", {}).get("ok") is False:
                    out.append(f"{where}{label}: parity with onnxruntime failed: {rec['parity']}")
    return out
