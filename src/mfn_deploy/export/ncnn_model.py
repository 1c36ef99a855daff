"""An ncnn param/bin pair as data: read it, change some layers, write it back.

Only what int8 needs, read from ncnn's sources (``src/net.cpp`` parses the param,
``src/modelbin.cpp`` reads the bin): the text param (magic ``7767517``, the layer and
blob counts, then one line per layer: type, name, bottom and top counts, their blob
names, ``key=value`` pairs, array values as ``-233xx=n,v1,...``), and a bin that is
every layer's weights, in layer order, with nothing between them. A weight array
loaded with "type 0" carries a 4-byte tag (0: fp32 follows; 0x01306B47: fp16;
0x000D4B38: int8, padded to 4 bytes); biases, PReLU slopes and int8 scales are raw
fp32 without a tag. Layers other than those in ``_WEIGHTED`` are assumed to have no
weights, which the reader checks by accounting for every byte of the bin.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfn_deploy.errors import MfnError
from mfn_deploy.files import atomic_write

MAGIC = "7767517"
TAG_FP32 = 0
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38

# Layers whose weights the bin holds. Convolution-like: "type 0" weights of
# param 6 values, then a raw bias of param 0 values when param 5 is 1.
CONV_LIKE = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
_WEIGHT_SIZE_KEY = {"Convolution": "6", "ConvolutionDepthWise": "6", "InnerProduct": "2"}


@dataclass
class Layer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[str, str]  # param key (as written, e.g. "8" or "-23310") -> value text
    weight: np.ndarray | None = None  # fp32 weights of a convolution-like layer
    bias: np.ndarray | None = None
    raw: bytes = b""  # the layer's bin bytes, as read or as rewritten

    def int_param(self, key: str, default: int = 0) -> int:
        return int(self.params.get(key, default))

    def param_line(self) -> str:
        head = f"{self.type:<24} {self.name:<24} {len(self.bottoms)} {len(self.tops)}"
        values = " ".join(f"{k}={v}" for k, v in self.params.items())
        return " ".join(filter(None, [head, *self.bottoms, *self.tops, values]))


@dataclass
class NcnnModel:
    layers: list[Layer] = field(default_factory=list)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise MfnError(f"no layer named {name!r} in the model")

    def blob_count(self) -> int:
        return len({b for layer in self.layers for b in layer.tops})

    def param_text(self) -> str:
        lines = [MAGIC, f"{len(self.layers)} {self.blob_count()}"]
        return "\n".join(lines + [layer.param_line() for layer in self.layers]) + "\n"


def _parse_param(path: Path) -> list[Layer]:
    try:
        lines = path.read_text().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise MfnError(f"{path}: cannot read the ncnn param ({e})") from None
    if not lines or lines[0].strip() != MAGIC:
        raise MfnError(f"{path}: not a text ncnn param (no {MAGIC} magic)")
    layers = []
    for number, line in enumerate(lines[2:], start=3):
        tokens = line.split()
        if not tokens:
            continue
        try:
            n_bottom, n_top = int(tokens[2]), int(tokens[3])
            blobs = tokens[4 : 4 + n_bottom + n_top]
            pairs = [t.split("=", 1) for t in tokens[4 + n_bottom + n_top :]]
            params = {k: v for k, v in pairs}
        except (IndexError, ValueError):
            raise MfnError(f"{path}: line {number} is not an ncnn layer line") from None
        layers.append(Layer(tokens[0], tokens[1], blobs[:n_bottom], blobs[n_bottom:], params))
    return layers


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise MfnError(f"{self.path}: truncated while reading {what}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def floats(self, n: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * n, what), "<f4").copy()

    def tagged_fp32(self, n: int, what: str) -> np.ndarray:
        (tag,) = struct.unpack("<I", self.take(4, what))
        if tag != TAG_FP32:
            kind = {TAG_FP16: "fp16", TAG_INT8: "int8"}.get(tag, f"tag {tag:#x}")
            raise MfnError(
                f"{self.path}: {what} is stored as {kind}; quantize from the fp32 export"
            )
        return self.floats(n, what)


def read_model(param: Path, binary: Path) -> NcnnModel:
    """The layers of an fp32 ncnn model, with the weights of the layers int8 changes."""
    layers = _parse_param(param)
    try:
        reader = _Reader(binary.read_bytes(), binary)
    except OSError as e:
        raise MfnError(f"{binary}: cannot read: {e.strerror}") from None
    for layer in layers:
        start = reader.pos
        if layer.type in CONV_LIKE:
            if layer.int_param("19"):  # dynamic weights come from a blob, not the bin
                continue
            what = f"layer {layer.name} weights"
            if layer.int_param("8"):
                raise MfnError(f"{param}: layer {layer.name} is already int8")
            layer.weight = reader.tagged_fp32(layer.int_param(_WEIGHT_SIZE_KEY[layer.type]), what)
            if layer.int_param("5"):
                layer.bias = reader.floats(layer.int_param("0"), f"layer {layer.name} bias")
        elif layer.type == "PReLU":
            reader.take(4 * layer.int_param("0", 1), f"layer {layer.name} slopes")
        layer.raw = reader.data[start : reader.pos]
    if reader.pos != len(reader.data):
        raise MfnError(
            f"{binary}: {len(reader.data) - reader.pos} bytes left after the last layer; "
            "the model has a weighted layer type this reader does not know"
        )
    return NcnnModel(layers)


def write_model(model: NcnnModel, param: Path, binary: Path) -> None:
    """Write ``model``: its param text, and every layer's ``raw`` bytes in order."""
    with atomic_write(binary) as tmp:
        tmp.write_bytes(b"".join(layer.raw for layer in model.layers))
    with atomic_write(param) as tmp:
        tmp.write_text(model.param_text())
