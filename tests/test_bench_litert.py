"""LiteRT as a fifth host backend: the pretrained export's own TFLite file, with XNNPACK.

`bench --target host --export DIR` of an `export --pretrained` export times the ncnn
runner, ncnn's Python binding, onnxruntime, torch and LiteRT on the same trained
network; an export without a TFLite source asked for litert is one line. Short loops:
nothing here asserts a speed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from conftest import needs_runner, run_cli
from mfn_deploy.errors import MfnError
from mfn_deploy.export.parity import compare

pytestmark = needs_runner("host")

MODEL = "mobilefacenet_tf"
PIN_SHA256 = "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"
FIVE = ["ncnn-runner", "ncnn-python", "onnxruntime", "torch", "litert"]


@pytest.fixture(scope="session")
def pretrained_fp32_export(tmp_path_factory) -> Path:
    """`mfn-deploy export --pretrained mobilefacenet_tf` (fp32 only: bench's default)."""
    out = tmp_path_factory.mktemp("bench-litert") / "mfn_tf"
    proc = run_cli("export", "--pretrained", MODEL, "--random-inputs", 1, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_pretrained_export_is_timed_in_all_five_backends(pretrained_fp32_export, tmp_path):
    """No --backends: the export's manifest names its TFLite file, so litert joins the
    four; its embedding of the fixed face matches host onnxruntime like the others."""
    out = tmp_path / "host.json"
    proc = run_cli(
        "bench", "--target", "host", "--export", pretrained_fp32_export, "--threads", "1",
        "--powersave", "0", "--warmup", "1", "--loops", "3", "--cooldown", "0", "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "XNNPACK" not in proc.stderr  # LiteRT's banner is kept off the terminal
    results = json.loads(out.read_text())
    device = results["devices"][0]
    assert device["backends"] == FIVE and device["status"] == "ok"
    (model,) = device["models"]
    assert model["name"] == MODEL and list(model["backends"]) == FIVE
    for name, rec in model["backends"].items():
        assert rec["status"] == "ok" and rec["n"] == 3 and rec["median_ms"] > 0, name
        assert rec["parity"]["ok"], (name, rec["parity"])

    litert = model["backends"]["litert"]
    assert litert["parity"]["cos"] >= 0.99999 and litert["parity"]["max_abs"] < 1e-3
    assert litert["parity"]["tolerance"]["cos_min"] >= 0.9999  # fp32's, not fp16's
    runtime = litert["runtime"]
    assert runtime["delegate"] == "XNNPACK" and runtime["threads"] == 1
    assert runtime["input"] == [1, 112, 112, 3] and runtime["file_input"] == [2, 112, 112, 3]
    assert "RESHAPE" in runtime["batch"] and "in memory" in runtime["batch"]
    assert runtime["tflite_sha256"] == model["export"]["tflite_sha256"]
    assert runtime["tflite_sha256"] == PIN_SHA256

    # The table shows the new column and the ratios to the ncnn runner.
    lines = proc.stdout.splitlines()
    assert "host litert ms" in lines[0]
    (ratios,) = [line for line in lines if "litert / runner" in line]
    assert ratios.split(" | ")[1:3] == ["ncnn-runner ms", "ncnn-python / runner"]
    report = run_cli("report", out)
    assert report.returncode == 0, report.stderr
    assert report.stdout.rstrip() == proc.stdout.rstrip()


def test_litert_asked_of_an_export_without_tflite_source_is_one_line(tmp_path):
    """A default-weights export has no TFLite file: --backends litert refuses it before
    anything is timed, and without --backends it simply is not among the runtimes."""
    out = tmp_path / "x.json"
    proc = run_cli(
        "bench", "--target", "host", "--models", "mobilefacenet_96x96",
        "--backends", "onnxruntime,litert", "--loops", "1", "--warmup", "0",
        "--cooldown", "0", "--out", out,
    )  # fmt: skip
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: --backends litert: ") and "has no TFLite source" in line, line
    assert "mobilefacenet_96x96" in line and "default" in line
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error")] == [line]
    assert not out.exists()


def test_backend_names_and_tflite_records():
    from mfn_deploy.bench.host import job_backends, parse_backends
    from mfn_deploy.bench.litert import locate, tflite_provenance

    assert parse_backends(None) is None and parse_backends("litert,torch") == ("litert", "torch")
    with pytest.raises(MfnError, match=r"valid: ncnn-runner, .*, torch, litert$"):
        parse_backends("tflite")

    assert tflite_provenance({"source": {"kind": "default"}}) is None
    assert tflite_provenance({"source": {"kind": "onnx", "sha256": "ab"}}) is None
    mine = {"file": "/nowhere/face.tflite", "sha256": "ab" * 32, "importer": "import-tflite v1"}
    assert tflite_provenance({"source": {"kind": "checkpoint", "provenance": mine}}) == mine
    with pytest.raises(MfnError, match=r"^litert: .*/nowhere/face.tflite.* not on this machine"):
        locate(mine)

    class Job:  # what job_backends reads of a ModelJob
        tflite = None
        export_dir = Path("/x")
        manifest: ClassVar[dict] = {"model": "mobilefacenet", "source": {"kind": "default"}}

    assert job_backends(Job(), None) == tuple(FIVE[:4])
    assert job_backends(Job(), ("torch",)) == ("torch",)
    Job.tflite = mine
    assert job_backends(Job(), None) == tuple(FIVE)


def test_litert_at_batch_one_matches_the_unmodified_file(pretrained_fp32_export):
    """The batch-1 copy (RESHAPE's constant [2,192] -> [-1,192], XNNPACK) computes what
    the file itself computes at batch 2 with LiteRT's reference kernels."""
    from mfn_deploy.bench.jobs import load_job
    from mfn_deploy.bench.litert import litert_backend, locate
    from mfn_deploy.pretrained.litert import litert_runner

    job = load_job(pretrained_fp32_export)
    path = locate(job.tflite)
    ours = np.asarray(litert_backend(path, job.face, threads=2).infer()).reshape(1, -1)
    file_output = litert_runner(path)(job.face[None])
    m = compare(ours, file_output)
    assert m.cos_min >= 0.99999 and m.max_abs < 1e-4, m
    assert path.read_bytes()[4:8] == b"TFL3"  # the cached file itself is untouched
    assert job.tflite["sha256"] == PIN_SHA256
