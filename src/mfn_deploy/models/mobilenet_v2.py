"""MobileNetV2 baselines (Sandler et al., 2018), first convolution at stride 1.

``mobilenet_v2`` ends in global average pooling; ``mobilenet_v2_gdconv`` replaces
it with a linear global depthwise convolution over the 1280 channels.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from mfn_deploy.models.layers import ACTIVATIONS, Bottleneck, ConvBN, GDConv, feature_size
from mfn_deploy.models.registry import InputSpec, ModelSpec, register


class Row(NamedTuple):
    op: str
    t: int | None
    c: int
    n: int
    s: int


# MobileNetV2's Table 2 with the first stride set to 1; inputs at 112x112.
MOBILENET_V2 = (
    Row("conv3x3", None, 32, 1, 1),  # 112² x 3
    Row("bottleneck", 1, 16, 1, 1),  # 112² x 32
    Row("bottleneck", 6, 24, 2, 2),  # 112² x 16
    Row("bottleneck", 6, 32, 3, 2),  # 56² x 24
    Row("bottleneck", 6, 64, 4, 2),  # 28² x 32
    Row("bottleneck", 6, 96, 3, 1),  # 14² x 64
    Row("bottleneck", 6, 160, 3, 2),  # 14² x 96
    Row("bottleneck", 6, 320, 1, 1),  # 7² x 160
    Row("conv1x1", None, 1280, 1, 1),  # 7² x 320
    Row("avgpool", None, 1280, 1, 1),  # 7² x 1280
)

MOBILENET_V2_GDCONV = (
    *MOBILENET_V2[:-1],
    Row("linear_gdconv", None, 1280, 1, 1),  # 7² x 1280
)


def build(table: tuple[Row, ...], size: tuple[int, int], act_name: str = "relu6") -> nn.Sequential:
    act = ACTIVATIONS[act_name]
    layers: list[nn.Module] = []
    ch, hw = 3, size
    for row in table:
        for i in range(row.n):
            stride = row.s if i == 0 else 1
            if row.op == "conv3x3":
                layers.append(ConvBN(ch, row.c, 3, stride, act=act))
            elif row.op == "bottleneck":
                layers.append(Bottleneck(ch, row.c, stride, row.t, act))
            elif row.op == "conv1x1":
                layers.append(ConvBN(ch, row.c, 1, act=act))
            elif row.op == "avgpool":
                layers.append(nn.AdaptiveAvgPool2d(1))
            elif row.op == "linear_gdconv":
                layers.append(GDConv(ch, hw))
            else:
                raise ValueError(f"unknown operator {row.op!r} in table")
            ch, hw = row.c, feature_size(hw, [stride])
    return nn.Sequential(*layers)


register(
    ModelSpec(
        name="mobilenet_v2",
        title="MobileNetV2",
        input=InputSpec(112, 112),
        paper_ms=49,
        build=lambda hw: build(MOBILENET_V2, hw),
    )
)
register(
    ModelSpec(
        name="mobilenet_v2_gdconv",
        title="MobileNetV2-GDConv",
        input=InputSpec(112, 112),
        paper_ms=50,
        build=lambda hw: build(MOBILENET_V2_GDCONV, hw),
    )
)
