"""The export pipeline: every stage, the parity gates, and every documented error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import run_cli
from mfn_deploy.errors import MfnError
from mfn_deploy.export.backends import onnx_runner
from mfn_deploy.export.parity import compare
from mfn_deploy.export.plan import ExportOptions, ParityError, check, export
from mfn_deploy.export.stages import ArtifactNames
from mfn_deploy.face.samples import face_inputs
from mfn_deploy.models import create, names
from mfn_deploy.weights import default_weights, save_checkpoint

FP16_SUBNORMAL = 6.1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", names())
def test_every_table2_network_exports_and_passes_fp32_parity(name, tmp_path):
    out = tmp_path / name
    result = export(ExportOptions(out=out, model=name, n_random=4), faces=face_inputs)
    assert result.parity.ok, result.parity.blamed
    stages = {r.stage for r in result.parity.results}
    assert stages == {"fold", "onnx", "simplify", "ncnn"}
    for r in result.parity.results:
        assert r.vs_reference.cos_min >= 0.99999
    files = {p.name for p in out.iterdir()}
    n = ArtifactNames(name)
    assert files == {
        n.folded,
        n.raw_onnx,
        n.onnx,
        n.ncnn_param(),
        n.ncnn_bin(),
        "manifest.json",
        "parity.json",
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "default"
    assert manifest["source"]["trained"] is False
    assert "untrained" in manifest["source"]["note"]
    assert manifest["stages"]["fold"]["remaining"] == []
    assert manifest["stages"]["fold"]["folded"] > 0


def test_manifest_records_artifacts_tools_blobs_and_parity(mfn_export):
    m = json.loads((mfn_export / "manifest.json").read_text())
    assert m["input"] == {
        "height": 112,
        "width": 112,
        "channel_order": "RGB",
        "mean": 127.5,
        "scale": 1 / 128,
        "layout": "NCHW",
        "onnx_input": "data",
        "onnx_output": "embedding",
    }
    assert m["embedding_dim"] == 128
    assert set(m["tools"]) >= {"torch", "onnx", "onnxsim", "onnxruntime", "pnnx", "ncnn"}
    assert m["ncnn_blobs"]["inputs"] == ["in0"]
    assert m["ncnn_blobs"]["outputs"] == ["out0"]
    import hashlib

    for meta in m["artifacts"].values():
        data = (mfn_export / meta["file"]).read_bytes()
        assert len(data) == meta["bytes"]
        assert hashlib.sha256(data).hexdigest() == meta["sha256"]
    assert m["parity"]["ok"] is True
    parity = json.loads((mfn_export / "parity.json").read_text())
    assert parity["tolerances"]["ncnn"]["cos_min"] == 0.99999
    assert parity["tolerances"]["ncnn_fp16"]["cos_min"] == 0.999
    assert parity["inputs"]["faces"]["files"][0] == "astronaut.png"


def test_onnx_has_the_documented_names_and_opset(mfn_export):
    proto = onnx.load(str(mfn_export / "mobilefacenet.onnx"))
    assert [i.name for i in proto.graph.input] == ["data"]
    assert [o.name for o in proto.graph.output] == ["embedding"]
    assert proto.opset_import[0].version == 17
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)


def test_ncnn_python_matches_onnxruntime_on_real_photos(mfn_export):
    """The exported param/bin loaded in the ncnn package, against onnxruntime."""
    import ncnn

    from mfn_deploy.images import photo_inputs
    from mfn_deploy.models import InputSpec

    x, _ = photo_inputs(InputSpec(112, 112))
    ort_out = onnx_runner(mfn_export / "mobilefacenet.onnx")(x)
    net = ncnn.Net()
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    assert net.load_param(str(mfn_export / "mobilefacenet.ncnn.param")) == 0
    assert net.load_model(str(mfn_export / "mobilefacenet.ncnn.bin")) == 0
    outs = []
    for sample in x:
        ex = net.create_extractor()
        ex.input("in0", ncnn.Mat(np.ascontiguousarray(sample)).clone())
        ret, out = ex.extract("out0")
        assert ret == 0
        outs.append(np.array(out).reshape(-1))
    m = compare(np.stack(outs), ort_out)
    assert m.cos_min >= 0.99999
    assert m.max_abs <= 1e-4


def test_fp16_pair_is_written_and_within_fp16_tolerance(mfn_export):
    fp32_bin = (mfn_export / "mobilefacenet.ncnn.bin").stat().st_size
    fp16_bin = (mfn_export / "mobilefacenet.fp16.ncnn.bin").stat().st_size
    assert fp16_bin < 0.6 * fp32_bin  # weights really stored as fp16
    parity = json.loads((mfn_export / "parity.json").read_text())
    fp16 = [r for r in parity["results"] if r["stage"] == "ncnn_fp16"]
    assert len(fp16) == 2
    for r in fp16:
        assert 0.999 <= r["vs_reference"]["cos_min"] < 1.0


def test_default_weights_have_real_bn_statistics_and_no_fp16_subnormals():
    from mfn_deploy.export.fold import fold_batchnorm

    model = default_weights(create("mobilefacenet"))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    means = torch.cat([b.running_mean for b in bns]).abs()
    variances = torch.cat([b.running_var for b in bns])
    assert means.mean() > 0.05  # far from the (0, 1) of a fresh BatchNorm
    assert (variances - 1).abs().mean() > 0.1
    folded, report = fold_batchnorm(model)
    assert report.folded == len(bns) and report.remaining == []
    weights = torch.cat([p.detach().abs().flatten() for p in folded.parameters()])
    assert weights.min() >= FP16_SUBNORMAL
    again = default_weights(create("mobilefacenet"))
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_fold_handles_linear_batchnorm1d_and_reports_unfoldable_bn():
    from mfn_deploy.export.fold import fold_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.BatchNorm2d(3),  # follows nothing: cannot be folded
        torch.nn.Conv2d(3, 8, 3, bias=False),
        torch.nn.BatchNorm2d(8),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 16, bias=False),
        torch.nn.BatchNorm1d(16),
    )
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    model.eval()
    folded, report = fold_batchnorm(model)
    assert report.folded == 2
    assert report.remaining == ["0"]
    x = torch.randn(4, 3, 8, 8)
    assert torch.allclose(folded(x), model(x), atol=1e-5)


# --- a stage broken on purpose is blamed ----------------------------------------


def _wrong_fold(model):
    from mfn_deploy.export.fold import fold_batchnorm

    folded, report = fold_batchnorm(model)
    conv = next(m for m in folded.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        conv.bias[0] += 1.0  # a subtly wrong BN shift in one channel
    return folded, report


def _corrupt_ncnn(onnx_path, size, param, binary, fp16):
    from mfn_deploy.export.to_ncnn import convert_to_ncnn

    blobs = convert_to_ncnn(onnx_path, size, param, binary, fp16)
    data = bytearray(binary.read_bytes())
    weights = np.frombuffer(data, np.float32, count=64, offset=4).copy()  # after the tag
    data[4 : 4 + 256] = (weights * 3).astype(np.float32).tobytes()
    binary.write_bytes(bytes(data))
    return blobs


def _lossy_simplify(src, dst, check_n=3, test_shape=None):
    from mfn_deploy.export.simplify import simplify_onnx

    report = simplify_onnx(src, dst, check_n, test_shape)
    proto = onnx.load(str(dst))
    init = proto.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(init) * 1.5
    init.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), init.name))
    onnx.save(proto, str(dst))
    return report


@pytest.mark.parametrize(
    ("target", "replacement", "stage"),
    [
        ("fold_batchnorm", _wrong_fold, "fold"),
        ("simplify_onnx", _lossy_simplify, "simplify"),
        ("convert_to_ncnn", _corrupt_ncnn, "ncnn"),
    ],
)
def test_a_broken_stage_is_blamed_and_nothing_is_written(
    target, replacement, stage, tmp_path, monkeypatch
):
    from mfn_deploy.export import stages

    monkeypatch.setattr(stages, target, replacement)
    out = tmp_path / "out"
    with pytest.raises(ParityError) as e:
        export(ExportOptions(out=out, model="mobilefacenet", n_random=2), faces=face_inputs)
    assert e.value.report.blamed == stage
    assert f"first broken stage is '{stage}'" in str(e.value)
    failed = [r.stage for r in e.value.report.results if not r.ok]
    assert failed[0] == stage
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging leftovers either


# --- sources ----------------------------------------------------------------------


def test_export_from_our_checkpoint_and_from_a_plain_state_dict(tmp_path):
    model = default_weights(create("mobilefacenet_96x96"), seed=7)
    ckpt = tmp_path / "run.pt"
    save_checkpoint(ckpt, model, config={"lr": 0.1})
    r = export(ExportOptions(out=tmp_path / "a", checkpoint=ckpt, n_random=2), faces=face_inputs)
    assert r.parity.ok
    assert r.manifest["model"] == "mobilefacenet_96x96"
    assert r.manifest["input"]["height"] == 96
    assert r.manifest["source"]["kind"] == "checkpoint"

    plain = tmp_path / "plain.pt"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, plain)  # DDP-style keys
    r2 = export(
        ExportOptions(out=tmp_path / "b", checkpoint=plain, model="mobilefacenet_96x96"),
        faces=face_inputs,
    )
    # Same weights, same embedding from both sources.
    a = np.fromfile(tmp_path / "a" / "mobilefacenet_96x96.ncnn.bin", np.uint8)
    b = np.fromfile(tmp_path / "b" / "mobilefacenet_96x96.ncnn.bin", np.uint8)
    assert np.array_equal(a, b)
    assert r2.parity.ok


def test_export_from_an_existing_onnx_skips_the_torch_stages(mfn_export, tmp_path):
    src = tmp_path / "foreign face model.onnx"
    src.write_bytes((mfn_export / "mobilefacenet.raw.onnx").read_bytes())
    r = export(ExportOptions(out=tmp_path / "o", onnx=src, n_random=2), faces=face_inputs)
    assert r.parity.ok
    assert r.parity.reference.startswith("onnxruntime")
    assert {x.stage for x in r.parity.results} == {"simplify", "ncnn"}
    assert r.manifest["model"] == "foreign_face_model"
    assert "folded" not in r.manifest["artifacts"]


def test_batch_dynamic_onnx_takes_any_batch(tmp_path):
    r = export(
        ExportOptions(out=tmp_path / "d", model="mobilefacenet", batch_dynamic=True),
        faces=face_inputs,
    )
    assert r.parity.ok
    run = onnx_runner(tmp_path / "d" / "mobilefacenet.onnx")
    assert run(np.zeros((5, 3, 112, 112), np.float32)).shape == (5, 128)


def test_export_at_another_input_size(tmp_path):
    r = export(
        ExportOptions(out=tmp_path / "s", model="mobilefacenet", input_size=(128, 96)),
        faces=face_inputs,
    )
    assert r.parity.ok
    assert (r.manifest["input"]["height"], r.manifest["input"]["width"]) == (128, 96)


# --- check ----------------------------------------------------------------------------


def test_check_reruns_parity_on_an_existing_export(mfn_export):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in mfn_export.iterdir())
    report = check(mfn_export, n_random=3, seed=5, faces=face_inputs)
    assert report.ok
    assert {r.stage for r in report.results} == {"fold", "onnx", "simplify", "ncnn", "ncnn_fp16"}
    assert sorted((p.name, p.stat().st_mtime_ns) for p in mfn_export.iterdir()) == before


def test_check_refuses_a_tampered_artifact(mfn_export, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(mfn_export, copy)
    with (copy / "mobilefacenet.ncnn.bin").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00\x00\x80\x7f")
    r = run_cli("check", copy)
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"error: {copy / 'mobilefacenet.ncnn.bin'}: sha256 differs from the manifest "
        "(file changed since export)"
    )


def test_check_cli_prints_the_table(mfn_export):
    r = run_cli("check", mfn_export, "--random-inputs", "2")
    assert r.returncode == 0, r.stderr
    assert "parity: all stages within tolerance" in r.stdout
    assert "ncnn_fp16" in r.stdout


# --- errors: one line, non-zero, nothing written ------------------------------------------


def _garbage(path: Path, data: bytes = b"\x00not a real file\xff" * 10) -> Path:
    path.write_bytes(data)
    return path


class Evil:
    def __reduce__(self):
        return (print, ("this would run on load",))


@pytest.fixture
def bad_inputs(tmp_path, mfn_export):
    wrong_arch = tmp_path / "mnv2.pt"
    torch.save(create("mobilenet_v2").state_dict(), wrong_arch)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, evil)
    return {
        "missing checkpoint": (
            ["--model", "mobilefacenet", "--checkpoint", tmp_path / "nope.pt"],
            "nope.pt: checkpoint file not found",
        ),
        "unreadable checkpoint": (
            ["--model", "mobilefacenet", "--checkpoint", _garbage(tmp_path / "junk.pt")],
            "junk.pt: unreadable checkpoint",
        ),
        "pickled code": (
            ["--model", "mobilefacenet", "--checkpoint", evil],
            "evil.pt: refused: not a weights-only checkpoint",
        ),
        "wrong architecture": (
            ["--model", "mobilefacenet", "--checkpoint", wrong_arch],
            "mnv2.pt: does not fit architecture 'mobilefacenet': ",
        ),
        "unknown model": (
            ["--model", "mobilefacenett"],
            "unknown model 'mobilefacenett'; valid names: mobilenet_v1,",
        ),
        "corrupt onnx": (
            ["--onnx", _garbage(tmp_path / "broken.onnx")],
            "broken.onnx: corrupt or invalid ONNX model",
        ),
        "missing onnx": (["--onnx", tmp_path / "none.onnx"], "none.onnx: ONNX file not found"),
        "bad input size": (
            ["--model", "mobilefacenet", "--input-size", "100x100"],
            "cannot take input 100x100",
        ),
        "existing out": (
            ["--model", "mobilefacenet", "--out-existing"],
            "output directory exists; pass --force to replace it",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing checkpoint",
        "unreadable checkpoint",
        "pickled code",
        "wrong architecture",
        "unknown model",
        "corrupt onnx",
        "missing onnx",
        "bad input size",
        "existing out",
    ],
)
def test_export_errors_are_one_line_nonzero_and_write_nothing(case, bad_inputs, tmp_path, capfd):
    args, expected = bad_inputs[case]
    out = tmp_path / "out"
    if "--out-existing" in args:
        args = [a for a in args if a != "--out-existing"]
        out.mkdir()
        (out / "keep.txt").write_text("old export")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run_cli("export", *args, "--out", out)
    assert r.returncode == 1, r.stdout
    assert r.stderr.startswith("error: ")
    assert expected in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "this would run on load" not in r.stdout + r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if out.exists():
        assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_wrong_architecture_names_the_keys(tmp_path):
    from mfn_deploy.weights import load_checkpoint

    sd = default_weights(create("mobilefacenet")).state_dict()
    sd.pop("trunk.0.1.running_var")
    sd["trunk.19.0.weight"] = torch.zeros(64, 512, 1, 1)
    path = tmp_path / "edited.pt"
    torch.save(sd, path)
    with pytest.raises(MfnError) as e:
        load_checkpoint(path, "mobilefacenet")
    msg = str(e.value)
    assert "1 missing keys (trunk.0.1.running_var)" in msg
    assert "1 shape mismatches (trunk.19.0.weight (64, 512, 1, 1) vs (128, 512, 1, 1))" in msg


def test_pnnx_failure_shows_its_stderr_tail(tmp_path):
    from mfn_deploy.export.to_ncnn import convert_to_ncnn

    bad = _garbage(tmp_path / "bad.onnx")
    with pytest.raises(MfnError, match=r"bad.onnx: pnnx failed \(exit -?\d+\)"):
        convert_to_ncnn(bad, (112, 112), tmp_path / "p", tmp_path / "b", fp16=False)
    assert not (tmp_path / "p").exists()


def test_force_replaces_and_a_failed_force_keeps_the_old_export(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / "manifest.json").write_text('{"format": "mfn-deploy/export-v1"}')  # --force needs it
    from mfn_deploy.export import stages

    monkeypatch.setattr(stages, "fold_batchnorm", _wrong_fold)
    with pytest.raises(ParityError):
        export(
            ExportOptions(out=out, model="mobilefacenet_s", force=True, n_random=2),
            faces=face_inputs,
        )
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "old.txt"]
    monkeypatch.undo()
    export(
        ExportOptions(out=out, model="mobilefacenet_s", force=True, n_random=2), faces=face_inputs
    )
    assert not (out / "old.txt").exists()
    assert (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_traceback_only_with_verbose(tmp_path):
    quiet = run_cli("export", "--model", "nope", "--out", tmp_path / "x")
    loud = run_cli("--verbose", "export", "--model", "nope", "--out", tmp_path / "x")
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr
    assert loud.stderr.strip().endswith(
        "error: unknown model 'nope'; valid names: " + ", ".join(names())
    )


def test_export_cli_prints_parity_table_and_untrained_note(tmp_path):
    r = run_cli(
        "export", "--model", "mobilefacenet_m", "--out", tmp_path / "m", "--random-inputs", "2"
    )
    assert r.returncode == 0, r.stderr
    assert "parity: all stages within tolerance" in r.stdout
    assert "untrained default weights" in r.stdout
    assert f"exported mobilefacenet_m to {tmp_path / 'm'}" in r.stdout
    assert r.stderr == ""  # no progress bar in a pipe
