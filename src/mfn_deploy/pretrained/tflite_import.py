"""A TFLite MobileFaceNet-class graph -> the zoo network it is, with its weights.

The graph is read as a chain of layers (convolutions, PReLUs, residual additions)
and compared, layer by layer, with the layers the zoo table builds: kernel, stride,
padding as TFLite computes it, channels, which convolutions an activation follows,
and where every residual addition takes its shortcut from. The first difference is
one line naming the op. Only then are the weights copied, in order:

- CONV_2D weights are [O, H, W, I] (TensorFlow's NHWC world), torch's [O, I, H, W];
  DEPTHWISE_CONV_2D weights are [1, H, W, C], torch's [C, 1, H, W];
- BatchNorm was folded into the convolutions' biases, so each BatchNorm of the zoo
  network becomes the identity plus that bias (the fold stage folds it back);
- PReLU is spelled relu(x) + c * (x - |x|): for x < 0 that is 2c * x, so the slope
  is 2c (exact in floating point).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import zip_longest

import numpy as np
import torch
from torch import nn

from mfn_deploy.errors import MfnError
from mfn_deploy.models import FaceModel, create
from mfn_deploy.models.layers import Bottleneck, ConvBN, Padding
from mfn_deploy.models.trunk import tf_same_padding
from mfn_deploy.pretrained.tflite_graph import Graph, Op

PRELU_OPS = ("RELU", "ABS", "SUB", "MUL", "ADD")
# A layer as both sides describe it, e.g. ("conv", "depthwise", 64, 64, 3, 3, 2, (0, 1, 0, 1)).
Signature = tuple


@dataclass
class GraphLayer:
    op: Op  # the first op of the layer
    signature: Signature
    weight: np.ndarray | None = None  # torch layout
    bias: np.ndarray | None = None


def _const(graph: Graph, op: Op, index: int, what: str) -> np.ndarray:
    t = graph.tensors[index] if index >= 0 else None
    if t is None or t.data is None:
        raise graph.fail(op, f"its {what} is not a constant")
    return t.data


def _conv(graph: Graph, op: Op) -> GraphLayer:
    x = graph.tensors[op.inputs[0]]
    weight = _const(graph, op, op.inputs[1], "weight")
    if len(x.shape) != 4 or weight.ndim != 4:
        raise graph.fail(op, f"input {x.shape} and weight {weight.shape} are not 4-D NHWC")
    kh, kw = weight.shape[1:3]
    if op.kind == "CONV_2D":
        kind, c_in, c_out = "full", weight.shape[3], weight.shape[0]
        torch_weight = weight.transpose(0, 3, 1, 2)  # [O, H, W, I] -> [O, I, H, W]
    else:
        kind, c_in, c_out = "depthwise", x.shape[3], weight.shape[3]
        torch_weight = weight[0].transpose(2, 0, 1)[:, None]  # [1, H, W, C] -> [C, 1, H, W]
    if x.shape[3] != c_in:
        raise graph.fail(op, f"input has {x.shape[3]} channels, the weight {c_in}")
    stride = op.options["stride"]
    if op.options["padding"] == "SAME":
        padding = tf_same_padding(x.shape[1:3], (kh, kw), stride)
    elif op.options["padding"] == "VALID":
        padding = (0, 0, 0, 0)
    else:
        raise graph.fail(op, f"padding {op.options['padding']} is not supported")
    has_bias = len(op.inputs) > 2 and op.inputs[2] >= 0
    bias = _const(graph, op, op.inputs[2], "bias") if has_bias else np.zeros(c_out, np.float32)
    if bias.shape != (c_out,):
        raise graph.fail(op, f"bias shape {bias.shape}, expected ({c_out},)")
    signature = ("conv", kind, int(c_in), int(c_out), int(kh), int(kw), stride, padding)
    return GraphLayer(op, signature, np.ascontiguousarray(torch_weight), bias)


def _prelu(graph: Graph, ops: list[Op], x: int) -> tuple[GraphLayer, int]:
    """The five ops relu(x) + c * (x - |x|) as one PReLU layer, and its output tensor."""
    first = ops[0]
    by_kind = {op.kind: op for op in ops}
    if sorted(by_kind) != sorted(PRELU_OPS) or len(ops) != len(PRELU_OPS):
        raise graph.fail(first, f"not the PReLU pattern ({', '.join(PRELU_OPS)})")
    relu, absolute, sub, mul, add = (by_kind[k] for k in PRELU_OPS)
    (r,), (a,), (d,), (m,) = relu.outputs, absolute.outputs, sub.outputs, mul.outputs
    constants = [i for i in mul.inputs if graph.tensors[i].data is not None]
    wired = (
        relu.inputs == [x]
        and absolute.inputs == [x]
        and sub.inputs == [x, a]
        and len(constants) == 1
        and sorted(mul.inputs) == sorted([constants[0], d])
        and sorted(add.inputs) == sorted([r, m])
    )
    if not wired:
        raise graph.fail(first, "its ops are not wired as relu(x) + c * (x - |x|)")
    channels = graph.tensors[x].shape[-1]
    half_slope = graph.tensors[constants[0]].data.reshape(-1)
    if half_slope.size not in (1, channels):
        raise graph.fail(mul, f"slope has {half_slope.size} values for {channels} channels")
    slope = np.broadcast_to(2 * half_slope, (channels,)).astype(np.float32)
    return GraphLayer(first, ("prelu", int(channels)), slope), add.outputs[0]


def graph_layers(graph: Graph) -> list[GraphLayer]:
    """The graph as a chain of layers; a residual ADD names the layer its shortcut
    comes from (-1: the graph's input)."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise MfnError(
            f"{graph.path}: {len(graph.inputs)} inputs and {len(graph.outputs)} "
            "outputs; a face model has one of each"
        )
    current = graph.inputs[0]
    producer = {current: -1}
    layers: list[GraphLayer] = []
    ops, i = graph.ops, 0
    while i < len(ops):
        op = ops[i]
        if op.kind in ("RELU", "ABS"):
            layer, out = _prelu(graph, ops[i : i + len(PRELU_OPS)], current)
            i += len(PRELU_OPS)
        elif op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            if op.inputs[0] != current:
                raise graph.fail(op, "does not read the previous layer's output")
            layer, out = _conv(graph, op), op.outputs[0]
            i += 1
        elif op.kind == "ADD" and current in op.inputs and len(op.inputs) == 2:
            (skip,) = [t for t in op.inputs if t != current] or [current]
            if skip not in producer:
                raise graph.fail(op, "adds a tensor no earlier layer produced")
            layer, out = GraphLayer(op, ("add", producer[skip])), op.outputs[0]
            i += 1
        elif op.kind == "RESHAPE" and op.inputs[0] == current:
            shape, out_shape = graph.tensors[current].shape, graph.tensors[op.outputs[0]].shape
            if out_shape != (shape[0], int(np.prod(shape[1:]))):
                raise graph.fail(op, f"reshapes {shape} to {out_shape}, not to (N, D)")
            current = op.outputs[0]  # the flatten FaceModel.forward does: no layer
            i += 1
            continue
        else:
            raise graph.fail(op, "not expected here in a chain of convolutions and PReLUs")
        layers.append(layer)
        current = out
        producer[out] = len(layers) - 1
    if current != graph.outputs[0]:
        raise MfnError(f"{graph.path}: the chain of layers does not end at the graph's output")
    return layers


