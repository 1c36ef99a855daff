"""The same harness on this machine: ncnn runner, ncnn's Python binding, onnxruntime, torch.

All four get the same thread count, warm-up, loops and the same fixed face input;
each output is compared with host onnxruntime (unoptimised) like on a phone. The
Python backends are timed per run with ``perf_counter`` around one inference call
(input already in the runtime's own tensor type, as an app would hold it); the
runner times itself in C++.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mfn_deploy.device.bench import (
    BenchOptions,
    Progress,
    ProgressFn,
    new_results,
    parity_of,
    summarize,
)
from mfn_deploy.device.models import ModelJob
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

BACKENDS = ("ncnn-runner", "ncnn-python", "onnxruntime", "torch")
Infer = Callable[[], np.ndarray]


def check_backends(backends: list[str]) -> None:
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        raise MfnError(f"unknown backend(s) {bad}; valid: {', '.join(BACKENDS)}")


def _time_python(infer: Infer, opts: BenchOptions) -> tuple[list[float], np.ndarray]:
    out = infer()
    for _ in range(max(0, opts.warmup - 1)):
        out = infer()
    times = []
    for _ in range(opts.loops):
        t0 = time.perf_counter()
        out = infer()
        times.append((time.perf_counter() - t0) * 1e3)
    return times, np.asarray(out, np.float32).reshape(-1)


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


def _ncnn_runner(job: ModelJob, opts: BenchOptions) -> tuple[list[float], np.ndarray, dict]:
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
        )
        argv = local_command("host") + runner_args(
            str(job.param), str(job.binary), job.shape, options, str(face), str(dump)
        )
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=1800)
        out = parse_output(proc, f"{job.name}: host runner")
        extra = {"load_ms": out.get("load_ms"), "ncnn_version": out.get("ncnn_version")}
        return out["times_ms"], read_dump(dump), extra


def bench_host(
    jobs: list[ModelJob],
    opts: BenchOptions,
    backends: tuple[str, ...] | list[str] = BACKENDS,
    on_progress: ProgressFn = lambda _p: None,
) -> dict:
    opts.validate()
    check_backends(backends)
    results = new_results("host", opts)
    entry = {"serial": "host", "status": "ok", "error": None, "backends": backends, "models": []}
    entry["info"] = {"model": results["host"]["cpu"], "cores": results["host"]["cpu_count"]}
    results["devices"].append(entry)
    total = opts.loops * len(backends)
    for i, job in enumerate(jobs, 1):
        record = {**job.describe(opts.fp16), "status": "ok", "backends": {}}
        entry["models"].append(record)
        for k, backend in enumerate(backends):
            on_progress(Progress("host", f"{job.name} [{backend}]", i, len(jobs), k * opts.loops,
                                 total, "run"))  # fmt: skip
            try:
                if backend == "ncnn-runner":
                    times, out, extra = _ncnn_runner(job, opts)
                else:
                    if opts.cooldown:
                        time.sleep(opts.cooldown)
                    times, out = _time_python(PYTHON_BACKENDS[backend](job, opts), opts)
                    extra = {}
            except (MfnError, RuntimeError) as e:
                record["backends"][backend] = {"status": "failed", "error": str(e)}
                record["status"] = "partial"
                continue
            record["backends"][backend] = {
                "status": "ok",
                "runs_ms": [round(t, 4) for t in times],
                **summarize(times),
                **extra,
                "parity": parity_of(out, job, opts.fp16),
            }
        on_progress(Progress("host", job.name, i, len(jobs), total, total, "done"))
    if any(m["status"] != "ok" for m in entry["models"]):
        entry["status"] = "partial"
    return results
