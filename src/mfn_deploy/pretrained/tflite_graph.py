"""A TFLite flatbuffer read into plain data: tensors, constant buffers and operators.

The ``tflite`` package is the schema (generated flatbuffer accessors); this module
turns one float32 subgraph into ``Graph`` and refuses, on one line naming the op
and its index, anything the importer cannot rebuild exactly: an operator outside
``SUPPORTED``, a tensor that is not float32 or carries quantization parameters,
a fused activation, a dilation, a depth multiplier. Nothing here runs the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

from mfn_deploy.errors import MfnError

# What a MobileFaceNet-class graph is made of (PReLU is spelled RELU, ABS, SUB, MUL, ADD).
SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "RELU", "ABS", "SUB", "MUL", "RESHAPE")
# TensorType values of the schema, by name, for messages.
TENSOR_TYPES = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
PADDING_NAMES = {tflite.Padding.SAME: "SAME", tflite.Padding.VALID: "VALID"}
_FLOAT32 = tflite.TensorType.FLOAT32
_IDENTIFIER = b"TFL3"  # the schema's file_identifier, bytes 4-8 of every model


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # a TensorType name, e.g. FLOAT32
    quantized: bool
    data: np.ndarray | None  # constant value (float32, shaped), None for activations


@dataclass
class Op:
    index: int
    kind: str  # BuiltinOperator name, e.g. CONV_2D (CUSTOM:name for custom ops)
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    path: Path
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]

    def fail(self, op: Op, why: str) -> MfnError:
        return MfnError(f"{self.path}: op {op.index} {op.kind}: {why}")


def _op_kind(model: tflite.Model, index: int) -> str:
    code = model.OperatorCodes(index)
    # Schema 3a moved codes above 127 to BuiltinCode; older files fill only the deprecated one.
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == tflite.BuiltinOperator.CUSTOM:
        return "CUSTOM:" + (code.CustomCode() or b"?").decode(errors="replace")
    return BUILTIN_OPCODE2NAME.get(builtin, f"BUILTIN_{builtin}")


def _options(op: tflite.Operator, kind: str) -> dict:
    """The options the importer needs, as plain values."""
    table = op.BuiltinOptions()
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        o = tflite.Conv2DOptions() if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions()
        o.Init(table.Bytes, table.Pos)
        d = {
            "padding": PADDING_NAMES.get(o.Padding(), str(o.Padding())),
            "stride": (o.StrideH(), o.StrideW()),
            "dilation": (o.DilationHFactor(), o.DilationWFactor()),
            "activation": o.FusedActivationFunction(),
        }
        if kind == "DEPTHWISE_CONV_2D":
            d["depth_multiplier"] = o.DepthMultiplier()
        return d
    if kind in ("ADD", "SUB", "MUL") and table is not None:
        o = {"ADD": tflite.AddOptions, "SUB": tflite.SubOptions, "MUL": tflite.MulOptions}[kind]()
        o.Init(table.Bytes, table.Pos)
        return {"activation": o.FusedActivationFunction()}
    return {}


def _constant(model: tflite.Model, raw: bytes, t: tflite.Tensor) -> np.ndarray | None:
    buffer = model.Buffers(t.Buffer())
    if buffer is None:
        return None
    if buffer.Offset() > 1:  # models over 2 GB keep their data after the flatbuffer
        data = raw[buffer.Offset() : buffer.Offset() + buffer.Size()]
    elif buffer.DataLength():
        data = buffer.DataAsNumpy().tobytes()
    else:
        return None
    if t.Type() != _FLOAT32:
        return None  # checked, and refused, per op
    return np.frombuffer(data, np.float32).reshape(tuple(t.ShapeAsNumpy())).copy()


def _read(path: Path, raw: bytes) -> Graph:
    model = tflite.Model.GetRootAsModel(raw, 0)
    if model.SubgraphsLength() != 1:
        raise MfnError(f"{path}: {model.SubgraphsLength()} subgraphs; only one is supported")
    sg = model.Subgraphs(0)
    tensors = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        q = t.Quantization()
        quantized = q is not None and (q.ScaleLength() > 0 or q.ZeroPointLength() > 0)
        tensors.append(
            Tensor(
                name=t.Name().decode(errors="replace"),
                shape=tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else (),
                dtype=TENSOR_TYPES.get(t.Type(), str(t.Type())),
                quantized=quantized,
                data=_constant(model, raw, t),
            )
        )
    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        kind = _op_kind(model, op.OpcodeIndex())
        inputs = [int(x) for x in op.InputsAsNumpy()]
        outputs = [int(x) for x in op.OutputsAsNumpy()]
        ops.append(Op(i, kind, inputs, outputs, _options(op, kind) if kind in SUPPORTED else {}))
    return Graph(
        path,
        tensors,
        ops,
        [int(x) for x in sg.InputsAsNumpy()],
        [int(x) for x in sg.OutputsAsNumpy()],
    )


def check_supported(graph: Graph) -> None:
    """Refuse, naming the first offending op, what the importer cannot rebuild exactly."""
    for op in graph.ops:
        if op.kind not in SUPPORTED:
            inputs = {graph.tensors[i].dtype for i in op.inputs if i >= 0}
            raise graph.fail(
                op,
                f"unsupported operator (inputs {', '.join(sorted(inputs))}); "
                f"the importer reads float32 graphs of {', '.join(SUPPORTED)}",
            )
        # RESHAPE's second input is its int32 target shape, not data.
        data = op.inputs[:1] if op.kind == "RESHAPE" else op.inputs
        for i in [*data, *op.outputs]:
            t = graph.tensors[i] if i >= 0 else None
            if t is not None and (t.dtype != "FLOAT32" or t.quantized):
                what = "quantized " if t.quantized else ""
                raise graph.fail(
                    op, f"tensor {t.name!r} is {what}{t.dtype}; only float32 graphs are imported"
                )
        if op.options.get("activation", 0) != tflite.ActivationFunctionType.NONE:
            raise graph.fail(op, "fused activations are not supported")
        if op.options.get("dilation", (1, 1)) != (1, 1):
            raise graph.fail(op, f"dilation {op.options['dilation']} is not supported")
        if op.options.get("depth_multiplier", 1) != 1:
            raise graph.fail(op, "a depth multiplier other than 1 is not supported")


def read_tflite(path: Path) -> Graph:
    """The graph of a float32 TFLite file; one line naming the problem otherwise."""
    if not path.is_file():
        raise MfnError(f"{path}: TFLite file not found")
    raw = path.read_bytes()
    if len(raw) < 8 or raw[4:8] != _IDENTIFIER:
        raise MfnError(f"{path}: not a TFLite model (no {_IDENTIFIER.decode()} identifier)")
    try:
        graph = _read(path, raw)
    except MfnError:
        raise
    except Exception as e:  # a damaged flatbuffer fails anywhere in the generated accessors
        raise MfnError(f"{path}: corrupt TFLite model ({type(e).__name__}: {e})") from None
    check_supported(graph)
    return graph
