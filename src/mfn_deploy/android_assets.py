"""Copy an export and the MTCNN detector into the Android demo's assets.

Layout under ``<app>/app/src/main/assets/models/`` (what FaceEngine.kt reads)::

    assets.json                      this module's manifest: files + sha256, embedder input
    detector/{pnet,rnet,onet}.ncnn.{param,bin,contract}, detector/manifest.json
    embedder/<model>.ncnn.{param,bin,contract}, embedder/manifest.json
    benchmark.png                    the photo the in-app benchmark runs on

Each ``.contract`` file is the net's preprocessing contract, taken from its
manifest: input size, channel order, mean, scale, ncnn blob names and (embedder)
the alignment template. The app's C++ core (face_engine.cpp, ``parse_contract``)
reads it and has no preprocessing of its own, so an export with other
preprocessing (BGR, another mean or scale, per-channel values) runs unchanged.
The format, one ``key=value`` a line, ``#`` comments::

    format=mfn-deploy/input-contract-v1
    net=embedder                      pnet | rnet | onet | embedder
    height=112                        pixels; "any" for P-Net (runs on every pyramid level)
    width=112
    channel_order=RGB                 RGB | BGR: the order of the tensor's 3 channels
    mean=M0,M1,M2                     per tensor channel: (pixel - mean) * scale
    scale=S0,S1,S2                    (contract.MEAN and contract.SCALE by default)
    input_blob=in0                    the ncnn blob fed, and the one read
    output_blob=out0
    landmark_template=38.29,51.69,... embedder only: 5 x, y pairs in the crop

The fp32 ncnn files are copied (the app may still turn on fp16 arithmetic at run
time). The folder is replaced atomically: the app never sees half an update.

The app's CMake builds ncnn from the same pinned source distribution and patches as
``mfn-deploy native build``; they are copied, verified, into ``<app>/third_party/ncnn/``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from mfn_deploy.contract import InputSpec, Pixels
from mfn_deploy.errors import MfnError
from mfn_deploy.export.artifacts import staged_directory
from mfn_deploy.export.manifest import (
    MANIFEST,
    read_detector_manifest,
    read_manifest,
    verify_file,
)
from mfn_deploy.files import sha256_of, write_json
from mfn_deploy.images import sample_photos
from mfn_deploy.native.build import PATCH_DIR, TARGETS, fetch_source

ASSETS_FORMAT = "mfn-deploy/android-assets-v2"
CONTRACT_FORMAT = "mfn-deploy/input-contract-v1"
ASSETS_SUBDIR = Path("app") / "src" / "main" / "assets" / "models"
NCNN_SUBDIR = Path("third_party") / "ncnn"  # app/src/main/cpp/CMakeLists.txt reads it
NCNN_MARKER = "ncnn-source.json"  # only a folder holding it is ever replaced
DETECTOR_NETS = ("pnet", "rnet", "onet")
MAX_SIDE = 4096  # face_engine.cpp's bound on a contract's height and width
# ncnn blob names go into key=value lines: printable, no whitespace.
_BLOB_NAME = re.compile(r"[!-~]{1,255}")
T = TypeVar("T")


# --- the manifests' contract records, as the app needs them ----------------------------
# read_manifest has checked the structure (keys, types, one blob each way, artifacts) and
# the contract module reads the preprocessing; here only what the app adds: every
# normalisation field written out, sizes within its bound, blob names fit for key=value.


def _in(where: str, read: Callable[[], T]) -> T:
    """``read()``, with a contract error prefixed by the manifest it came from."""
    try:
        return read()
    except MfnError as e:
        raise MfnError(f"{where}: {e}") from None


def _side(where: str, key: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SIDE:
        raise MfnError(f"{where}: {key} must be an integer 1..{MAX_SIDE}, got {value!r}")
    return value


def _pixels(pixels: Pixels) -> dict:
    """The app's fields: mean and scale always three values, in tensor channel order."""
    mean, scale = pixels.per_channel()
    return {"channel_order": pixels.channel_order, "mean": list(mean), "scale": list(scale)}


def _blobs(where: str, key: str, blobs: dict) -> dict:
    """The one input and one output blob (the reader checked there is one of each)."""
    out = {}
    for side in ("inputs", "outputs"):
        (name,) = blobs[side]
        if not _BLOB_NAME.fullmatch(name):
            raise MfnError(
                f"{where}: {key}.{side} must list one ncnn blob name (no spaces), got {[name]!r}"
            )
        out[side] = name
    return {"input_blob": out["inputs"], "output_blob": out["outputs"]}


def _contract_text(net: str, source: str, fields: dict) -> str:
    def value(v: object) -> str:
        if isinstance(v, list):
            return ",".join(repr(float(x)) for x in v)  # repr: round-trips exactly
        return str(v)

    lines = [
        f"# The input contract of {net}, written by `mfn-deploy android-assets` from {source};",
        "# read by the app's native core (face_engine.cpp, parse_contract). One key=value a line.",
        f"format={CONTRACT_FORMAT}",
        f"net={net}",
        *(f"{k}={value(v)}" for k, v in fields.items()),
    ]
    return "\n".join(lines) + "\n"


def embedder_contract(manifest: dict, where: str) -> dict:
    """The embedder's contract fields from its (read) manifest; a one-line MfnError else."""
    spec = _in(where, lambda: InputSpec.from_manifest(manifest, strict=True))
    return {
        "height": _side(where, "input.height", spec.height),
        "width": _side(where, "input.width", spec.width),
        **_pixels(spec.pixels),
        **_blobs(where, "ncnn_blobs", manifest["ncnn_blobs"]),
        "landmark_template": [float(v) for v in spec.template().reshape(-1)],
    }


