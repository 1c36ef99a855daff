"""Benchmark jobs: the networks a run times (cached default exports or user exports),
each with a fixed input.

Each job carries the ncnn pair to time (fp32, fp16 or int8), one aligned real face as
the fixed input and the host onnxruntime embedding of that face, against which every
runner's output (on the phone or here) is compared; an int8 job also carries host
ncnn's embedding through the same int8 files.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mfn_deploy.bench.litert import tflite_provenance
from mfn_deploy.contract import InputSpec
from mfn_deploy.errors import MfnError
from mfn_deploy.export.backends import ncnn_runner, onnx_runner
from mfn_deploy.export.manifest import read_manifest
from mfn_deploy.export.parity import Tolerance, compare
from mfn_deploy.export.stages import FP16, FP32, INT8_FACE, INT8_SAME_FILES, ArtifactNames
from mfn_deploy.face.samples import face_inputs
from mfn_deploy.files import sha256_of
from mfn_deploy.models import get_spec, names
from mfn_deploy.runtime import cached_export, cached_pretrained_export
from mfn_deploy.stats import model_stats


@dataclass
class ModelJob:
    name: str
    title: str
    export_dir: Path
    manifest: dict
    param: Path
    binary: Path
    shape: tuple[int, int, int]  # W, H, C as the runner wants it
    face: np.ndarray  # (3, H, W) float32, normalised
    reference: np.ndarray  # (D,) onnxruntime embedding of ``face``
    stats: dict  # params, madds, paper_ms (None where the network is not registered)
    precision: str = "fp32"  # which ncnn pair: fp32, fp16 or int8
    # int8: host ncnn's embedding of ``face`` through the same int8 files (unpacked:
    # exact int8 arithmetic, as ARM computes it)
    int8_reference: np.ndarray | None = None

    @property
    def tflite(self) -> dict | None:
        """Provenance of the TFLite file the weights came from (None: no litert backend)."""
        return tflite_provenance(self.manifest)

    def describe(self) -> dict:
        tflite = self.tflite
        return {
            "name": self.name,
            "title": self.title,
            **self.stats,
            "export": {
                "dir": str(self.export_dir),
                "param": self.param.name,
                "param_sha256": sha256_of(self.param),
                "bin": self.binary.name,
                "bin_sha256": sha256_of(self.binary),
                "fp16": self.precision == "fp16",
                "precision": self.precision,
                "source": self.manifest.get("source", {}).get("kind"),
                **({"tflite_sha256": tflite["sha256"]} if tflite else {}),
            },
        }

    def parity(self, output: np.ndarray, precision: str | None = None) -> dict:
        """A runner's embedding of ``face`` against host onnxruntime's (fp32), with the
        tolerance of the job's precision (``precision`` overrides it: LiteRT computes in
        fp32 whatever ncnn ran); int8 is also held to host ncnn on the same int8 files."""
        precision = precision or self.precision
        tol = {"fp32": FP32, "fp16": FP16, "int8": INT8_FACE}[precision]
        result = _parity(output, self.reference, tol)
        result["reference"] = "host onnxruntime fp32, unoptimised, same face input"
        if precision == "int8" and self.int8_reference is not None and "error" not in result:
            same = _parity(output, self.int8_reference, INT8_SAME_FILES)
            same["reference"] = "host ncnn Python, the same int8 files, unpacked"
            result["int8_files"] = same
            result["ok"] = result["ok"] and same["ok"]
        return result


def _parity(output: np.ndarray, reference: np.ndarray, tol: Tolerance) -> dict:
    if output.size != reference.size:
        return {"ok": False, "error": f"{output.size} values, expected {reference.size}"}
    m = compare(output.reshape(1, -1), reference.reshape(1, -1))
    return {
        "ok": m.within(tol),
        "cos": m.cos_min,
        "max_abs": m.max_abs,
        "rel_l2": m.rel_l2_max,
        "tolerance": asdict(tol),
    }


def _stats(name: str) -> tuple[str, dict]:
    if name not in names():
        return name, {"params": None, "madds": None, "paper_ms": None}
    s = model_stats(name)
    return get_spec(name).title, {"params": s.params, "madds": s.madds, "paper_ms": s.paper_ms}


@functools.cache
def _fixed_face(spec: InputSpec) -> np.ndarray:
    """The first bundled face, aligned and normalised as ``spec`` says (detection is the
    slow part)."""
    faces, _ = face_inputs(spec)
    return np.ascontiguousarray(faces[0], dtype=np.float32)


def load_job(export_dir: Path, precision: str = "fp32") -> ModelJob:
    manifest = read_manifest(export_dir)
    files = ArtifactNames(manifest["model"])
    param, binary = (export_dir / name for name in files.ncnn_pair(precision))
    for path in (param, binary, export_dir / files.onnx):
        if not path.is_file():
            hint = f" (export with --{precision})" if precision in path.name else ""
            raise MfnError(f"{path}: missing from the export{hint}")
    spec = InputSpec.from_manifest(manifest)
    height, width = spec.size
    face = _fixed_face(spec)
    reference = onnx_runner(export_dir / files.onnx)(face[None])[0]
    int8_reference = None
    if precision == "int8":
        run = ncnn_runner(param, binary, manifest["ncnn_blobs"], packing=False)
        int8_reference = run(face[None])[0]
    title, stats = _stats(manifest["model"])
    return ModelJob(
        name=manifest["model"],
        title=title,
        export_dir=export_dir,
        manifest=manifest,
        param=param,
        binary=binary,
        shape=(width, height, 3),
        face=face,
        reference=np.asarray(reference, np.float32).reshape(-1),
        stats=stats,
        precision=precision,
        int8_reference=int8_reference,
    )


def model_names(text: str | None) -> list[str]:
    """``--models``: comma-separated registered names, or ``all``: the paper's Table 2
    networks in its order (a network the paper did not time, such as the pretrained
    ``mobilefacenet_tf``, is benchmarked by name)."""
    chosen = [n.strip() for n in (text or "").split(",") if n.strip()]
    if chosen == ["all"]:
        return [n for n in names() if get_spec(n).paper_ms is not None]
    return chosen


def prepare_jobs(
    models: Sequence[str],
    exports: Sequence[Path],
    precision: str = "fp32",
    on_model: Callable[[str], None] = lambda _name: None,
    pretrained: Sequence[str] = (),
) -> list[ModelJob]:
    """Jobs for registered networks (default weights), the catalogue's trained models
    (``pretrained``) and export directories, in that order.

    int8 needs trained weights (the gate judges them): a trained model's int8 export is
    made once, with ``--int8-auto``; default weights are refused with one line.
    """
    if not (models or exports or pretrained):
        raise MfnError("give --models NAME,..., --pretrained NAME or --export DIR (one or more)")
    if precision == "int8" and models:
        raise MfnError(
            f"--int8 --models {','.join(models)}: default weights are untrained and cannot "
            "pass the int8 gate; use --pretrained NAME or --export DIR made with export --int8"
        )
    trained = functools.partial(cached_pretrained_export, int8=precision == "int8")
    named = [(m, cached_export) for m in models] + [(p, trained) for p in pretrained]
    jobs = []
    for name, export_dir in named:
        on_model(name)
        jobs.append(load_job(export_dir(name), precision))
    for path in exports:
        on_model(str(path))
        jobs.append(load_job(path, precision))
    return jobs
