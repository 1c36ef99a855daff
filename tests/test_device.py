"""On-device latency over adb, against the loopback fake adb (tests/fake_adb.py).

Everything on our side of adb is the real code path: the fake executes the shell
strings we send inside a per-phone root and runs the pushed arm64 runner under
qemu. Fault tests call the harness in-process with jobs prepared once; the
``device list`` / ``bench`` / ``report`` commands are run as a user runs them.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from conftest import needs_runner, run_cli, start_cli

FAKE_ADB = Path(__file__).resolve().parent / "fake_adb.py"
pytestmark = needs_runner("arm64-v8a")
FAST = ["--threads", "1", "--powersave", "0", "--warmup", "0"]  # qemu on a shared 2-core box


def phone(serial: str, **kw) -> dict:
    """A fake Snapdragon 820: 2 little + 2 big Kryo cores, as in the paper."""
    return {
        "serial": serial,
        "state": kw.pop("state", "device"),
        "abi": kw.pop("abi", "arm64-v8a"),
        "props": {
            "ro.product.model": f"Fake SD820 {serial}",
            "ro.board.platform": "msm8996",
            "ro.soc.model": "MSM8996",
            "ro.build.version.release": "8.0.0",
        },
        "cpus": [["schedutil", 1593600, 1593600]] * 2 + [["schedutil", 2150400, 2150400]] * 2,
        "thermal": [["cpu-big", 38000], ["battery", 31000]],
        "faults": kw.pop("faults", {}),
    }


@pytest.fixture(scope="session")
def fake_adb(tmp_path_factory) -> Path:
    """tests/fake_adb.py as an executable that starts this interpreter directly, with
    -I -S (it needs only the standard library). Its own `#!/usr/bin/env python3` can
    find a version manager's shim first on $PATH (pyenv's costs 0.1-0.3 s a call, more
    on a loaded machine), and a benchmark makes a few dozen adb calls per model."""
    shebang = f"#!{sys.executable} -IS"
    if len(shebang) > 200 or any(ch.isspace() for ch in sys.executable):
        return FAKE_ADB  # a shebang line the kernel would cut or split
    exe = tmp_path_factory.mktemp("fake-adb") / "adb"
    exe.write_text(shebang + "\n" + FAKE_ADB.read_text().split("\n", 1)[1])
    exe.chmod(0o755)
    return exe


@pytest.fixture
def phones(tmp_path, monkeypatch, fake_adb):
    """Call with fake phones; points $MFN_ADB at the fake and returns the fake root."""
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)

    def attach(*devices: dict) -> Path:
        root = tmp_path / "phones"
        state = tmp_path / "fake_adb.json"
        state.write_text(json.dumps({"root": str(root), "devices": list(devices)}))
        monkeypatch.setenv("MFN_ADB", str(fake_adb))
        monkeypatch.setenv("FAKE_ADB_STATE", str(state))
        return root

    return attach


@pytest.fixture(scope="module")
def jobs():
    from mfn_deploy.bench.jobs import prepare_jobs

    return prepare_jobs(["mobilefacenet"], [])


def _opts(**kw):
    from mfn_deploy.bench.options import BenchOptions

    return BenchOptions(**{"threads": 1, "powersave": 0, "warmup": 0, "loops": 2, **kw})


def bench_adb(serials, jobs, opts, out):
    """The adb harness in-process; the file it leaves is the results it returns."""
    from mfn_deploy.bench.adb_target import AdbTarget
    from mfn_deploy.bench.results import load_results
    from mfn_deploy.bench.run import run_bench

    results = run_bench(AdbTarget(serials), jobs, opts, out)
    assert load_results(out).to_dict() == results.to_dict() and not results.partial
    return results


# --- adb and device selection ----------------------------------------------------------


def test_adb_missing_names_the_install(monkeypatch, tmp_path):
    monkeypatch.delenv("MFN_ADB", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb anywhere
    from mfn_deploy.device.adb import AdbError, adb_executable

    with pytest.raises(AdbError, match="apt-get install -y adb"):
        adb_executable()


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        ([], "no device attached"),
        ([phone("p1", state="unauthorized")], "unauthorized: unlock the phone"),
        ([phone("p1", state="offline")], "offline: reconnect"),
        ([phone("p1"), phone("p2")], "2 devices attached .*--serial"),
    ],
    ids=["no-device", "unauthorized", "offline", "two-no-serial"],
)
def test_device_selection_errors(phones, devices, message):
    from mfn_deploy.device.adb import AdbError, select_serials

    phones(*devices)
    with pytest.raises(AdbError, match=message):
        select_serials()


def test_device_selection(phones, monkeypatch):
    from mfn_deploy.device.adb import AdbError, select_serials

    phones(phone("p1"), phone("p2"), phone("p3", state="unauthorized"))
    assert select_serials(["all"]) == ["p1", "p2"]
    assert select_serials(["p2"]) == ["p2"]
    monkeypatch.setenv("ANDROID_SERIAL", "p1")
    assert select_serials() == ["p1"]
    with pytest.raises(AdbError, match="'p9' not found; attached: p1, p2, p3"):
        select_serials(["p9"])


def test_abi_picks_the_runner_build():
    from mfn_deploy.device.probe import pick_abi

    assert pick_abi({"abi": "arm64-v8a", "abilist": ["arm64-v8a", "armeabi-v7a"]}) == "arm64-v8a"
    assert pick_abi({"abi": "armeabi-v7a", "abilist": ["armeabi-v7a", "armeabi"]}) == "armeabi-v7a"
    assert pick_abi({"abi": "x86_64", "abilist": ["x86_64", "x86"]}) is None


def test_shell_metacharacters_stay_words(phones):
    """What a model name could smuggle in reaches the phone's shell as a literal word."""
    from mfn_deploy.device.adb import Device

    root = phones(phone("p1"))
    evil = ["x; touch /data/local/tmp/PWNED", "$(touch /data/local/tmp/PWNED)", "`touch P`"]
    proc = Device("p1").shell(["echo", *evil, "it's"])
    assert "x; touch" in proc.stdout and "it's" in proc.stdout
    assert not (root / "p1/data/local/tmp/PWNED").exists()
    assert not (root / "p1/data/local/tmp/P").exists()


