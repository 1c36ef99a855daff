"""int8 ncnn models written by this project (export/int8.py, calibrate.py, ncnn_model.py).

One quantization of the default MobileFaceNet (the cached fp32 export, the built-in
calibration set, ``auto``) is shared by the file; the checks recompute what they
check independently: weight scales from the folded torch weights, the int8 weights
from ncnn's own load-time quantization, KL from a plain loop, the embedding from
ncnn and from the native runners.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess

import cv2
import numpy as np
import pytest
import torch

from conftest import needs_runner, run_cli
from mfn_deploy.contract import InputSpec
from mfn_deploy.errors import MfnError
from mfn_deploy.export import calibrate, int8
from mfn_deploy.export.backends import load_ncnn_net, ncnn_runner
from mfn_deploy.export.manifest import read_manifest
from mfn_deploy.export.ncnn_model import read_model, write_model
from mfn_deploy.export.parity import compare
from mfn_deploy.export.plan import ExportOptions, _validate
from mfn_deploy.export.stages import INT8_GATE, STAGES
from mfn_deploy.face.calibration import calibration_dir, int8_calibration
from mfn_deploy.images import load_image, sample_photos
from mfn_deploy.metrics import best_threshold
from mfn_deploy.native import local_command
from mfn_deploy.runtime import cached_export


@pytest.fixture(scope="session")
def fp32():
    """The default MobileFaceNet's fp32 export: (dir, manifest, spec, (param, bin))."""
    d = cached_export("mobilefacenet")
    manifest = read_manifest(d)
    pair = (d / "mobilefacenet.ncnn.param", d / "mobilefacenet.ncnn.bin")
    return d, manifest, InputSpec.from_manifest(manifest), pair


def _holdout_pairs(holdout: np.ndarray) -> int8.Pairs:
    """A cheap pairs set from the held-out faces (face k, mirror k+1): genuine face vs
    its mirror, impostor face vs the next face. The real set (``real_pairs``) takes
    MTCNN over 54 photos; the gate's arithmetic is the same."""
    faces = len(holdout) // 2
    a = [2 * i for i in range(faces)] + [2 * i for i in range(faces - 1)]
    b = [2 * i + 1 for i in range(faces)] + [2 * i + 2 for i in range(faces - 1)]
    same = np.arange(len(a)) < faces
    return int8.Pairs(holdout, np.array(a), np.array(b), same, {"source": "held-out pairs"})


@pytest.fixture(scope="session")
def calibration(fp32):
    data = int8_calibration(None, fp32[2], pairs=False)
    data.pairs = _holdout_pairs(data.holdout)
    return data


