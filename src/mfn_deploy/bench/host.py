"""The same harness on this machine: ncnn runner, ncnn's Python binding, onnxruntime,
torch, and LiteRT for an export whose weights came from a TFLite file.

All get the same thread count, warm-up, loops and the same fixed face input (one
face per call); each output is compared with host onnxruntime (unoptimised) like on
a phone. The Python backends are timed per run with ``perf_counter`` around one
inference call (input already in the runtime's own tensor type and layout, as an
app would hold it); the runner times itself in C++. Start-up: the runner reports
its load (param, bin), first inference and peak memory; a Python runtime's load is
building its session or net, and its first call is its cold run. A ``--threads``
list measures each network at every count in turn, one ``ModelResult`` per count.
With ``--int8`` the two ncnn runtimes time the int8 pair; onnxruntime, torch and
LiteRT compute in fp32 whatever ncnn runs and are held to fp32's tolerance.
``--pace-ms`` spaces the Python runtimes' calls as the runner spaces its runs;
``--profile`` is the runner's alone.
``litert`` times the TFLite file itself (``bench/litert.py``: XNNPACK, batch 1), so
it needs an export that records one: by default it joins the others for such an
export; asked for by ``--backends`` on any other export, it is one line before
anything is timed.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mfn_deploy.bench.jobs import ModelJob
from mfn_deploy.bench.litert import litert_backend, locate, no_tflite_reason
from mfn_deploy.bench.options import ALL_HOST_BACKENDS, HOST_BACKENDS, TFLITE_BACKENDS, BenchOptions
from mfn_deploy.bench.results import DeviceResult, ModelResult, Status, Timing
from mfn_deploy.bench.target import Progress, Session
from mfn_deploy.errors import MfnError
from mfn_deploy.export.backends import load_ncnn_net
from mfn_deploy.export.stages import ArtifactNames
from mfn_deploy.native import (
    RunnerOptions,
    local_command,
    parse_output,
    read_dump,
    runner_args,
    write_input,
)
from mfn_deploy.runtime import embedder

BACKENDS = HOST_BACKENDS  # every export
LITERT = TFLITE_BACKENDS[0]  # an export with a TFLite source, in addition
Infer = Callable[[], np.ndarray]


def parse_backends(text: str | None) -> tuple[str, ...] | None:
    """``--backends``: comma-separated names from ALL_HOST_BACKENDS (None: the default,
    BACKENDS plus litert for an export with a TFLite source)."""
    if text is None:
        return None
    chosen = tuple(dict.fromkeys(b.strip() for b in text.split(",") if b.strip()))
    bad = [b for b in chosen if b not in ALL_HOST_BACKENDS]
    if bad or not chosen:
        raise MfnError(
            f"--backends: unknown {', '.join(bad) or '(none)'}; "
            f"valid: {', '.join(ALL_HOST_BACKENDS)}"
        )
    return chosen


def job_backends(job: ModelJob, chosen: Sequence[str] | None) -> tuple[str, ...]:
    """The runtimes one job is timed in: ``chosen``, or by default every one that applies;
    litert asked for on an export without a TFLite source is one line."""
    if chosen is None:
        return BACKENDS + (TFLITE_BACKENDS if job.tflite else ())
    if LITERT in chosen and not job.tflite:
        raise MfnError(f"--backends {LITERT}: {job.export_dir}: {no_tflite_reason(job.manifest)}")
    return tuple(chosen)


def _time_python(infer: Infer, opts: BenchOptions) -> tuple[list[float], np.ndarray, float]:
    """Timed runs, the last output, and the first call's ms (cold: it counts as a warm-up).
    ``--pace-ms``: each call starts at least that long after the previous one started,
    as the runner spaces them."""
    pace_s, start = opts.pace_ms / 1e3, -math.inf

    def call() -> tuple[np.ndarray, float]:
        nonlocal start
        time.sleep(max(0.0, start + pace_s - time.perf_counter()))
        start = time.perf_counter()
        out = infer()
        return out, (time.perf_counter() - start) * 1e3

    out, cold_ms = call()
    for _ in range(max(0, opts.warmup - 1)):
        out, _ms = call()
    times = []
    for _ in range(opts.loops):
        out, ms = call()
        times.append(ms)
    return times, np.asarray(out, np.float32).reshape(-1), cold_ms


def _ncnn_python(job: ModelJob, opts: BenchOptions) -> Infer:
    import ncnn

    # Same switches as the runner's --fp16 on|off and --powersave.
    net = load_ncnn_net(job.param, job.binary, opts.fp16, opts.threads, opts.powersave)
    (in_blob,), (out_blob,) = (
        job.manifest["ncnn_blobs"]["inputs"],
        job.manifest["ncnn_blobs"]["outputs"],
    )
    mat = ncnn.Mat(job.face).clone()

    def infer() -> np.ndarray:
        with net.create_extractor() as ex:
            ex.input(in_blob, mat)
            _, out = ex.extract(out_blob)
            return np.array(out)

    infer.net = net  # type: ignore[attr-defined]  # keep the net alive with the closure
    return infer


def _onnxruntime(job: ModelJob, opts: BenchOptions) -> Infer:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = opts.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as an app would
    path = job.export_dir / ArtifactNames(job.name).onnx
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = job.face[None]
    return lambda: sess.run(None, {name: x})[0]


def _torch(job: ModelJob, opts: BenchOptions) -> Infer:
    import torch

    torch.set_num_threads(opts.threads)
    run, _ = embedder(job.export_dir, "torch")  # the folded graph, under no_grad
    x = job.face[None]
    return lambda: run(x)


PYTHON_BACKENDS = {"ncnn-python": _ncnn_python, "onnxruntime": _onnxruntime, "torch": _torch}


def _ncnn_runner(job: ModelJob, opts: BenchOptions) -> tuple[dict, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        face, dump = Path(tmp) / "face.bin", Path(tmp) / "out.bin"
        write_input(job.face, face)
        options = RunnerOptions(
            threads=opts.threads,
            powersave=opts.powersave,
            warmup=opts.warmup,
            loops=opts.loops,
            cooldown=opts.cooldown or 0.0,
            fp16=opts.fp16,
            pace_ms=opts.pace_ms,
            profile=opts.profile,
        )
        argv = local_command("host") + runner_args(
            str(job.param), str(job.binary), job.shape, options, str(face), str(dump),
            expect_dim=job.reference.size,
        )  # fmt: skip
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=1800)
        return parse_output(proc, f"{job.name}: host runner"), read_dump(dump)


class HostTarget:
    """This machine: every job in each of ``backends`` (None: each job's own default),
    one after the other."""

    name = "host"

    def __init__(self, backends: Sequence[str] | None = None) -> None:
        # None: per job, every runtime that applies (litert only with a TFLite source).
        self.backends = None if backends is None else parse_backends(",".join(backends))

    def check(self) -> None:
        """Nothing to probe: the runner is found (or its build command named) when it runs."""

    def run(self, jobs: list[ModelJob], session: Session) -> None:
        opts = session.options
        host = session.results.host
        plan = [job_backends(job, self.backends) for job in jobs]  # refused before any timing
        used = {b for backends in plan for b in backends}
        entry = DeviceResult("host", backends=[b for b in ALL_HOST_BACKENDS if b in used])
        entry.info = {"model": host["cpu"], "cores": host["cpu_count"]}
        session.results.devices.append(entry)
        counts = opts.thread_counts
        # A network's thread counts back to back, so a scaling curve shares one box state.
        runs = [(job, b, n) for job, b in zip(jobs, plan, strict=True) for n in counts]
        for i, (job, backends, n) in enumerate(runs, 1):
            total = opts.loops * len(backends)
            timings = {b: Timing() for b in backends}  # RUNNING until measured
            described = job.describe()
            entry.models.append(ModelResult(**described, threads=n, backends=timings))
            name = job.name if len(counts) == 1 else f"{job.name} ({n} thread{'s' * (n != 1)})"
            done = 0
            for backend, t in timings.items():
                label = f"{name} [{backend}]"
                session.on_progress(Progress("host", label, i, len(runs), done, total, "run"))
                try:
                    self._measure(backend, job, opts.with_threads(n), t)
                except (MfnError, RuntimeError) as e:
                    t.status, t.error = Status.FAILED, str(e)
                    continue
                done += len(t.runs_ms)
            phase = "done" if entry.models[-1].status == Status.OK else "failed"
            session.on_progress(Progress("host", name, i, len(runs), done, total, phase))
            session.save()
        entry.settle()

    @staticmethod
    def _measure(backend: str, job: ModelJob, opts: BenchOptions, t: Timing) -> None:
        # onnxruntime, torch and LiteRT compute in fp32 whichever ncnn pair the job times
        precision = None if backend.startswith("ncnn") else "fp32"
        if backend == "ncnn-runner":
            runner_out, out = _ncnn_runner(job, opts)
            t.add_runner_output(runner_out)
            t.parity = job.parity(out)
            t.status = Status.OK
            return
        if backend == LITERT:
            assert job.tflite is not None  # job_backends saw to it
            litert = litert_backend(locate(job.tflite), job.face, opts.threads)
            t.load_ms, t.runtime = litert.load_ms, litert.info
            if opts.cooldown:
                time.sleep(opts.cooldown)
            times, out, t.cold_ms = _time_python(litert.infer, opts)
        else:
            t0 = time.perf_counter()
            infer = PYTHON_BACKENDS[backend](job, opts)
            t.load_ms = round((time.perf_counter() - t0) * 1e3, 4)  # building the session/net
            if opts.cooldown:
                time.sleep(opts.cooldown)
            times, out, t.cold_ms = _time_python(infer, opts)
        t.runs_ms = [round(x, 4) for x in times]
        t.cold_ms = round(t.cold_ms, 4) if t.cold_ms is not None else None
        t.parity = job.parity(out, precision)
        t.status = Status.OK
