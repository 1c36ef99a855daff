"""MobileNetV1 baseline (Howard et al., 2017), first convolution at stride 1.

The paper runs every baseline at 112x112 with stride 1 in the first convolution
so that the last feature map is 7x7; its face feature is the global average pool.
"""

from __future__ import annotations

from mfn_deploy.models.registry import InputSpec, ModelSpec, register
from mfn_deploy.models.trunk import Row

# MobileNetV1's Table 1 with the first stride set to 1; inputs at 112x112.
# A "dwsep" row is the paper's pair "Conv dw / s" + "Conv / s1".
# fmt: off
MOBILENET_V1 = (
    #   operator   t     c     n  s
    Row("conv3x3", None, 32,   1, 1),  # 112² x 3
    Row("dwsep",   None, 64,   1, 1),  # 112² x 32
    Row("dwsep",   None, 128,  1, 2),  # 112² x 64
    Row("dwsep",   None, 128,  1, 1),  # 56² x 128
    Row("dwsep",   None, 256,  1, 2),  # 56² x 128
    Row("dwsep",   None, 256,  1, 1),  # 28² x 256
    Row("dwsep",   None, 512,  1, 2),  # 28² x 256
    Row("dwsep",   None, 512,  5, 1),  # 14² x 512
    Row("dwsep",   None, 1024, 1, 2),  # 14² x 512
    Row("dwsep",   None, 1024, 1, 1),  # 7² x 1024
    Row("avgpool", None, 1024, 1, 1),  # 7² x 1024
)
# fmt: on

register(
    ModelSpec(
        name="mobilenet_v1",
        title="MobileNetV1",
        table=MOBILENET_V1,
        input=InputSpec(112, 112),
        act="relu",
        paper_ms=60,
        paper_params="3.2",
    )
)
