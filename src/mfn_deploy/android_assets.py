"""Copy an export and the MTCNN detector into the Android demo's assets.

Layout under ``<app>/app/src/main/assets/models/`` (what FaceEngine.kt reads)::

    assets.json                      this module's manifest: files + sha256, embedder input
    detector/{pnet,rnet,onet}.ncnn.{param,bin}, detector/manifest.json
    embedder/<model>.ncnn.{param,bin}, embedder/manifest.json
    benchmark.png                    the photo the in-app benchmark runs on

The fp32 ncnn files are copied (the app may still turn on fp16 arithmetic at run
time). The folder is replaced atomically: the app never sees half an update.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from mfn_deploy.artifacts import sha256_of, staged_directory, write_json
from mfn_deploy.errors import MfnError

ASSETS_FORMAT = "mfn-deploy/android-assets-v1"
ASSETS_SUBDIR = Path("app") / "src" / "main" / "assets" / "models"
# The blob names face_engine.cpp feeds and reads (EngineOptions).
ENGINE_BLOBS = {"inputs": ["in0"], "outputs": ["out0"]}
DETECTOR_NETS = ("pnet", "rnet", "onet")


def _check_blobs(where: str, blobs: dict) -> None:
    if {k: blobs.get(k) for k in ENGINE_BLOBS} != ENGINE_BLOBS:
        raise MfnError(
            f"{where}: ncnn blobs {blobs.get('inputs')} -> {blobs.get('outputs')}; "
            f"the app's engine expects in0 -> out0"
        )


def _copy_checked(src: Path, dst: Path, meta: dict) -> None:
    if not src.is_file():
        raise MfnError(f"{src}: listed in the manifest but missing")
    if sha256_of(src) != meta["sha256"]:
        raise MfnError(f"{src}: sha256 differs from the manifest (file changed since export)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def android_assets(export_dir: Path, detector_dir: Path, app_dir: Path) -> dict:
    """Fill ``app_dir``'s assets with the models; returns the assets manifest."""
    from mfn_deploy.face.detector_export import read_detector_manifest
    from mfn_deploy.images import sample_photos
    from mfn_deploy.pipeline import read_manifest

    if not (app_dir / "app" / "build.gradle.kts").is_file():
        raise MfnError(f"{app_dir}: not the Android demo (no app/build.gradle.kts)")
    manifest = read_manifest(export_dir)
    detector = read_detector_manifest(detector_dir)
    arts = manifest.get("artifacts", {})
    if "ncnn_param" not in arts or "ncnn_bin" not in arts:
        raise MfnError(f"{export_dir}: the export has no fp32 ncnn model")
    _check_blobs(str(export_dir / "manifest.json"), manifest["ncnn_blobs"])
    spec = manifest["input"]
    # face_engine.cpp normalises as the MTCNN nets do; other exports would need a new app.
    if (spec.get("channel_order"), spec["mean"], spec["scale"]) != ("RGB", 127.5, 0.0078125):
        raise MfnError(
            f"{export_dir}: input {spec.get('channel_order')} (x - {spec['mean']}) * "
            f"{spec['scale']}; the app's engine expects RGB (x - 127.5) * 0.0078125"
        )
    for name in DETECTOR_NETS:
        where = f"{detector_dir / 'manifest.json'} ({name})"
        _check_blobs(where, detector["nets"][name]["ncnn_blobs"])

    out = app_dir / ASSETS_SUBDIR
    with staged_directory(out, force=True, manifest="assets.json") as tmp:
        for key in ("ncnn_param", "ncnn_bin"):
            meta = arts[key]
            _copy_checked(export_dir / meta["file"], tmp / "embedder" / meta["file"], meta)
        shutil.copyfile(export_dir / "manifest.json", tmp / "embedder" / "manifest.json")
        for name in DETECTOR_NETS:
            for key in ("ncnn_param", "ncnn_bin"):
                meta = detector["nets"][name]["artifacts"][key]
                _copy_checked(detector_dir / meta["file"], tmp / "detector" / meta["file"], meta)
        shutil.copyfile(detector_dir / "manifest.json", tmp / "detector" / "manifest.json")
        shutil.copyfile(sample_photos()[0], tmp / "benchmark.png")

        files = {
            p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        assets = {
            "format": ASSETS_FORMAT,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "embedder": {
                "model": manifest["model"],
                "ncnn_basename": arts["ncnn_param"]["file"].removesuffix(".param"),
                "width": spec["width"],
                "height": spec["height"],
                "mean": spec["mean"],
                "scale": spec["scale"],
                "embedding_dim": manifest.get("embedding_dim"),
            },
            "detector": {"nets": list(DETECTOR_NETS)},
            "files": files,
        }
        write_json(tmp / "assets.json", assets)
    return assets
