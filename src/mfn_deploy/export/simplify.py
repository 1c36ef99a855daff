"""Stage 3: onnxsim, with its own numerical check against the unsimplified graph."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxsim

from mfn_deploy.errors import MfnError


@dataclass(frozen=True)
class SimplifyReport:
    nodes_before: int
    nodes_after: int
    check_ok: bool

    def to_dict(self) -> dict:
        return {
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "check_ok": self.check_ok,
        }


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load and validate an ONNX file, turning every failure into one clear line."""
    if not path.is_file():
        raise MfnError(f"{path}: ONNX file not found")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MfnError(f"{path}: corrupt or invalid ONNX model: {first}") from None
    if not proto.graph.node:
        raise MfnError(f"{path}: corrupt or invalid ONNX model: the graph has no nodes")
    return proto


def simplify_onnx(
    src: Path, dst: Path, check_n: int = 3, test_shape: list[int] | None = None
) -> SimplifyReport:
    """Simplify ``src`` into ``dst``; ``test_shape`` pins dynamic dims for onnxsim's check."""
    proto = load_onnx(src)
    shapes = {proto.graph.input[0].name: test_shape} if test_shape else None
    # onnxsim reports progress on stdout; stages never print.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            simplified, ok = onnxsim.simplify(proto, check_n=check_n, test_input_shapes=shapes)
        except Exception as e:
            raise MfnError(f"{src}: onnxsim failed: {e}") from None
    if not ok:
        raise MfnError(f"{src}: onnxsim's own check failed: the simplified graph differs")
    onnx.save(simplified, str(dst))
    return SimplifyReport(len(proto.graph.node), len(simplified.graph.node), ok)
