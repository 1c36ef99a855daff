"""Networks registered by name, each carrying its input spec and the paper's latency.

A variant is data: a builder, an input size, and the paper's Table 2 row. The
registry refuses duplicate names and lists the valid ones when asked for an
unknown name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mfn_deploy.errors import MfnError


@dataclass(frozen=True)
class InputSpec:
    """What the network expects: an RGB image normalised as (x - mean) * scale."""

    height: int
    width: int
    channel_order: str = "RGB"
    mean: float = 127.5
    scale: float = 1 / 128

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    def to_dict(self) -> dict:
        return {
            "height": self.height,
            "width": self.width,
            "channel_order": self.channel_order,
            "mean": self.mean,
            "scale": self.scale,
        }


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str  # the row label in the paper's Table 2
    input: InputSpec
    paper_ms: float  # Snapdragon 820, NCNN, 4 threads (Table 2)
    build: Callable[[tuple[int, int]], nn.Module]  # input (H, W) -> trunk ending in (N, D, 1, 1)
    total_stride: int = 16


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
        input_spec = InputSpec(*input_size)
    return FaceModel(spec.build(input_spec.size), spec, input_spec).eval()
