"""Networks registered by name, each carrying its input spec and the paper's figures.

A variant is data: a table, an input size, an activation, how it pads, and the
paper's Table 2 row (latency and parameters; None for a network the paper does not
measure, such as a pretrained one). The registry checks a variant once, when it is
registered, refuses duplicate names, and lists the valid ones when asked for an
unknown name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

import torch
from torch import nn

from mfn_deploy.contract import InputSpec
from mfn_deploy.errors import MfnError
from mfn_deploy.models.layers import ACTIVATIONS
from mfn_deploy.models.trunk import PADDINGS, Row, build_trunk, check_table, total_stride


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str  # the row label in the paper's Table 2
    table: tuple[Row, ...]  # the architecture, one row per stage
    input: InputSpec
    act: str  # a key of layers.ACTIVATIONS
    paper_ms: float | None  # Snapdragon 820, NCNN, 4 threads (Table 2); None: not in it
    paper_params: str | None  # Table 2's parameter column as printed, in millions ("0.99")
    groups: int = 1  # ShuffleNet's g; 1 for every other network
    padding: str = "symmetric"  # a key of trunk.PADDINGS

    def build(self, size: tuple[int, int]) -> nn.Sequential:
        """The trunk for an input of ``size`` (H, W); it ends in (N, D, 1, 1)."""
        return build_trunk(self.table, size, self.act, self.groups, self.padding)

    @property
    def total_stride(self) -> int:
        return total_stride(self.table)

    @property
    def paper_params_tolerance(self) -> float:
        """Half a unit of the last digit Table 2 prints (0.005M for "0.99"), in millions."""
        return 0.5 * 10.0 ** Decimal(self.paper_params).as_tuple().exponent

    def matches_paper_params(self, model: nn.Module) -> bool:
        """Whether the paper's figure, within its rounding, fits some count of ``model``.

        The paper does not say whether its counts include BatchNorm and PReLU
        parameters, so any count from the convolution weights alone up to every
        trainable tensor is a reading of it.
        """
        low, high = params_range(model)
        paper = float(self.paper_params) * 1e6
        half = self.paper_params_tolerance * 1e6
        return low < paper + half and high >= paper - half


def params_range(model: nn.Module) -> tuple[int, int]:
    """(convolution weights only, every trainable tensor) of ``model``."""
    convs = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    return convs, sum(p.numel() for p in model.parameters())


class FaceModel(nn.Module):
    """A trunk plus the data that travels with it; ``forward`` returns (N, D)."""

    def __init__(self, trunk: nn.Module, spec: ModelSpec, input_spec: InputSpec) -> None:
        super().__init__()
        self.trunk = trunk
        self.name = spec.name
        self.input_spec = input_spec
        self.paper_ms = spec.paper_ms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.trunk(x), 1)


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    if spec.act not in ACTIVATIONS:
        raise ValueError(f"model {spec.name!r}: act {spec.act!r}; valid: {', '.join(ACTIVATIONS)}")
    if spec.padding not in PADDINGS:
        raise ValueError(
            f"model {spec.name!r}: padding {spec.padding!r}; valid: {', '.join(PADDINGS)}"
        )
    try:
        check_table(spec.table)
    except ValueError as e:
        raise ValueError(f"model {spec.name!r}: {e}") from None
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MfnError(f"unknown model {name!r}; valid names: {', '.join(_REGISTRY)}") from None


def check_input_size(spec: ModelSpec, size: tuple[int, int]) -> None:
    h, w = size
    s = spec.total_stride
    if h < s or w < s or h % s or w % s:
        raise MfnError(
            f"model {spec.name!r} cannot take input {h}x{w}: height and width must be "
            f"positive multiples of its total stride {s} (e.g. 112x112, 112x96, 96x96)"
        )


def create(name: str, input_size: tuple[int, int] | None = None) -> FaceModel:
    """Build a registered network in eval mode, optionally at another input size."""
    spec = get_spec(name)
    input_spec = spec.input
    if input_size is not None and tuple(input_size) != spec.input.size:
        check_input_size(spec, input_size)
        input_spec = replace(spec.input, height=input_size[0], width=input_size[1])
    return FaceModel(spec.build(input_spec.size), spec, input_spec).eval()
