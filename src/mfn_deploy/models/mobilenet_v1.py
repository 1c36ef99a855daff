"""MobileNetV1 baseline (Howard et al., 2017), first convolution at stride 1.

The paper runs every baseline at 112x112 with stride 1 in the first convolution
so that the last feature map is 7x7; its face feature is the global average pool.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from mfn_deploy.models.layers import ACTIVATIONS, ConvBN
from mfn_deploy.models.registry import InputSpec, ModelSpec, register


class Row(NamedTuple):
    op: str
    c: int
    n: int
    s: int


# MobileNetV1's Table 1 with the first stride set to 1; inputs at 112x112.
MOBILENET_V1 = (
    Row("conv3x3", 32, 1, 1),  # 112² x 3
    Row("dwsep", 64, 1, 1),  # 112² x 32
    Row("dwsep", 128, 1, 2),  # 112² x 64
    Row("dwsep", 128, 1, 1),  # 56² x 128
    Row("dwsep", 256, 1, 2),  # 56² x 128
    Row("dwsep", 256, 1, 1),  # 28² x 256
    Row("dwsep", 512, 1, 2),  # 28² x 256
    Row("dwsep", 512, 5, 1),  # 14² x 512
    Row("dwsep", 1024, 1, 2),  # 14² x 512
    Row("dwsep", 1024, 1, 1),  # 7² x 1024
    Row("avgpool", 1024, 1, 1),  # 7² x 1024
)


def build(table: tuple[Row, ...], act_name: str = "relu") -> nn.Sequential:
    act = ACTIVATIONS[act_name]
    layers: list[nn.Module] = []
    ch = 3
    for row in table:
        for i in range(row.n):
            stride = row.s if i == 0 else 1
            if row.op == "conv3x3":
                layers.append(ConvBN(ch, row.c, 3, stride, act=act))
            elif row.op == "dwsep":  # depthwise 3x3 then pointwise 1x1
                layers.append(ConvBN(ch, ch, 3, stride, groups=ch, act=act))
                layers.append(ConvBN(ch, row.c, 1, act=act))
            elif row.op == "avgpool":
                layers.append(nn.AdaptiveAvgPool2d(1))
            else:
                raise ValueError(f"unknown operator {row.op!r} in table")
            ch = row.c
    return nn.Sequential(*layers)


register(
    ModelSpec(
        name="mobilenet_v1",
        title="MobileNetV1",
        input=InputSpec(112, 112),
        paper_ms=60,
        build=lambda _hw: build(MOBILENET_V1),  # average pooling takes any size,
    )
)
