"""Judging parity: how far every stage's outputs are from the reference, and who is to blame.

One function compares any two stages (``compare``). Tolerances are data, one per
stage declaration (``stages.STAGES``); this module never names a stage. Each stage
is compared with the reference and with the stage before it on every input set.
The blamed stage is the first whose step from its predecessor breaks tolerance; if
every step is within tolerance but drift accumulates, it is the first that breaks
against the reference. A side branch (fp16) is judged like any stage, but the stage
after it is compared with the stage before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from mfn_deploy.errors import MfnError
from mfn_deploy.export.backends import Runner


@dataclass(frozen=True)
class Tolerance:
    cos_min: float  # lowest allowed cosine similarity of any embedding pair
    rel_l2_max: float  # highest allowed ||a - b|| / ||b|| of any embedding pair


class Judged(Protocol):
    """What parity needs to know about a stage (``stages.Stage`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def tolerance(self) -> Tolerance: ...
    @property
    def side_branch(self) -> bool: ...


@dataclass(frozen=True)
class Metrics:
    max_abs: float
    cos_min: float
    cos_mean: float
    rel_l2_max: float

    def within(self, tol: Tolerance) -> bool:
        return self.cos_min >= tol.cos_min and self.rel_l2_max <= tol.rel_l2_max


def compare(a: np.ndarray, ref: np.ndarray) -> Metrics:
    """Compare two batches of N outputs (each flattened to a vector), row by row, in float64."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    a, ref = a.reshape(len(a), -1), ref.reshape(len(ref), -1)
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
    tolerances: dict[str, Tolerance] = field(default_factory=dict)  # of the stages judged

    @property
    def ok(self) -> bool:
        return self.blamed is None

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "blamed_stage": self.blamed,
            "reference": self.reference,
            "inputs": self.inputs,
            "tolerances": {k: asdict(v) for k, v in self.tolerances.items()},
            "results": [asdict(r) for r in self.results],
        }


class ParityError(MfnError):
    def __init__(self, report: ParityReport) -> None:
        super().__init__(f"parity failed: first broken stage is {report.blamed!r}; nothing written")
        self.report = report


def run_parity(
    reference: tuple[str, Runner],
    stages: Sequence[tuple[Judged, Runner]],
    input_sets: dict[str, np.ndarray],
    inputs_info: dict,
) -> ParityReport:
    """Run the reference and every stage on every input set and judge each step."""
    report = ParityReport(reference=reference[0], inputs=inputs_info)
    report.tolerances = {stage.name: stage.tolerance for stage, _ in stages}
    step_breaks, drift_breaks = [], []
    for set_name, x in input_sets.items():
        ref_out = reference[1](x)
        prev_out = ref_out
        for stage, runner in stages:
            out = runner(x)
            tol = stage.tolerance
            vs_ref, vs_prev = compare(out, ref_out), compare(out, prev_out)
            ok = vs_ref.within(tol) and vs_prev.within(tol)
            report.results.append(StageResult(stage.name, set_name, vs_ref, vs_prev, tol, ok))
            if not vs_prev.within(tol):
                step_breaks.append(stage.name)
            elif not vs_ref.within(tol):
                drift_breaks.append(stage.name)
            if not stage.side_branch:  # later stages are compared with the main chain
                prev_out = out
    order = [stage.name for stage, _ in stages]
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
