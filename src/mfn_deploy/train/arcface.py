"""The ArcFace head (Deng et al., 2019): additive angular margin on a cosine classifier.

For an embedding x and class centres W (both L2-normalised), the logit of class j
is s * cos(theta_j), except for the true class y, which gets s * cos(theta_y + m).
The margin makes the network pull each face at least m radians closer to its
own centre than a plain softmax would need.

cos(theta + m) stops decreasing once theta + m passes pi: beyond that point a
*worse* angle would earn a *better* logit and training can run backwards. For
theta > pi - m the target logit therefore switches to the CosFace-style
cos(theta) - m * sin(m), which keeps decreasing with theta (the same fallback
InsightFace uses). sin(theta) = sqrt(1 - cos^2) is computed from a floored
1 - cos^2, so its derivative stays finite where cos reaches +-1 (rounding can
even push it past): torch.where differentiates both branches, and an infinite
derivative in the unused one would still turn the gradient into NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mfn_deploy.train.config import ARCFACE_MARGIN, ARCFACE_SCALE

# Floor of sin^2: bounds d sin / d cos by 1 / sqrt(floor) = 1e4 while changing
# the target cosine by at most sqrt(floor) * sin(m) < 5e-5, at theta = 0 only.
SIN2_FLOOR = 1e-8
# Class centres start small and random, as in every ArcFace implementation;
# with normalisation only their directions matter.
INIT_STD = 0.01
IGNORE = -1  # label of a sample that must not count (an unreadable image)


def margin_cosine(cos: torch.Tensor, margin: float) -> torch.Tensor:
    """cos(theta + m) where theta + m <= pi, else cos(theta) - m sin(m): monotone in theta."""
    sin = torch.sqrt((1 - cos * cos).clamp(min=SIN2_FLOOR))
    shifted = cos * math.cos(margin) - sin * math.sin(margin)
    # theta <= pi - m  <=>  cos(theta) >= cos(pi - m)
    return torch.where(cos >= math.cos(math.pi - margin), shifted, cos - margin * math.sin(margin))


class ArcFaceHead(nn.Module):
    """Class centres plus the margin; returns (logits with margin, plain cosines)."""

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        scale: float = ARCFACE_SCALE,
        margin: float = ARCFACE_MARGIN,
    ) -> None:
        super().__init__()
        self.scale, self.margin = scale, margin
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim) * INIT_STD)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cos = F.linear(F.normalize(embeddings), F.normalize(self.weight))
        valid = labels != IGNORE
        rows = torch.nonzero(valid).squeeze(1)
        target = labels[rows]
        logits = cos.clone()
        logits[rows, target] = margin_cosine(cos[rows, target], self.margin)
        return logits * self.scale, cos.detach()

    def extra_repr(self) -> str:
        classes, dim = self.weight.shape
        return f"dim={dim}, classes={classes}, s={self.scale}, m={self.margin}"
