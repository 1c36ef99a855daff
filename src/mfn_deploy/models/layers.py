"""Building blocks shared by every network of the zoo.

Every convolution is ``bias=False`` and followed by BatchNorm, so the fold stage
can merge the pair into one biased convolution before export.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ActFactory = Callable[[int], nn.Module]


def prelu(channels: int) -> nn.Module:
    return nn.PReLU(channels)


def relu(channels: int) -> nn.Module:  # noqa: ARG001 - same signature as prelu
    return nn.ReLU(inplace=True)


def relu6(channels: int) -> nn.Module:  # noqa: ARG001 - same signature as prelu
    return nn.ReLU6(inplace=True)


ACTIVATIONS: dict[str, ActFactory] = {"prelu": prelu, "relu": relu, "relu6": relu6}


class ConvBN(nn.Sequential):
    """Convolution, BatchNorm and an optional activation (None means linear)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        groups: int = 1,
        act: ActFactory | None = None,
        padding: int | None = None,
    ) -> None:
        if padding is None:
            padding = kernel // 2 if isinstance(kernel, int) else 0
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act is not None:
            layers.append(act(out_ch))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise, linear 1x1 project."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, t: int, act: ActFactory) -> None:
        super().__init__()
        hidden = in_ch * t
        layers: list[nn.Module] = []
        if t != 1:  # MobileNetV2's first block has no expansion conv
            layers.append(ConvBN(in_ch, hidden, 1, act=act))
        layers += [
            ConvBN(hidden, hidden, 3, stride, groups=hidden, act=act),
            ConvBN(hidden, out_ch, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class GDConv(ConvBN):
    """Global depthwise convolution: kernel = the whole feature map, linear."""

    def __init__(self, channels: int, feature_hw: tuple[int, int]) -> None:
        super().__init__(channels, channels, feature_hw, groups=channels, act=None, padding=0)


class Embedding(nn.Module):
    """Wraps a trunk producing (N, D, 1, 1) and returns the (N, D) embedding."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.trunk(x), 1)


def feature_size(size: tuple[int, int], strides: list[int]) -> tuple[int, int]:
    """Spatial size after a chain of 'same'-padded strided convolutions."""
    h, w = size
    for s in strides:
        h, w = -(-h // s), -(-w // s)
    return h, w
