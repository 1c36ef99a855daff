"""The trained model's per-stage parity table, int8 included, and the README block quoting it.

Usage: .venv/bin/python benchmarks/pretrained_parity.py
Writes benchmarks/results/pretrained_parity.json and .md, and rewrites the README
between the ``pretrained-parity`` markers with the .md (tests/test_readme.py keeps the
two equal).

Exports ``--pretrained mobilefacenet_tf --fp16 --int8`` twice, as a user would, on
the built-in calibration set: ``--int8-auto`` (what ``bench --pretrained --int8`` and
the README recommend for accuracy) and ``--int8-skip depthwise`` (every depthwise layer
fp32: the fastest int8 on ARM, ``arm_instructions_int8.md``). Each gets its parity
table against torch; the first also its sensitivity report's top layers.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mfn_deploy.export.int8 import format_sensitivity
from mfn_deploy.export.manifest import tool_versions
from mfn_deploy.export.parity import format_table
from mfn_deploy.export.plan import ExportOptions, export
from mfn_deploy.face.calibration import int8_calibration
from mfn_deploy.face.samples import face_inputs
from mfn_deploy.files import atomic_write, write_json
from mfn_deploy.pretrained.importer import checkpoint

MODEL = "mobilefacenet_tf"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- pretrained-parity:begin -->", "<!-- pretrained-parity:end -->"
VARIANTS = {  # name -> (ExportOptions int8 fields, the command line it stands for)
    "int8-auto": ({"int8_auto": True}, "--int8 --int8-auto"),
    "int8-skip-depthwise": ({"int8_skip": ("depthwise",)}, "--int8 --int8-skip depthwise"),
}


def run(variant: str, tmp: Path) -> dict:
    fields, _ = VARIANTS[variant]
    opts = ExportOptions(
        out=tmp / variant,
        model=MODEL,
        checkpoint=checkpoint(MODEL),
        fp16=True,
        int8=True,
        calibration=lambda spec: int8_calibration(None, spec),
        **fields,
    )
    result = export(opts, faces=face_inputs)
    return {"parity": result.parity, "int8": result.manifest["stages"]["ncnn_int8"]}


def block(runs: dict) -> str:
    """The README block: each variant's command, parity table, int8 summary."""
    out = []
    for variant, r in runs.items():
        int8 = r["int8"]
        kept = int8["layers_fp32"]["auto"] + int8["layers_fp32"]["skipped"]
        out += [
            f"`mfn-deploy export --pretrained {MODEL} --fp16 {VARIANTS[variant][1]}` "
            f"({int8['layers_int8']} layers int8, {len(kept)} fp32):",
            "",
            "```",
            format_table(r["parity"]),
            format_sensitivity(int8, top=5 if variant == "int8-auto" else 0),
            "```",
            "",
        ]
    return "\n".join(out)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        runs = {variant: run(variant, Path(tmp)) for variant in VARIANTS}
    text = block(runs)
    write_json(
        RESULTS / "pretrained_parity.json",
        {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": MODEL,
            "versions": tool_versions(),
            "variants": {
                v: {"command": VARIANTS[v][1], "parity": r["parity"].to_dict(), "int8": r["int8"]}
                for v, r in runs.items()
            },
        },
    )
    with atomic_write(RESULTS / "pretrained_parity.md") as tmp_md:
        tmp_md.write_text(text)
    readme = README.read_text()
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    with atomic_write(README) as tmp_readme:
        tmp_readme.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
    print(text)


if __name__ == "__main__":
    main()
