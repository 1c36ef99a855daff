"""The int8 gate's three lines for the benchmark's int8 variants of the trained model.

Usage: .venv/bin/python benchmarks/int8_accuracy.py
Writes benchmarks/results/int8_accuracy.json.

For ``mobilefacenet_tf`` (the only trained network), each int8 variant of
``int8_models.py`` (all int8; the 7x7 GDConv, the 3x3 depthwise or every depthwise
layer kept fp32; the gated ``--int8-auto`` model) is judged as the export's gate
judges (``stages.INT8_GATE``): cosine to the fp32 ncnn embedding on the held-out faces,
and decision flips on the real pairs set at fp32's threshold. Pairs the cost figures
of ``arm_instructions.py --int8`` and ``host_int8.py`` with accuracy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from int8_models import TRAINED, int8_models
from mfn_deploy.contract import InputSpec
from mfn_deploy.export.backends import ncnn_runner
from mfn_deploy.export.manifest import read_manifest, tool_versions
from mfn_deploy.export.parity import compare
from mfn_deploy.export.stages import INT8_GATE
from mfn_deploy.face.calibration import int8_calibration
from mfn_deploy.files import write_json
from mfn_deploy.metrics import best_threshold

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    models = int8_models(TRAINED, breakdown=True)
    manifest = read_manifest(models["fp32"][0].parent)
    spec, blobs = InputSpec.from_manifest(manifest), manifest["ncnn_blobs"]
    data = int8_calibration(None, spec)
    fp32 = ncnn_runner(*models["fp32"], blobs)
    ref, ref_scores = fp32(data.holdout), data.pairs.scores(fp32(data.pairs.images))
    threshold = best_threshold(ref_scores, data.pairs.same)
    rows = []
    for variant, paths in models.items():
        if not variant.startswith("int8"):
            continue
        run = ncnn_runner(*paths, blobs, packing=False)  # exact int8, as the gate runs it
        m = compare(run(data.holdout), ref)
        scores = data.pairs.scores(run(data.pairs.images))
        flips = int(np.sum((scores >= threshold) != (ref_scores >= threshold)))
        rows.append(
            {
                "variant": variant,
                "cos_mean": m.cos_mean,
                "cos_min": m.cos_min,
                "flips": flips,
                "passes_gate": INT8_GATE.passes(m, flips),
            }
        )
        print(rows[-1])
    write_json(
        RESULTS / "int8_accuracy.json",
        {
            "benchmark": "int8_accuracy",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": TRAINED,
            "gate": {
                "cos_mean_min": INT8_GATE.cos_mean_min,
                "cos_min": INT8_GATE.cos_min,
                "flips_max": INT8_GATE.flips_max,
            },
            "holdout_faces": len(data.holdout),
            "pairs": len(data.pairs.same),
            "fp32_threshold": threshold,
            "tools": tool_versions(),
            "variants": rows,
        },
    )


if __name__ == "__main__":
    main()
