"""ShuffleNet 1x, g=3 baseline (Zhang et al., 2018), first convolution at stride 1."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from mfn_deploy.models.layers import ACTIVATIONS, ActFactory, ConvBN
from mfn_deploy.models.registry import InputSpec, ModelSpec, register


class Row(NamedTuple):
    op: str
    c: int
    n: int
    s: int


# ShuffleNet's Table 1 (1x, g=3) with the first stride set to 1; inputs at 112x112.
SHUFFLENET_G3 = (
    Row("conv3x3", 24, 1, 1),  # 112² x 3
    Row("maxpool3x3", 24, 1, 2),  # 112² x 24
    Row("shuffle_unit", 240, 4, 2),  # 56² x 24
    Row("shuffle_unit", 480, 8, 2),  # 28² x 240
    Row("shuffle_unit", 960, 4, 2),  # 14² x 480
    Row("avgpool", 960, 1, 1),  # 7² x 960
)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # unflatten/flatten instead of reading x.shape keeps the module traceable by torch.fx.
        return x.unflatten(1, (self.groups, -1)).transpose(1, 2).flatten(1, 2)


class ShuffleUnit(nn.Module):
    """Group 1x1, shuffle, depthwise 3x3, group 1x1; stride 2 concatenates a pooled shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int, act: ActFactory) -> None:
        super().__init__()
        self.stride = stride
        branch_out = out_ch - in_ch if stride == 2 else out_ch
        mid = out_ch // 4
        # ShuffleNet does not group the first 1x1 conv of stage 2: 24 inputs are too few.
        first_groups = 1 if in_ch == 24 else groups
        self.branch = nn.Sequential(
            ConvBN(in_ch, mid, 1, groups=first_groups, act=act),
            ChannelShuffle(groups),
            ConvBN(mid, mid, 3, stride, groups=mid, act=None),
            ConvBN(mid, branch_out, 1, groups=groups, act=None),
        )
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self.act = act(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        if self.stride == 2:
            return self.act(torch.cat([self.shortcut(x), y], 1))
        return self.act(x + y)


def build(table: tuple[Row, ...], groups: int, act_name: str = "relu") -> nn.Sequential:
    act = ACTIVATIONS[act_name]
    layers: list[nn.Module] = []
    ch = 3
    for row in table:
        for i in range(row.n):
            stride = row.s if i == 0 else 1
            if row.op == "conv3x3":
                layers.append(ConvBN(ch, row.c, 3, stride, act=act))
            elif row.op == "maxpool3x3":
                layers.append(nn.MaxPool2d(3, stride, 1))
            elif row.op == "shuffle_unit":
                layers.append(ShuffleUnit(ch, row.c, stride, groups, act))
            elif row.op == "avgpool":
                layers.append(nn.AdaptiveAvgPool2d(1))
            else:
                raise ValueError(f"unknown operator {row.op!r} in table")
            ch = row.c
    return nn.Sequential(*layers)


register(
    ModelSpec(
        name="shufflenet_g3",
        title="ShuffleNet (1x, g=3)",
        input=InputSpec(112, 112),
        paper_ms=27,
        build=lambda _hw: build(SHUFFLENET_G3, groups=3),  # average pooling takes any size,
    )
)
