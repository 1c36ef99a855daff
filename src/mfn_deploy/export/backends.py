"""Runners: one network artifact as a function from (N, 3, H, W) inputs to outputs.

Parity, ``check``, the face pipeline and the host benchmark all run models through
these, so torch, onnxruntime and ncnn are each configured in exactly one place.
The runtimes are imported when a runner is made, not when this module is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mfn_deploy.errors import MfnError

Runner = Callable[[np.ndarray], np.ndarray]  # (N, 3, H, W) -> (N, ...)


def torch_runner(model) -> Runner:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return run


def onnx_runner(path: Path, optimize: bool = False) -> Runner:
    """onnxruntime on the CPU; unoptimised unless ``optimize`` (parity's reference path)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not optimize:  # parity's reference path is deliberately unoptimised, like onnxsim's
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    static_batch = isinstance(inp.shape[0], int)

    def run(x: np.ndarray) -> np.ndarray:
        if static_batch:
            return np.concatenate(
                [sess.run(None, {inp.name: x[i : i + 1]})[0] for i in range(len(x))]
            )
        return sess.run(None, {inp.name: x})[0]

    return run


def load_ncnn_net(
    param: Path,
    binary: Path,
    fp16: bool = False,
    threads: int = 1,
    powersave: int | None = None,
    packing: bool = True,
):
    """An ncnn.Net on the CPU with fp16 exactly as asked, loaded, or a one-line MfnError.

    ``powersave`` (0 all cores, 1 little, 2 big) is ncnn's process-wide CPU choice;
    None leaves it as it is. ``packing=False``: unpacked layouts, for int8 references:
    ncnn's packed x86 int8 depthwise kernels round differently from exact int8
    arithmetic (1e-4 relative per layer), which the ARM kernels compute.
    """
    import ncnn

    if powersave is not None:
        ncnn.set_cpu_powersave(powersave)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    # fp32 must really be fp32: ncnn enables fp16/bf16 storage by default where the CPU has it.
    net.opt.use_fp16_packed = fp16
    net.opt.use_fp16_storage = fp16
    net.opt.use_fp16_arithmetic = fp16
    net.opt.use_bf16_storage = False
    net.opt.use_packing_layout = packing
    if net.load_param(str(param)) != 0 or net.load_model(str(binary)) != 0:
        raise MfnError(f"{param}: ncnn could not load the model (with {binary.name})")
    return net


def ncnn_runner(
    param: Path,
    binary: Path,
    blobs: dict,
    fp16: bool = False,
    keep_shape: bool = False,
    packing: bool = True,
) -> Runner:
    """ncnn on one image at a time; outputs flattened to (N, D) unless ``keep_shape``."""
    import ncnn

    net = load_ncnn_net(param, binary, fp16, packing=packing)
    (in_blob,), (out_blob,) = blobs["inputs"], blobs["outputs"]

    def run(x: np.ndarray) -> np.ndarray:
        outs = []
        for sample in x:
            with net.create_extractor() as ex:
                ex.input(in_blob, ncnn.Mat(np.ascontiguousarray(sample)).clone())
                _, out = ex.extract(out_blob)
                arr = np.array(out)
                outs.append(arr if keep_shape else arr.reshape(-1))
        return np.stack(outs)

    # Keep the net alive as long as the runner.
    run.net = net  # type: ignore[attr-defined]
    return run
