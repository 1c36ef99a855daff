"""Optimizer parameter groups: the paper's two weight decays.

MobileFaceNet (Sec. 4.1) uses weight decay 4e-5 everywhere "except the weight
decay parameter of the last layers after the global operator (GDConv or
GAPool) being 4e-4". The split is found from the model itself, not from layer
names: the global operator is the last GDConv or AdaptiveAvgPool2d at the top
level of ``model.trunk``; every trunk layer after it (for MobileFaceNet the
linear 1x1 convolution and its BatchNorm) is a "last layer". The global
operator itself is not after itself and keeps 4e-5. The ArcFace class centres
also come after the global operator, so they get 4e-4 too.
"""

from __future__ import annotations

from torch import nn

from mfn_deploy.models import FaceModel
from mfn_deploy.models.layers import GDConv
from mfn_deploy.train.config import LAST_LAYERS_WEIGHT_DECAY, WEIGHT_DECAY

GLOBAL_OPERATORS = (GDConv, nn.AdaptiveAvgPool2d)


def global_operator_index(model: FaceModel) -> int:
    """Position in ``model.trunk`` of the layer that reduces the feature map to 1x1."""
    found = [i for i, m in enumerate(model.trunk) if isinstance(m, GLOBAL_OPERATORS)]
    if not found:
        raise ValueError(f"model {model.name!r} has no GDConv or global pooling in its trunk")
    return found[-1]


def parameter_groups(
    model: FaceModel,
    head: nn.Module,
    weight_decay: float = WEIGHT_DECAY,
    last_layers_weight_decay: float = LAST_LAYERS_WEIGHT_DECAY,
) -> list[dict]:
    """Two SGD groups, each named so logs and tests can tell them apart."""
    cut = global_operator_index(model)
    last = [p for m in list(model.trunk)[cut + 1 :] for p in m.parameters()]
    last_ids = {id(p) for p in last}
    body = [p for p in model.parameters() if id(p) not in last_ids]
    return [
        {"name": "body", "params": body, "weight_decay": weight_decay},
        {
            "name": "after_global_operator",
            "params": last + list(head.parameters()),
            "weight_decay": last_layers_weight_decay,
        },
    ]
