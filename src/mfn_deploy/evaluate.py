"""The LFW verification protocol over any backend: pairs.txt, 10 folds, TAR@FAR, ROC.

With several backends, decisions are also compared: every backend is judged with
the thresholds chosen on the *first* backend's folds, and the number of pairs whose
verify/reject decision flips tells whether conversion cost accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfn_deploy.errors import MfnError
from mfn_deploy.files import atomic_write
from mfn_deploy.metrics import fold_indices, roc, tar_at_far, ten_fold_accuracy

FAR_TARGETS = (1e-3, 1e-4)
FAR_FLOOR = 1e-5  # where the ROC draws FAR = 0 on its log axis
IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg")


@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool


def _image_path(root: Path, name: str, index: str, where: str) -> Path:
    try:
        idx = int(index)
    except ValueError:
        raise MfnError(f"{where}: image number {index!r} is not an integer") from None
    stem = root / name / f"{name}_{idx:04d}"
    for ext in IMAGE_EXTENSIONS:
        if stem.with_suffix(ext).is_file():
            return stem.with_suffix(ext)
    return stem.with_suffix(IMAGE_EXTENSIONS[0])  # reported as missing later, per file


def load_pairs(pairs_file: Path, root: Path) -> list[Pair]:
    """LFW's pairs.txt: a header line, then `name i j` (same) or `name1 i name2 j` lines.

    Images live at ROOT/name/name_XXXX.jpg (LFW's layout; .png also accepted).
    """
    if not pairs_file.is_file():
        raise MfnError(f"{pairs_file}: pairs file not found")
    if not root.is_dir():
        raise MfnError(f"{root}: image root directory not found")
    try:
        lines = pairs_file.read_text().splitlines()
    except UnicodeDecodeError:
        raise MfnError(f"{pairs_file}: not a pairs text file (binary data, not UTF-8)") from None
    except OSError as e:
        raise MfnError(f"{pairs_file}: cannot read: {e.strerror}") from None
    pairs = []
    for n, line in enumerate(lines[1:], start=2):
        fields = line.split()
        where = f"{pairs_file}:{n}"
        if not fields:
            continue
        if len(fields) == 3:
            name, i, j = fields
            pairs.append(
                Pair(_image_path(root, name, i, where), _image_path(root, name, j, where), True)
            )
        elif len(fields) == 4:
            n1, i, n2, j = fields
            pairs.append(
                Pair(_image_path(root, n1, i, where), _image_path(root, n2, j, where), False)
            )
        else:
            raise MfnError(f"{where}: expected 3 or 4 fields, found {len(fields)}")
    if len(pairs) < 10:
        raise MfnError(f"{pairs_file}: {len(pairs)} pairs; the 10-fold protocol needs at least 10")
    return pairs


@dataclass
class BackendResult:
    backend: str
    scores: np.ndarray  # per usable pair
    accuracy_mean: float
    accuracy_std: float
    thresholds: list[float]
    tar_at_far: dict[str, dict]
    flips_vs_first: int | None = None


@dataclass
class EvalReport:
    pairs_total: int
    pairs_used: int
    positives: int
    negatives: int
    failures: dict[str, str] = field(default_factory=dict)  # file -> problem
    backends: list[BackendResult] = field(default_factory=list)
    images: int = 0  # distinct image files the pairs name

    def to_dict(self) -> dict:
        return {
            "pairs_total": self.pairs_total,
            "pairs_used": self.pairs_used,
            "positives": self.positives,
            "negatives": self.negatives,
            "failures": self.failures,
            "backends": [
                {
                    "backend": b.backend,
                    "accuracy_mean": b.accuracy_mean,
                    "accuracy_std": b.accuracy_std,
                    "fold_thresholds": b.thresholds,
                    "tar_at_far": b.tar_at_far,
                    "decision_flips_vs_first_backend": b.flips_vs_first,
                }
                for b in self.backends
            ],
        }


def embeddings_for(
    files: list[Path], embed: Callable[[Path], np.ndarray], failures: dict[str, str]
) -> dict[Path, np.ndarray]:
    out = {}
    for f in files:
        if str(f) in failures:
            continue
        try:
            out[f] = embed(f)
        except MfnError as e:
            failures[str(f)] = str(e).removeprefix(f"{f}: ")
    return out


def evaluate(pairs: list[Pair], embedders: dict[str, Callable[[Path], np.ndarray]]) -> EvalReport:
    """Score every pair with every backend and run the protocol on the usable pairs."""
    files = sorted({p.a for p in pairs} | {p.b for p in pairs})
    failures: dict[str, str] = {}
    per_backend = {name: embeddings_for(files, fn, failures) for name, fn in embedders.items()}
    usable = [p for p in pairs if str(p.a) not in failures and str(p.b) not in failures]
    same = np.array([p.same for p in usable], bool)
    report = EvalReport(len(pairs), len(usable), int(same.sum()), int((~same).sum()), failures)
    report.images = len(files)
    if len(usable) < 10 or same.all() or not same.any():
        raise MfnError(
            f"only {len(usable)} usable pairs ({int(same.sum())} genuine): "
            "the protocol needs at least 10 with both kinds"
        )
    first_decisions = None
    first_thresholds = None
    folds = fold_indices(len(usable))
    for name, emb in per_backend.items():
        scores = np.array([float(np.dot(emb[p.a], emb[p.b])) for p in usable])
        tf = ten_fold_accuracy(scores, same)
        tars = {}
        for far in FAR_TARGETS:
            tar, thr = tar_at_far(scores, same, far)
            tars[f"{far:g}"] = {"tar": tar, "threshold": thr, "impostor_pairs": int((~same).sum())}
        result = BackendResult(name, scores, tf.mean, tf.std, [f.threshold for f in tf.folds], tars)
        if first_thresholds is None:
            first_thresholds = result.thresholds
        decisions = np.zeros(len(usable), bool)
        for fold, thr in zip(folds, first_thresholds, strict=True):
            decisions[fold] = scores[fold] >= thr
        if first_decisions is None:
            first_decisions = decisions
        else:
            result.flips_vs_first = int((decisions != first_decisions).sum())
        report.backends.append(result)
    return report


def plot_roc(report: EvalReport, pairs: list[Pair], path: Path) -> None:
    """One curve per backend over the pairs whose images all embedded; identical
    curves stay visible (each its own line style and marker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    same = np.array(
        [
            p.same
            for p in pairs
            if str(p.a) not in report.failures and str(p.b) not in report.failures
        ]
    )
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "d")]
    for i, b in enumerate(report.backends):
        far, tar, _ = roc(b.scores, same)
        line, marker = styles[i % len(styles)]
        ax.plot(np.maximum(far, FAR_FLOOR), tar, line, marker=marker, markevery=0.1,
                fillstyle="none", label=f"{b.backend} (acc {b.accuracy_mean:.3f})")  # fmt: skip
    ax.set_xscale("log")
    # A log axis has no 0: say where FAR = 0 is drawn rather than dropping those points.
    ax.set_xlabel(f"false accept rate (FAR 0 drawn at {FAR_FLOOR:g})")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"ROC, {report.pairs_used} pairs")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)


def format_report(report: EvalReport) -> str:
    lines = [
        f"pairs: {report.pairs_used} used of {report.pairs_total} "
        f"({report.positives} genuine, {report.negatives} impostor)",
        f"{'backend':<11} {'accuracy':>15} {'TAR@FAR=1e-3':>13} {'TAR@FAR=1e-4':>13} {'flips':>6}",
    ]
    for b in report.backends:
        flips = "-" if b.flips_vs_first is None else str(b.flips_vs_first)
        tar3, tar4 = b.tar_at_far["0.001"]["tar"], b.tar_at_far["0.0001"]["tar"]
        lines.append(
            f"{b.backend:<11} {b.accuracy_mean:>8.4f}+-{b.accuracy_std:.4f} "
            f"{tar3:>13.4f} {tar4:>13.4f} {flips:>6}"
        )
    unresolved = [f"{far:g}" for far in FAR_TARGETS if report.negatives * far < 1]
    if unresolved:
        lines.append(
            f"note: {report.negatives} impostor pairs cannot resolve FAR {', '.join(unresolved)}"
            " (TAR there is measured at FAR = 0)"
        )
    return "\n".join(lines)
