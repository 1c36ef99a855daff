"""The preprocessing contract: one definition, recorded in manifests, honoured everywhere.

The main test imports a model trained on other preprocessing (BGR, (x - 127.5) /
127.5) as ONNX, declares that, and runs it through export, parity, ``check`` and the
face pipeline with no other change: ncnn's embedding of a real face equals the torch
model's on a face prepared by hand the way the model expects.
"""

from __future__ import annotations

import json
import shutil
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
from mfn_deploy.face.sample_pairs import write_lfw_layout
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
    with pytest.raises(MfnError, match=r"^preprocessing scale must be .* positive numbers, got 0$"):
        Pixels(scale=0)
    with pytest.raises(MfnError, match=r"^preprocessing mean must be a number or a list of 3"):
        Pixels(mean=(1.0, 2.0))
    with pytest.raises(MfnError, match=r"got \[1, -1, 1\]$"):
        Pixels(scale=[1, -1, 1])
    with pytest.raises(MfnError, match=r"^input\.channel_order must be RGB or BGR, got 'YUV'$"):
        Pixels.from_record({"channel_order": "YUV"})
    with pytest.raises(MfnError, match=r"^input\.scale missing$"):
        Pixels.from_record({"channel_order": "RGB", "mean": 1.0}, strict=True)
    with pytest.raises(MfnError, match=r"^input\.mean must be a number or a list of 3"):
        InputSpec.from_manifest({"input": {"height": 112, "width": 112, "mean": "127.5"}})
    with pytest.raises(MfnError, match=r"^alignment\.template must be 5 \[x, y\] pairs"):
        InputSpec.from_manifest({"input": {"height": 8, "width": 8}, "alignment": {}})


# ImageNet's statistics, as torchvision's Normalize takes them (in 8-bit pixels).
PER_CHANNEL = Pixels("RGB", (123.675, 116.28, 103.53), (1 / 58.395, 1 / 57.12, 1 / 57.375))


def test_per_channel_mean_and_scale_apply_in_tensor_channel_order():
    bgr = np.array([[[10, 20, 30]]], np.uint8)  # B=10, G=20, R=30
    mean, scale = np.array(PER_CHANNEL.mean), np.array(PER_CHANNEL.scale)
    assert np.allclose(PER_CHANNEL.from_bgr(bgr)[:, 0, 0], (np.array([30, 20, 10]) - mean) * scale)
    bgr_order = Pixels("BGR", [1, 2, 3], [0.5, 0.25, 2])  # lists are accepted, kept as tuples
    assert bgr_order.mean == (1.0, 2.0, 3.0) and bgr_order.scale == (0.5, 0.25, 2.0)
    assert np.allclose(bgr_order.from_bgr(bgr)[:, 0, 0], [(10 - 1) * 0.5, (20 - 2) * 0.25, 54])
    assert Pixels("RGB", (1, 2, 3), 0.5).per_channel() == ((1, 2, 3), (0.5, 0.5, 0.5))
    assert bgr_order.describe() == "BGR, (x - (1, 2, 3)) / (2, 4, 0.5)"
    lo, hi = PER_CHANNEL.value_range()
    assert np.isclose(lo, -123.675 / 58.395) and np.isclose(hi, (255 - 103.53) / 57.375)


def test_per_channel_values_round_trip_through_a_manifest_and_stay_scalars_otherwise():
    spec = InputSpec(112, 96, "BGR", [127.0, 128.0, 129.0], (0.5, 0.25, 0.125))
    manifest = {"input": spec.manifest_input(), "alignment": spec.manifest_alignment()}
    record = json.loads(json.dumps(manifest))
    assert record["input"]["mean"] == [127.0, 128.0, 129.0]
    assert record["input"]["scale"] == [0.5, 0.25, 0.125]
    back = InputSpec.from_manifest(record, strict=True)
    assert back.pixels == spec.pixels and back.size == spec.size
    scalar = InputSpec(112, 112).manifest_input()
    assert (scalar["mean"], scalar["scale"]) == (MEAN, SCALE)  # numbers, as before
    assert Pixels.from_record(json.loads(json.dumps(scalar))) == Pixels()


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


# --- the same model declared on the command line; per-channel values -------------------


