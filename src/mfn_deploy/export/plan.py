"""The embedder export: source -> the stages of ``stages.STAGES`` -> parity -> manifest.

``export`` runs the plan (``stages.run_plan``) into a staging directory that
replaces ``--out`` only when every stage, parity included, has passed, and records
everything in ``manifest.json``; ``check`` runs the same stages over an existing
export without writing.

The real faces parity runs on are detected and aligned by the face pipeline, which
sits above this package: callers hand them in (``faces``, e.g.
``face.samples.face_inputs``); without them parity runs on random inputs only.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mfn_deploy.contract import InputSpec, Pixels
from mfn_deploy.errors import MfnError
from mfn_deploy.export import DEFAULT_OPSET, DEFAULT_PARITY_SEED, DEFAULT_RANDOM_INPUTS
from mfn_deploy.export.artifacts import check_replaceable, describe, staged_directory
from mfn_deploy.export.backends import onnx_runner, torch_runner
from mfn_deploy.export.int8 import METHODS as INT8_METHODS
from mfn_deploy.export.int8 import Calibration, Int8Request
from mfn_deploy.export.manifest import (
    EMBEDDER,
    read_manifest,
    tool_versions,
    verify_artifacts,
)
from mfn_deploy.export.parity import ParityError, ParityReport
from mfn_deploy.export.simplify import load_onnx
from mfn_deploy.export.stages import STAGES, ArtifactNames, Work, run_plan, select
from mfn_deploy.files import sha256_of, write_json
from mfn_deploy.images import random_inputs
from mfn_deploy.models import FaceModel, check_input_size, create, get_spec, names
from mfn_deploy.weights import DEFAULT_SEED, UNTRAINED_NOTE, default_weights, load_checkpoint

__all__ = [
    "ExportOptions",
    "ExportResult",
    "FaceInputs",
    "ParityError",
    "check",
    "export",
]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# (N, 3, H, W) aligned, normalised real faces for a network's input, and their names.
FaceInputs = Callable[[InputSpec], tuple[np.ndarray, list[str]]]
# int8's calibration and held-out faces for a network's input (``face.calibration``).
CalibrationInputs = Callable[[InputSpec], Calibration]


@dataclass
class ExportOptions:
    out: Path
    model: str | None = None
    checkpoint: Path | None = None
    onnx: Path | None = None
    fp16: bool = False
    batch_dynamic: bool = False
    opset: int = DEFAULT_OPSET
    input_size: tuple[int, int] | None = None
    force: bool = False
    n_random: int = DEFAULT_RANDOM_INPUTS
    seed: int = DEFAULT_PARITY_SEED
    # How an ONNX source expects its pixels (None: the contract's default). A torch
    # model carries its own (its registered or checkpointed InputSpec).
    preprocessing: Pixels | None = None
    # int8 (the ncnn_int8 stage): the faces come from above the export, like ``faces``.
    int8: bool = False
    calibration: CalibrationInputs | None = None
    calib_method: str = "kl"
    int8_skip: tuple[str, ...] = ()
    int8_auto: bool = False


@dataclass
class ExportResult:
    out: Path
    manifest: dict
    parity: ParityReport
    timings: dict[str, float] = field(default_factory=dict)


def _validate(opts: ExportOptions) -> None:
    if opts.checkpoint is not None and opts.onnx is not None:
        raise MfnError("give either --checkpoint or --onnx, not both")
    if opts.onnx is None and opts.checkpoint is None and opts.model is None:
        raise MfnError("nothing to export: pass --model NAME (or --checkpoint / --onnx)")
    if opts.model is not None and opts.onnx is None:
        get_spec(opts.model)  # unknown names fail here, before any work
    if opts.onnx is not None and opts.model is not None and not _SAFE_NAME.match(opts.model):
        raise MfnError(f"model name {opts.model!r} must be letters, digits, '_', '.', '-'")
    if opts.preprocessing is not None and opts.onnx is None:
        raise MfnError("preprocessing is declared for ONNX sources; a model carries its own")
    if opts.n_random < 1:
        raise MfnError("parity needs at least one random input")
    if opts.calib_method not in INT8_METHODS:
        raise MfnError(
            f"calibration method {opts.calib_method!r}: choose one of {', '.join(INT8_METHODS)}"
        )
    if not opts.int8 and (opts.int8_skip or opts.int8_auto):
        raise MfnError("--int8-skip and --int8-auto need --int8")
    if opts.int8 and opts.calibration is None:
        raise MfnError("int8 needs calibration faces (ExportOptions.calibration)")
    check_replaceable(opts.out, opts.force, _sources(opts))  # cheap: before loading anything


def _sources(opts: ExportOptions) -> list[Path]:
    return [p for p in (opts.checkpoint, opts.onnx) if p is not None]


def _onnx_input_size(path: Path, proto) -> tuple[int, int]:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(shape) != 4 or shape[1] != 3:
        raise MfnError(f"{path}: expected one (N, 3, H, W) input, found shape {shape}")
    if shape[2] is None or shape[3] is None:
        raise MfnError(f"{path}: input height/width are dynamic; pass --input-size HxW")
    return shape[2], shape[3]


# Folding BatchNorm removes ~1% of the parameters; another architecture differs by far more.
_PARAMS_TOLERANCE = 0.03


def _check_zoo_label(path: Path, proto, name: str, size: tuple[int, int]) -> None:
    """``--model`` names a zoo network only for an ONNX of that network: the export
    would otherwise carry its paper figures (params, MAdds, Snapdragon 820 ms)."""
    if name not in names():
        return
    zoo = create(name)
    zoo_params = sum(p.numel() for p in zoo.parameters())
    with torch.no_grad():
        zoo_dim = int(zoo.eval()(torch.zeros(1, 3, *zoo.input_spec.size)).shape[1])
    params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    out_dims = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    dim = out_dims[-1] if out_dims and out_dims[-1] > 0 else None
    fits = (
        tuple(size) == tuple(zoo.input_spec.size)
        and dim in (None, zoo_dim)
        and abs(params - zoo_params) <= _PARAMS_TOLERANCE * zoo_params
    )
    if not fits:
        h, w = zoo.input_spec.size
        raise MfnError(
            f"{path}: --model {name} is the zoo's {h}x{w}, dim {zoo_dim}, "
            f"{zoo_params / 1e6:.2f}M params, but this ONNX is {size[0]}x{size[1]}, "
            f"dim {dim if dim is not None else '?'}, {params / 1e6:.2f}M params; "
            "drop --model to name the export after the file, or give a name not in the zoo"
        )


def _input_sets(
    spec: InputSpec, n_random: int, seed: int, faces: FaceInputs | None
) -> tuple[dict[str, np.ndarray], dict]:
    sets = {"random": random_inputs(spec, n_random, seed)}
    info: dict = {"random": {"n": n_random, "seed": seed, "distribution": "uniform, 8-bit range"}}
    if faces is not None:
        sets["faces"], names = faces(spec)
        info["faces"] = {
            "files": names,
            "preprocessing": "MTCNN (torch), five-point alignment, " + spec.pixels.describe(),
        }
    return sets, info


def _resolve_source(opts: ExportOptions) -> tuple[FaceModel | None, str, InputSpec, dict]:
    """The torch model to export (None for an ONNX source), its name, input and provenance."""
    if opts.onnx is not None:
        proto = load_onnx(opts.onnx)
        pixels = opts.preprocessing or Pixels()
        size = opts.input_size or _onnx_input_size(opts.onnx, proto)
        spec = InputSpec(*size, **pixels.to_dict())
        name = opts.model or re.sub(r"[^A-Za-z0-9_.-]", "_", opts.onnx.stem)
        if opts.model is not None:
            _check_zoo_label(opts.onnx, proto, opts.model, size)
        source = {
            "kind": "onnx",
            "path": str(opts.onnx),
            "sha256": sha256_of(opts.onnx),
            "note": "preprocessing "
            + ("declared" if opts.preprocessing else "assumed")
            + ": "
            + pixels.describe(),
        }
        return None, name, spec, source
    if opts.checkpoint is not None:
        model, source = load_checkpoint(opts.checkpoint, opts.model)
        if opts.input_size and tuple(opts.input_size) != model.input_spec.size:
            raise MfnError(
                f"{opts.checkpoint}: checkpoint was made for input {model.input_spec.size}"
            )
        source["sha256"] = sha256_of(opts.checkpoint)
        return model, model.name, model.input_spec, source
    if opts.input_size is not None:
        check_input_size(get_spec(opts.model), opts.input_size)
    model = default_weights(create(opts.model, opts.input_size))
    source = {"kind": "default", "seed": DEFAULT_SEED, "trained": False, "note": UNTRAINED_NOTE}
    return model, model.name, model.input_spec, source


class _Stopwatch:
    """Times consecutive stages and tells the caller (a progress bar) which one runs."""

    def __init__(self, on_stage: Callable[[str], None]) -> None:
        self.on_stage, self.times, self.current, self.t0 = on_stage, {}, None, 0.0

    def __call__(self, name: str | None) -> None:
        now = time.perf_counter()
        if self.current is not None:
            self.times[self.current] = round(now - self.t0, 3)
        self.current, self.t0 = name, now
        if name is not None:
            self.on_stage(name)


def _manifest(
    name: str,
    source: dict,
    spec: InputSpec,
    opts: ExportOptions,
    work: Work,
    report: ParityReport,
    embedding_dim: int,
    timings: dict[str, float],
) -> dict:
    blobs = work.blobs
    (in_blob,), (out_blob,) = blobs["inputs"], blobs["outputs"]
    return {
        "format": EMBEDDER.format,
        "model": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "input": spec.manifest_input(),
        "alignment": spec.manifest_alignment(),
        "embedding_dim": embedding_dim,
        "options": {
            "opset": opts.opset,
            "fp16": opts.fp16,
            "batch_dynamic": opts.batch_dynamic,
            "int8": opts.int8,
        },
        "ncnn_blobs": blobs
        | {"note": f"ncnn runs one image at a time: feed {in_blob} a 3xHxW Mat, read {out_blob}"},
        "artifacts": {k: describe(p) for k, p in work.paths.items()},
        "stages": work.reports,
        "timings_s": timings,
        "tools": tool_versions(),
        "parity": {
            "ok": report.ok,
            "blamed_stage": report.blamed,
            "file": ArtifactNames.parity,
            "cos_min_vs_reference": {
                f"{r.stage}/{r.input_set}": r.vs_reference.cos_min for r in report.results
            },
        },
    }


def export(
    opts: ExportOptions,
    on_stage: Callable[[str], None] = lambda _s: None,
    *,
    faces: FaceInputs | None,
) -> ExportResult:
    """Export as ``opts`` says; parity on random inputs and, if given, on ``faces``."""
    _validate(opts)
    stage = _Stopwatch(on_stage)
    stage("source")

    model, name, spec, source = _resolve_source(opts)
    names = ArtifactNames(name)
    int8 = None
    if opts.int8:  # before the staging directory: a bad calibration folder writes nothing
        stage("calibration")
        int8 = Int8Request(
            opts.calibration(spec), opts.calib_method, tuple(opts.int8_skip), opts.int8_auto
        )
    with staged_directory(opts.out, opts.force, _sources(opts)) as tmp:
        work = Work(tmp, names, spec.size, model, opts.opset, opts.batch_dynamic)
        work.int8 = int8
        if model is not None:
            reference = ("torch (unfolded)", torch_runner(model))
        else:
            work.paths["raw_onnx"] = tmp / names.raw_onnx
            shutil.copyfile(opts.onnx, work.paths["raw_onnx"])
            reference = ("onnxruntime (source ONNX)", onnx_runner(work.paths["raw_onnx"]))
        plan = select(
            model is not None, lambda s: s.option is None or bool(getattr(opts, s.option))
        )
        report = run_plan(
            plan,
            work,
            reference,
            lambda: _input_sets(spec, opts.n_random, opts.seed, faces),
            on_stage=stage,
        )
        stage(None)
        embedding_dim = int(reference[1](random_inputs(spec, 1, opts.seed)).shape[1])
        manifest = _manifest(name, source, spec, opts, work, report, embedding_dim, stage.times)
        if not report.ok:
            raise ParityError(report)
        write_json(tmp / ArtifactNames.parity, report.to_dict())
        write_json(tmp / ArtifactNames.manifest, manifest)
    return ExportResult(opts.out, manifest, report, stage.times)


def _reference_model(manifest: dict, spec: InputSpec) -> nn.Module | None:
    """Rebuild the unfolded torch model when its source still exists, else None."""
    source = manifest["source"]
    if source["kind"] == "default":
        return default_weights(create(manifest["model"], spec.size), source["seed"])
    if source["kind"] == "checkpoint":
        path = Path(source["path"])
        if path.is_file() and sha256_of(path) == source["sha256"]:
            return load_checkpoint(path, source["arch"])[0]
    return None


def check(
    export_dir: Path,
    n_random: int = DEFAULT_RANDOM_INPUTS,
    seed: int = DEFAULT_PARITY_SEED,
    *,
    faces: FaceInputs | None,
) -> ParityReport:
    """Re-run parity on an existing export; reads it, never writes to it."""
    manifest = read_manifest(export_dir, EMBEDDER)
    paths = verify_artifacts(export_dir, manifest)
    spec = InputSpec.from_manifest(manifest)
    work = Work(export_dir, ArtifactNames(manifest["model"]), spec.size, paths=paths)
    work.blobs = manifest["ncnn_blobs"]
    torch_source = "folded" in paths
    plan = select(torch_source, lambda s: all(key in paths for key in s.artifacts))
    model = _reference_model(manifest, spec) if torch_source else None
    if model is not None:
        reference = ("torch (unfolded)", torch_runner(model))
    elif torch_source:  # the checkpoint is gone: the folded model is the best reference left
        fold = STAGES["fold"]
        reference = ("torch (folded; source checkpoint unavailable)", fold.runner(work))
        plan = [s for s in plan if s is not fold]
    else:
        reference = ("onnxruntime (source ONNX)", onnx_runner(paths["raw_onnx"]))
    return run_plan(
        plan,
        work,
        reference,
        lambda: _input_sets(spec, n_random, seed, faces),
        build=False,
    )
