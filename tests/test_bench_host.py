"""The latency harness on this machine: ncnn runner, ncnn Python, onnxruntime, torch.

Small models and a few loops only; the full 11-network run is
benchmarks/host_latency.py. Nothing here asserts a speed: benchmarks are data.
"""

from __future__ import annotations

import json

from conftest import needs_runner, run_cli

pytestmark = needs_runner("host")


def test_bench_host_all_backends_agree():
    from mfn_deploy.device.bench import BenchOptions, problems
    from mfn_deploy.device.host import BACKENDS, bench_host
    from mfn_deploy.device.models import prepare_jobs

    jobs = prepare_jobs(["mobilefacenet_96x96"], [], fp16=False)
    seen = []
    opts = BenchOptions(threads=1, powersave=0, warmup=1, loops=3, cooldown=0)
    results = bench_host(jobs, opts, on_progress=seen.append)
    (model,) = results["devices"][0]["models"]
    assert list(model["backends"]) == list(BACKENDS)
    for name, rec in model["backends"].items():
        assert rec["status"] == "ok" and len(rec["runs_ms"]) == 3, name
        assert rec["median_ms"] > 0 and rec["min_ms"] <= rec["median_ms"] <= rec["max_ms"]
        assert rec["parity"]["ok"], (name, rec["parity"])
    assert model["backends"]["ncnn-runner"]["ncnn_version"]
    assert results["options"]["threads"] == 1 and results["host"]["cpu_count"]
    assert problems(results) == []
    assert seen[-1].phase == "done" and seen[-1].done == seen[-1].total


def test_bench_host_cli_and_report(tmp_path):
    out, png = tmp_path / "host.json", tmp_path / "host.png"
    proc = run_cli(
        "bench", "--target", "host", "--models", "mobilefacenet,mobilefacenet_96x96",
        "--backends", "ncnn-runner,onnxruntime", "--threads", "1", "--loops", "3",
        "--warmup", "1", "--cooldown", "0", "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert results["target"] == "host"
    assert [m["name"] for m in results["devices"][0]["models"]] == [
        "mobilefacenet",
        "mobilefacenet_96x96",
    ]
    proc = run_cli("report", out, "--png", png)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "host ncnn-runner ms" in lines[0] and "host onnxruntime ms" in lines[0]
    assert lines[2].startswith("| MobileFaceNet | 1.00M | 221M | 24 | 1.00 |")
    assert lines[3].startswith("| MobileFaceNet (96x96) |")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bench_rejects_bad_options(tmp_path):
    proc = run_cli("bench", "--target", "host", "--models", "mobilefacenet", "--cooldown",
                   "soon", "--out", tmp_path / "x.json")  # fmt: skip
    assert proc.returncode == 1 and "--cooldown 'soon'" in proc.stderr
    proc = run_cli("report", tmp_path / "missing.json")
    assert proc.returncode == 1 and "no such results file" in proc.stderr
