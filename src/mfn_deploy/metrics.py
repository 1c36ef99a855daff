"""Verification metrics: the LFW 10-fold protocol, ROC, and TAR at fixed FAR.

Scores are similarities (higher means "same person"); ``same`` marks genuine pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FoldResult:
    threshold: float  # chosen on the other nine folds
    accuracy: float  # on this fold


@dataclass(frozen=True)
class TenFold:
    mean: float
    std: float
    folds: list[FoldResult]

    def to_dict(self) -> dict:
        return {
            "accuracy_mean": self.mean,
            "accuracy_std": self.std,
            "folds": [{"threshold": f.threshold, "accuracy": f.accuracy} for f in self.folds],
        }


def _accuracy(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(np.mean((scores >= threshold) == same))


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest accuracy; midpoints between sorted scores."""
    s = np.unique(scores)
    candidates = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    acc = [_accuracy(scores, same, t) for t in candidates]
    return float(candidates[int(np.argmax(acc))])


def fold_indices(n: int, n_folds: int = 10) -> list[np.ndarray]:
    """Contiguous folds, as LFW's pairs.txt lists its ten sets one after another."""
    if n < n_folds:
        raise ValueError(f"{n} pairs cannot make {n_folds} folds")
    return np.array_split(np.arange(n), n_folds)


def ten_fold_accuracy(scores: np.ndarray, same: np.ndarray, n_folds: int = 10) -> TenFold:
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    folds = []
    for test in fold_indices(len(scores), n_folds):
        train = np.setdiff1d(np.arange(len(scores)), test)
        t = best_threshold(scores[train], same[train])
        folds.append(FoldResult(t, _accuracy(scores[test], same[test], t)))
    accs = np.array([f.accuracy for f in folds])
    return TenFold(float(accs.mean()), float(accs.std()), folds)


def roc(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FAR, TAR, threshold) for every distinct threshold, from strict to lenient."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp, fp = np.cumsum(y)[distinct], np.cumsum(~y)[distinct]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    far = np.r_[0.0, fp / n_neg]
    tar = np.r_[0.0, tp / n_pos]
    thr = np.r_[np.inf, s[distinct]]
    return far, tar, thr


def tar_at_far(scores: np.ndarray, same: np.ndarray, far_target: float) -> tuple[float, float]:
    """(TAR, threshold) at the most lenient threshold whose FAR <= far_target.

    With fewer than 1/far_target impostor pairs, only FAR = 0 qualifies; callers
    should report how many impostor pairs backed the figure.
    """
    far, tar, thr = roc(scores, same)
    ok = np.nonzero(far <= far_target)[0]
    i = ok[-1]
    return float(tar[i]), float(thr[i])
