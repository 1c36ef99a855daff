"""MTCNN through the same export stages as the embedder: ONNX, onnxsim, NCNN, parity.

P-Net is exported with dynamic height and width (it slides over every pyramid
level); R-Net and O-Net with a dynamic batch. The three networks carry no
BatchNorm, so the fold stage has nothing to do and is skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from mfn_deploy.artifacts import describe, staged_directory, write_json
from mfn_deploy.convert import convert_to_ncnn
from mfn_deploy.face.mtcnn import WEIGHTS_PACKAGE, WEIGHTS_SHA256, load_net
from mfn_deploy.images import load_image, sample_photos
from mfn_deploy.onnx_export import export_onnx
from mfn_deploy.parity import Runner, ncnn_runner, onnx_runner, run_parity, torch_runner
from mfn_deploy.simplify import simplify_onnx

MANIFEST_FORMAT = "mfn-deploy/detector-v1"
NAMES = ("pnet", "rnet", "onet")
# P-Net's export/parity size: not square, so a swapped H/W would show up.
PNET_SIZE = (60, 80)
SIZES = {"pnet": PNET_SIZE, "rnet": (24, 24), "onet": (48, 48)}


def _flat(run: Runner) -> Runner:
    return lambda x: run(x).reshape(len(x), -1)


def _parity_inputs(size: tuple[int, int], n_random: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rand = rng.uniform(-1, 1, (n_random, 3, *size)).astype(np.float32)
    h, w = size
    photos = []
    for p in sample_photos():
        rgb = load_image(p)[:, :, ::-1].astype(np.float32)
        photos.append(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA))
    x = ((np.stack(photos) - 127.5) * 0.0078125).transpose(0, 3, 1, 2)
    return {"random": rand, "photos": np.ascontiguousarray(x, np.float32)}


def export_detector(
    out: Path,
    force: bool = False,
    n_random: int = 4,
    seed: int = 0,
    on_stage: Callable[[str], None] = lambda _s: None,
) -> dict:
    """Export P-, R- and O-Net into ``out``; returns the manifest. Atomic like ``export``."""
    from mfn_deploy.pipeline import ParityError, tool_versions

    manifest: dict = {
        "format": MANIFEST_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "weights": {"package": WEIGHTS_PACKAGE, "sha256": WEIGHTS_SHA256},
        "input": {"channel_order": "RGB", "mean": 127.5, "scale": 0.0078125, "layout": "NCHW"},
        "tools": tool_versions(),
        "nets": {},
    }
    parity = {}
    with staged_directory(out, force) as tmp:
        for name in NAMES:
            on_stage(name)
            net, size = load_net(name), SIZES[name]
            raw, sim = tmp / f"{name}.raw.onnx", tmp / f"{name}.onnx"
            param, binary = tmp / f"{name}.ncnn.param", tmp / f"{name}.ncnn.bin"
            dynamic_hw = name == "pnet"
            export_onnx(net, size, raw, dynamic_batch=not dynamic_hw, dynamic_hw=dynamic_hw)
            simplify_onnx(raw, sim, test_shape=[1, 3, *size])
            blobs = convert_to_ncnn(sim, size, param, binary, fp16=False).to_dict()
            report = run_parity(
                ("torch", _flat(torch_runner(net))),
                [
                    ("onnx", _flat(onnx_runner(raw))),
                    ("simplify", _flat(onnx_runner(sim))),
                    ("ncnn", _flat(ncnn_runner(param, binary, blobs))),
                ],
                _parity_inputs(size, n_random, seed),
                {"size": list(size), "random": n_random, "seed": seed},
            )
            parity[name] = report.to_dict()
            if not report.ok:
                raise ParityError(report)
            raw.unlink()  # the simplified graph is the one that ships
            manifest["nets"][name] = {
                "input_size": None if dynamic_hw else list(size),
                "outputs": {"pnet": "6 = prob(2), box(4)", "rnet": "6 = prob(2), box(4)"}.get(
                    name, "16 = prob(2), box(4), landmarks(10)"
                ),
                "ncnn_blobs": blobs,
                "artifacts": {
                    k: describe(p)
                    for k, p in [("onnx", sim), ("ncnn_param", param), ("ncnn_bin", binary)]
                },
                "parity_cos_min": min(
                    r["vs_reference"]["cos_min"] for r in report.to_dict()["results"]
                ),
            }
        write_json(tmp / "parity.json", parity)
        write_json(tmp / "manifest.json", manifest)
    return manifest


def read_detector_manifest(path: Path) -> dict:
    from mfn_deploy.errors import MfnError

    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise MfnError(f"{path}: not a detector export (no manifest.json); run export-detector")
    manifest = json.loads(mpath.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise MfnError(f"{mpath}: not a detector manifest (format {manifest.get('format')!r})")
    return manifest


def cache_key() -> str:
    """Detector exports depend only on the pinned weights and the tool versions."""
    from mfn_deploy.pipeline import tool_versions

    blob = json.dumps([WEIGHTS_SHA256, tool_versions()], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
