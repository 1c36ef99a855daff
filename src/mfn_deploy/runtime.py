"""Load an export (and the MTCNN detector) for inference in one of three backends.

``torch`` runs the folded PyTorch graph of the export, ``onnx`` the simplified ONNX
in onnxruntime, ``ncnn`` the fp32 param/bin in ncnn's Python binding. Everything
around the networks (pyramid, NMS, alignment, normalisation) is shared code.
"""

from __future__ import annotations

from pathlib import Path

from mfn_deploy.artifacts import ArtifactNames, cache_fill, cache_root
from mfn_deploy.errors import MfnError
from mfn_deploy.face.detect import Nets
from mfn_deploy.models import InputSpec
from mfn_deploy.parity import Runner, ncnn_runner, onnx_runner, torch_runner

BACKENDS = ("torch", "onnx", "ncnn")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise MfnError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")


def detector_dir(explicit: Path | None = None) -> Path:
    """An MTCNN export: the given one, or one exported once into the cache."""
    from mfn_deploy.face.detector_export import cache_key, export_detector, read_detector_manifest

    if explicit is not None:
        read_detector_manifest(explicit)
        return explicit
    cached = cache_root() / f"detector-{cache_key()}"
    if not (cached / "manifest.json").is_file():
        with cache_fill(cached):
            if not (cached / "manifest.json").is_file():
                export_detector(cached, force=True)
    return cached


def detector_nets(backend: str, directory: Path | None = None) -> Nets:
    check_backend(backend)
    if backend == "torch":
        from mfn_deploy.face.mtcnn import load_net

        return Nets(*(torch_runner(load_net(n)) for n in ("pnet", "rnet", "onet")))
    from mfn_deploy.face.detector_export import read_detector_manifest

    directory = detector_dir(directory)
    manifest = read_detector_manifest(directory)
    runners = []
    for name in ("pnet", "rnet", "onet"):
        if backend == "onnx":
            runners.append(onnx_runner(directory / f"{name}.onnx", optimize=True))
        else:
            blobs = manifest["nets"][name]["ncnn_blobs"]
            param, binary = directory / f"{name}.ncnn.param", directory / f"{name}.ncnn.bin"
            runners.append(ncnn_runner(param, binary, blobs, keep_shape=True))
    return Nets(*runners)


def embedder(export_dir: Path, backend: str) -> tuple[Runner, InputSpec]:
    """The embedding network of an export, and the input it expects."""
    from mfn_deploy.fold import load_folded
    from mfn_deploy.pipeline import read_manifest

    check_backend(backend)
    manifest = read_manifest(export_dir)
    spec_d = manifest["input"]
    spec = InputSpec(spec_d["height"], spec_d["width"])
    names = ArtifactNames(manifest["model"])
    if backend == "torch":
        folded_path = export_dir / names.folded
        if not folded_path.is_file():
            raise MfnError(f"{export_dir}: no torch model in this export (it came from ONNX)")
        return torch_runner(load_folded(manifest["model"], spec.size, folded_path)), spec
    if backend == "onnx":
        return onnx_runner(export_dir / names.onnx, optimize=True), spec
    param, binary = export_dir / names.ncnn_param(), export_dir / names.ncnn_bin()
    return ncnn_runner(param, binary, manifest["ncnn_blobs"]), spec
