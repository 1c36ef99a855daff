"""MobileNetV2 baselines (Sandler et al., 2018), first convolution at stride 1.

``mobilenet_v2`` ends in global average pooling; ``mobilenet_v2_gdconv`` replaces
it with a linear global depthwise convolution over the 1280 channels.
"""

from __future__ import annotations

from mfn_deploy.models.registry import InputSpec, ModelSpec, register
from mfn_deploy.models.trunk import Row

# MobileNetV2's Table 2 with the first stride set to 1; inputs at 112x112.
# fmt: off
MOBILENET_V2 = (
    #   operator      t     c     n  s
    Row("conv3x3",    None, 32,   1, 1),  # 112² x 3
    Row("bottleneck", 1,    16,   1, 1),  # 112² x 32
    Row("bottleneck", 6,    24,   2, 2),  # 112² x 16
    Row("bottleneck", 6,    32,   3, 2),  # 56² x 24
    Row("bottleneck", 6,    64,   4, 2),  # 28² x 32
    Row("bottleneck", 6,    96,   3, 1),  # 14² x 64
    Row("bottleneck", 6,    160,  3, 2),  # 14² x 96
    Row("bottleneck", 6,    320,  1, 1),  # 7² x 160
    Row("conv1x1",    None, 1280, 1, 1),  # 7² x 320
    Row("avgpool",    None, 1280, 1, 1),  # 7² x 1280
)
# fmt: on

MOBILENET_V2_GDCONV = (
    *MOBILENET_V2[:-1],
    Row("linear_gdconv", None, 1280, 1, 1),  # 7² x 1280
)

register(
    ModelSpec(
        name="mobilenet_v2",
        title="MobileNetV2",
        table=MOBILENET_V2,
        input=InputSpec(112, 112),
        act="relu6",
        paper_ms=49,
        paper_params="2.1",
    )
)
register(
    ModelSpec(
        name="mobilenet_v2_gdconv",
        title="MobileNetV2-GDConv",
        table=MOBILENET_V2_GDCONV,
        input=InputSpec(112, 112),
        act="relu6",
        paper_ms=50,
        paper_params="2.1",
    )
)
