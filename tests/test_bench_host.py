"""The latency harness on this machine: ncnn runner, ncnn Python, onnxruntime, torch.

Small models and a few loops only; the full 11-network run is
benchmarks/host_latency.py. Nothing here asserts a speed: benchmarks are data.
"""

from __future__ import annotations

import json

from conftest import needs_runner, run_cli

pytestmark = needs_runner("host")


def test_bench_host_all_backends_agree(tmp_path):
    from mfn_deploy.bench.host import BACKENDS, HostTarget
    from mfn_deploy.bench.jobs import prepare_jobs
    from mfn_deploy.bench.options import BenchOptions
    from mfn_deploy.bench.run import run_bench

    jobs = prepare_jobs(["mobilefacenet_96x96"], [])
    seen = []
    opts = BenchOptions(threads=1, powersave=0, warmup=1, loops=3, cooldown=0)
    typed = run_bench(HostTarget(), jobs, opts, tmp_path / "host.json", on_progress=seen.append)
    results = typed.to_dict()
    (model,) = results["devices"][0]["models"]
    assert list(model["backends"]) == list(BACKENDS)
    for name, rec in model["backends"].items():
        assert rec["status"] == "ok" and len(rec["runs_ms"]) == 3, name
        assert rec["median_ms"] > 0 and rec["min_ms"] <= rec["median_ms"] <= rec["max_ms"]
        assert rec["parity"]["ok"], (name, rec["parity"])
    assert model["backends"]["ncnn-runner"]["ncnn_version"]
    assert results["options"]["threads"] == 1 and results["host"]["cpu_count"]
    assert typed.problems() == []
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


def test_bench_host_int8_pretrained_cli(tmp_path):
    """--pretrained --int8 on the host: the ncnn runtimes time the int8 pair (parity to
    host fp32 and to the same int8 files), onnxruntime the fp32 ONNX at fp32's tolerance;
    --profile puts the runner's layers into the results and the report."""
    out = tmp_path / "int8.json"
    proc = run_cli(
        "bench", "--target", "host", "--pretrained", "mobilefacenet_tf", "--int8",
        "--backends", "ncnn-runner,ncnn-python,onnxruntime", "--threads", "1", "--loops", "2",
        "--warmup", "1", "--cooldown", "0", "--profile", "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (m,) = json.loads(out.read_text())["devices"][0]["models"]
    assert m["export"]["param"] == "mobilefacenet_tf.int8.ncnn.param"
    for backend in ("ncnn-runner", "ncnn-python"):
        parity = m["backends"][backend]["parity"]
        assert parity["ok"] and parity["cos"] < 0.9999 and parity["int8_files"]["ok"], parity
    onnx = m["backends"]["onnxruntime"]["parity"]
    assert onnx["ok"] and onnx["tolerance"]["cos_min"] == 0.99999 and "int8_files" not in onnx
    assert m["backends"]["ncnn-runner"]["profile"]["layers"]
    assert "profile" not in m["backends"]["ncnn-python"]  # the runner profiles, not Python
    assert "cos to host int8 (same files)" in proc.stdout
    assert "Slowest layers" in proc.stdout


def test_bench_int8_refusals_are_one_line(tmp_path):
    out = tmp_path / "x.json"
    for args, message in (
        (["--models", "mobilefacenet", "--int8"], "default weights are untrained"),
        (["--pretrained", "mobilefacenet_tf", "--int8", "--fp16", "on"], "leave --fp16 off"),
        (["--models", "mobilefacenet", "--pace-ms", "-1"], "--pace-ms -1 out of range"),
        (["--export", tmp_path, "--int8"], "manifest.json"),
    ):
        proc = run_cli("bench", "--target", "host", *args, "--out", out)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 1 and len(errors) == 1 and message in errors[0], proc.stderr
        assert not out.exists()


def test_pace_spaces_python_runs():
    """--pace-ms on a Python runtime: each call starts at least that long after the last."""
    import itertools
    import time

    from mfn_deploy.bench.host import _time_python
    from mfn_deploy.bench.options import BenchOptions

    starts = []

    def infer():
        starts.append(time.perf_counter())
        return [0.0]

    times, _, _ = _time_python(infer, BenchOptions(warmup=2, loops=3, pace_ms=30))
    assert len(starts) == 5 and len(times) == 3  # cold + one more warm-up + 3 timed
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.030


# --- typed results, "nothing lost", bounds, report ------------------------------------


def test_results_round_trip_reads_todays_files():
    """A results file written before the types existed reads back, and writes back equal
    (summaries are derived from the runs, so they agree to the stored rounding)."""
    from pathlib import Path

    from mfn_deploy.bench.results import FORMAT, Results, Status, load_results

    kept = Path(__file__).resolve().parent.parent / "benchmarks/results/host_latency.json"
    old = json.loads(kept.read_text())
    results = load_results(kept)
    assert results.target == "host" and not results.partial and "partial" not in old
    assert results.devices[0].status == Status.OK and results.options.threads == 1
    again = results.to_dict()
    assert again["format"] == FORMAT and again["ratios"] == old["ratios"]  # other keys kept
    for new_m, old_m in zip(
        again["devices"][0]["models"], old["devices"][0]["models"], strict=True
    ):
        for backend, rec in old_m["backends"].items():
            assert new_m["backends"][backend]["runs_ms"] == rec["runs_ms"]
            assert abs(new_m["backends"][backend]["median_ms"] - rec["median_ms"]) < 1e-3
    assert Results.from_dict(again).to_dict() == again  # a new file round-trips exactly


def test_bench_options_are_bounded_before_any_work(tmp_path):
    """Huge threads crashed the runner, huge loops never ended: one line, nothing run."""
    out = tmp_path / "x.json"
    for option, value, message in [
        ("--threads", "100000", "--threads 100000 out of range 1..64"),
        ("--threads", "0", "--threads 0 out of range 1..64"),
        ("--loops", "99999999999", "--loops 99999999999 out of range 1..10000"),
        ("--warmup", "-1", "--warmup -1 out of range 0..1000"),
        ("--warmup", "1001", "--warmup 1001 out of range 0..1000"),
        ("--cooldown", "601", "--cooldown 601.0 out of range 0..600"),
        ("--chunk", "0", "--chunk 0 out of range 1..10000"),
        ("--powersave", "3", "--powersave 3 out of range 0..2"),
    ]:
        proc = run_cli("bench", "--target", "host", "--models", "mobilefacenet", option, value,
                       "--out", out)  # fmt: skip
        assert proc.returncode == 1, (option, value, proc.stderr)
        assert proc.stderr.strip() == f"error: {message}", proc.stderr
    assert not out.exists()


def test_bench_out_not_writable_fails_before_the_work(tmp_path):
    """Not after timing every model: a one-line error naming the path, at once."""
    for out, message in [
        ("/sys/mfn-deploy-results.json", "cannot write the results there"),
        (tmp_path / "no/such/dir/x.json", "does not exist"),
    ]:
        proc = run_cli("bench", "--target", "host", "--models", "mobilefacenet", "--out", out)
        assert proc.returncode == 1
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"error: {out}: ") and message in line, line
        assert "preparing" not in proc.stderr


