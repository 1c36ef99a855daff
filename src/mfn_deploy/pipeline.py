"""The export pipeline: source -> fold -> onnx -> simplify -> ncnn -> parity.

Each stage is a function in its own module; this module only wires them
together, records what each produced in ``manifest.json``, and makes the whole
export atomic: work happens in a staging directory that replaces ``--out`` only
when every stage, parity included, has passed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mfn_deploy import __version__
from mfn_deploy.artifacts import (
    ArtifactNames,
    check_replaceable,
    describe,
    sha256_of,
    staged_directory,
    write_json,
)
from mfn_deploy.convert import convert_to_ncnn
from mfn_deploy.errors import MfnError
from mfn_deploy.fold import fold_batchnorm, load_folded, save_folded
from mfn_deploy.images import face_inputs, random_inputs
from mfn_deploy.models import FaceModel, InputSpec, check_input_size, create, get_spec
from mfn_deploy.onnx_export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx
from mfn_deploy.parity import (
    ParityReport,
    Runner,
    ncnn_runner,
    onnx_runner,
    run_parity,
    torch_runner,
)
from mfn_deploy.simplify import load_onnx, simplify_onnx
from mfn_deploy.weights import DEFAULT_SEED, UNTRAINED_NOTE, default_weights, load_checkpoint

MANIFEST_FORMAT = "mfn-deploy/export-v1"
TOOLS = ("torch", "onnx", "onnxsim", "onnxruntime", "pnnx", "ncnn")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ParityError(MfnError):
    def __init__(self, report: ParityReport) -> None:
        super().__init__(f"parity failed: first broken stage is {report.blamed!r}; nothing written")
        self.report = report


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
    n_random: int = 8
    seed: int = 0


@dataclass
class ExportResult:
    out: Path
    manifest: dict
    parity: ParityReport
    timings: dict[str, float] = field(default_factory=dict)


def tool_versions() -> dict[str, str]:
    return {t: importlib.metadata.version(t) for t in TOOLS} | {"mfn-deploy": __version__}


def _validate(opts: ExportOptions) -> None:
    if opts.checkpoint is not None and opts.onnx is not None:
        raise MfnError("give either --checkpoint or --onnx, not both")
    if opts.onnx is None and opts.checkpoint is None and opts.model is None:
        raise MfnError("nothing to export: pass --model NAME (or --checkpoint / --onnx)")
    if opts.model is not None and opts.onnx is None:
        get_spec(opts.model)  # unknown names fail here, before any work
    if opts.onnx is not None and opts.model is not None and not _SAFE_NAME.match(opts.model):
        raise MfnError(f"model name {opts.model!r} must be letters, digits, '_', '.', '-'")
    if opts.n_random < 1:
        raise MfnError("parity needs at least one random input")
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


def _input_sets(spec: InputSpec, opts: ExportOptions) -> tuple[dict[str, np.ndarray], dict]:
    faces, face_names = face_inputs(spec)
    sets = {"random": random_inputs(spec, opts.n_random, opts.seed), "faces": faces}
    info = {
        "random": {"n": opts.n_random, "seed": opts.seed, "distribution": "uniform, 8-bit range"},
        "faces": {
            "files": face_names,
            "preprocessing": "MTCNN (torch), five-point alignment, RGB, normalise",
        },
    }
    return sets, info


def _resolve_source(opts: ExportOptions) -> tuple[FaceModel | None, str, InputSpec, dict]:
    """The torch model to export (None for an ONNX source), its name, input and provenance."""
    if opts.onnx is not None:
        proto = load_onnx(opts.onnx)
        spec = InputSpec(*(opts.input_size or _onnx_input_size(opts.onnx, proto)))
        name = opts.model or re.sub(r"[^A-Za-z0-9_.-]", "_", opts.onnx.stem)
        source = {
            "kind": "onnx",
            "path": str(opts.onnx),
            "sha256": sha256_of(opts.onnx),
            "note": "preprocessing assumed: RGB, (x - 127.5) / 128",
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


def export(opts: ExportOptions, on_stage: Callable[[str], None] = lambda _s: None) -> ExportResult:
    _validate(opts)
    stage = _Stopwatch(on_stage)
    stage("source")
    stage_reports: dict[str, dict] = {}

    model, name, spec, source = _resolve_source(opts)
    names = ArtifactNames(name)
    with staged_directory(opts.out, opts.force, _sources(opts)) as tmp:
        artifacts: dict[str, Path] = {}
        stages: list[tuple[str, Runner]] = []
        if model is not None:
            stage("fold")
            folded, fold_report = fold_batchnorm(model)
            artifacts["folded"] = tmp / names.folded
            save_folded(folded, artifacts["folded"])
            stage_reports["fold"] = fold_report.to_dict()
            stages.append(("fold", torch_runner(folded)))
            reference = ("torch (unfolded)", torch_runner(model))

            stage("onnx")
            artifacts["raw_onnx"] = tmp / names.raw_onnx
            onnx_report = export_onnx(
                folded, spec.size, artifacts["raw_onnx"], opts.opset, opts.batch_dynamic
            )
            stage_reports["onnx"] = onnx_report.to_dict()
            stages.append(("onnx", onnx_runner(artifacts["raw_onnx"])))
        else:
            artifacts["raw_onnx"] = tmp / names.raw_onnx
            shutil.copyfile(opts.onnx, artifacts["raw_onnx"])
            reference = ("onnxruntime (source ONNX)", onnx_runner(artifacts["raw_onnx"]))

        stage("simplify")
        artifacts["onnx"] = tmp / names.onnx
        stage_reports["simplify"] = simplify_onnx(
            artifacts["raw_onnx"], artifacts["onnx"]
        ).to_dict()
        stages.append(("simplify", onnx_runner(artifacts["onnx"])))

        stage("ncnn")
        artifacts["ncnn_param"], artifacts["ncnn_bin"] = (
            tmp / names.ncnn_param(),
            tmp / names.ncnn_bin(),
        )
        blobs = convert_to_ncnn(
            artifacts["onnx"], spec.size, artifacts["ncnn_param"], artifacts["ncnn_bin"], fp16=False
        ).to_dict()
        stages.append(("ncnn", ncnn_runner(artifacts["ncnn_param"], artifacts["ncnn_bin"], blobs)))
        if opts.fp16:
            p16, b16 = tmp / names.ncnn_param(True), tmp / names.ncnn_bin(True)
            artifacts["ncnn_fp16_param"], artifacts["ncnn_fp16_bin"] = p16, b16
            convert_to_ncnn(artifacts["onnx"], spec.size, p16, b16, fp16=True)
            stages.append(("ncnn_fp16", ncnn_runner(p16, b16, blobs, fp16=True)))
        stage_reports["ncnn"] = {"blobs": blobs}

        stage("parity")
        input_sets, inputs_info = _input_sets(spec, opts)
        report = run_parity(reference, stages, input_sets, inputs_info)
        stage(None)
        embedding_dim = int(reference[1](input_sets["random"][:1]).shape[1])

        manifest = {
            "format": MANIFEST_FORMAT,
            "model": name,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": source,
            "input": spec.to_dict()
            | {"layout": "NCHW", "onnx_input": INPUT_NAME, "onnx_output": OUTPUT_NAME},
            "embedding_dim": embedding_dim,
            "options": {
                "opset": opts.opset,
                "fp16": opts.fp16,
                "batch_dynamic": opts.batch_dynamic,
            },
            "ncnn_blobs": blobs
            | {"note": "ncnn runs one image at a time: feed in0 a 3xHxW Mat, read out0"},
            "artifacts": {k: describe(p) for k, p in artifacts.items()},
            "stages": stage_reports,
            "timings_s": stage.times,
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
        if not report.ok:
            raise ParityError(report)
        write_json(tmp / ArtifactNames.parity, report.to_dict())
        write_json(tmp / ArtifactNames.manifest, manifest)
    return ExportResult(opts.out, manifest, report, stage.times)


def read_manifest(export_dir: Path) -> dict:
    path = export_dir / ArtifactNames.manifest
    if not export_dir.is_dir():
        raise MfnError(f"{export_dir}: export directory not found")
    if not path.is_file():
        raise MfnError(f"{export_dir}: not an export (no {ArtifactNames.manifest})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MfnError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise MfnError(f"{path}: unknown manifest format {manifest.get('format')!r}")
    return manifest


def verify_artifacts(export_dir: Path, manifest: dict) -> dict[str, Path]:
    """Every artifact the manifest lists, present and byte-identical."""
    paths = {}
    for key, meta in manifest["artifacts"].items():
        path = export_dir / meta["file"]
        if not path.is_file():
            raise MfnError(f"{path}: listed in the manifest but missing")
        if sha256_of(path) != meta["sha256"]:
            raise MfnError(f"{path}: sha256 differs from the manifest (file changed since export)")
        paths[key] = path
    return paths


def _reference_model(manifest: dict):
    """Rebuild the unfolded torch model when its source still exists, else None."""
    source, spec = manifest["source"], manifest["input"]
    size = (spec["height"], spec["width"])
    if source["kind"] == "default":
        return default_weights(create(manifest["model"], size), source["seed"])
    if source["kind"] == "checkpoint":
        path = Path(source["path"])
        if path.is_file() and sha256_of(path) == source["sha256"]:
            return load_checkpoint(path, source["arch"])[0]
    return None


def check(export_dir: Path, n_random: int = 8, seed: int = 0) -> ParityReport:
    """Re-run parity on an existing export; reads it, never writes to it."""
    manifest = read_manifest(export_dir)
    paths = verify_artifacts(export_dir, manifest)
    spec_d = manifest["input"]
    spec = InputSpec(spec_d["height"], spec_d["width"])
    blobs = manifest["ncnn_blobs"]
    stages: list[tuple[str, Runner]] = []
    model = _reference_model(manifest)
    if "folded" in paths:
        folded = load_folded(manifest["model"], spec.size, paths["folded"])
        if model is not None:
            reference = ("torch (unfolded)", torch_runner(model))
            stages.append(("fold", torch_runner(folded)))
        else:  # the checkpoint is gone: the folded model is the best reference left
            reference = ("torch (folded; source checkpoint unavailable)", torch_runner(folded))
        stages.append(("onnx", onnx_runner(paths["raw_onnx"])))
    else:
        reference = ("onnxruntime (source ONNX)", onnx_runner(paths["raw_onnx"]))
    stages.append(("simplify", onnx_runner(paths["onnx"])))
    stages.append(("ncnn", ncnn_runner(paths["ncnn_param"], paths["ncnn_bin"], blobs)))
    if "ncnn_fp16_param" in paths:
        stages.append(
            (
                "ncnn_fp16",
                ncnn_runner(paths["ncnn_fp16_param"], paths["ncnn_fp16_bin"], blobs, True),
            )
        )
    opts = ExportOptions(out=export_dir, n_random=n_random, seed=seed)
    input_sets, inputs_info = _input_sets(spec, opts)
    return run_parity(reference, stages, input_sets, inputs_info)


def cached_export(model: str) -> Path:
    """A default-weights export (fp32 + fp16) of ``model``, made once and cached.

    Keyed by the tool versions: the same weights through the same tools give the
    same files, so benchmarks over all networks do not re-export every run.
    """
    from mfn_deploy.artifacts import cache_fill, cache_root

    get_spec(model)
    key = hashlib.sha256(json.dumps(tool_versions(), sort_keys=True).encode()).hexdigest()[:12]
    out = cache_root() / "exports" / f"{model}-{key}"
    if not (out / ArtifactNames.manifest).is_file():
        with cache_fill(out):
            if not (out / ArtifactNames.manifest).is_file():
                export(ExportOptions(out=out, model=model, fp16=True, force=True))
    return out
