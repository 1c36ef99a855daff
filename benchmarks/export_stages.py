"""Time each export stage for every Table 2 network; write benchmarks/results/export_stages.json.

Usage: .venv/bin/python benchmarks/export_stages.py [--models a,b] [--repeats 3]

Per-stage times come from the pipeline's own stopwatch (median of the repeats);
``cli_wall_s`` is one full ``mfn-deploy export`` process for MobileFaceNet,
interpreter start and imports included: what a user waits for.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from mfn_deploy.export.manifest import tool_versions
from mfn_deploy.export.plan import ExportOptions, export
from mfn_deploy.face.samples import face_inputs
from mfn_deploy.files import write_json
from mfn_deploy.models import names

RESULTS = Path(__file__).resolve().parent / "results" / "export_stages.json"


def time_model(name: str, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = export(ExportOptions(out=Path(tmp) / name, model=name), faces=face_inputs)
            total = time.perf_counter() - t0
        if not result.parity.ok:
            raise SystemExit(f"{name}: parity failed at {result.parity.blamed}")
        runs.append(result.timings | {"total": total})
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}


def time_cli(name: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mfn_deploy",
                "-q",
                "export",
                "--model",
                name,
                "--out",
                f"{tmp}/o",
            ],
            check=True,
        )
        return round(time.perf_counter() - t0, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(names()))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    models = args.models.split(",")
    per_model = {}
    for name in models:
        per_model[name] = time_model(name, args.repeats)
        print(f"{name:<22} " + "  ".join(f"{k} {v:.2f}" for k, v in per_model[name].items()))
    cli_wall = time_cli("mobilefacenet")
    print(f"mobilefacenet: one `mfn-deploy export` process, imports included: {cli_wall:.2f} s")
    report = {
        "benchmark": "export_stages",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "tools": tool_versions(),
        },
        "repeats": args.repeats,
        "unit": "seconds, median of repeats",
        "goal": "mobilefacenet export under 5 s on a 2-core machine, parity included",
        "models": per_model,
        "mobilefacenet_cli_wall_s": cli_wall,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS, report)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
