"""int8 ncnn models of every network, for the cost benchmarks (not an export).

Shared by ``arm_instructions.py --int8`` and ``host_int8.py``. For each network's
cached fp32 export (``runtime.cached_export``; the trained ``mobilefacenet_tf`` from
``runtime.cached_pretrained_export``), int8 models are written into the cache:

- ``int8``: every Convolution / ConvolutionDepthWise / InnerProduct int8, activation
  scales by ``kl`` on the built-in calibration set, **no gate**
  (``export.int8.quantize_ungated``). The zoo's default weights are untrained, so
  their int8 embedding cannot pass the gate; an int8 model's cost does not depend on
  the weights' values, so the gate does not apply to these cost figures.
- ``int8_auto`` (trained ``mobilefacenet_tf`` only): what
  ``export --pretrained mobilefacenet_tf --int8 --int8-auto`` ships, gate included.
- breakdown variants (``BREAKDOWN``), all int8 but some layers kept fp32: which
  layers make int8 cost what it costs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mfn_deploy.contract import InputSpec
from mfn_deploy.export import int8
from mfn_deploy.export.manifest import read_manifest
from mfn_deploy.export.stages import INT8_GATE, ArtifactNames
from mfn_deploy.face.calibration import builtin_calibration, int8_calibration
from mfn_deploy.files import cache_root
from mfn_deploy.runtime import cached_export, cached_pretrained_export

TRAINED = "mobilefacenet_tf"
_SOURCES = [
    Path(int8.__file__),
    Path(int8.__file__).with_name("calibrate.py"),
    Path(int8.__file__).with_name("ncnn_model.py"),
]


# variant -> the ``--int8-skip`` group it keeps fp32 (``export.int8.SKIP_GROUPS``)
BREAKDOWN = {
    "int8_gdconv_fp32": "gdconv",
    "int8_dw3x3_fp32": "dw3x3",
    "int8_depthwise_fp32": "depthwise",
}


def fp32_export(name: str) -> Path:
    return cached_pretrained_export(name) if name == TRAINED else cached_export(name)


def _key(export_dir: Path) -> str:
    h = hashlib.sha256(export_dir.name.encode())
    for p in _SOURCES:
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def int8_models(name: str, breakdown: bool = False) -> dict[str, tuple[Path, Path]]:
    """variant -> (param, bin): ``fp32``, ``fp16``, ``int8`` (+ ``int8_auto``, breakdown)."""
    export_dir = fp32_export(name)
    manifest = read_manifest(export_dir)
    spec = InputSpec.from_manifest(manifest)
    blobs = manifest["ncnn_blobs"]
    art = ArtifactNames(name)
    fp32 = (export_dir / art.ncnn_param(), export_dir / art.ncnn_bin())
    models = {
        "fp32": fp32,
        "fp16": (export_dir / art.ncnn_param(True), export_dir / art.ncnn_bin(True)),
    }
    out = cache_root() / "bench-int8" / f"{export_dir.name}-{_key(export_dir)}"
    out.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, tuple[str, ...]] = {"int8": ()}
    if breakdown:
        wanted |= {variant: (group,) for variant, group in BREAKDOWN.items()}
    calib = None
    for variant, skip in wanted.items():
        paths = (out / f"{variant}.param", out / f"{variant}.bin", out / f"{variant}.table")
        if not paths[1].is_file():
            if calib is None:
                calib, _ = builtin_calibration(spec)
            int8.quantize_ungated(fp32, blobs, calib, paths, skip=skip)
        models[variant] = paths[:2]
    if name == TRAINED:
        paths = (out / "int8_auto.param", out / "int8_auto.bin", out / "int8_auto.table")
        if not paths[1].is_file():
            request = int8.Int8Request(int8_calibration(None, spec), "kl", auto=True)
            report = int8.quantize(fp32, blobs, request, INT8_GATE, paths)
            (out / "int8_auto.fp32_layers").write_text(
                " ".join(report["layers_fp32"]["auto"]) + "\n"
            )
        models["int8_auto"] = paths[:2]
    return models


def auto_fp32_layers(name: str) -> list[str]:
    export_dir = fp32_export(name)
    f = (
        cache_root()
        / "bench-int8"
        / f"{export_dir.name}-{_key(export_dir)}"
        / "int8_auto.fp32_layers"
    )
    return f.read_text().split() if f.is_file() else []
