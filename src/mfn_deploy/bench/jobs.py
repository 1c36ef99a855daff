"""Benchmark jobs: the networks a run times (cached default exports or user exports),
each with a fixed input.

Each job carries the ncnn pair to time, one aligned real face as the fixed input and
the host onnxruntime embedding of that face, against which every runner's output
(on the phone or here) is compared.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mfn_deploy.bench.litert import tflite_provenance
from mfn_deploy.contract import InputSpec
from mfn_deploy.errors import MfnError
from mfn_deploy.export.backends import onnx_runner
from mfn_deploy.export.manifest import read_manifest
from mfn_deploy.export.parity import compare
from mfn_deploy.export.stages import STAGES, ArtifactNames
from mfn_deploy.face.samples import face_inputs
from mfn_deploy.files import sha256_of
from mfn_deploy.models import get_spec, names
from mfn_deploy.runtime import cached_export
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

    @property
    def tflite(self) -> dict | None:
        """Provenance of the TFLite file the weights came from (None: no litert backend)."""
        return tflite_provenance(self.manifest)

    def describe(self, fp16: bool) -> dict:
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
                "fp16": fp16,
                "source": self.manifest.get("source", {}).get("kind"),
                **({"tflite_sha256": tflite["sha256"]} if tflite else {}),
            },
        }

    def parity(self, output: np.ndarray, fp16: bool) -> dict:
        """A runner's embedding of ``face`` against host onnxruntime's, with export's
        ncnn tolerance (fp16's when ``fp16``, else fp32's)."""
        tol = STAGES["ncnn_fp16" if fp16 else "ncnn"].tolerance
        if output.size != self.reference.size:
            return {"ok": False, "error": f"{output.size} values, expected {self.reference.size}"}
        m = compare(output.reshape(1, -1), self.reference.reshape(1, -1))
        return {
            "ok": m.within(tol),
            "cos": m.cos_min,
            "max_abs": m.max_abs,
            "rel_l2": m.rel_l2_max,
            "tolerance": asdict(tol),
            "reference": "host onnxruntime, unoptimised, same face input",
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


def load_job(export_dir: Path, fp16: bool) -> ModelJob:
    manifest = read_manifest(export_dir)
    files = ArtifactNames(manifest["model"])
    param = export_dir / files.ncnn_param(fp16)
    binary = export_dir / files.ncnn_bin(fp16)
    for path in (param, binary, export_dir / files.onnx):
        if not path.is_file():
            hint = " (export with --fp16)" if fp16 and "fp16" in path.name else ""
            raise MfnError(f"{path}: missing from the export{hint}")
    spec = InputSpec.from_manifest(manifest)
    height, width = spec.size
    face = _fixed_face(spec)
    reference = onnx_runner(export_dir / files.onnx)(face[None])[0]
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
    models: list[str],
    exports: list[Path],
    fp16: bool,
    on_model: Callable[[str], None] = lambda _name: None,
) -> list[ModelJob]:
    if bool(models) == bool(exports):
        raise MfnError("give either --models NAME,... or --export DIR (one or more), not both")
    jobs = []
    for source in [*models, *exports]:
        on_model(str(source) if isinstance(source, Path) else source)
        export_dir = source if isinstance(source, Path) else cached_export(source)
        jobs.append(load_job(export_dir, fp16))
    return jobs
