"""Exports ready to run: an embedder and the MTCNN detector in one of three backends.

``torch`` runs the folded PyTorch graph of the export, ``onnxruntime`` the simplified
ONNX, ``ncnn`` the fp32 param/bin in ncnn's Python binding (``face.options`` names them). Everything
around the networks (pyramid, NMS, alignment, normalisation) is shared code; the
preprocessing comes from the export's manifest. The exports the commands make for
themselves (the detector, default-weight embedders for benchmarks) are cached, and
verified on every use like any export: a damaged entry (a truncated file, a file that
changed) is announced on one line, removed and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from mfn_deploy.contract import InputSpec, Pixels
from mfn_deploy.errors import MfnError
from mfn_deploy.export.backends import Runner, ncnn_runner, onnx_runner, torch_runner
from mfn_deploy.export.fold import load_folded
from mfn_deploy.export.manifest import (
    MANIFEST,
    artifact_path,
    read_detector_manifest,
    read_manifest,
    tool_versions,
)
from mfn_deploy.export.plan import ExportOptions, export
from mfn_deploy.face.calibration import int8_calibration
from mfn_deploy.face.detect import Nets
from mfn_deploy.face.detector_export import NAMES, cache_key, export_detector
from mfn_deploy.face.mtcnn import torch_nets
from mfn_deploy.face.options import backend_name
from mfn_deploy.face.samples import face_inputs
from mfn_deploy.files import cache_fill, cache_root
from mfn_deploy.models import get_spec
from mfn_deploy.pretrained.importer import checkpoint as pretrained_checkpoint

log = logging.getLogger(__name__)


def _damage(entry: Path, read: Callable[[Path], object]) -> str | None:
    """None when the cache entry is complete and verified, else what is wrong with it."""
    if not (entry / MANIFEST).is_file() and not entry.exists():
        return "missing"
    try:
        read(entry)
    except MfnError as e:
        return str(e)
    return None


def _cached(entry: Path, read: Callable[[Path], object], build: Callable[[Path], object]) -> Path:
    """``entry`` in the cache, built by ``build`` when missing and rebuilt when damaged."""
    if _damage(entry, read) is None:
        return entry
    with cache_fill(entry):
        problem = _damage(entry, read)  # another process may have filled it meanwhile
        if problem is None:
            return entry
        if problem != "missing":
            log.warning("warning: %s; rebuilding the cache entry %s", problem, entry)
            try:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            except OSError as e:
                raise MfnError(
                    f"{entry}: damaged cache entry cannot be removed ({e.strerror}); delete it"
                ) from None
        build(entry)
    problem = _damage(entry, read)
    if problem is not None:
        raise MfnError(f"{problem}; delete the cache entry {entry} and retry")
    return entry


def detector_dir(explicit: Path | None = None) -> Path:
    """An MTCNN export: the given one, or one exported once into the cache."""
    if explicit is not None:
        read_detector_manifest(explicit)
        return explicit
    return _cached(
        cache_root() / f"detector-{cache_key()}",
        read_detector_manifest,
        lambda out: export_detector(out, force=True),
    )


def detector_nets(backend: str, directory: Path | None = None) -> Nets:
    """The three MTCNN networks in ``backend``, with the preprocessing their export records."""
    backend = backend_name(backend)
    if backend == "torch":
        return torch_nets()
    directory = detector_dir(directory)
    manifest = read_detector_manifest(directory)
    runners = []
    for name in NAMES:
        net = manifest["nets"].get(name)
        if net is None:
            raise MfnError(f"{directory / MANIFEST}: lists no {name!r} net; run export-detector")
        if backend == "onnxruntime":
            runners.append(onnx_runner(artifact_path(directory, net, "onnx"), optimize=True))
        else:
            param = artifact_path(directory, net, "ncnn_param")
            binary = artifact_path(directory, net, "ncnn_bin")
            runners.append(ncnn_runner(param, binary, net["ncnn_blobs"], keep_shape=True))
    try:
        pixels = Pixels.from_record(manifest["input"])
    except MfnError as e:
        raise MfnError(f"{directory / MANIFEST}: {e}") from None
    return Nets(*runners, pixels=pixels)


def embedder(export_dir: Path, backend: str) -> tuple[Runner, InputSpec]:
    """The embedding network of an export, and the input contract its manifest records."""
    backend = backend_name(backend)
    manifest = read_manifest(export_dir)
    try:
        spec = InputSpec.from_manifest(manifest)
    except MfnError as e:
        raise MfnError(f"{export_dir / MANIFEST}: {e}") from None
    if backend == "torch":
        folded = artifact_path(export_dir, manifest, "folded", required=False)
        if folded is None:
            raise MfnError(f"{export_dir}: no torch model in this export (it came from ONNX)")
        return torch_runner(load_folded(manifest["model"], spec.size, folded)), spec
    if backend == "onnxruntime":
        return onnx_runner(artifact_path(export_dir, manifest, "onnx"), optimize=True), spec
    param = artifact_path(export_dir, manifest, "ncnn_param")
    binary = artifact_path(export_dir, manifest, "ncnn_bin")
    return ncnn_runner(param, binary, manifest["ncnn_blobs"]), spec


def cached_export(model: str) -> Path:
    """A default-weights export (fp32 + fp16) of ``model``, made once and cached.

    Keyed by the tool versions: the same weights through the same tools give the
    same files, so benchmarks over all networks do not re-export every run.
    """
    get_spec(model)
    key = hashlib.sha256(json.dumps(tool_versions(), sort_keys=True).encode()).hexdigest()[:12]
    return _cached(
        cache_root() / "exports" / f"{model}-{key}",
        read_manifest,
        lambda out: export(
            ExportOptions(out=out, model=model, fp16=True, force=True), faces=face_inputs
        ),
    )


def cached_pretrained_export(model: str, int8: bool = False) -> Path:
    """The catalogue's trained ``model`` exported (fp32 + fp16; ``int8``: and the int8
    pair ``export --int8 --int8-auto`` writes, on the built-in calibration set) once and
    cached, keyed by the tool versions and the imported checkpoint (whose name carries
    its own key)."""
    ckpt = pretrained_checkpoint(model)
    versions = tool_versions() | {"checkpoint": ckpt.name}
    key = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:12]
    int8_options = {}
    if int8:
        int8_options = {
            "int8": True,
            "int8_auto": True,
            "calibration": lambda spec: int8_calibration(None, spec),
        }
    return _cached(
        cache_root() / "exports" / f"{model}-pretrained{'-int8' * int8}-{key}",
        read_manifest,
        lambda out: export(
            ExportOptions(
                out=out, model=model, checkpoint=ckpt, fp16=True, force=True, **int8_options
            ),
            faces=face_inputs,
        ),
    )
