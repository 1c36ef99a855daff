"""Results JSON -> the paper's Table 2 as Markdown, and a grouped bar chart.

One measured column per series: a phone (adb results) or a host backend (host
results). Cells are ``median ± half the interquartile range`` in ms; the ratio
column divides by MobileFaceNet's median in the same series, like the paper's
relative speed. Marks: ``†`` throttled, ``‡`` incomplete or failed (partial data).
"""

from __future__ import annotations

import json
from pathlib import Path

from mfn_deploy.errors import MfnError
from mfn_deploy.files import atomic_write

REFERENCE_MODEL = "mobilefacenet"
FORMAT = "mfn-deploy/bench-v1"


def load_results(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MfnError(f"{path}: no such results file") from None
    except json.JSONDecodeError as e:
        raise MfnError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MfnError(f"{path}: not an mfn-deploy bench results file (format {FORMAT})")
    return data


def series(results: dict) -> list[tuple[str, dict[str, dict]]]:
    """(label, {model name: timing record}) for every measured column of one results file."""
    out = []
    for d in results["devices"]:
        models = d.get("models", [])
        if results["target"] == "host":
            for b in d.get("backends", []):
                out.append((f"host {b}", {m["name"]: m["backends"].get(b, {}) for m in models}))
        else:
            name = (d.get("info") or {}).get("model") or "?"
            out.append((f"{name} [{d['serial']}]", {m["name"]: m for m in models}))
    return out


def _networks(results_list: list[dict]) -> list[dict]:
    """Every network measured, in the paper's row order, with its size and paper figure."""
    from mfn_deploy.models import names

    order = {n: i for i, n in enumerate(names())}
    seen: dict[str, dict] = {}
    for r in results_list:
        for d in r["devices"]:
            for m in d.get("models", []):
                seen.setdefault(m["name"], m)
    return sorted(seen.values(), key=lambda m: (order.get(m["name"], len(order)), m["name"]))


def _median(rec: dict | None) -> float | None:
    return None if not rec else rec.get("median_ms")


def _cell(rec: dict | None) -> str:
    median = _median(rec)
    if median is None:
        return "—"
    mark = "‡" if rec.get("status") not in (None, "ok") else "†" if rec.get("throttled") else ""
    return f"{median:.1f} ± {rec.get('iqr_ms', 0) / 2:.1f}{mark}"


def _ratio(value: float | None, ref: float | None) -> str:
    return "—" if value is None or not ref else f"{value / ref:.2f}"


def markdown(results_list: list[dict]) -> str:
    cols = [s for r in results_list for s in series(r)]
    nets = _networks(results_list)
    paper_ref = next((m["paper_ms"] for m in nets if m["name"] == REFERENCE_MODEL), None)
    header = ["Network", "Params", "MAdds", "Paper SD820 ms", "Paper ratio"]
    for label, _ in cols:
        header += [f"{label} ms", "ratio"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in nets:
        row = [
            m.get("title") or m["name"],
            "—" if m.get("params") is None else f"{m['params'] / 1e6:.2f}M",
            "—" if m.get("madds") is None else f"{m['madds'] / 1e6:.0f}M",
            "—" if m.get("paper_ms") is None else f"{m['paper_ms']:g}",
            _ratio(m.get("paper_ms"), paper_ref),
        ]
        for _, recs in cols:
            ref = _median(recs.get(REFERENCE_MODEL))
            row += [_cell(recs.get(m["name"])), _ratio(_median(recs.get(m["name"])), ref)]
        lines.append("| " + " | ".join(row) + " |")
    notes = [
        "",
        "ms: median ± half the interquartile range of the timed runs; ratio: ms / "
        "MobileFaceNet's ms in the same column. † throttled during the run, "
        "‡ incomplete or failed (partial data).",
    ]
    for r in results_list:
        o = r["options"]
        where = ", ".join(
            f"{d['serial']} ({d['status']})" + (f": {d['error']}" if d.get("error") else "")
            for d in r["devices"]
        )
        notes.append(
            f"{r['target']} run {r['created']}: threads {o['threads']}, powersave "
            f"{o['powersave']}, warmup {o['warmup']}, loops {o['loops']}, cooldown "
            f"{o['cooldown']}, fp16 {'on' if o['fp16'] else 'off'}; {where}"
        )
    return "\n".join(lines + notes) + "\n"


def plot(results_list: list[dict], png: Path) -> None:
    """Grouped bars per network: each measured series and the paper's SD820 ms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    nets = _networks(results_list)
    cols = [("paper SD820", {m["name"]: {"median_ms": m.get("paper_ms")} for m in nets})]
    cols += [s for r in results_list for s in series(r)]
    values = np.array(
        [[_median(recs.get(m["name"])) or np.nan for m in nets] for _, recs in cols], float
    )
    spread = np.array(
        [[((recs.get(m["name"]) or {}).get("iqr_ms") or 0) / 2 for m in nets] for _, recs in cols]
    )
    width = 0.8 / len(cols)
    x = np.arange(len(nets))
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(nets) + 2), 5))
    for i, (label, _) in enumerate(cols):
        offset = (i - (len(cols) - 1) / 2) * width
        yerr = spread[i] if spread[i].any() else None  # the paper gives no spread
        ax.bar(x + offset, values[i], width, yerr=yerr, capsize=2, label=label)
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size and finite.max() / finite.min() > 20:
        ax.set_yscale("log")  # emulated phones run 100x slower than real ones: keep both legible
    ax.set_xticks(x, [m.get("title") or m["name"] for m in nets], rotation=30, ha="right")
    ax.set_ylabel("latency per face, ms (median, bar: ± half IQR)")
    ax.set_title("Inference latency vs the paper's Snapdragon 820 (Table 2)")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_write(png) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
