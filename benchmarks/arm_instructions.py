"""ARM guest instructions per inference for every Table 2 network, under qemu-user.

Usage: .venv/bin/python benchmarks/arm_instructions.py [--models a,b]
Writes benchmarks/results/arm_instructions.json and .md.

Timing under emulation is meaningless; the number of guest instructions is a
deterministic cost proxy (counted by src/mfn_deploy/native/qemu_insn_plugin.c, one thread, see
``native.instructions_per_inference``). Three configurations of the arm64 runner:

- fp32 on cortex-a57 (ARMv8.0, like the Snapdragon 820's Kryo cores);
- fp16 on cortex-a57: fp16 weights and storage, fp32 arithmetic (no ARMv8.2 there);
- fp16 on cortex-a76 (ARMv8.2): ncnn's fp16 arithmetic path, as on newer phones.
"""

from __future__ import annotations

import argparse
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from mfn_deploy.export.manifest import read_manifest, tool_versions
from mfn_deploy.export.stages import ArtifactNames
from mfn_deploy.files import write_json
from mfn_deploy.models import get_spec, names
from mfn_deploy.native import instructions_per_inference
from mfn_deploy.runtime import cached_export
from mfn_deploy.stats import model_stats

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = {
    "fp32_a57": (False, "cortex-a57"),
    "fp16_storage_a57": (True, "cortex-a57"),
    "fp16_arith_a76": (True, "cortex-a76"),
}


def measure(name: str) -> dict:
    export_dir = cached_export(name)
    spec = read_manifest(export_dir)["input"]
    shape = (spec["width"], spec["height"], 3)
    art = ArtifactNames(name)
    row = {"name": name, "title": get_spec(name).title}
    for key, (fp16, cpu) in CONFIGS.items():
        param = str(export_dir / art.ncnn_param(fp16))
        binary = str(export_dir / art.ncnn_bin(fp16))
        row[key] = instructions_per_inference("arm64-v8a", param, binary, shape, fp16, cpu)
    stats = model_stats(name)
    return row | {"madds": stats.madds, "paper_ms": stats.paper_ms}


def markdown(rows: list[dict]) -> str:
    base = next(r for r in rows if r["name"] == "mobilefacenet")
    lines = [
        "| network | MAdds | ARM Minsn fp32 | Minsn fp16 storage | Minsn fp16 arith (v8.2) "
        "| MAdds / insn | insn ratio to MobileFaceNet | paper SD820 ms | paper ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['title']} | {r['madds'] / 1e6:.0f}M | {r['fp32_a57'] / 1e6:.1f} "
            f"| {r['fp16_storage_a57'] / 1e6:.1f} | {r['fp16_arith_a76'] / 1e6:.1f} "
            f"| {r['madds'] / r['fp32_a57']:.2f} | {r['fp32_a57'] / base['fp32_a57']:.2f} "
            + (  # a network the paper does not measure (mobilefacenet_tf) has no figure
                "| — | — |"
                if r["paper_ms"] is None
                else f"| {r['paper_ms']:g} | {r['paper_ms'] / base['paper_ms']:.2f} |"
            )
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(names()))
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        rows.append(measure(name))
        r = rows[-1]
        print(
            f"{name:<22} fp32 {r['fp32_a57'] / 1e6:8.1f}M  fp16 {r['fp16_storage_a57'] / 1e6:8.1f}M"
            f"  fp16-arith {r['fp16_arith_a76'] / 1e6:8.1f}M",
            file=sys.stderr,
        )
    report = {
        "benchmark": "arm_instructions",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "unit": "guest instructions per inference, arm64-v8a runner, 1 thread, qemu-user",
        "configs": {k: {"fp16": f, "qemu_cpu": c} for k, (f, c) in CONFIGS.items()},
        "environment": {"host": platform.machine(), "tools": tool_versions()},
        "weights": "untrained default weights (cost does not depend on weight values)",
        "models": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "arm_instructions.json", report)
    (RESULTS / "arm_instructions.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
