"""MobileFaceNet (Chen et al., 2018) and the variants measured in the paper's Table 2."""

from __future__ import annotations

from mfn_deploy.models.registry import InputSpec, ModelSpec, register
from mfn_deploy.models.trunk import Row

# The paper's Table 1; the comments give each row's input at 112x112.
# fmt: off
MOBILEFACENET = (
    #   operator            t     c    n  s
    Row("conv3x3",          None, 64,  1, 2),  # 112² x 3
    Row("dwconv3x3",        None, 64,  1, 1),  # 56² x 64
    Row("bottleneck",       2,    64,  5, 2),  # 56² x 64
    Row("bottleneck",       4,    128, 1, 2),  # 28² x 64
    Row("bottleneck",       2,    128, 6, 1),  # 14² x 128
    Row("bottleneck",       4,    128, 1, 2),  # 14² x 128
    Row("bottleneck",       2,    128, 2, 1),  # 7² x 128
    Row("conv1x1",          None, 512, 1, 1),  # 7² x 128
    Row("linear_gdconv",    None, 512, 1, 1),  # 7² x 512
    Row("linear_conv1x1",   None, 128, 1, 1),  # 1² x 512
)
# fmt: on

# MobileFaceNet-M: no final linear 1x1; the embedding is GDConv's 512-d output.
MOBILEFACENET_M = MOBILEFACENET[:-1]

# MobileFaceNet-S: MobileFaceNet-M also without the 1x1 before GDConv.
MOBILEFACENET_S = (
    *MOBILEFACENET[:-3],
    Row("linear_gdconv", None, 128, 1, 1),  # 7² x 128
)

# "Expansion factor x2": t doubled in the last bottleneck group only, the reading
# of "larger expansion factor" that fits Table 2's 1.1M parameters and 27 ms (the
# model card says why).
MOBILEFACENET_X2 = (
    *MOBILEFACENET[:-4],
    Row("bottleneck", 4, 128, 2, 1),  # 7² x 128, t = 2 x 2
    *MOBILEFACENET[-3:],
)


def _variant(name, title, table, size, paper_ms, paper_params, act="prelu"):
    """Register one row of Table 2: paper_ms and paper_params as the paper prints them."""
    register(
        ModelSpec(
            name=name,
            title=title,
            table=table,
            input=InputSpec(*size),
            act=act,
            paper_ms=paper_ms,
            paper_params=paper_params,
        )
    )


_variant("mobilefacenet", "MobileFaceNet", MOBILEFACENET, (112, 112), 24, "0.99")
_variant("mobilefacenet_112x96", "MobileFaceNet (112x96)", MOBILEFACENET, (112, 96), 21, "0.99")
_variant("mobilefacenet_96x96", "MobileFaceNet (96x96)", MOBILEFACENET, (96, 96), 18, "0.99")
_variant("mobilefacenet_m", "MobileFaceNet-M", MOBILEFACENET_M, (112, 112), 24, "0.92")
_variant("mobilefacenet_s", "MobileFaceNet-S", MOBILEFACENET_S, (112, 112), 23, "0.84")
_variant(
    "mobilefacenet_relu", "MobileFaceNet (ReLU)", MOBILEFACENET, (112, 112), 23, "0.98", "relu"
)
_variant(
    "mobilefacenet_x2",
    "MobileFaceNet (expansion factor x2)",
    MOBILEFACENET_X2,
    (112, 112),
    27,
    "1.1",
)