def test_device_list(phones):
    phones(phone("p1"), phone("p2", state="unauthorized"))
    proc = run_cli("device", "list")
    assert proc.returncode == 0, proc.stderr
    assert "Fake SD820 p1" in proc.stdout and "msm8996 / MSM8996" in proc.stdout
    assert "4 cores: 2x2150MHz + 2x1593MHz" in proc.stdout and "8.0.0" in proc.stdout
    assert "p2: unauthorized: unlock the phone" in proc.stderr


def test_bench_fails_fast_without_device(phones):
    phones()
    proc = run_cli("bench", "--models", "mobilefacenet", "--out", "x.json")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no device attached")


# --- the harness, with faults ----------------------------------------------------------


def test_bench_one_phone_push_once_and_throttle(phones, jobs, tmp_path):
    # Hot from run 1 through two readings of the clock caps (the snapshot after the
    # model, the next model's first cool-down poll), cool at the third: however slow
    # this machine runs the next chunk under qemu, and without waiting for a clock.
    phones(phone("p1", faults={"throttle_on_run": 1, "hot_reads": 2}))
    first = bench_adb(["p1"], jobs * 2, _opts(chunk=1), tmp_path / "first.json")
    (d,) = first.to_dict()["devices"]
    m, m2 = d["models"]
    assert d["status"] == "ok" and m["status"] == "ok", d
    assert d["runner"]["abi"] == "arm64-v8a" and d["runner"]["pushed"]
    assert d["runner"]["remote"].startswith("/data/local/tmp/mfn-deploy/")
    assert m["n"] == 2 and len(m["runs_ms"]) == 2 and m["median_ms"] > 0
    assert m["parity"]["ok"] and m["parity"]["cos"] > 0.9999
    assert m["ncnn_version"] and m["export"]["bin_sha256"]
    # Start-up from the first chunk; peak memory the largest of the chunks (qemu's own).
    assert m["load_ms_param"] >= 0 and m["load_ms_bin"] >= 0 and m["cold_ms"] > 0
    assert 0 < m["load_peak_rss_kb"] <= m["peak_rss_kb"]
    assert m["before"]["cores"][2]["max_khz"] == 2150400
    assert m["before"]["thermal"]["hottest_c"] == 38.0
    # The fake heats up after run 1 and halves every cap: the run is flagged.
    assert m["throttled"] and "cap 2150->1075 MHz" in m["throttle_reason"]
    assert first.problems() == []
    # --cooldown auto: the next model waits until temperature and caps are back.
    assert m2["cooldown"]["recovered"] and m2["cooldown"]["polls"] >= 2
    assert not m2["throttled"] and m2["before"]["thermal"]["hottest_c"] == 38.0
    # Same bytes already on the phone: nothing is pushed again.
    assert not any(m2["pushed"].values())
    # A second session finds the runner there too (no model: its run would add nothing).
    second = bench_adb(["p1"], [], _opts(loops=1), tmp_path / "second.json")
    assert second.devices[0].runner, second.devices[0].error
    assert not second.devices[0].runner["pushed"]


