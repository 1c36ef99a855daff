"""Stage 1: fold every BatchNorm into the convolution or linear layer before it.

Uses torch's own FX fusion pass (Conv+BN and Linear+BatchNorm1d), on a copy, in
eval mode; PReLU and everything else stays. The report says how many BatchNorms
were folded and which ones could not be (a BN that follows no conv/linear).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from mfn_deploy.errors import MfnError
from mfn_deploy.models import create

_BN = nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d


@dataclass(frozen=True)
class FoldReport:
    folded: int
    remaining: list[str]  # qualified names of BatchNorms left in the graph

    def to_dict(self) -> dict:
        return {"folded": self.folded, "remaining": self.remaining}


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, FoldReport]:
    before = sum(isinstance(m, _BN) for m in model.modules())
    try:
        folded = fuse(model.eval(), inplace=False)
    except Exception as e:  # FX tracing fails on data-dependent Python control flow
        raise MfnError(
            f"cannot fold BatchNorm: the model is not traceable by torch.fx ({e})"
        ) from None
    remaining = [name for name, m in folded.named_modules() if isinstance(m, _BN)]
    return folded.eval(), FoldReport(folded=before - len(remaining), remaining=remaining)


def save_folded(model: nn.Module, path) -> None:
    torch.save(model.state_dict(), path)


def load_folded(model_name: str, size: tuple[int, int], path) -> nn.Module:
    """The folded graph ``save_folded`` wrote: rebuilt from the registry, then loaded."""
    folded, _ = fold_batchnorm(create(model_name, size))
    folded.load_state_dict(torch.load(path, weights_only=True))
    return folded.eval()
