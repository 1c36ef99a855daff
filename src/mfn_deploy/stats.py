"""Size and cost of a network: parameters, multiply-adds, fp32 bytes.

MAdds come from torch's own FLOP counter (``torch.utils.flop_counter``), which
counts every convolution and matmul the forward pass really executes; one
multiply-add is two FLOPs. Like the paper, only those layers are counted
(BatchNorm, activations and additions are not). The network is built on torch's
``meta`` device: shapes without values, so counting is the same and costs no
arithmetic (``info`` went from seconds per network to a fraction).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from mfn_deploy.models import FaceModel, create, get_spec, names


@dataclass(frozen=True)
class ModelStats:
    name: str
    input_size: list[int]  # [H, W]
    embedding_dim: int
    params: int
    madds: int
    size_mb: float  # fp32 weights, 10^6 bytes, as the paper's "4.0 MB"
    paper_ms: float

    def to_dict(self) -> dict:
        return asdict(self)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_madds(model: FaceModel) -> tuple[int, int]:
    """(multiply-adds, embedding dim) of one forward pass on a single image."""
    x = torch.zeros(1, 3, *model.input_spec.size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x)
    return counter.get_total_flops() // 2, y.shape[1]


def model_stats(name: str) -> ModelStats:
    with torch.device("meta"):
        model = create(name)
        params = count_params(model)
        madds, dim = count_madds(model)
    return ModelStats(
        name=name,
        input_size=list(model.input_spec.size),
        embedding_dim=dim,
        params=params,
        madds=madds,
        size_mb=round(params * 4 / 1e6, 2),
        paper_ms=get_spec(name).paper_ms,
    )


def zoo_stats(each: Callable[[list[str]], Iterable[str]] = list) -> list[ModelStats]:
    """Every registered network's figures, in registry order (``each`` may wrap the
    names, e.g. in a progress bar)."""
    return [model_stats(name) for name in each(names())]
