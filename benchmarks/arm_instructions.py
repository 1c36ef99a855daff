"""ARM guest instructions per inference for every Table 2 network, under qemu-user.

Usage: .venv/bin/python benchmarks/arm_instructions.py [--models a,b] [--int8]
Writes benchmarks/results/arm_instructions.json and .md; with ``--int8``,
benchmarks/results/arm_instructions_int8.json and .md instead.

Timing under emulation is meaningless; the number of guest instructions is a
deterministic cost proxy (counted by src/mfn_deploy/native/qemu_insn_plugin.c, one thread, see
``native.instructions_per_inference``). Three configurations of the arm64 runner:

- fp32 on cortex-a57 (ARMv8.0, like the Snapdragon 820's Kryo cores);
- fp16 on cortex-a57: fp16 weights and storage, fp32 arithmetic (no ARMv8.2 there);
- fp16 on cortex-a76 (ARMv8.2): ncnn's fp16 arithmetic path, as on newer phones.

``--int8`` (``INT8_CONFIGS``): every Table 2 network plus the trained
``mobilefacenet_tf``, fp32, fp16 and int8 on cortex-a57 (ARMv8.0) and cortex-a76
(ARMv8.2 with the dot product instructions ncnn's int8 kernels use when the CPU has
them); int8 models from ``int8_models.py`` (all layers int8, built-in calibration,
no gate: the zoo's weights are untrained and cost does not depend on weight values;
for ``mobilefacenet_tf`` also the gated ``--int8-auto`` model). For MobileFaceNet and
``mobilefacenet_tf`` a breakdown: int8 with the 7x7 GDConv, the 3x3 depthwise
layers, or all depthwise layers kept fp32.
"""

from __future__ import annotations

import argparse
import json
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
CPUS = {"a57": "cortex-a57", "a76": "cortex-a76"}
BREAKDOWN_MODELS = ("mobilefacenet", "mobilefacenet_tf")
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


# Figures arm_instructions.json already holds (same exports, same tools): reused, not re-run.
REUSED = {"fp32_a57": "fp32_a57", "fp16_a57": "fp16_storage_a57", "fp16_a76": "fp16_arith_a76"}


def _previous() -> dict[str, dict]:
    """arm_instructions.json's rows, if it was measured with today's tools."""
    path = RESULTS / "arm_instructions.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    if report["environment"]["tools"] != tool_versions():
        return {}
    return {row["name"]: row for row in report["models"]}


def measure_int8(name: str, previous: dict[str, dict]) -> dict:
    from int8_models import auto_fp32_layers, int8_models

    models = int8_models(name, breakdown=name in BREAKDOWN_MODELS)
    spec = read_manifest(models["fp32"][0].parent)["input"]
    h, w = spec["height"], spec["width"]
    row = {"name": name, "title": get_spec(name).title, "insn": {}, "reused": []}
    old = previous.get(name, {})
    for variant, (param, binary) in models.items():
        for cpu_key, cpu in CPUS.items():
            fp16 = variant == "fp16"
            key = f"{variant}_{cpu_key}"
            if REUSED.get(key) in old:
                row["insn"][key] = old[REUSED[key]]
                row["reused"].append(key)
                continue
            n = instructions_per_inference(
                "arm64-v8a", str(param), str(binary), (w, h, 3), fp16, cpu
            )
            row["insn"][f"{variant}_{cpu_key}"] = n
            print(f"{name:<22} {variant:<20} {cpu:<11} {n / 1e6:8.1f}M", file=sys.stderr)
    for cpu_key in CPUS:
        row[f"int8_over_fp32_{cpu_key}"] = (
            row["insn"][f"int8_{cpu_key}"] / row["insn"][f"fp32_{cpu_key}"]
        )
    if "int8_auto_a57" in row["insn"]:
        row["int8_auto_fp32_layers"] = auto_fp32_layers(name)
    stats = model_stats(name)
    return row | {"madds": stats.madds}


