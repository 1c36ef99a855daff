"""Building blocks shared by every network of the zoo.

Every convolution is ``bias=False`` and followed by BatchNorm, so the fold stage
can merge the pair into one biased convolution before export.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ActFactory = Callable[[int], nn.Module]
# Explicit zero padding (left, right, top, bottom), nn.ZeroPad2d's order.
Padding = tuple[int, int, int, int]


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
        padding: int | Padding | None = None,
    ) -> None:
        if padding is None:
            padding = kernel // 2 if isinstance(kernel, int) else 0
        layers: list[nn.Module] = []
        if isinstance(padding, tuple):
            if len(set(padding)) == 1:
                padding = padding[0]
            else:  # Conv2d pads symmetrically only; TensorFlow's SAME at stride 2 does not
                layers.append(nn.ZeroPad2d(padding))
                padding = 0
        layers += [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act is not None:
            layers.append(act(out_ch))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise, linear 1x1 project."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        t: int,
        act: ActFactory,
        padding: Padding | None = None,  # of the depthwise 3x3; None: 1 on every side
    ) -> None:
        super().__init__()
        hidden = in_ch * t
        layers: list[nn.Module] = []
        if t != 1:  # MobileNetV2's first block has no expansion conv
            layers.append(ConvBN(in_ch, hidden, 1, act=act))
        layers += [
            ConvBN(hidden, hidden, 3, stride, groups=hidden, act=act, padding=padding),
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


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # unflatten/flatten instead of reading x.shape keeps the module traceable by torch.fx.
        return x.unflatten(1, (self.groups, -1)).transpose(1, 2).flatten(1, 2)


class ShuffleUnit(nn.Module):
    """Group 1x1, shuffle, depthwise 3x3, group 1x1; stride 2 concatenates a pooled shortcut.

    ``group_input=False`` leaves the first 1x1 ungrouped: ShuffleNet does so in the
    first unit after the stem, whose few input channels would starve each group.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        groups: int,
        act: ActFactory,
        group_input: bool = True,
    ) -> None:
        super().__init__()
        self.stride = stride
        branch_out = out_ch - in_ch if stride == 2 else out_ch
        mid = out_ch // 4  # ShuffleNet: bottleneck width is a quarter of the unit's output
        self.branch = nn.Sequential(
            ConvBN(in_ch, mid, 1, groups=groups if group_input else 1, act=act),
            ChannelShuffle(groups),
            ConvBN(mid, mid, 3, stride, groups=mid, act=None),
            ConvBN(mid, branch_out, 1, groups=groups, act=None),
        )
        self.shortcut = nn.AvgPool2d(3, stride, 1) if stride == 2 else nn.Identity()
        self.act = act(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        if self.stride == 2:
            return self.act(torch.cat([self.shortcut(x), y], 1))
        return self.act(x + y)


def feature_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """Spatial size after a 'same'-padded convolution or pooling of this stride."""
    h, w = size
    return -(-h // stride), -(-w // stride)