def test_bench_host_interrupted_keeps_measured_models(tmp_path):
    """SIGTERM (like ^C) after the first model: that model is in the file, the run is
    marked partial, and the report shows it as such."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "host.json"
    # --cooldown 3: each runtime of each model starts with a 3 s sleep, a wide window
    # in which the second model is under way.
    proc = subprocess.Popen(
        [sys.executable, "-m", "mfn_deploy", "bench", "--target", "host", "--models",
         "mobilefacenet_96x96,mobilefacenet", "--backends", "onnxruntime,ncnn-python",
         "--threads", "1", "--warmup", "0", "--loops", "3", "--cooldown", "3", "--out", out],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_file() and len(json.loads(out.read_text())["devices"][0]["models"]) == 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    data = json.loads(out.read_text())
    assert proc.returncode == 143, stderr
    assert f"partial results kept in {out}" in stderr and "error: interrupted" in stderr
    assert data["partial"] is True
    first, *rest = data["devices"][0]["models"]
    assert first["status"] == "ok"
    assert all(r["status"] == "ok" and r["n"] == 3 for r in first["backends"].values())
    assert all(m["status"] == "interrupted" for m in rest)

    report = run_cli("report", out)
    assert report.returncode == 0, report.stderr
    assert "host onnxruntime (partial) ms" in report.stdout
    assert "(partial): threads 1" in report.stdout


def test_report_several_files_and_errors(tmp_path):
    """Columns of two files never share a header or legend entry; the legend sits beside
    the bars; a file whose every device failed, or without devices, is one error line."""
    from mfn_deploy.bench.report import table2
    from mfn_deploy.bench.results import load_results

    kept = tmp_path / "a.json"
    one = json.loads(
        (__import__("pathlib").Path(__file__).resolve().parent.parent
         / "benchmarks/results/host_latency.json").read_text()
    )  # fmt: skip
    kept.write_text(json.dumps(one))
    twin = tmp_path / "b.json"
    twin.write_text(json.dumps(one))
    proc = run_cli("report", kept, twin, "--png", tmp_path / "two.png")
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0].split(" | ")
    measured = [h for h in header if h.endswith(" ms") and not h.startswith("Paper")]
    assert len(measured) == 8 and len(set(measured)) == 8, header
    assert "host onnxruntime (a.json) ms" in measured and "host onnxruntime (b.json) ms" in measured

    fig = table2([kept, twin]).figure()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == len(set(labels)) == 9  # the paper + 8 measured series
    renderer = fig.canvas.get_renderer()
    legend, axes = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= axes.x1, "the legend covers the bars"

    failed = dict(one, devices=[{"serial": "p1", "status": "failed", "error": "p1: push failed",
                                 "info": None, "models": []}])  # fmt: skip
    (tmp_path / "failed.json").write_text(json.dumps(failed))
    no_devices = {k: v for k, v in one.items() if k != "devices"}
    (tmp_path / "nodev.json").write_text(json.dumps(no_devices))
    for name, message in [
        ("failed.json", "nothing was measured: p1: failed: p1: push failed"),
        ("nodev.json", "no 'devices' list"),
    ]:
        proc = run_cli("report", kept, tmp_path / name, "--png", tmp_path / "x.png")
        assert proc.returncode == 1
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"error: {tmp_path / name}: ") and message in line, line
        assert not (tmp_path / "x.png").exists()
    assert load_results(kept).measured()


# --- start-up figures and thread scaling (issue 15) -----------------------------------


def test_bench_host_thread_list_startup_and_scaling_report(tmp_path):
    """--threads 1,2: one record per network and count in one session; the runner's
    load (param, bin), cold run and peak memory are kept; the report shows both tables."""
    out = tmp_path / "scaling.json"
    proc = run_cli(
        "bench", "--target", "host", "--models", "mobilefacenet_96x96",
        "--backends", "ncnn-runner,onnxruntime", "--threads", "1,2", "--powersave", "0",
        "--loops", "1", "--warmup", "0", "--cooldown", "0", "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert results["options"]["threads"] == [1, 2]
    models = results["devices"][0]["models"]
    assert [(m["name"], m["threads"]) for m in models] == [
        ("mobilefacenet_96x96", 1),
        ("mobilefacenet_96x96", 2),
    ]
    for m in models:
        runner = m["backends"]["ncnn-runner"]
        assert runner["load_ms_param"] >= 0 and runner["load_ms_bin"] >= 0
        assert runner["load_ms"] >= runner["load_ms_bin"]
        assert runner["cold_ms"] > 0 and len(runner["runs_ms"]) == 1
        assert 0 < runner["load_peak_rss_kb"] <= runner["peak_rss_kb"]
        ort = m["backends"]["onnxruntime"]
        assert ort["load_ms"] > 0 and ort["cold_ms"] > 0 and "peak_rss_kb" not in ort

    from mfn_deploy.bench.results import load_results

    typed = load_results(out)
    assert typed.options.thread_counts == (1, 2)
    assert typed.to_dict() == results  # the new fields survive a round trip

    proc = run_cli("report", out)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "host ncnn-runner, 1 thread ms" in text and "host ncnn-runner, 2 threads ms" in text
    assert "| MobileFaceNet (96x96) | host ncnn-runner, 2 threads | " in text  # start-up row
    assert "thread scaling (powersave 0" in text
    assert "| 1 thread ms (speed-up) | 2 threads ms (speed-up) |" in text
    row = next(
        line
        for line in text.splitlines()
        if line.startswith("| MobileFaceNet (96x96) | ncnn-runner | ")
    )
    assert "(1.00x)" in row

    from mfn_deploy.bench.report import table2

    fig = table2([out]).figure()  # --png: the bars, then the scaling curves
    assert [ax.get_title() for ax in fig.axes][1] == "Thread scaling"
    assert len(fig.axes[1].get_lines()) == 2 + 1  # two runtimes and the linear guide


def test_thread_list_is_checked_before_any_work(tmp_path):
    out = tmp_path / "x.json"
    for value, message in [
        ("1,1", "--threads 1,1: give each count once"),
        ("1,x", "--threads '1,x': expected a count or a list such as 1,2,4"),
        ("1,65", "--threads 65 out of range 1..64"),
    ]:
        proc = run_cli("bench", "--target", "host", "--models", "mobilefacenet", "--threads",
                       value, "--out", out)  # fmt: skip
        assert proc.returncode == 1, (value, proc.stderr)
        assert proc.stderr.strip() == f"error: {message}", proc.stderr
    assert not out.exists()


def test_old_results_read_with_one_thread_count():
    """Files from before the thread list: threads is one number, records carry none."""
    from pathlib import Path

    from mfn_deploy.bench.report import Table2
    from mfn_deploy.bench.results import load_results

    kept = Path(__file__).resolve().parent.parent / "benchmarks/results/host_latency.json"
    r = load_results(kept)
    assert isinstance(r.options.threads, int) and r.options.thread_counts == (r.options.threads,)
    text = Table2([("k.json", r)]).markdown()
    assert "thread scaling" not in text and "host ncnn-runner ms" in text