def markdown_int8(rows: list[dict]) -> str:
    lines = [
        "Millions of guest instructions per inference, arm64-v8a runner, 1 thread. "
        "int8: every layer int8, built-in calibration, no gate (untrained weights; cost "
        "does not depend on weight values).",
        "",
        "| network | fp32 A57 | fp16 A57 (storage) | int8 A57 | int8/fp32 A57 "
        "| fp32 A76 | fp16 A76 (arith) | int8 A76 (dot) | int8/fp32 A76 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        i = r["insn"]
        lines.append(
            f"| {r['title']} | {i['fp32_a57'] / 1e6:.1f} | {i['fp16_a57'] / 1e6:.1f} "
            f"| {i['int8_a57'] / 1e6:.1f} | **{r['int8_over_fp32_a57']:.2f}** "
            f"| {i['fp32_a76'] / 1e6:.1f} | {i['fp16_a76'] / 1e6:.1f} "
            f"| {i['int8_a76'] / 1e6:.1f} | **{r['int8_over_fp32_a76']:.2f}** |"
        )
    extra = [r for r in rows if any(k not in ("fp32", "fp16", "int8") for k in _variants(r))]
    if extra:
        lines += [
            "",
            "Which layers (int8 with some layers kept fp32; ratio to fp32 on the same CPU):",
            "",
            "| network | variant | Minsn A57 | / fp32 A57 | Minsn A76 | / fp32 A76 |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in extra:
            i = r["insn"]
            for v in _variants(r):
                if v in ("fp32", "fp16"):
                    continue
                lines.append(
                    f"| {r['title']} | {v} | {i[v + '_a57'] / 1e6:.1f} "
                    f"| {i[v + '_a57'] / i['fp32_a57']:.2f} | {i[v + '_a76'] / 1e6:.1f} "
                    f"| {i[v + '_a76'] / i['fp32_a76']:.2f} |"
                )
    return "\n".join(lines) + "\n"


def _variants(row: dict) -> list[str]:
    return list(dict.fromkeys(k.rsplit("_", 1)[0] for k in row["insn"]))


def main_int8(models: list[str]) -> None:
    previous = _previous()
    rows = []
    for name in models:
        rows.append(measure_int8(name, previous))
        write_json(RESULTS / "arm_instructions_int8.partial.json", rows)
    report = {
        "benchmark": "arm_instructions_int8",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "unit": "guest instructions per inference, arm64-v8a runner, 1 thread, qemu-user",
        "cpus": {k: v for k, v in CPUS.items()},
        "variants": {
            "fp32": "the fp32 ncnn pair, fp16 off",
            "fp16": "the fp16 pair, fp16 on: storage only on cortex-a57 (ARMv8.0), "
            "fp16 arithmetic on cortex-a76 (ARMv8.2)",
            "int8": "every Convolution/ConvolutionDepthWise/InnerProduct int8 "
            "(export.int8.quantize_ungated: kl, built-in calibration), fp16 off",
            "int8_auto": "mobilefacenet_tf only: the gated export --int8 --int8-auto model",
            "int8_gdconv_fp32": "int8 but the 7x7 global depthwise convolution fp32",
            "int8_dw3x3_fp32": "int8 but the 3x3 depthwise convolutions fp32",
            "int8_depthwise_fp32": "int8 but every depthwise convolution fp32",
        },
        "gate": "the int8 accuracy gate does not apply to these figures: the zoo's "
        "weights are untrained (their int8 embedding cannot meet it) and an int8 "
        "model's instruction count does not depend on the weights' values; only "
        "mobilefacenet_tf's int8_auto model passed the gate",
        "reused": "figures listed under a row's 'reused' come from arm_instructions.json "
        "(same exports, same tools, deterministic counts; this session re-measured "
        "MobileNetV1 fp32 on cortex-a57 at the same 170.7M), the rest were measured here",
        "environment": {"host": platform.machine(), "tools": tool_versions()},
        "models": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "arm_instructions_int8.json", report)
    (RESULTS / "arm_instructions_int8.partial.json").unlink(missing_ok=True)
    (RESULTS / "arm_instructions_int8.md").write_text(markdown_int8(rows))
    print(markdown_int8(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None)
    parser.add_argument("--int8", action="store_true", help="int8 rows (see the docstring)")
    args = parser.parse_args()
    if args.int8:
        main_int8(args.models.split(",") if args.models else names())
        return
    args.models = args.models or ",".join(names())
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
