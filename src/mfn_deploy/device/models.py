"""The networks a benchmark runs: cached default exports or user exports, with a fixed input.

Each job carries the ncnn pair to time, one aligned real face as the fixed input and
the host onnxruntime embedding of that face, against which every runner's output
(on the phone or here) is compared.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfn_deploy.contract import InputSpec
from mfn_deploy.errors import MfnError
from mfn_deploy.export.backends import onnx_runner
from mfn_deploy.export.manifest import read_manifest
from mfn_deploy.export.stages import ArtifactNames
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

    def describe(self, fp16: bool) -> dict:
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
            },
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


def prepare_jobs(
    models: list[str],
    exports: list[Path],
    fp16: bool,
    on_model: Callable[[str], None] = lambda _name: None,
) -> list[ModelJob]:
    if bool(models) == bool(exports):
        raise MfnError("give either --models NAME,... or --export DIR (one or more), not both")
    dirs = []
    for name in models:
        on_model(name)
        dirs.append(cached_export(name))
    dirs += exports
    jobs = []
    for d in dirs:
        on_model(d.name)
        jobs.append(load_job(d, fp16))
    return jobs
