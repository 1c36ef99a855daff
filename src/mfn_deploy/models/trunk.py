"""One row type and one builder for every network of the zoo.

A network is a table that reads like its paper's: one ``Row`` per stage, with the
paper's column names. ``build_trunk`` only loops over the table; the operators are
the vocabulary below, and an operator whose name starts with ``linear_`` has no
activation after it. How a 3x3 operator pads is a property of the whole network
(``PADDINGS``): a network trained in TensorFlow must be padded as TensorFlow pads.
"""

from __future__ import annotations

from math import ceil, prod
from typing import NamedTuple

from torch import nn

from mfn_deploy.models.layers import (
    ACTIVATIONS,
    Bottleneck,
    ConvBN,
    GDConv,
    Padding,
    ShuffleUnit,
    feature_size,
)


class Row(NamedTuple):
    op: str  # one of OPERATORS
    t: int | None  # expansion factor (bottleneck only)
    c: int  # output channels
    n: int  # repeats
    s: int  # stride of the first repeat (the others use 1)


OPERATORS = {
    "conv3x3": "3x3 convolution",
    "conv1x1": "1x1 convolution",
    "linear_conv1x1": "1x1 convolution, no activation",
    "dwconv3x3": "3x3 depthwise convolution",
    "dwsep": "MobileNetV1's depthwise separable pair: 3x3 depthwise, then 1x1",
    "bottleneck": "MobileNetV2's inverted residual with expansion factor t",
    "shuffle_unit": "ShuffleNet unit with g groups",
    "maxpool3x3": "3x3 max pooling",
    "avgpool": "global average pooling",
    "linear_gdconv": "global depthwise convolution (kernel = the feature map), no activation",
}
# Operators that keep their input's channels: their row's c must equal it.
CHANNEL_PRESERVING = {"dwconv3x3", "maxpool3x3", "avgpool", "linear_gdconv"}
GLOBAL = {"avgpool", "linear_gdconv"}  # reduce the feature map to 1x1
PADDINGS = {
    "symmetric": "k // 2 zeros on every side (PyTorch, Caffe, NCNN)",
    "tf_same": "TensorFlow's SAME: output = ceil(input / stride); an odd total puts the extra "
    "zero on the bottom and right",
}
# What a tf_same network may use: 3x3 windows padded as SAME, 1x1 and global ones need no
# padding. (Pooling and ShuffleNet units have no TensorFlow-trained network here.)
TF_SAME_OPERATORS = {"conv3x3", "conv1x1", "linear_conv1x1", "dwconv3x3", "dwsep", "bottleneck"}
TF_SAME_OPERATORS |= GLOBAL


def check_table(table: tuple[Row, ...]) -> None:
    """Refuse unknown operators and misplaced expansion factors, naming the row."""
    for i, row in enumerate(table):
        if row.op not in OPERATORS:
            raise ValueError(f"row {i}: unknown operator {row.op!r}; valid: {', '.join(OPERATORS)}")
        if (row.t is not None) != (row.op == "bottleneck"):
            raise ValueError(f"row {i}: t is the expansion factor of a bottleneck, not of {row.op}")
        if row.n < 1 or row.s < 1:
            raise ValueError(f"row {i}: n and s must be positive, got n={row.n}, s={row.s}")


def tf_same_padding(
    size: tuple[int, int], kernel: int | tuple[int, int], stride: int | tuple[int, int]
) -> Padding:
    """TensorFlow's SAME padding of a window on ``size`` (H, W): (left, right, top, bottom)."""
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    stride = (stride, stride) if isinstance(stride, int) else stride
    pads = []
    for n, k, s in zip(size, kernel, stride, strict=True):
        total = max((ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return left, right, top, bottom


def total_stride(table: tuple[Row, ...]) -> int:
    """How much the table shrinks its input (repeats after the first use stride 1)."""
    return prod(row.s for row in table)


def build_trunk(
    table: tuple[Row, ...],
    size: tuple[int, int],
    act_name: str,
    groups: int = 1,
    padding: str = "symmetric",
) -> nn.Sequential:
    """The layers of ``table`` for an input of ``size`` (H, W), as one flat Sequential.

    ``groups`` is ShuffleNet's g; ``padding`` a key of ``PADDINGS``. The GDConv
    kernel is the feature map the table leaves at that point, so it follows the
    input size.
    """
    act = ACTIVATIONS[act_name]
    layers: list[nn.Module] = []
    ch, hw = 3, size  # RGB
    for i, row in enumerate(table):
        if row.op in CHANNEL_PRESERVING and row.c != ch:
            raise ValueError(f"row {i}: {row.op} keeps its {ch} input channels, not c={row.c}")
        if padding == "tf_same" and row.op not in TF_SAME_OPERATORS:
            raise ValueError(f"row {i}: {row.op} has no tf_same padding")
        for repeat in range(row.n):
            stride = row.s if repeat == 0 else 1
            # None: ConvBN's symmetric k // 2; stride-1 3x3 SAME is the same (1, 1, 1, 1).
            pad = tf_same_padding(hw, 3, stride) if padding == "tf_same" else None
            if row.op == "conv3x3":
                layers.append(ConvBN(ch, row.c, 3, stride, act=act, padding=pad))
            elif row.op == "conv1x1":
                layers.append(ConvBN(ch, row.c, 1, stride, act=act))
            elif row.op == "linear_conv1x1":
                layers.append(ConvBN(ch, row.c, 1, stride, act=None))
            elif row.op == "dwconv3x3":
                layers.append(ConvBN(ch, ch, 3, stride, groups=ch, act=act, padding=pad))
            elif row.op == "dwsep":
                layers.append(ConvBN(ch, ch, 3, stride, groups=ch, act=act, padding=pad))
                layers.append(ConvBN(ch, row.c, 1, act=act))
            elif row.op == "bottleneck":
                layers.append(Bottleneck(ch, row.c, stride, row.t, act, padding=pad))
            elif row.op == "shuffle_unit":
                first = not any(isinstance(m, ShuffleUnit) for m in layers)
                layers.append(ShuffleUnit(ch, row.c, stride, groups, act, group_input=not first))
            elif row.op == "maxpool3x3":
                layers.append(nn.MaxPool2d(3, stride, 1))
            elif row.op == "avgpool":
                layers.append(nn.AdaptiveAvgPool2d(1))
            elif row.op == "linear_gdconv":
                layers.append(GDConv(ch, hw))
            else:
                raise ValueError(f"row {i}: unknown operator {row.op!r}")
            ch = row.c
            hw = (1, 1) if row.op in GLOBAL else feature_size(hw, stride)
    return nn.Sequential(*layers)