def _torch_padding(module: ConvBN, conv: nn.Conv2d) -> Padding:
    pad = next((m for m in module if isinstance(m, nn.ZeroPad2d)), None)
    if pad is not None:
        return tuple(pad.padding)
    ph, pw = conv.padding
    return pw, pw, ph, ph


def expected_layers(model: FaceModel) -> list[tuple[Signature, nn.Module | None]]:
    """The zoo network's layers in the graph's vocabulary, each with the module that
    takes its weights (None for an addition)."""
    layers: list[tuple[Signature, nn.Module | None]] = []

    def conv_bn(module: ConvBN) -> None:
        conv = next(m for m in module if isinstance(m, nn.Conv2d))
        depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
        if conv.groups > 1 and not depthwise:
            raise MfnError(f"{model.name}: group convolutions have no TFLite counterpart here")
        kh, kw = conv.kernel_size
        kind = "depthwise" if depthwise else "full"
        padding = _torch_padding(module, conv)
        signature = (
            "conv",
            kind,
            conv.in_channels,
            conv.out_channels,
            kh,
            kw,
            conv.stride,
            padding,
        )
        layers.append((signature, module))
        act = module[-1]
        if isinstance(act, nn.PReLU):
            layers.append((("prelu", conv.out_channels), act))
        elif not isinstance(act, nn.BatchNorm2d):
            raise MfnError(f"{model.name}: {type(act).__name__} has no TFLite pattern here")

    for layer in model.trunk:
        if isinstance(layer, Bottleneck):
            start = len(layers) - 1
            for module in layer.block:
                conv_bn(module)
            if layer.residual:
                layers.append((("add", start), None))
        elif isinstance(layer, ConvBN):
            conv_bn(layer)
        else:
            raise MfnError(f"{model.name}: {type(layer).__name__} has no TFLite counterpart here")
    return layers