@pytest.fixture(scope="module")
def imported_by_cli(imported, tmp_path_factory) -> Path:
    """The ``imported`` model's ONNX exported by ``mfn-deploy export`` with its contract
    declared as options: BGR, (x - 127.5) / 127.5."""
    _, out = imported
    onnx = json.loads((out / "manifest.json").read_text())["source"]["path"]
    cli_out = tmp_path_factory.mktemp("cli") / "bgr"
    r = run_cli(
        "export", "--onnx", onnx, "--out", cli_out, "--random-inputs", "2",
        "--channel-order", "BGR", "--mean", "127.5", "--scale", "1/127.5",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return cli_out


def test_export_options_declare_the_contract(imported_by_cli):
    m = json.loads((imported_by_cli / "manifest.json").read_text())
    assert InputSpec.from_manifest(m).pixels == BGR_127
    assert m["source"]["note"] == "preprocessing declared: BGR, (x - 127.5) / 127.5"


@pytest.mark.parametrize("backend", ["ncnn", "onnxruntime"])
def test_embed_and_compare_feed_the_declared_contract(imported, imported_by_cli, backend, tmp_path):
    """``embed`` and ``compare`` through the CLI: each embedding is the torch model's on
    the face aligned and normalised by hand (BGR, /127.5), and the similarity ``compare``
    prints is the cosine of those."""
    model, _ = imported
    write_lfw_layout(tmp_path)
    a, b = tmp_path / "Astronaut/Astronaut_0001.png", tmp_path / "Lfw_001/Lfw_001_0001.png"
    r = run_cli("embed", a, b, "--export", imported_by_cli, "--backend", backend)
    assert r.returncode == 0, r.stderr
    largest = {}  # compare takes each image's largest face
    for row in json.loads(r.stdout):
        x1, y1, x2, y2 = row["box"]
        if (x2 - x1) * (y2 - y1) > largest.get(row["file"], (0, None))[0]:
            largest[row["file"]] = ((x2 - x1) * (y2 - y1), row)
    expected = {}
    for file, (_, row) in largest.items():
        # The printed landmarks are rounded to 0.01 px: the crop differs by as little.
        crop = align(load_image(Path(file)), np.array(row["landmarks"]), (112, 112))
        with torch.no_grad():
            e = model(torch.from_numpy(_by_hand(crop))).numpy()[0]
        expected[file] = e / np.linalg.norm(e)
        assert float(np.array(row["embedding"]) @ expected[file]) >= 0.9999, file
    c = run_cli("compare", a, b, "--export", imported_by_cli, "--backend", backend, "--json")
    assert c.returncode == 0, c.stderr
    sim = json.loads(c.stdout)["similarity"]
    assert abs(sim - float(expected[str(a)] @ expected[str(b)])) < 1e-3


def test_a_per_channel_contract_is_fed_per_channel(imported, tmp_path):
    """An ONNX trained on per-channel statistics: ncnn, fed by the export's manifest,
    computes what torch computes on the face normalised per channel by hand."""
    model, out = imported
    onnx = Path(json.loads((out / "manifest.json").read_text())["source"]["path"])
    opts = ExportOptions(out=tmp_path / "pc", onnx=onnx, preprocessing=PER_CHANNEL, n_random=2)
    assert export(opts, faces=face_inputs).parity.ok
    run, spec = embedder(tmp_path / "pc", "ncnn")
    assert spec.pixels == PER_CHANNEL
    name, image, landmarks = sample_faces()[0]
    crop = align(image, landmarks, (112, 112))
    rgb = crop[..., ::-1].astype(np.float32)
    by_hand = (rgb - np.array(PER_CHANNEL.mean)) * np.array(PER_CHANNEL.scale)
    x = np.ascontiguousarray(by_hand.transpose(2, 0, 1))[None].astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    m = compare(run(spec.pixels.from_bgr(crop)[None]), expected)
    assert m.cos_min >= 0.99999, (name, m)


def test_detection_reads_the_detectors_manifest_record(tmp_path):
    """A detector export says how its nets want pixels; detection follows the record,
    not the constants in contract.py (those only write the record when exporting)."""
    from mfn_deploy.contract import MTCNN
    from mfn_deploy.face.detect import detect
    from mfn_deploy.runtime import detector_dir, detector_nets

    copy = tmp_path / "det"
    shutil.copytree(detector_dir(), copy)
    assert detector_nets("ncnn", copy).pixels == MTCNN
    m = json.loads((copy / "manifest.json").read_text())
    m["input"] |= {"channel_order": "BGR", "mean": [0.0, 0.0, 0.0], "scale": [1.0, 1.0, 1.0]}
    (copy / "manifest.json").write_text(json.dumps(m))
    nets = detector_nets("ncnn", copy)
    assert nets.pixels == Pixels("BGR", (0, 0, 0), (1, 1, 1))
    photo = load_image(sample_photos()[0])
    usual = detect(photo, detector_nets("ncnn", detector_dir()))
    assert [f.score for f in detect(photo, nets)] != [f.score for f in usual]