@pytest.mark.parametrize(
    ("faults", "abi", "device_status", "model_status", "message"),
    [
        ({"kill_run": 1}, "arm64-v8a", "partial", "killed", r"runner killed midway \(signal 9\)"),
        ({"disconnect_on_run": 2}, "arm64-v8a", "disconnected", "incomplete", "disconnected"),
        ({"push_fails": True}, "arm64-v8a", "failed", None, "push of .*mfn-bench.* failed"),
        ({}, "x86_64", "failed", None, r"unsupported ABI \(x86_64\)"),
    ],
    ids=["killed", "disconnected", "push-fails", "bad-abi"],
)
def test_bench_faults(phones, jobs, tmp_path, faults, abi, device_status, model_status, message):
    phones(phone("p1", faults=faults, abi=abi))
    results = bench_adb(["p1"], jobs, _opts(chunk=1), tmp_path / "r.json")
    (d,) = results.to_dict()["devices"]
    assert d["status"] == device_status
    if model_status is None:
        assert d["models"] == []
    else:
        (m,) = d["models"]
        assert m["status"] == model_status
    text = "\n".join(results.problems())
    assert text and re.search(message, text), text
    if device_status == "disconnected":  # run 1 finished before the phone went away: kept
        assert m["runs_ms"] and m["n"] == 1 and m["median_ms"] > 0


def test_model_name_with_shell_metacharacters(phones, jobs, tmp_path):
    """An export whose model (hence file) name is a shell attack benchmarks as data."""
    from mfn_deploy.bench.jobs import load_job

    root = phones(phone("p1"))
    evil = "x'; touch PWNED; echo '$(touch PWNED2)`touch PWNED3`"
    src, dst = jobs[0].export_dir, tmp_path / f"export {evil}"
    dst.mkdir()
    manifest = json.loads((src / "manifest.json").read_text()) | {"model": evil}
    for meta in manifest["artifacts"].values():  # every artifact, renamed as the export names it
        renamed = evil + meta["file"].removeprefix(jobs[0].name)
        shutil.copy(src / meta["file"], dst / renamed)
        meta["file"] = renamed
    (dst / "manifest.json").write_text(json.dumps(manifest))

    results = bench_adb(["p1"], [load_job(dst)], _opts(loops=1), tmp_path / "r.json")
    (m,) = results.to_dict()["devices"][0]["models"]
    assert m["status"] == "ok" and m["parity"]["ok"], m
    tmp = root / "p1/data/local/tmp"
    assert not list(tmp.rglob("PWNED*"))
    assert any(evil in p.name for p in tmp.rglob("*.ncnn.bin"))


# --- the commands, end to end ----------------------------------------------------------