def describe(signature: Signature) -> str:
    if signature[0] == "conv":
        _, kind, c_in, c_out, kh, kw, stride, padding = signature
        return (
            f"{kind} {kh}x{kw} conv {c_in}->{c_out}, stride {stride[0]}x{stride[1]}, "
            f"padding (l, r, t, b) {padding}"
        )
    if signature[0] == "prelu":
        return f"a PReLU over {signature[1]} channels"
    return f"a residual addition from layer {signature[1]}"


def _normalise(signature: Signature) -> Signature:
    if signature[0] == "conv":  # strides and paddings as plain int tuples on both sides
        *head, stride, padding = signature
        return (*head, tuple(map(int, stride)), tuple(map(int, padding)))
    return signature


def match(graph: Graph, model: FaceModel) -> list[tuple[GraphLayer, nn.Module | None]]:
    """Pair every graph layer with its zoo layer; the first difference is one line."""
    x = graph.tensors[graph.inputs[0]]
    h, w = model.input_spec.size
    if len(x.shape) != 4 or tuple(x.shape[1:]) != (h, w, 3):
        raise MfnError(
            f"{graph.path}: input {x.name!r} has shape {list(x.shape)}; "
            f"{model.name} takes [N, {h}, {w}, 3]"
        )
    found = graph_layers(graph)
    pairs = []
    for n, (g, e) in enumerate(zip_longest(found, expected_layers(model))):
        if g is None:
            raise MfnError(
                f"{graph.path}: the graph ends after {len(found)} layers; {model.name} "
                f"continues with {describe(e[0])} (layer {n})"
            )
        if e is None:
            raise graph.fail(g.op, f"{describe(g.signature)} lies beyond the end of {model.name}")
        if _normalise(g.signature) != _normalise(e[0]):
            raise graph.fail(
                g.op,
                f"the graph has {describe(g.signature)}; {model.name} has "
                f"{describe(e[0])} (layer {n})",
            )
        pairs.append((g, e[1]))
    return pairs


@torch.no_grad()
def to_torch(graph: Graph, model_name: str) -> FaceModel:
    """The zoo network ``model_name`` holding the graph's weights, in eval mode."""
    model = create(model_name)
    for g, module in match(graph, model):
        if g.signature[0] == "conv":
            conv = next(m for m in module if isinstance(m, nn.Conv2d))
            bn = next(m for m in module if isinstance(m, nn.BatchNorm2d))
            conv.weight.copy_(torch.from_numpy(g.weight))
            # Identity BatchNorm carrying the folded bias: (x - 0) / sqrt(1 - eps + eps) + b.
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(g.bias))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        elif g.signature[0] == "prelu":
            module.weight.copy_(torch.from_numpy(g.weight))
    return model.eval()
