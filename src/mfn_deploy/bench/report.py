"""Results files -> the paper's Table 2 as Markdown, and a grouped bar chart.

One measured column per series: a phone (adb results) or a host backend (host
results: ncnn-runner, ncnn-python, onnxruntime, torch, and litert for an export
with a TFLite source; a network not timed in a backend shows ``—``). Cells are
``median ± half the interquartile range`` in ms; the ratio column divides by
MobileFaceNet's median in the same series, like the paper's relative speed. Below
the notes, each host run gets a second table: every runtime's median divided by the
ncnn runner's for the same network in the same run. Marks: ``†`` throttled, ``‡``
incomplete, interrupted or failed (partial data). A column from an interrupted run
says ``(partial)``. Two columns that would read the same (two results files of the
same phone or the same host backend) are told apart by their file's name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mfn_deploy.bench.results import ModelResult, Results, Status, Timing, load_results
from mfn_deploy.errors import MfnError
from mfn_deploy.files import atomic_write

REFERENCE_MODEL = "mobilefacenet"
REFERENCE_BACKEND = "ncnn-runner"  # host runs: the runtime the others are divided by
PAPER = "paper SD820"


@dataclass
class Column:
    label: str
    timings: dict[str, Timing]  # model name -> its timing in this series


def _series(results: Results) -> list[tuple[str, dict[str, Timing]]]:
    """(label, {model name: timing}) for every measured series of one results file."""
    out = []
    for d in results.devices:
        if results.target == "host":
            for b in d.backends or []:
                out.append((f"host {b}", {m.name: m.series(b) for m in d.models}))
        else:
            name = (d.info or {}).get("model") or "?"
            out.append((f"{name} [{d.serial}]", {m.name: m.timing for m in d.models}))
    return out


@dataclass
class Table2:
    """Several results files side by side; ``sources`` are (file name, results)."""

    sources: list[tuple[str, Results]]

    def columns(self) -> list[Column]:
        raw = [
            (label, source, results, timings)
            for source, results in self.sources
            for label, timings in _series(results)
        ]
        twice = {k for k, n in Counter(label for label, *_ in raw).items() if n > 1}
        labels = [f"{label} ({source})" if label in twice else label for label, source, *_ in raw]
        seen: Counter = Counter()
        columns = []
        for base, (_, _, results, timings) in zip(labels, raw, strict=True):
            seen[base] += 1
            label = f"{base} #{seen[base]}" if labels.count(base) > 1 else base  # a file twice
            label += " (partial)" if results.partial else ""
            columns.append(Column(label, {k: v for k, v in timings.items() if v is not None}))
        return columns

    def networks(self) -> list[ModelResult]:
        """Every network measured, in the paper's row order, with its size and paper figure."""
        from mfn_deploy.models import names

        order = {n: i for i, n in enumerate(names())}
        seen: dict[str, ModelResult] = {}
        for _, r in self.sources:
            for d in r.devices:
                for m in d.models:
                    seen.setdefault(m.name, m)
        return sorted(seen.values(), key=lambda m: (order.get(m.name, len(order)), m.name))

    def markdown(self) -> str:
        cols = self.columns()
        nets = self.networks()
        paper_ref = next((m.paper_ms for m in nets if m.name == REFERENCE_MODEL), None)
        header = ["Network", "Params", "MAdds", "Paper SD820 ms", "Paper ratio"]
        for c in cols:
            header += [f"{c.label} ms", "ratio"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for m in nets:
            row = [
                m.title or m.name,
                "—" if m.params is None else f"{m.params / 1e6:.2f}M",
                "—" if m.madds is None else f"{m.madds / 1e6:.0f}M",
                "—" if m.paper_ms is None else f"{m.paper_ms:g}",
                _ratio(m.paper_ms, paper_ref),
            ]
            for c in cols:
                ref = _median(c.timings.get(REFERENCE_MODEL))
                t = c.timings.get(m.name)
                row += [_cell(t), _ratio(_median(t), ref)]
            lines.append("| " + " | ".join(row) + " |")
        notes = [
            "",
            "ms: median ± half the interquartile range of the timed runs; ratio: ms / "
            "MobileFaceNet's ms in the same column. † throttled during the run, "
            "‡ incomplete, interrupted or failed (partial data); (partial): the run was "
            "interrupted before every model was measured.",
        ]
        for source, r in self.sources:
            o = r.options
            where = ", ".join(
                f"{d.serial} ({d.status})" + (f": {d.error}" if d.error else "") for d in r.devices
            )
            cooldown = "auto" if o.cooldown is None else f"{o.cooldown:g}"
            notes.append(
                f"{source}: {r.target} run {r.created}{' (partial)' if r.partial else ''}: "
                f"threads {o.threads}, powersave {o.powersave}, warmup {o.warmup}, loops "
                f"{o.loops}, cooldown {cooldown}, fp16 {'on' if o.fp16 else 'off'}; {where}"
            )
        return "\n".join(lines + notes + self.runner_ratios()) + "\n"

    def runner_ratios(self) -> list[str]:
        """Per host run: each runtime's median / the ncnn runner's, network by network."""
        out: list[str] = []
        for source, r in self.sources:
            if r.target != "host":
                continue
            for d in r.devices:
                others = [b for b in d.backends or [] if b != REFERENCE_BACKEND]
                if REFERENCE_BACKEND not in (d.backends or []) or not others:
                    continue
                header = ["Network", f"{REFERENCE_BACKEND} ms", *[f"{b} / runner" for b in others]]
                threads = r.options.threads
                out += [
                    "",
                    f"{source}: latency / the ncnn runner's, same network, same run "
                    f"({threads} thread{'s' if threads != 1 else ''}):",
                    "",
                    "| " + " | ".join(header) + " |",
                    "|" + "---|" * len(header),
                ]
                for m in d.models:
                    ref = _median(m.series(REFERENCE_BACKEND))
                    row = [m.title or m.name, "—" if ref is None else f"{ref:.2f}"]
                    row += [_ratio(_median(m.series(b)), ref) for b in others]
                    out.append("| " + " | ".join(row) + " |")
        return out

    def figure(self):
        """Grouped bars per network: the paper's SD820 ms, then each measured series."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        nets = self.networks()
        paper = Column(PAPER, {m.name: Timing() for m in nets})  # no runs: no spread
        cols = [paper, *self.columns()]
        values = np.array(
            [
                [
                    (m.paper_ms if c is paper else _median(c.timings.get(m.name))) or np.nan
                    for m in nets
                ]
                for c in cols
            ],
            float,
        )
        spread = np.array(
            [[(_iqr(c.timings.get(m.name)) or 0) / 2 for m in nets] for c in cols], float
        )
        width = 0.8 / len(cols)
        x = np.arange(len(nets))
        fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(nets) + 2), 5))
        for i, c in enumerate(cols):
            offset = (i - (len(cols) - 1) / 2) * width
            yerr = spread[i] if spread[i].any() else None  # the paper gives no spread
            ax.bar(x + offset, values[i], width, yerr=yerr, capsize=2, label=c.label)
        finite = values[np.isfinite(values) & (values > 0)]
        if finite.size and finite.max() / finite.min() > 20:
            ax.set_yscale("log")  # emulated phones run 100x slower than real ones
        ax.set_xticks(x, [m.title or m.name for m in nets], rotation=30, ha="right")
        ax.set_ylabel("latency per face, ms (median, bar: ± half IQR)")
        ax.set_title("Inference latency vs the paper's Snapdragon 820 (Table 2)")
        # Beside the axes, never over a bar.
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return fig

    def plot(self, png: Path) -> None:
        import matplotlib.pyplot as plt

        fig = self.figure()
        try:
            with atomic_write(png) as tmp:
                fig.savefig(tmp, dpi=110, bbox_inches="tight")
        finally:
            plt.close(fig)


def _median(t: Timing | None) -> float | None:
    return None if t is None else t.median_ms


def _iqr(t: Timing | None) -> float | None:
    return None if t is None else t.iqr_ms


def _cell(t: Timing | None) -> str:
    median = _median(t)
    if t is None or median is None:
        return "—"
    mark = "‡" if t.status != Status.OK else "†" if t.throttled else ""
    return f"{median:.1f} ± {(t.iqr_ms or 0) / 2:.1f}{mark}"


def _ratio(value: float | None, ref: float | None) -> str:
    return "—" if value is None or not ref else f"{value / ref:.2f}"


def table2(paths: Sequence[Path]) -> Table2:
    """The results files behind ``report``; one line naming a file that shows nothing."""
    sources = []
    for path in paths:
        results = load_results(path)
        if not results.measured():
            why = results.problems() or ["no device or model in it"]
            more = f" (and {len(why) - 1} more)" if len(why) > 1 else ""
            raise MfnError(f"{path}: nothing was measured: {why[0]}{more}")
        sources.append((Path(path).name, results))
    return Table2(sources)
