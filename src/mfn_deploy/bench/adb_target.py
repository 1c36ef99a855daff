"""The latency harness on phones over adb (``bench --target adb``).

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
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mfn_deploy.bench.jobs import ModelJob
from mfn_deploy.bench.results import DeviceResult, ModelResult, Status, Timing
from mfn_deploy.bench.target import Progress, Session
from mfn_deploy.device.adb import AdbError, Device, DeviceLostError, select_serials
from mfn_deploy.device.probe import device_info, pick_abi, snapshot, throttled, wait_cooldown
from mfn_deploy.errors import MfnError
from mfn_deploy.files import sha256_of
from mfn_deploy.native import RunnerOptions, parse_output, read_dump, runner_args, runner_path

REMOTE_ROOT = "/data/local/tmp/mfn-deploy"
RUN_TIMEOUT_S = 1800  # one chunk; a hung phone still ends


class RunKilledError(AdbError):
    """The runner died from a signal (OOM killer, a user's kill) while timing."""


class StoppedError(MfnError):
    """The run was interrupted: this phone stops after the chunk under way."""


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
    session: Session,
    baseline: dict,
    t: Timing,
    report: Callable[[str, int], None],
    threads: int | None = None,
) -> None:
    """Benchmark one model at ``threads`` (None: the one count of the options), filling
    ``t`` in place so a disconnect keeps what ran."""
    opts = session.options
    threads = opts.thread_counts[0] if threads is None else threads
    report("push", 0)
    with tempfile.TemporaryDirectory() as tmp:
        face_file = Path(tmp) / f"{job.name}.face.bin"
        np.ascontiguousarray(job.face, "<f4").tofile(face_file)
        t.pushed = {}
        remote = {}
        for key, path in (("param", job.param), ("bin", job.binary), ("input", face_file)):
            remote[key], t.pushed[path.name] = _ensure_on_device(dev, path)
        dump = f"{remote['bin'].rsplit('/', 1)[0]}/{job.name}.out.bin"

        report("cooldown", 0)
        if opts.cooldown is None:
            t.cooldown, t.before = wait_cooldown(dev, baseline)
        else:
            t.cooldown, t.before = {"mode": "fixed", "seconds": opts.cooldown}, snapshot(dev)

        sizes = _chunks(opts.loops, opts.chunk)
        for i, n in enumerate(sizes):
            if session.stop.is_set():
                raise StoppedError(f"{dev.serial}: interrupted after {len(t.runs_ms)} runs")
            options = RunnerOptions(
                threads=threads,
                powersave=opts.powersave,
                warmup=opts.warmup if i == 0 else min(1, opts.warmup),
                loops=n,
                cooldown=(opts.cooldown or 0.0) if i == 0 else 0.0,
                fp16=opts.fp16,
                pace_ms=opts.pace_ms,
                profile=opts.profile and i == len(sizes) - 1,  # once, after every timed run
            )
            args = runner_args(
                remote["param"],
                remote["bin"],
                job.shape,
                options,
                input_file=remote["input"],
                dump=dump if i == len(sizes) - 1 else None,
                # A shape the model cannot take fails in the runner, not as a wrong parity.
                expect_dim=job.reference.size,
            )
            out = _run_chunk(dev, [runner, *args], f"{job.name} chunk {i + 1}/{len(sizes)}")
            t.add_runner_output(out)
            t.cpu_count = {k: out.get(k) for k in ("cpu_count", "big_cpu_count")}
            report("run", len(t.runs_ms))

        t.after = snapshot(dev)
        t.throttle_reason = throttled(t.before, t.after)
        t.throttled = t.throttle_reason is not None
        local_dump = Path(tmp) / "out.bin"
        dev.pull(dump, local_dump)
        t.parity = job.parity(read_dump(local_dump))
    t.status = Status.OK


def _connect(dev: Device, entry: DeviceResult) -> str:
    """Device info and the runner for its ABI on the phone; the runner's remote path."""
    entry.info = info = device_info(dev)
    abi = pick_abi(info)
    if abi is None:
        offered = ", ".join(info["abilist"] or [str(info["abi"])])
        raise AdbError(
            f"{dev.serial}: unsupported ABI ({offered}); runner builds: arm64-v8a, armeabi-v7a"
        )
    local = runner_path(abi)
    remote, pushed = _ensure_on_device(dev, local, executable=True)
    version = dev.shell([remote, "--version"]).stdout.strip()
    entry.runner = {
        "abi": abi,
        "sha256": sha256_of(local),
        "remote": remote,
        "version": version,
        "pushed": pushed,
    }
    return remote


def bench_device(entry: DeviceResult, jobs: list[ModelJob], session: Session) -> None:
    """All models on one phone; never raises: problems land in statuses and errors."""
    dev = Device(entry.serial)
    current: Timing | None = None
    try:
        remote = _connect(dev, entry)
        entry.baseline = baseline = snapshot(dev)
        counts = session.options.thread_counts
        runs = [(job, n) for job in jobs for n in counts]  # a network's counts back to back
        for i, (job, n) in enumerate(runs, 1):
            if session.stop.is_set():
                raise StoppedError(f"{entry.serial}: interrupted before {job.name}")
            current = Timing()
            described = job.describe()
            entry.models.append(ModelResult(**described, threads=n, timing=current))
            total = session.options.loops
            label = job.name if len(counts) == 1 else f"{job.name} ({n} thread{'s' * (n != 1)})"

            def report(phase: str, done: int, i=i, label=label, t=current, total=total) -> None:
                median = float(np.median(t.runs_ms)) if t.runs_ms else None
                progress = Progress(entry.serial, label, i, len(runs), done, total, phase, median)
                session.on_progress(progress)

            try:
                bench_model(dev, remote, job, session, baseline, current, report, n)
                report("done", len(current.runs_ms))
            except (DeviceLostError, StoppedError):
                raise
            except MfnError as e:  # killed or failed run: keep going with the next model
                current.status = Status.KILLED if isinstance(e, RunKilledError) else Status.FAILED
                current.error = str(e)
                report("failed", len(current.runs_ms))
            session.save()
        entry.settle()
    except DeviceLostError as e:
        entry.status, entry.error = Status.DISCONNECTED, str(e)
        if current is not None and current.status == Status.RUNNING:
            current.status, current.error = Status.INCOMPLETE, str(e)
    except StoppedError as e:
        entry.status, entry.error = Status.INTERRUPTED, str(e)
    except MfnError as e:
        entry.status, entry.error = Status.FAILED, str(e)
    session.save()


class AdbTarget:
    """Phones over adb: ``serials`` as --serial gives them (``all``, or none: the only one)."""

    name = "adb"

    def __init__(self, serials: Sequence[str] = ()) -> None:
        self.requested = list(serials)
        self.serials: list[str] = []

    def check(self) -> None:
        self.serials = select_serials(self.requested)  # adb and phone problems show first

    def run(self, jobs: list[ModelJob], session: Session) -> None:
        """Every phone in parallel, one run per phone at a time; entries in serial order."""
        if not self.serials:
            self.check()
        entries = [DeviceResult(serial) for serial in self.serials]
        session.results.devices.extend(entries)
        pool = ThreadPoolExecutor(max_workers=max(1, len(entries)))
        try:
            list(pool.map(lambda e: bench_device(e, jobs, session), entries))
        except BaseException:
            session.stop.set()  # each phone stops after the chunk under way
            raise
        finally:
            pool.shutdown(wait=True)
