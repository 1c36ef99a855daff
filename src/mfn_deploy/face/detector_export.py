"""MTCNN through the export's own stages: onnx, simplify, ncnn, with parity gates.

The plan is the embedder's stage declarations (``export.stages``) minus fold (the
three networks carry no BatchNorm) and fp16 (the app ships fp32), run by the same
``run_plan``. P-Net is exported with dynamic height and width (it slides over every
pyramid level); R-Net and O-Net with a dynamic batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from mfn_deploy.contract import LAYOUT, MTCNN
from mfn_deploy.export.artifacts import describe, staged_directory
from mfn_deploy.export.backends import torch_runner
from mfn_deploy.export.manifest import DETECTOR, MANIFEST, PARITY, tool_versions
from mfn_deploy.export.parity import ParityError
from mfn_deploy.export.stages import STAGES, ArtifactNames, Inputs, Work, run_plan
from mfn_deploy.face.mtcnn import WEIGHTS_PACKAGE, WEIGHTS_SHA256, load_net
from mfn_deploy.files import write_json
from mfn_deploy.images import load_image, sample_photos

MANIFEST_FORMAT = DETECTOR.format
NAMES = ("pnet", "rnet", "onet")
PLAN = tuple(STAGES[s] for s in ("onnx", "simplify", "ncnn"))
SHIPPED = ("onnx", "ncnn_param", "ncnn_bin")  # the raw ONNX is not kept
# P-Net's export/parity size: not square, so a swapped H/W would show up.
PNET_SIZE = (60, 80)
SIZES = {"pnet": PNET_SIZE, "rnet": (24, 24), "onet": (48, 48)}
OUTPUTS = {
    "pnet": "6 = prob(2), box(4)",
    "rnet": "6 = prob(2), box(4)",
    "onet": "16 = prob(2), box(4), landmarks(10)",
}


def _parity_inputs(size: tuple[int, int], n_random: int, seed: int) -> Inputs:
    return lambda: (
        _input_sets(size, n_random, seed),
        {"size": list(size), "random": n_random, "seed": seed},
    )


def _input_sets(size: tuple[int, int], n_random: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rand = rng.uniform(-1, 1, (n_random, 3, *size)).astype(np.float32)
    h, w = size
    photos = []
    for p in sample_photos():
        pixels = MTCNN.ordered(load_image(p)).astype(np.float32)
        photos.append(cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA))
    return {"random": rand, "photos": MTCNN.values(np.stack(photos))}


def export_detector(
    out: Path,
    force: bool = False,
    n_random: int = 4,
    seed: int = 0,
    on_stage: Callable[[str], None] = lambda _s: None,
) -> dict:
    """Export P-, R- and O-Net into ``out``; returns the manifest. Atomic like ``export``."""
    manifest: dict = {
        "format": DETECTOR.format,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "weights": {"package": WEIGHTS_PACKAGE, "sha256": WEIGHTS_SHA256},
        "input": MTCNN.to_dict() | {"layout": LAYOUT},
        "tools": tool_versions(),
        "nets": {},
    }
    parity = {}
    with staged_directory(out, force) as tmp:
        for name in NAMES:
            on_stage(name)
            net, size = load_net(name), SIZES[name]
            dynamic_hw = name == "pnet"
            work = Work(
                tmp,
                ArtifactNames(name),
                size,
                net,
                dynamic_batch=not dynamic_hw,
                dynamic_hw=dynamic_hw,
                test_shape=[1, 3, *size],
            )
            inputs = _parity_inputs(size, n_random, seed)
            report = run_plan(PLAN, work, ("torch", torch_runner(net)), inputs)
            parity[name] = report.to_dict()
            if not report.ok:
                raise ParityError(report)
            work.paths.pop("raw_onnx").unlink()  # the simplified graph is the one that ships
            manifest["nets"][name] = {
                "input_size": None if dynamic_hw else list(size),
                "outputs": OUTPUTS[name],
                "ncnn_blobs": work.blobs,
                "artifacts": {k: describe(work.paths[k]) for k in SHIPPED},
                "parity_cos_min": min(r.vs_reference.cos_min for r in report.results),
            }
        write_json(tmp / PARITY, parity)
        write_json(tmp / MANIFEST, manifest)
    return manifest


def cache_key() -> str:
    """Detector exports depend only on the pinned weights and the tool versions."""
    blob = json.dumps([WEIGHTS_SHA256, tool_versions()], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
