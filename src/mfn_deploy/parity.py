"""Stage 5: numerical parity of every stage against the torch reference.

One function compares any two stages (``compare``); tolerances are data
(``TOLERANCES``). Each stage is compared with the reference and with the stage
before it, on seeded random inputs and on real photos. The blamed stage is the
first whose step from its predecessor breaks tolerance; if every step is within
tolerance but drift accumulates, it is the first that breaks against the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]  # (N, 3, H, W) -> (N, D)


@dataclass(frozen=True)
class Tolerance:
    cos_min: float  # lowest allowed cosine similarity of any embedding pair
    rel_l2_max: float  # highest allowed ||a - b|| / ||b|| of any embedding pair


FP32 = Tolerance(cos_min=0.99999, rel_l2_max=5e-3)
FP16 = Tolerance(cos_min=0.999, rel_l2_max=5e-2)
TOLERANCES: dict[str, Tolerance] = {
    "fold": FP32,
    "onnx": FP32,
    "simplify": FP32,
    "ncnn": FP32,
    "ncnn_fp16": FP16,
}


@dataclass(frozen=True)
class Metrics:
    max_abs: float
    cos_min: float
    cos_mean: float
    rel_l2_max: float

    def within(self, tol: Tolerance) -> bool:
        return self.cos_min >= tol.cos_min and self.rel_l2_max <= tol.rel_l2_max


def compare(a: np.ndarray, ref: np.ndarray) -> Metrics:
    """Compare two (N, D) embedding batches, row by row, in float64."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    if a.shape != ref.shape:
        raise ValueError(f"shape {a.shape} vs reference {ref.shape}")
    dot = (a * ref).sum(1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(ref, axis=1)
    cos = np.where(norms > 0, dot / np.maximum(norms, 1e-30), 0.0)
    rel = np.linalg.norm(a - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-30)
    return Metrics(
        max_abs=float(np.abs(a - ref).max()),
        cos_min=float(cos.min()),
        cos_mean=float(cos.mean()),
        rel_l2_max=float(rel.max()),
    )


@dataclass
class StageResult:
    stage: str
    input_set: str
    vs_reference: Metrics
    vs_previous: Metrics
    tolerance: Tolerance
    ok: bool


@dataclass
class ParityReport:
    reference: str
    inputs: dict
    results: list[StageResult] = field(default_factory=list)
    blamed: str | None = None

    @property
    def ok(self) -> bool:
        return self.blamed is None

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "blamed_stage": self.blamed,
            "reference": self.reference,
            "inputs": self.inputs,
            "tolerances": {k: asdict(v) for k, v in TOLERANCES.items()},
            "results": [asdict(r) for r in self.results],
        }


def run_parity(
    reference: tuple[str, Runner],
    stages: list[tuple[str, Runner]],
    input_sets: dict[str, np.ndarray],
    inputs_info: dict,
) -> ParityReport:
    """Run the reference and every stage on every input set and judge each step."""
    report = ParityReport(reference=reference[0], inputs=inputs_info)
    step_breaks, drift_breaks = [], []
    for set_name, x in input_sets.items():
        ref_out = reference[1](x)
        prev_out = ref_out
        for stage, runner in stages:
            out = runner(x)
            tol = TOLERANCES[stage]
            vs_ref, vs_prev = compare(out, ref_out), compare(out, prev_out)
            ok = vs_ref.within(tol) and vs_prev.within(tol)
            report.results.append(StageResult(stage, set_name, vs_ref, vs_prev, tol, ok))
            if not vs_prev.within(tol):
                step_breaks.append(stage)
            elif not vs_ref.within(tol):
                drift_breaks.append(stage)
            # fp16 is a side branch: later stages are compared with the fp32 chain.
            if stage != "ncnn_fp16":
                prev_out = out
    order = [s for s, _ in stages]
    for broken in (step_breaks, drift_breaks):
        if broken:
            report.blamed = min(broken, key=order.index)
            break
    return report


def format_table(report: ParityReport) -> str:
    header = f"{'stage':<10} {'inputs':<7} {'max|d|':>9} {'cos min':>10} {'cos mean':>10} "
    header += f"{'rel L2':>9} {'vs prev cos':>11}  ok"
    lines = [f"parity against {report.reference}", header, "-" * len(header)]
    for r in report.results:
        m, p = r.vs_reference, r.vs_previous
        lines.append(
            f"{r.stage:<10} {r.input_set:<7} {m.max_abs:>9.2e} {m.cos_min:>10.7f} "
            f"{m.cos_mean:>10.7f} {m.rel_l2_max:>9.2e} {p.cos_min:>11.7f}  "
            f"{'yes' if r.ok else 'NO'}"
        )
    lines.append(
        "parity: all stages within tolerance"
        if report.ok
        else f"parity: FAILED, first broken stage: {report.blamed}"
    )
    return "\n".join(lines)


# --- backends -----------------------------------------------------------------


def torch_runner(model) -> Runner:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return run


def onnx_runner(path: Path, optimize: bool = False) -> Runner:
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


def load_ncnn_net(param: Path, binary: Path, fp16: bool = False, threads: int = 1):
    """An ncnn.Net on the CPU with fp16 exactly as asked, loaded, or a one-line MfnError."""
    import ncnn

    from mfn_deploy.errors import MfnError

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    # fp32 must really be fp32: ncnn enables fp16/bf16 storage by default where the CPU has it.
    net.opt.use_fp16_packed = fp16
    net.opt.use_fp16_storage = fp16
    net.opt.use_fp16_arithmetic = fp16
    net.opt.use_bf16_storage = False
    if net.load_param(str(param)) != 0 or net.load_model(str(binary)) != 0:
        raise MfnError(f"{param}: ncnn could not load the model (with {binary.name})")
    return net


def ncnn_runner(
    param: Path, binary: Path, blobs: dict, fp16: bool = False, keep_shape: bool = False
) -> Runner:
    """ncnn on one image at a time; outputs flattened to (N, D) unless ``keep_shape``."""
    import ncnn

    net = load_ncnn_net(param, binary, fp16)
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
