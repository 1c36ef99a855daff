"""Face pipeline: MTCNN in three backends, alignment, compare, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import run_cli
from face_data import write_lfw_layout
from mfn_deploy.face.align import TEMPLATE_112, similarity_matrix, template
from mfn_deploy.face.detect import detect
from mfn_deploy.face.mtcnn import load_net, weights_path
from mfn_deploy.face.samples import lfw_face
from mfn_deploy.images import load_image, sample_photos
from mfn_deploy.runtime import detector_nets

ASTRONAUT = sample_photos()[0]
COFFEE = sample_photos()[2]


@pytest.mark.parametrize("name", ["rnet", "onet"])
def test_dense_column_reorder_equals_the_original_permuted_flatten(name):
    """The shipped weights expect a (W, H, C) flatten; our NCHW graph must agree."""
    net = load_net(name)
    raw = torch.load(weights_path(name), weights_only=True)
    size = 24 if name == "rnet" else 48
    x = torch.randn(3, 3, size, size)
    dense = net.dense4 if name == "rnet" else net.dense5
    trunk = {}
    dense.register_forward_pre_hook(lambda _m, inp: trunk.update(x=inp[0]))  # returns None
    with torch.no_grad():
        ours = net(x)
        # Rebuild the last conv map from the flattened NCHW input to the dense layer.
        c, hw = (64, 3) if name == "rnet" else (128, 3)
        conv_map = trunk["x"].reshape(3, c, hw, hw)
        key = "dense4" if name == "rnet" else "dense5"
        theirs = torch.nn.functional.linear(
            conv_map.permute(0, 3, 2, 1).reshape(3, -1), raw[f"{key}.weight"], raw[f"{key}.bias"]
        )
        assert torch.allclose(dense(trunk["x"]), theirs, atol=1e-5)
    assert ours.shape == (3, 6 if name == "rnet" else 16)


def test_detection_finds_the_astronaut_with_landmarks_where_they_belong():
    faces = detect(load_image(ASTRONAUT), detector_nets("torch"))
    assert len(faces) == 1
    f = faces[0]
    x1, y1, x2, y2 = f.box
    assert f.score > 0.99
    # Eileen Collins' face in the 512x512 portrait: measured on the drawn image.
    assert abs(x1 - 179) < 6 and abs(y1 - 60) < 6 and abs(x2 - 268) < 6 and abs(y2 - 174) < 6
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = f.landmarks
    assert lex < nx < rex and lmx < nx < rmx  # left/right in image coordinates
    assert max(ley, rey) < ny < min(lmy, rmy)  # eyes above nose above mouth
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in f.landmarks)


@pytest.fixture(scope="module")
def detector_export(tmp_path_factory):
    from mfn_deploy.face.detector_export import export_detector

    out = tmp_path_factory.mktemp("det") / "mtcnn"
    export_detector(out)
    return out


@pytest.mark.parametrize("backend", ["onnxruntime", "ncnn"])
def test_detection_is_identical_across_backends_within_a_pixel(backend, detector_export):
    ref_nets, nets = detector_nets("torch"), detector_nets(backend, detector_export)
    for img in [load_image(ASTRONAUT), lfw_face(0), lfw_face(7), load_image(COFFEE)]:
        ref, got = detect(img, ref_nets), detect(img, nets)
        assert len(got) == len(ref)
        for a, b in zip(ref, got, strict=True):
            assert np.abs(np.subtract(a.box, b.box)).max() < 1.0
            assert np.abs(a.landmarks - b.landmarks).max() < 1.0
            assert abs(a.score - b.score) < 1e-3


def test_detector_export_manifest_records_weights_and_parity(detector_export):
    m = json.loads((detector_export / "manifest.json").read_text())
    assert m["weights"]["package"] == "facenet-pytorch==2.6.0"
    assert set(m["weights"]["sha256"]) == {"pnet", "rnet", "onet"}
    assert m["nets"]["pnet"]["input_size"] is None  # any size: it slides over the pyramid
    for net in m["nets"].values():
        assert net["parity_cos_min"] >= 0.99999


def test_templates_for_each_input_size():
    assert np.allclose(template((112, 112)), TEMPLATE_112)
    assert np.allclose(template((112, 96)), TEMPLATE_112 - [8, 0])
    assert np.allclose(template((96, 96)), TEMPLATE_112 - [8, 8])


@pytest.mark.parametrize("size", [(112, 112), (112, 96), (96, 96)])
def test_alignment_maps_the_landmarks_onto_the_template(size):
    img = load_image(ASTRONAUT)
    marks = detect(img, detector_nets("torch"))[0].landmarks
    m = similarity_matrix(marks, size)
    mapped = marks @ m[:, :2].T + m[:, 2]
    residual = np.linalg.norm(mapped - template(size), axis=1)
    # Five points, four degrees of freedom: close, not exact (her smile is wider).
    assert residual.mean() < 6.0 and residual.max() < 10.0
    # Least squares: no worse than OpenCV's robust 4-DOF estimate of the same map.
    cv_m, _ = cv2.estimateAffinePartial2D(marks, template(size), method=cv2.LMEDS)
    cv_residual = np.linalg.norm(marks @ cv_m[:, :2].T + cv_m[:, 2] - template(size), axis=1)
    assert (residual**2).sum() <= (cv_residual**2).sum() + 1e-6
    # A similarity: equal scale on both axes, no shear.
    a, b = m[0, 0], m[0, 1]
    assert np.allclose(m[1, :2], [-b, a], atol=1e-9)


@pytest.fixture(scope="module")
def lfw_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("lfw")
    return write_lfw_layout(root), root


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "ncnn"])
def test_compare_self_copies_beat_a_different_face_in_every_backend(
    backend, mfn_export, detector_export, lfw_like
):
    """Plumbing, not accuracy: the weights are untrained."""
    from mfn_deploy.face.verify import FacePipeline, cosine

    _, root = lfw_like
    pipe = FacePipeline(mfn_export, backend, detector_export)
    a = pipe.embed_main_face(root / "Astronaut" / "Astronaut_0001.png").embedding
    flipped = pipe.embed_main_face(root / "Astronaut" / "Astronaut_0002.png").embedding
    rescaled = pipe.embed_main_face(root / "Astronaut" / "Astronaut_0003.png").embedding
    other = pipe.embed_main_face(root / "Lfw_000" / "Lfw_000_0001.png").embedding
    assert cosine(a, flipped) > cosine(a, other)
    assert cosine(a, rescaled) > cosine(a, other)


def test_compare_cli(mfn_export, detector_export, lfw_like):
    _, root = lfw_like
    args = ["--export", mfn_export, "--detector", detector_export, "--json"]
    same = run_cli(
        "compare",
        root / "Astronaut/Astronaut_0001.png",
        root / "Astronaut/Astronaut_0003.png",
        *args,
    )
    diff = run_cli(
        "compare", root / "Astronaut/Astronaut_0001.png", root / "Lfw_001/Lfw_001_0001.png", *args
    )
    assert same.returncode == 0 and diff.returncode == 0, same.stderr + diff.stderr
    assert json.loads(same.stdout)["similarity"] > json.loads(diff.stdout)["similarity"]


def test_evaluate_end_to_end_with_two_backends(mfn_export, detector_export, lfw_like, tmp_path):
    pairs, root = lfw_like
    roc, report = tmp_path / "roc.png", tmp_path / "report.json"
    r = run_cli(
        "evaluate",
        "--pairs",
        pairs,
        "--root",
        root,
        "--export",
        mfn_export,
        "--detector",
        detector_export,
        "--backend",
        "torch",
        "--backend",
        "ncnn",
        "--roc",
        roc,
        "--json-out",
        report,
    )
    assert r.returncode == 0, r.stderr
    assert "pairs: 60 used of 60 (30 genuine, 30 impostor)" in r.stdout
    data = json.loads(report.read_text())
    torch_b, ncnn_b = data["backends"]
    assert len(torch_b["fold_thresholds"]) == 10
    assert 0.0 <= torch_b["accuracy_mean"] <= 1.0
    assert ncnn_b["decision_flips_vs_first_backend"] == 0  # fp32 conversion changes no decision
    assert abs(torch_b["accuracy_mean"] - ncnn_b["accuracy_mean"]) < 1e-9
    img = cv2.imread(str(roc))
    assert img is not None and img.shape[0] > 200


# --- errors -----------------------------------------------------------------------------


def test_detect_errors_are_one_line(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    cases = {
        tmp_path / "missing.png": "missing.png: image file not found",
        junk: "junk.png: not an image OpenCV can read",
        COFFEE: "coffee.png: no face found",
    }
    for path, expected in cases.items():
        r = run_cli("detect", path)
        assert r.returncode == 1
        assert expected in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_embed_reports_each_bad_file_and_processes_the_rest(mfn_export, detector_export, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 truncated")
    npy = tmp_path / "emb.npy"
    r = run_cli(
        "embed",
        ASTRONAUT,
        junk,
        COFFEE,
        tmp_path / "nope.png",
        "--export",
        mfn_export,
        "--detector",
        detector_export,
        "--npy",
        npy,
    )
    assert r.returncode == 1
    rows = json.loads(r.stdout)
    assert [Path(x["file"]).name for x in rows] == ["astronaut.png"]
    assert len(rows[0]["embedding"]) == 128
    assert abs(np.linalg.norm(rows[0]["embedding"]) - 1) < 1e-4
    assert np.load(npy).shape == (1, 128)
    err = r.stderr.strip().splitlines()
    assert any("junk.jpg: not an image OpenCV can read" in e for e in err)
    assert any("coffee.png: no face found" in e for e in err)
    assert any("nope.png: image file not found" in e for e in err)
    assert err[-1] == "error: 3 of 4 images failed"


def test_detect_draw_writes_a_png(tmp_path):
    out = tmp_path / "drawn.png"
    r = run_cli("detect", ASTRONAUT, "--json", "--draw", out)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["faces"]) == 1
    drawn, orig = cv2.imread(str(out)), load_image(ASTRONAUT)
    assert drawn.shape == orig.shape and (drawn != orig).any()
