"""Stage 2: torch -> ONNX with a pinned opset and the contract's tensor names."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from mfn_deploy.contract import ONNX_INPUT, ONNX_OUTPUT
from mfn_deploy.errors import MfnError
from mfn_deploy.export import DEFAULT_OPSET

SUPPORTED_OPSETS = range(11, 21)


@dataclass(frozen=True)
class OnnxReport:
    opset: int
    dynamic_batch: bool
    nodes: int

    def to_dict(self) -> dict:
        return {"opset": self.opset, "dynamic_batch": self.dynamic_batch, "nodes": self.nodes}


def export_onnx(
    model: torch.nn.Module,
    size: tuple[int, int],
    path: Path,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    dynamic_hw: bool = False,
) -> OnnxReport:
    """Export ``model`` taking (N, 3, H, W); ``dynamic_hw`` for fully convolutional nets."""
    if opset not in SUPPORTED_OPSETS:
        raise MfnError(
            f"opset {opset} is not supported; use {SUPPORTED_OPSETS.start}.."
            f"{SUPPORTED_OPSETS.stop - 1}"
        )
    x = torch.zeros(1, 3, *size)
    axes = {0: "N"} if dynamic_batch else {}
    axes |= {2: "H", 3: "W"} if dynamic_hw else {}
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated in favour of dynamo.
        # We keep it on purpose: it emits a plain static graph that pnnx converts
        # reliably, where the dynamo exporter adds shape plumbing pnnx must undo.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: axes, ONNX_OUTPUT: axes} if axes else None,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    return OnnxReport(opset=opset, dynamic_batch=dynamic_batch, nodes=len(proto.graph.node))