def test_bench_serial_all_two_phones_and_report(phones, tmp_path):
    phones(phone("p1"), phone("p2"))
    out = tmp_path / "adb.json"
    proc = run_cli(
        "bench", "--serial", "all", "--models", "mobilefacenet", *FAST, "--loops", "2",
        "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert [d["serial"] for d in results["devices"]] == ["p1", "p2"]
    assert all(d["status"] == "ok" and d["models"][0]["n"] == 2 for d in results["devices"])
    assert results["options"]["cooldown"] == "auto" and results["host"]["tools"]["ncnn"]
    assert "p1 [1/1] mobilefacenet: done, 2 runs" in proc.stderr  # progress, not a TTY

    png = tmp_path / "adb.png"
    proc = run_cli("report", out, "--png", png)
    assert proc.returncode == 0, proc.stderr
    assert "| MobileFaceNet | 1.00M | 221M | 24 | 1.00 |" in proc.stdout
    assert "Fake SD820 p1 [p1] ms" in proc.stdout and "Fake SD820 p2 [p2] ms" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_thread_list_on_a_phone_and_report(phones, jobs, tmp_path):
    """--threads 1,2 on the fake phone: one record per count, the scaling and start-up
    tables in the report."""
    phones(phone("p1"))
    out = tmp_path / "scaling.json"
    results = bench_adb(["p1"], jobs, _opts(threads=(1, 2), loops=1), out)
    (d,) = results.to_dict()["devices"]
    assert d["status"] == "ok", d
    assert [(m["name"], m["threads"], m["n"]) for m in d["models"]] == [
        ("mobilefacenet", 1, 1),
        ("mobilefacenet", 2, 1),
    ]
    assert all(m["cold_ms"] > 0 and m["peak_rss_kb"] > 0 for m in d["models"])
    proc = run_cli("report", out)
    assert proc.returncode == 0, proc.stderr
    assert "Fake SD820 p1 [p1], 2 threads ms" in proc.stdout
    assert "| MobileFaceNet | Fake SD820 p1 [p1], 1 thread | " in proc.stdout  # start-up
    assert "| MobileFaceNet | p1 | " in proc.stdout  # thread scaling
    assert "threads 1,2, powersave 0" in proc.stdout


def test_bench_int8_on_a_phone_with_profile_and_pace(phones, tmp_path):
    """The trained model's int8 pair on the fake phone: parity against host fp32 and
    against host ncnn on the same files, the per-layer profile, paced runs, the report."""
    from mfn_deploy.bench.jobs import prepare_jobs

    (job,) = prepare_jobs([], [], "int8", pretrained=["mobilefacenet_tf"])
    assert job.param.name == "mobilefacenet_tf.int8.ncnn.param"
    phones(phone("p1"))
    out = tmp_path / "int8.json"
    opts = _opts(int8=True, loops=2, chunk=1, profile=True, pace_ms=20)
    results = bench_adb(["p1"], [job], opts, out)
    (d,) = results.to_dict()["devices"]
    (m,) = d["models"]
    assert d["status"] == "ok" and m["status"] == "ok", d
    assert m["export"]["precision"] == "int8" and results.options.precision == "int8"
    parity = m["parity"]
    assert parity["ok"] and 0.98 <= parity["cos"] < 0.9999, parity  # int8, not fp32
    assert parity["int8_files"]["ok"] and parity["int8_files"]["cos"] >= 0.999, parity
    profile = m["profile"]  # from the last chunk only, profiling max(loops, 1) runs
    assert profile["runs"] == 1 and len(profile["layers"]) > 50
    assert {"Convolution", "ConvolutionDepthWise", "PReLU"} <= {
        r["type"] for r in profile["layers"]
    }
    proc = run_cli("report", out, "--png", tmp_path / "int8.png")
    assert proc.returncode == 0, proc.stderr
    assert "int8, pace 20 ms" in proc.stdout
    assert "| MobileFaceNet (TensorFlow" in proc.stdout and "| yes |" in proc.stdout
    assert "Per-layer profile, MobileFaceNet (TensorFlow" in proc.stdout
    assert "| ConvolutionDepthWise | 17 |" in proc.stdout  # the dw row, 15 bottlenecks, GDConv
    assert (tmp_path / "int8.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_disconnect_keeps_partial_results(phones, tmp_path):
    phones(phone("p1", faults={"disconnect_on_run": 2}))
    out = tmp_path / "partial.json"
    proc = run_cli(
        "bench", "--models", "mobilefacenet", *FAST, "--loops", "2", "--chunk", "1",
        "--cooldown", "0", "--out", out,
    )  # fmt: skip
    assert proc.returncode == 1
    assert f"partial results kept in {out}" in proc.stderr
    (d,) = json.loads(out.read_text())["devices"]
    assert d["status"] == "disconnected" and d["models"][0]["status"] == "incomplete"
    assert len(d["models"][0]["runs_ms"]) == 1


@pytest.mark.slow
def test_bench_all_table2_models(phones, tmp_path):
    """Every Table 2 network on the fake phone, one timed run each (qemu is slow).

    The exports come from the cache after the first run (or benchmarks/host_latency.py).
    """
    phones(phone("p1"))
    out = tmp_path / "all.json"
    proc = run_cli(
        "bench", "--models", "all", *FAST, "--loops", "1", "--cooldown", "0",
        "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    models = json.loads(out.read_text())["devices"][0]["models"]
    assert len(models) == 11
    assert all(m["status"] == "ok" and m["parity"]["ok"] and m["n"] == 1 for m in models)
    table2, *more = proc.stdout.split("\n\n")  # Table 2 first, then notes and start-up
    assert sum(line.startswith("| ") for line in table2.splitlines()) == 12  # header + 11
    startup = next(part for part in more if part.startswith("| Network | Series | load ms"))
    assert len(startup.splitlines()) == 2 + 11  # header, rule, one row per network


def test_bench_interrupted_keeps_measured_models(phones, tmp_path):
    """SIGTERM (like ^C) while the second model runs: the first is on disk, the second
    keeps its finished runs, the phone and the file say interrupted / partial."""
    import signal
    import time

    phones(phone("p1"))
    out = tmp_path / "adb.json"
    proc = start_cli(
        "bench", "--models", "mobilefacenet_96x96,mobilefacenet", *FAST, "--loops", "3",
        "--chunk", "1", "--cooldown", "0", "--out", out,
    )  # fmt: skip
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_file() and len(json.loads(out.read_text())["devices"][0]["models"]) == 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert f"partial results kept in {out}" in stderr
    data = json.loads(out.read_text())
    assert data["partial"] is True
    (d,) = data["devices"]
    assert d["status"] == "interrupted"
    first, second = d["models"]
    assert first["status"] == "ok" and first["n"] == 3 and first["parity"]["ok"]
    assert second["status"] == "interrupted" and second["n"] < 3

    report = run_cli("report", out)
    assert report.returncode == 0, report.stderr
    assert "Fake SD820 p1 [p1] (partial) ms" in report.stdout


def test_report_of_a_run_whose_only_phone_failed_is_an_error(phones, tmp_path):
    phones(phone("p1", faults={"push_fails": True}))
    out = tmp_path / "failed.json"
    proc = run_cli("bench", "--models", "mobilefacenet", *FAST, "--loops", "1", "--out", out)
    assert proc.returncode == 1 and out.is_file()
    proc = run_cli("report", out, "--png", tmp_path / "x.png")
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {out}: nothing was measured: p1: failed:"), line
    assert not (tmp_path / "x.png").exists()


def test_device_list_json(phones):
    phones(phone("p1"), phone("p2", state="offline"))
    proc = run_cli("device", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    p1, p2 = json.loads(proc.stdout)
    assert p1["serial"] == "p1" and p1["abi"] == "arm64-v8a" and p1["cores"] == 4
    assert p2 == {"serial": "p2", "state": "offline"}
