"""Host latency of int8 vs fp32 (and fp16) ncnn models, ncnn's Python binding, 1 thread.

Usage: .venv/bin/python benchmarks/host_int8.py [--models a,b] [--rounds 15] [--loops 10]
Writes benchmarks/results/host_int8.json and .md.

Every Table 2 network plus the trained ``mobilefacenet_tf``; the int8 models are
``int8_models.py``'s (all layers int8, built-in calibration, no gate: the zoo's weights
are untrained and latency does not depend on weight values; for ``mobilefacenet_tf``
also the gated ``--int8-auto`` model). ncnn as a user runs it on this host: packed
layouts, fp16 off for fp32 and int8. ``bench --target host`` cannot choose the int8
files yet, so this times the binding directly. The variants of one network are timed
in interleaved rounds (one round: ``--loops`` inferences of each, in turn) so that a
shared, noisy machine slows them alike; the figure is the median round, per inference,
and the ratio is taken within the run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from int8_models import auto_fp32_layers, int8_models  # benchmarks/, the script's folder
from mfn_deploy.contract import InputSpec
from mfn_deploy.export.backends import load_ncnn_net
from mfn_deploy.export.manifest import read_manifest, tool_versions
from mfn_deploy.files import write_json
from mfn_deploy.images import random_inputs
from mfn_deploy.models import get_spec, names

RESULTS = Path(__file__).resolve().parent / "results"


def _infer(net, in_blob: str, out_blob: str, mat) -> None:
    with net.create_extractor() as ex:
        ex.input(in_blob, mat)
        ex.extract(out_blob)


def measure(name: str, rounds: int, loops: int) -> dict:
    import ncnn

    models = int8_models(name)
    manifest = read_manifest(models["fp32"][0].parent)
    spec = InputSpec.from_manifest(manifest)
    (in_blob,), (out_blob,) = manifest["ncnn_blobs"]["inputs"], manifest["ncnn_blobs"]["outputs"]
    mat = ncnn.Mat(np.ascontiguousarray(random_inputs(spec, 1, 0)[0]))
    nets = {v: load_ncnn_net(p, b, fp16=v == "fp16", threads=1) for v, (p, b) in models.items()}
    for net in nets.values():
        for _ in range(3):
            _infer(net, in_blob, out_blob, mat)
    times: dict[str, list[float]] = {v: [] for v in nets}
    for _ in range(rounds):
        for v, net in nets.items():
            t0 = time.perf_counter()
            for _ in range(loops):
                _infer(net, in_blob, out_blob, mat)
            times[v].append((time.perf_counter() - t0) / loops * 1000)
    ms = {v: statistics.median(t) for v, t in times.items()}
    row = {
        "name": name,
        "title": get_spec(name).title,
        "ms": ms,
        "int8_over_fp32": ms["int8"] / ms["fp32"],
    }
    if "int8_auto" in ms:
        row["int8_auto_over_fp32"] = ms["int8_auto"] / ms["fp32"]
        row["int8_auto_fp32_layers"] = auto_fp32_layers(name)
    print(
        f"{name:<22} "
        + "  ".join(f"{v} {t:7.2f} ms" for v, t in ms.items())
        + f"  int8/fp32 {row['int8_over_fp32']:.2f}",
        file=sys.stderr,
    )
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "ms per inference, ncnn Python binding, 1 thread, this host (median of interleaved "
        "rounds). int8: every layer int8, no gate (untrained weights; latency does not "
        "depend on weight values).",
        "",
        "| network | fp32 ms | fp16 ms | int8 ms | int8 / fp32 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms = r["ms"]
        lines.append(
            f"| {r['title']} | {ms['fp32']:.2f} | {ms['fp16']:.2f} | {ms['int8']:.2f} "
            f"| **{r['int8_over_fp32']:.2f}** |"
        )
        if "int8_auto" in ms:
            lines.append(
                f"| {r['title']}, `--int8-auto` (gated, "
                f"{len(r['int8_auto_fp32_layers'])} layers fp32) | {ms['fp32']:.2f} | "
                f"{ms['fp16']:.2f} | {ms['int8_auto']:.2f} | **{r['int8_auto_over_fp32']:.2f}** |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(names()))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--loops", type=int, default=10)
    args = parser.parse_args()
    rows = [measure(n, args.rounds, args.loops) for n in args.models.split(",")]
    import ncnn

    report = {
        "benchmark": "host_int8",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "unit": "ms per inference, median of interleaved rounds",
        "protocol": {
            "runtime": f"ncnn Python binding {ncnn.__version__}",
            "threads": 1,
            "rounds": args.rounds,
            "loops_per_round": args.loops,
            "layout": "packed (ncnn's default), fp16 off except the fp16 pair",
        },
        "gate": "the int8 accuracy gate does not apply: the zoo's weights are untrained "
        "and latency does not depend on the weights' values; mobilefacenet_tf's "
        "int8_auto model is the gated one",
        "environment": {
            "host": platform.machine(),
            "processor": platform.processor(),
            "tools": tool_versions(),
        },
        "models": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "host_int8.json", report)
    (RESULTS / "host_int8.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
