"""Host latency of the 11 Table 2 networks in four runtimes -> benchmarks/results/host_latency.*

Usage: .venv/bin/python benchmarks/host_latency.py [--threads 1] [--loops 50] [--warmup 10]

Runs the real CLI (``mfn-deploy bench --target host --models all``), then
``mfn-deploy report`` for the Markdown table and the bar chart, and prints the two
ratios the README quotes: ncnn vs onnxruntime, and MobileFaceNet vs MobileNetV2.
One thread by default: the machines are shared 2-core boxes, where two spinning
ncnn threads fight other users' jobs and measure the neighbours, not the network.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from mfn_deploy.bench.results import Results, load_results
from mfn_deploy.files import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def cli(*args: str, env: dict | None = None) -> str:
    """One quiet ``mfn-deploy`` command; its stdout, or the script ends with its stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "mfn_deploy", "-q", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"mfn-deploy {args[0]} failed:\n{proc.stderr}")
    return proc.stdout


def ratios(results: Results) -> dict:
    models = {m.name: m for m in results.devices[0].models}

    def med(model: str, backend: str) -> float:
        return models[model].series(backend).median_ms

    per_model = {n: med(n, "onnxruntime") / med(n, "ncnn-runner") for n in models}
    return {
        "onnxruntime_over_ncnn_runner_geomean": round(
            statistics.geometric_mean(per_model.values()), 3
        ),
        "onnxruntime_over_ncnn_runner_mobilefacenet": round(per_model["mobilefacenet"], 3),
        "onnxruntime_over_ncnn_runner": {k: round(v, 3) for k, v in per_model.items()},
        "mobilefacenet_over_mobilenet_v2": {
            b: round(med("mobilefacenet", b) / med("mobilenet_v2", b), 3)
            for b in results.devices[0].backends
        },
        "paper_mobilefacenet_over_mobilenet_v2": round(24 / 49, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1")
    ap.add_argument("--loops", default="50")
    ap.add_argument("--warmup", default="10")
    a = ap.parse_args()
    out = RESULTS / "host_latency.json"
    # Host phones have no thermal story: cool-down 0, all cores (powersave 0).
    cli("bench", "--target", "host", "--models", "all", "--threads", a.threads,
        "--powersave", "0", "--loops", a.loops, "--warmup", a.warmup, "--cooldown", "0",
        "--out", str(out))  # fmt: skip
    table = cli("report", str(out), "--png", str(RESULTS / "host_latency.png"))
    results = load_results(out)
    r = ratios(results)
    results.extra["ratios"] = r  # kept beside the typed results on every round trip
    write_json(out, results.to_dict())
    lines = [
        table,
        f"onnxruntime / ncnn runner (geometric mean over 11 networks): "
        f"{r['onnxruntime_over_ncnn_runner_geomean']}",
        f"MobileFaceNet / MobileNetV2 per backend: {r['mobilefacenet_over_mobilenet_v2']} "
        f"(paper SD820: {r['paper_mobilefacenet_over_mobilenet_v2']})",
    ]
    md = RESULTS / "host_latency.md"
    tmp = md.with_name(f".{md.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(md)  # atomic, like every output
    print("\n".join(lines))


if __name__ == "__main__":
    main()