def detector_contracts(manifest: dict, where: str) -> dict[str, dict]:
    """Each MTCNN net's contract fields from the (read) detector manifest."""
    pixels = _pixels(_in(where, lambda: Pixels.from_record(manifest["input"], strict=True)))
    out = {}
    for name in DETECTOR_NETS:
        net = manifest["nets"].get(name)
        if net is None:
            raise MfnError(f"{where}: nets.{name} missing")
        size = net.get("input_size")
        key = f"nets.{name}.input_size"
        if name == "pnet":  # fully convolutional: runs on every pyramid level
            if size is not None:
                raise MfnError(f"{where}: {key} must be null (P-Net takes any size), got {size!r}")
            hw = ("any", "any")
        elif isinstance(size, list) and len(size) == 2:
            hw = (_side(where, key, size[0]), _side(where, key, size[1]))
        else:
            raise MfnError(f"{where}: {key} must be [height, width], got {size!r}")
        out[name] = {
            "height": hw[0],
            "width": hw[1],
            **pixels,
            **_blobs(where, f"nets.{name}.ncnn_blobs", net["ncnn_blobs"]),
        }
    return out


# --- the assets --------------------------------------------------------------------------


def _copy_checked(src: Path, dst: Path, meta: dict) -> None:
    verify_file(src, meta)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _ncnn_files(where: str, artifacts: dict, what: str) -> tuple[dict, dict]:
    if "ncnn_param" not in artifacts or "ncnn_bin" not in artifacts:
        raise MfnError(f"{where}: {what} has no fp32 ncnn model (artifacts.ncnn_param/ncnn_bin)")
    param = artifacts["ncnn_param"]
    if not param["file"].endswith(".param"):
        raise MfnError(f"{where}: {what}: artifacts.ncnn_param {param['file']!r} is not a .param")
    return param, artifacts["ncnn_bin"]


def check_app(app_dir: Path) -> None:
    """Refuse anything but the Android demo, before any model is exported or read."""
    if not (app_dir / "app" / "build.gradle.kts").is_file():
        raise MfnError(f"{app_dir}: not the Android demo (no app/build.gradle.kts)")


def android_assets(export_dir: Path, detector_dir: Path, app_dir: Path) -> dict:
    """Fill ``app_dir``'s assets with the models; returns the assets manifest."""
    check_app(app_dir)
    manifest = read_manifest(export_dir)
    detector = read_detector_manifest(detector_dir)
    emb_where, det_where = export_dir / MANIFEST, detector_dir / MANIFEST
    emb_param, emb_bin = _ncnn_files(str(emb_where), manifest["artifacts"], "the export")
    contracts = {"embedder": embedder_contract(manifest, str(emb_where))}
    contracts |= detector_contracts(detector, str(det_where))
    det_files = {
        name: _ncnn_files(str(det_where), detector["nets"][name]["artifacts"], f"nets.{name}")
        for name in DETECTOR_NETS
    }
    emb_base = emb_param["file"].removesuffix(".param")

    out = app_dir / ASSETS_SUBDIR
    with staged_directory(out, force=True, manifest="assets.json") as tmp:
        for meta in (emb_param, emb_bin):
            _copy_checked(export_dir / meta["file"], tmp / "embedder" / meta["file"], meta)
        shutil.copyfile(emb_where, tmp / "embedder" / MANIFEST)
        (tmp / "embedder" / f"{emb_base}.contract").write_text(
            _contract_text("embedder", f"embedder/{MANIFEST}", contracts["embedder"])
        )
        for name in DETECTOR_NETS:
            for meta in det_files[name]:
                _copy_checked(detector_dir / meta["file"], tmp / "detector" / meta["file"], meta)
            # The engine reads detector/<net>.ncnn.{param,bin,contract}.
            (tmp / "detector" / f"{name}.ncnn.contract").write_text(
                _contract_text(name, f"detector/{MANIFEST}", contracts[name])
            )
        shutil.copyfile(det_where, tmp / "detector" / MANIFEST)
        shutil.copyfile(sample_photos()[0], tmp / "benchmark.png")

        files = {
            p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        emb = contracts["embedder"]
        assets = {
            "format": ASSETS_FORMAT,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "embedder": {
                "model": manifest["model"],
                "ncnn_basename": emb_base,
                # For people: the app reads these from the .contract file.
                "width": emb["width"],
                "height": emb["height"],
                "channel_order": emb["channel_order"],
                "mean": emb["mean"],
                "scale": emb["scale"],
                "embedding_dim": manifest.get("embedding_dim"),
            },
            "detector": {"nets": list(DETECTOR_NETS)},
            "contract_format": CONTRACT_FORMAT,
            "files": files,
        }
        write_json(tmp / "assets.json", assets)
    ncnn_source(app_dir)
    return assets


def ncnn_source(app_dir: Path) -> Path:
    """The pinned ncnn sdist and every target's patches where the app's CMake finds them."""
    out = app_dir / NCNN_SUBDIR
    patches = sorted({name for target in TARGETS.values() for name in target.patches})
    with staged_directory(out, force=True, manifest=NCNN_MARKER) as tmp:
        sdist = fetch_source()  # verified against its sha256
        shutil.copyfile(sdist, tmp / sdist.name)
        for name in patches:
            shutil.copyfile(PATCH_DIR / name, tmp / name)
        write_json(
            tmp / NCNN_MARKER,
            {
                "format": "mfn-deploy/ncnn-source-v1",
                "why": "what android-demo/app/src/main/cpp/CMakeLists.txt builds ncnn from",
                "sdist": {"file": sdist.name, "sha256": sha256_of(tmp / sdist.name)},
                "patches": patches,
            },
        )
    return out
