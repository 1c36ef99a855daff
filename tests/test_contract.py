"""The preprocessing contract: one definition, recorded in manifests, honoured everywhere.

The main test imports a model trained on other preprocessing (BGR, (x - 127.5) /
127.5) as ONNX, declares that, and runs it through export, parity, ``check`` and the
face pipeline with no other change: ncnn's embedding of a real face equals the torch
model's on a face prepared by hand the way the model expects.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from mfn_deploy.contract import MEAN, SCALE, InputSpec, Pixels, template
from mfn_deploy.errors import MfnError
from mfn_deploy.export.parity import compare
from mfn_deploy.export.plan import ExportOptions, check, export
from mfn_deploy.export.to_onnx import export_onnx
from mfn_deploy.face.align import align
from mfn_deploy.face.samples import face_inputs, sample_faces
from mfn_deploy.face.verify import FacePipeline
from mfn_deploy.images import load_image, sample_photos
from mfn_deploy.models import create
from mfn_deploy.runtime import embedder
from mfn_deploy.weights import load_checkpoint, save_checkpoint

BGR_127 = Pixels("BGR", 127.5, 1 / 127.5)


def test_pixels_reorder_then_normalise():
    bgr = np.array([[[10, 20, 30]]], np.uint8)  # one pixel: B=10, G=20, R=30
    rgb = Pixels().from_bgr(bgr)
    assert rgb.shape == (3, 1, 1)
    assert np.allclose(rgb[:, 0, 0], (np.array([30, 20, 10]) - MEAN) * SCALE)
    assert np.allclose(BGR_127.from_bgr(bgr)[:, 0, 0], (np.array([10, 20, 30]) - 127.5) / 127.5)
    assert BGR_127.value_range() == (-1.0, 1.0)
    assert BGR_127.describe() == "BGR, (x - 127.5) / 127.5"
    assert Pixels().describe() == "RGB, (x - 127.5) / 128"


def test_a_bad_contract_is_one_line():
    with pytest.raises(MfnError, match=r"^channel order 'RGBA'; valid: RGB, BGR$"):
        InputSpec(112, 112, "RGBA")
    with pytest.raises(MfnError, match="scale 0 must be positive"):
        Pixels(scale=0)


def test_the_contract_round_trips_through_a_manifest_and_a_checkpoint(tmp_path):
    custom = ((30.0, 50.0), (80.0, 50.0), (55.0, 70.0), (35.0, 90.0), (75.0, 90.0))
    spec = InputSpec(112, 96, "BGR", 127.5, 1 / 127.5, custom)
    manifest = {"input": spec.manifest_input(), "alignment": spec.manifest_alignment()}
    assert InputSpec.from_manifest(json.loads(json.dumps(manifest))) == spec
    old = {"input": {"height": 112, "width": 112, "channel_order": "RGB", "mean": 127.5}}
    assert np.allclose(InputSpec.from_manifest(old).template(), template((112, 112)))

    model = create("mobilefacenet_96x96")
    model.input_spec = InputSpec(96, 96, "BGR", 127.5, 1 / 127.5)
    save_checkpoint(tmp_path / "bgr.pt", model)
    loaded, _ = load_checkpoint(tmp_path / "bgr.pt", None)
    assert loaded.input_spec == model.input_spec


def test_a_registered_size_change_keeps_the_contract():
    model = create("mobilefacenet", (128, 96))
    assert model.input_spec == InputSpec(128, 96)  # RGB, the default mean and scale


# --- a model trained on other preprocessing -----------------------------------------------


class TinyEmbedder(torch.nn.Module):
    """Small, but sensitive to channel order (no biases to drown the input out)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, 2, 1, bias=False),
            torch.nn.PReLU(16),
            torch.nn.Conv2d(16, 32, 3, 2, 1, bias=False),
            torch.nn.PReLU(32),
            torch.nn.Conv2d(32, 32, 3, 2, 1, bias=False),
            torch.nn.PReLU(32),
            # A GDConv-like head: 14x14 -> 1x1.
            torch.nn.Conv2d(32, 64, 14, 1, 0, groups=32, bias=False),
            torch.nn.Flatten(),
        )
        for m in self.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _by_hand(bgr_crop: np.ndarray) -> np.ndarray:
    """What the model was trained on, written out without the contract's code."""
    x = (bgr_crop.astype(np.float32) - 127.5) / 127.5  # BGR, as OpenCV reads it
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None]


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(3)
    model = TinyEmbedder().eval()
    root = tmp_path_factory.mktemp("bgr")
    export_onnx(model, (112, 112), root / "bgr_face.onnx")
    out = root / "export"
    opts = ExportOptions(out=out, onnx=root / "bgr_face.onnx", preprocessing=BGR_127, n_random=2)
    result = export(opts, faces=face_inputs)
    assert result.parity.ok, result.parity.blamed
    return model, out


def test_an_imported_model_records_its_contract(imported):
    _, out = imported
    m = json.loads((out / "manifest.json").read_text())
    assert (m["input"]["channel_order"], m["input"]["mean"]) == ("BGR", 127.5)
    assert m["input"]["scale"] == 1 / 127.5
    assert m["source"]["note"] == "preprocessing declared: BGR, (x - 127.5) / 127.5"
    assert np.allclose(m["alignment"]["template"], template((112, 112)))
    parity = json.loads((out / "parity.json").read_text())
    assert "BGR, (x - 127.5) / 127.5" in parity["inputs"]["faces"]["preprocessing"]
    assert check(out, n_random=2, faces=face_inputs).ok


def test_ncnn_embedding_matches_torch_given_the_contract(imported):
    """Every sample face: the export's ncnn run (contract read from its manifest)
    against the torch model on the face aligned and normalised by hand."""
    model, out = imported
    run, spec = embedder(out, "ncnn")
    assert spec.pixels == BGR_127
    for name, image, landmarks in sample_faces():
        crop = align(image, landmarks, (112, 112))
        with torch.no_grad():
            expected = model(torch.from_numpy(_by_hand(crop))).numpy()
        got = run(_by_hand(crop))
        m = compare(got, expected)
        assert m.cos_min >= 0.99999 and m.max_abs < 1e-3, (name, m)
        if name == "astronaut.png":  # in colour: the default contract (RGB) feeds another input
            with torch.no_grad():
                wrong = model(torch.from_numpy(Pixels().from_bgr(crop)[None])).numpy()
            assert compare(wrong, expected).cos_min < 0.999


def test_the_face_pipeline_embeds_with_the_recorded_contract(imported, tmp_path):
    """``embed`` (library and CLI) on a photo: detection, alignment, then the contract."""
    model, out = imported
    photo = sample_photos()[0]
    (found,) = FacePipeline(out, "ncnn").embed_all(photo)
    crop = align(load_image(photo), found.face.landmarks, (112, 112))
    with torch.no_grad():
        expected = model(torch.from_numpy(_by_hand(crop))).numpy()[0]
    expected /= np.linalg.norm(expected)
    assert float(found.embedding @ expected) >= 0.99999

    npy = tmp_path / "e.npy"
    r = run_cli("embed", photo, "--export", out, "--backend", "ncnn", "--npy", npy)
    assert r.returncode == 0, r.stderr
    assert float(np.load(npy)[0] @ expected) >= 0.99999
