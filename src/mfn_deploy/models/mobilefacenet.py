"""MobileFaceNet (Chen et al., 2018) and the variants measured in the paper's Table 2."""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from mfn_deploy.models.layers import ACTIVATIONS, Bottleneck, ConvBN, GDConv, feature_size
from mfn_deploy.models.registry import InputSpec, ModelSpec, register


class Row(NamedTuple):
    op: str
    t: int | None  # expansion factor of a bottleneck
    c: int  # output channels
    n: int  # repeats
    s: int  # stride of the first repeat


# The paper's Table 1; the comments give each row's input at 112x112.
MOBILEFACENET = (
    Row("conv3x3", None, 64, 1, 2),  # 112² x 3
    Row("dwconv3x3", None, 64, 1, 1),  # 56² x 64
    Row("bottleneck", 2, 64, 5, 2),  # 56² x 64
    Row("bottleneck", 4, 128, 1, 2),  # 28² x 64
    Row("bottleneck", 2, 128, 6, 1),  # 14² x 128
    Row("bottleneck", 4, 128, 1, 2),  # 14² x 128
    Row("bottleneck", 2, 128, 2, 1),  # 7² x 128
    Row("conv1x1", None, 512, 1, 1),  # 7² x 128
    Row("linear_gdconv", None, 512, 1, 1),  # 7² x 512
    Row("linear_conv1x1", None, 128, 1, 1),  # 1² x 512
)


def without(table: tuple[Row, ...], *ops: str) -> tuple[Row, ...]:
    return tuple(r for r in table if r.op not in ops)


def expanded(table: tuple[Row, ...], factor: int) -> tuple[Row, ...]:
    return tuple(r._replace(t=r.t * factor) if r.t else r for r in table)


def build(table: tuple[Row, ...], size: tuple[int, int], act_name: str) -> nn.Sequential:
    act = ACTIVATIONS[act_name]
    layers: list[nn.Module] = []
    ch, hw = 3, size
    for row in table:
        for i in range(row.n):
            stride = row.s if i == 0 else 1
            if row.op == "conv3x3":
                layers.append(ConvBN(ch, row.c, 3, stride, act=act))
            elif row.op == "dwconv3x3":
                layers.append(ConvBN(ch, row.c, 3, stride, groups=ch, act=act))
            elif row.op == "bottleneck":
                layers.append(Bottleneck(ch, row.c, stride, row.t, act))
            elif row.op == "conv1x1":
                layers.append(ConvBN(ch, row.c, 1, act=act))
            elif row.op == "linear_gdconv":
                layers.append(GDConv(ch, hw))
            elif row.op == "linear_conv1x1":
                layers.append(ConvBN(ch, row.c, 1, act=None))
            else:
                raise ValueError(f"unknown operator {row.op!r} in table")
            ch, hw = row.c, feature_size(hw, [stride])
    return nn.Sequential(*layers)


def _variant(name, title, table, size, ms, act="prelu"):
    register(
        ModelSpec(
            name=name,
            title=title,
            input=InputSpec(*size),
            paper_ms=ms,
            build=lambda hw: build(table, hw, act),
        )
    )


_variant("mobilefacenet", "MobileFaceNet", MOBILEFACENET, (112, 112), 24)
_variant("mobilefacenet_112x96", "MobileFaceNet (112x96)", MOBILEFACENET, (112, 96), 21)
_variant("mobilefacenet_96x96", "MobileFaceNet (96x96)", MOBILEFACENET, (96, 96), 18)
_variant(
    "mobilefacenet_m",
    "MobileFaceNet-M",
    without(MOBILEFACENET, "linear_conv1x1"),
    (112, 112),
    24,
)
_variant(
    "mobilefacenet_s",
    "MobileFaceNet-S",
    without(MOBILEFACENET, "linear_conv1x1", "conv1x1"),
    (112, 112),
    23,
)
_variant("mobilefacenet_relu", "MobileFaceNet (ReLU)", MOBILEFACENET, (112, 112), 23, act="relu")
_variant(
    "mobilefacenet_x2",
    "MobileFaceNet (expansion factor x2)",
    expanded(MOBILEFACENET, 2),
    (112, 112),
    27,
)