@pytest.fixture(scope="session")
def quantized(fp32, calibration, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    paths = (out / "m.int8.ncnn.param", out / "m.int8.ncnn.bin", out / "m.int8.table")
    request = int8.Int8Request(calibration, "kl", auto=True)
    report = int8.quantize(fp32[3], fp32[1]["ncnn_blobs"], request, INT8_GATE, paths)
    return {"report": report, "param": paths[0], "bin": paths[1], "table": paths[2]}


def test_stage_is_declared_as_a_side_branch():
    stage = STAGES["ncnn_int8"]
    assert stage.side_branch and stage.option == "int8"
    assert set(stage.artifacts.values()) == {".int8.ncnn.param", ".int8.ncnn.bin", ".int8.table"}


def test_int8_model_loads_and_meets_the_gate(fp32, calibration, quantized):
    blobs = fp32[1]["ncnn_blobs"]
    faces = calibration.holdout
    ref = ncnn_runner(*fp32[3], blobs)(faces)
    out = ncnn_runner(quantized["param"], quantized["bin"], blobs, packing=False)(faces)
    m = compare(out, ref)
    assert m.cos_mean >= INT8_GATE.cos_mean_min and m.cos_min >= INT8_GATE.cos_min, m
    report = quantized["report"]
    assert report["passed"] and report["holdout"]["cos_mean"] == pytest.approx(m.cos_mean)
    # The held-out faces are none of the calibration inputs.
    assert not set(report["holdout"]["faces"]) & set(report["calibration"]["files"])
    # Exactly the table's layers carry int8_scale_term; the kept ones stay fp32.
    table = int8.read_table(quantized["table"])
    marked = {
        line.split()[1]
        for line in quantized["param"].read_text().splitlines()[2:]
        if " 8=" in f" {line}"
    }
    assert marked == set(table) and len(table) == report["layers_int8"]
    assert not marked & set(report["layers_fp32"]["auto"])
    assert quantized["bin"].stat().st_size < fp32[3][1].stat().st_size


def test_gate_counts_no_decision_flips(fp32, calibration, quantized):
    """The gate's third line, recomputed: fp32's best threshold on the pairs, then the
    verify/reject decisions of the written int8 model against fp32's."""
    assert INT8_GATE.flips_max == 0
    pairs, blobs = calibration.pairs, fp32[1]["ncnn_blobs"]
    ref = pairs.scores(ncnn_runner(*fp32[3], blobs)(pairs.images))
    out = ncnn_runner(quantized["param"], quantized["bin"], blobs, packing=False)(pairs.images)
    threshold = best_threshold(ref, pairs.same)
    flips = int(np.sum((pairs.scores(out) >= threshold) != (ref >= threshold)))
    p = quantized["report"]["pairs"]
    assert (p["flips"], p["n"], p["threshold"]) == (flips, len(pairs.same), threshold)
    assert flips == 0 and "pair decisions flip" in int8.format_sensitivity(quantized["report"])
    m = compare(out[:2], out[:2])
    assert INT8_GATE.passes(m, 0) and not INT8_GATE.passes(m, 1) and INT8_GATE.passes(m)


def test_decision_flips_fail_the_gate_and_write_nothing(fp32, calibration, tmp_path, monkeypatch):
    """All layers int8 on untrained weights moves the embedding far enough to flip pairs:
    with the cosine lines at 0, the flips alone fail the gate; nothing is written."""
    monkeypatch.setattr(int8, "SENSITIVITY_FACES", 1)
    request = int8.Int8Request(calibration)
    gate = int8.Gate(cos_mean_min=0.0, cos_min=0.0, flips_max=0)
    out = (tmp_path / "m.param", tmp_path / "m.bin", tmp_path / "m.table")
    with pytest.raises(int8.Int8GateError, match="pair decisions flipped") as e:
        int8.quantize(fp32[3], fp32[1]["ncnn_blobs"], request, gate, out)
    report = e.value.report
    assert report["pairs"]["flips"] > 0 and not report["passed"]
    assert "\n" not in str(e.value) and not list(tmp_path.iterdir())


def test_sensitivity_report_ranks_every_layer(fp32, quantized):
    report = quantized["report"]
    layers = [layer.name for layer in int8.quantizable(read_model(*fp32[3]))]
    rows = report["sensitivity"]
    assert sorted(r["layer"] for r in rows) == sorted(layers)
    assert [r["cos_mean"] for r in rows] == sorted(r["cos_mean"] for r in rows)
    kept = report["layers_fp32"]["auto"]
    assert kept == [r["layer"] for r in rows[: len(kept)]]  # the most sensitive first
    assert "int8 sensitivity" in int8.format_sensitivity(report, top=5)


def test_weight_scales_match_the_folded_torch_weights(fp32, quantized):
    """127 / absmax per output channel, recomputed from NAME.folded.pt."""
    state = torch.load(fp32[0] / "mobilefacenet.folded.pt", weights_only=True)
    weights = [t for k, t in state.items() if k.endswith("weight") and t.ndim in (2, 4)]
    layers = int8.quantizable(read_model(*fp32[3]))
    assert len(weights) == len(layers)
    table = int8.read_table(quantized["table"])
    checked = 0
    for layer, w in zip(layers, weights, strict=True):
        assert w.numel() == layer.weight.size, layer.name
        if layer.name in table:
            expected = 127.0 / w.reshape(w.shape[0], -1).abs().amax(1).double().numpy()
            np.testing.assert_allclose(table[layer.name][0], expected, rtol=1e-6)
            checked += 1
    assert checked == len(table) > 0


def test_int8_weights_equal_ncnns_own_quantization(fp32, calibration, quantized, tmp_path):
    """The same scales with fp32 weights in the bin, quantized by ncnn at load time."""
    model = read_model(*fp32[3])
    table = int8.read_table(quantized["table"])
    blobs, faces = fp32[1]["ncnn_blobs"], calibration.holdout[:2]
    outs = []
    for int8_weights in (True, False):
        param, binary = tmp_path / f"{int8_weights}.param", tmp_path / f"{int8_weights}.bin"
        write_model(int8.int8_model(model, table, int8_weights), param, binary)
        outs.append(ncnn_runner(param, binary, blobs)(faces))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_table_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    table = {
        "conv_0": (rng.uniform(1, 5000, 64).astype(np.float32), float(np.float32(41.3))),
        "convdw_67": (rng.uniform(1, 5000, 64).astype(np.float32), float(np.float32(0.0731))),
    }
    path = tmp_path / "m.int8.table"
    int8.write_table(path, table)
    lines = path.read_text().splitlines()
    assert [line.split()[0] for line in lines] == [
        "conv_0_param_0",
        "convdw_67_param_0",
        "conv_0",
        "convdw_67",
    ]
    back = int8.read_table(path)
    assert list(back) == list(table)
    for name, (w, s) in table.items():
        np.testing.assert_array_equal(back[name][0], w)
        assert back[name][1] == s
    path.write_text("conv_0_param_0 1 2\n")
    with pytest.raises(MfnError, match="both a weight and an input line"):
        int8.read_table(path)


def _kl_by_loop(hist: np.ndarray, absmax: float) -> float:
    """KL calibration the plain way: one candidate at a time, explicit distributions."""
    best, best_bins = math.inf, None
    for bins in range(calibrate.LEVELS, calibrate.BINS + 1):
        p = hist[:bins].astype(np.float64)
        p[-1] += hist[bins:].sum()
        q = np.zeros(bins)
        edges = np.arange(calibrate.LEVELS + 1) * bins // calibrate.LEVELS
        for a, b in itertools.pairwise(edges):
            nonzero = hist[a:b] > 0
            if nonzero.any():
                q[a:b] = nonzero * hist[a:b].sum() / nonzero.sum()
        p = p / p.sum() + calibrate.KL_EPS
        q = q / q.sum() + calibrate.KL_EPS
        kl = float((p * np.log(p / q)).sum())
        if kl < best:
            best, best_bins = kl, bins
    return (best_bins + 0.5) * absmax / calibrate.BINS


def test_kl_threshold_matches_a_plain_loop():
    rng = np.random.default_rng(1)
    x = np.abs(rng.laplace(size=20000))
    hist = np.bincount(np.minimum((x / x.max() * 2048).astype(int), 2047), minlength=2048)
    assert calibrate.kl_threshold(hist, x.max()) == pytest.approx(_kl_by_loop(hist, x.max()))


def test_calibration_is_deterministic_and_eq_no_worse_than_kl(fp32, calibration):
    model = read_model(*fp32[3])
    layers = int8.quantizable(model)[:6]
    x = calibration.calib[:3]
    first = int8.make_table(layers, *fp32[3], "in0", x, "kl")
    again = int8.make_table(layers, *fp32[3], "in0", x, "kl")
    assert {k: v[1] for k, v in first.items()} == {k: v[1] for k, v in again.items()}
    aciq = int8.make_table(layers, *fp32[3], "in0", x, "aciq")
    assert all(s > 0 for _, s in aciq.values())
    # eq searches around kl's scale (kl's own included): on its images it cannot lose.
    layer = layers[1]
    net_inputs = calibrate._extract_all(load_ncnn_net(*fp32[3]), "in0", x[0], [layer.bottoms[0]])
    w = first[layer.name][0]
    kl_scale = first[layer.name][1]
    eq = calibrate.eq_scale(layer, w, net_inputs, kl_scale)
    assert 0.5 * kl_scale <= eq <= 2 * kl_scale


def test_unknown_skipped_layer_is_one_line(fp32, calibration, tmp_path):
    request = int8.Int8Request(calibration, skip=("conv_99",))
    with pytest.raises(MfnError, match="no int8-capable layer or group conv_99") as e:
        int8.quantize(fp32[3], fp32[1]["ncnn_blobs"], request, INT8_GATE, (tmp_path / "x",) * 3)
    assert "\n" not in str(e.value) and not list(tmp_path.iterdir())


def test_skip_groups_keep_those_layers_fp32(fp32, calibration, tmp_path):
    layers = int8.quantizable(read_model(*fp32[3]))
    depthwise = {layer.name for layer in layers if layer.type == "ConvolutionDepthWise"}
    gdconv = {layer.name for layer in layers if int8.SKIP_GROUPS["gdconv"](layer)}
    assert len(gdconv) == 1 and len(depthwise) == 17  # the dw row, 15 bottlenecks, GDConv
    blobs, paths = fp32[1]["ncnn_blobs"], (tmp_path / "p", tmp_path / "b", tmp_path / "t")
    table = int8.quantize_ungated(fp32[3], blobs, calibration.calib[:2], paths, skip=("depthwise",))
    assert set(table) == {layer.name for layer in layers} - depthwise
    rows = [line.split() for line in paths[0].read_text().splitlines()[2:]]
    marked = {r[1] for r in rows if any(token.startswith("8=") for token in r)}
    fp32_in_file = (table.keys() | depthwise) - marked
    assert fp32_in_file == depthwise  # the file marks every other one int8 (8=)
    # a group and a name together, expanded in model order
    first_conv = layers[0].name
    skip = int8.expand_skip(layers, ("gdconv", first_conv))
    assert skip == (first_conv, *gdconv)
    with pytest.raises(MfnError, match="groups: depthwise, dw3x3, gdconv"):
        int8.expand_skip(layers, ("depthwize",))


def test_int8_options_are_validated(tmp_path):
    with pytest.raises(MfnError, match="need --int8"):
        _validate(ExportOptions(out=tmp_path / "o", model="mobilefacenet", int8_auto=True))
    with pytest.raises(MfnError, match="choose one of kl, aciq, eq"):
        _validate(ExportOptions(out=tmp_path / "o", model="mobilefacenet", calib_method="max"))


def _blank(path, side=200) -> None:
    cv2.imwrite(str(path), np.full((side, side, 3), 128, np.uint8))


@pytest.mark.parametrize("fault", ["empty", "garbage", "npy_shape", "no_face", "not_dir"])
def test_corrupt_calibration_folder_is_one_line(fault, tmp_path):
    spec = InputSpec(112, 112)
    folder = tmp_path / "calib"
    folder.mkdir()
    if fault == "garbage":
        (folder / "a.png").write_bytes(b"not a png")
    elif fault == "npy_shape":
        np.save(folder / "a.npy", np.zeros((3, 96, 96), np.float32))
    elif fault == "no_face":
        _blank(folder / "a.png")
    elif fault == "not_dir":
        folder = tmp_path / "missing"
    with pytest.raises(MfnError) as e:
        calibration_dir(folder, spec)
    assert "\n" not in str(e.value)


def test_calibration_folder_takes_npy_crops_and_photos(tmp_path, caplog):
    spec = InputSpec(112, 112)
    np.save(tmp_path / "batch.npy", np.zeros((2, 3, 112, 112), np.float32))
    crop = cv2.resize(load_image(sample_photos()[0]), (112, 112))
    cv2.imwrite(str(tmp_path / "crop.png"), crop)
    cv2.imwrite(str(tmp_path / "photo.png"), load_image(sample_photos()[0]))
    _blank(tmp_path / "wall.png")
    x, info = calibration_dir(tmp_path, spec)
    assert x.shape == (4, 3, 112, 112) and x.dtype == np.float32
    assert info["skipped_no_face"] == ["wall.png"]
    assert "wall.png" in caplog.text


def test_cli_corrupt_calibration_writes_nothing(tmp_path):
    bad = tmp_path / "calib"
    bad.mkdir()
    np.save(bad / "x.npy", np.zeros((5, 5), np.float32))
    out = tmp_path / "out"
    proc = run_cli("export", "--model", "mobilefacenet", "--out", out, "--int8", "--calib", bad)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "x.npy" in errors[0], proc.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["calib"]


def _runner_embedding(target: str, quantized: dict, x: np.ndarray, tmp_path) -> np.ndarray:
    inp, dump = tmp_path / f"{target}.in.f32", tmp_path / f"{target}.out.f32"
    x.astype("<f4").tofile(inp)
    cmd = [*local_command(target), "--param", quantized["param"], "--bin", quantized["bin"]]
    cmd += ["--input", inp, "--shape", f"{x.shape[2]},{x.shape[1]},3", "--threads", "1"]
    cmd += ["--warmup", "0", "--loops", "0", "--dump", dump]  # the cold run's output
    proc = subprocess.run(
        list(map(str, cmd)), check=False, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)
    return np.fromfile(dump, "<f4")


@needs_runner("host")
def test_host_runner_reproduces_ncnn_python(fp32, calibration, quantized, tmp_path):
    x = calibration.holdout[0]
    ref = ncnn_runner(quantized["param"], quantized["bin"], fp32[1]["ncnn_blobs"])(x[None])
    out = _runner_embedding("host", quantized, x, tmp_path)
    assert compare(out[None], ref).cos_min >= 0.9999


@pytest.fixture(scope="session")
def all_int8(fp32, calibration, tmp_path_factory) -> dict:
    """Every layer int8 (fails the gate on untrained weights; exact to run, though):
    the benchmarks' ungated library call."""
    out = tmp_path_factory.mktemp("all_int8")
    paths = (out / "all.param", out / "all.bin", out / "all.table")
    blobs = fp32[1]["ncnn_blobs"]
    table = int8.quantize_ungated(fp32[3], blobs, calibration.calib[:4], paths)
    assert set(table) == {layer.name for layer in int8.quantizable(read_model(*fp32[3]))}
    assert int8.read_table(paths[2]).keys() == table.keys()
    return {"param": paths[0], "bin": paths[1]}


@needs_runner("arm64-v8a")
def test_arm64_runner_reproduces_ncnn_python(fp32, calibration, quantized, all_int8, tmp_path):
    """Against ncnn-Python's unpacked layout: exact int8 arithmetic, which ARM's kernels
    compute too (x86's packed int8 depthwise rounds differently; backends.load_ncnn_net).

    All-int8, every layer is integer arithmetic or elementwise fp32: bit-exact. Mixed
    (auto), fp32 convolutions sum in another order on ARM, an int8 layer after one can
    round an input the other way, and untrained weights amplify that: looser there.
    """
    x = calibration.holdout[0]
    blobs = fp32[1]["ncnn_blobs"]
    for model, least in ((all_int8, 0.9999), (quantized, 0.99)):
        ref = ncnn_runner(model["param"], model["bin"], blobs, packing=False)(x[None])
        out = _runner_embedding("arm64-v8a", model, x, tmp_path)
        assert compare(out[None], ref).cos_min >= least


def test_readme_quotes_the_pretrained_parity_results():
    """The README's per-stage parity block is benchmarks/pretrained_parity.py's output,
    word for word (the script rewrites both), and it shows int8 passing its gate."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    block = readme.split("<!-- pretrained-parity:begin -->\n")[1].split(
        "<!-- pretrained-parity:end -->"
    )[0]
    assert block == (root / "benchmarks/results/pretrained_parity.md").read_text()
    assert block.count("parity: all stages within tolerance") == 2
    assert "ncnn_int8" in block and "--int8-skip depthwise" in block
