"""Start-up, memory and per-layer time of the trained model, fp32 and int8, on the host
and on the fake phone -> benchmarks/results/bench_depth.*

Usage: .venv/bin/python benchmarks/bench_depth.py [--loops 20] [--phone-loops 3]

Runs the real CLI four times (``mfn-deploy bench --pretrained mobilefacenet_tf
--profile``, fp32 and ``--int8``, ``--target host`` and ``--target adb``), then
``mfn-deploy report`` over the four files: the start-up table (load, cold, peak
memory), the int8 parity table, and each run's per-layer profile; the chart draws the
first profiled network's layers. 1 thread (a shared 2-core box).

The phone is the test suite's loopback fake adb (``tests/fake_adb.py``): the arm64
runner under qemu-user on cortex-a57, so its milliseconds are an emulator's, not a
Snapdragon's; its per-layer *shares* and its parity are what it shows.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from host_latency import cli

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FAKE_ADB = ROOT / "tests" / "fake_adb.py"
MODEL = "mobilefacenet_tf"
PHONE = {  # a Snapdragon 820 as the paper's: 2 little + 2 big Kryo cores
    "serial": "fake-sd820",
    "state": "device",
    "abi": "arm64-v8a",
    "props": {"ro.product.model": "fake phone (qemu cortex-a57)", "ro.board.platform": "msm8996"},
    "cpus": [["schedutil", 1593600, 1593600]] * 2 + [["schedutil", 2150400, 2150400]] * 2,
    "thermal": [["cpu-big", 38000]],
    "faults": {},
}


CAVEAT = (
    "The fake phone's milliseconds are qemu's: its TCG emulates floating point in "
    "software and integer arithmetic natively, so int8 runs faster there while it executes "
    "more ARM instructions than fp32 (benchmarks/results/arm_instructions_int8.md). Read "
    "its per-layer shares, start-up order of magnitude and parity, not its ms."
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", type=int, default=20, help="timed runs on the host")
    ap.add_argument("--phone-loops", type=int, default=3, help="timed runs on the fake phone")
    a = ap.parse_args()
    common = ["--pretrained", MODEL, "--threads", "1", "--powersave", "0", "--profile"]
    common += ["--cooldown", "0"]
    files = []
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "fake_adb.json"
        state.write_text(json.dumps({"root": str(Path(tmp) / "phones"), "devices": [PHONE]}))
        phone_env = os.environ | {"MFN_ADB": str(FAKE_ADB), "FAKE_ADB_STATE": str(state)}
        for target, loops, env in (("host", a.loops, None), ("adb", a.phone_loops, phone_env)):
            for precision in ("fp32", "int8"):
                out = RESULTS / f"bench_depth_{target}_{precision}.json"
                extra = ["--int8"] if precision == "int8" else []
                extra += ["--backends", "ncnn-runner,ncnn-python,litert"] * (target == "host")
                cli("bench", "--target", target, *common, *extra, "--loops", str(loops),
                    "--warmup", "1", "--out", str(out), env=env)  # fmt: skip
                files.append(str(out))
    report = cli("report", *files, "--png", str(RESULTS / "bench_depth.png"))
    (RESULTS / "bench_depth.md").write_text(f"{CAVEAT}\n\n{report}")
    print(report)


if __name__ == "__main__":
    main()
