"""ShuffleNet 1x, g=3 baseline (Zhang et al., 2018), first convolution at stride 1."""

from __future__ import annotations

from mfn_deploy.models.registry import InputSpec, ModelSpec, register
from mfn_deploy.models.trunk import Row

# ShuffleNet's Table 1 (1x, g=3) with the first stride set to 1; inputs at 112x112.
# fmt: off
SHUFFLENET_G3 = (
    #   operator        t     c    n  s
    Row("conv3x3",      None, 24,  1, 1),  # 112² x 3
    Row("maxpool3x3",   None, 24,  1, 2),  # 112² x 24
    Row("shuffle_unit", None, 240, 4, 2),  # 56² x 24   (Stage 2)
    Row("shuffle_unit", None, 480, 8, 2),  # 28² x 240  (Stage 3)
    Row("shuffle_unit", None, 960, 4, 2),  # 14² x 480  (Stage 4)
    Row("avgpool",      None, 960, 1, 1),  # 7² x 960
)
# fmt: on

register(
    ModelSpec(
        name="shufflenet_g3",
        title="ShuffleNet (1x, g=3)",
        table=SHUFFLENET_G3,
        input=InputSpec(112, 112),
        act="relu",
        paper_ms=27,
        paper_params="0.83",
        groups=3,
    )
)
