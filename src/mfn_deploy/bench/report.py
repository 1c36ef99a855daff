"""Results files -> the paper's Table 2 as Markdown, and a grouped bar chart.

One measured column per series: a phone (adb results) or a host backend (host
results: ncnn-runner, ncnn-python, onnxruntime, torch, and litert for an export
with a TFLite source; a network not timed in a backend shows ``—``). Cells are
``median ± half the interquartile range`` in ms; the ratio column divides by
MobileFaceNet's median in the same series, like the paper's relative speed. Below
the notes, each host run gets a second table: every runtime's median divided by the
ncnn runner's for the same network in the same run. Then start-up: load time (the
runner's param and bin apart), the first inference (cold) against the warm median,
and the runner's peak resident memory; and for a ``--threads 1,2,4`` run (one
column per count) the thread-scaling table: median per count and speed-up over the
first count. Marks: ``†`` throttled, ``‡``
incomplete, interrupted or failed (partial data). A column from an interrupted run
says ``(partial)``. Two columns that would read the same (two results files of the
same phone or the same host backend) are told apart by their file's name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mfn_deploy.bench.options import format_threads
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


def _head(header: list[str]) -> list[str]:
    """A markdown table's header and rule lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]


def _threads(results: Results, m: ModelResult) -> int:
    """The thread count a model record ran at (older files: the run's one count)."""
    return m.threads if m.threads is not None else results.options.thread_counts[0]


def _plural(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def _series(results: Results) -> list[tuple[str, dict[str, Timing]]]:
    """(label, {model name: timing}) for every measured series of one results file; a
    run over several thread counts has one series per count."""
    counts = results.options.thread_counts
    out = []
    for d in results.devices:
        for n in counts:
            models = [m for m in d.models if _threads(results, m) == n]
            suffix = f", {_plural(n)}" if len(counts) > 1 else ""
            if results.target == "host":
                for b in d.backends or []:
                    out.append((f"host {b}{suffix}", {m.name: m.series(b) for m in models}))
            else:
                name = (d.info or {}).get("model") or "?"
                out.append((f"{name} [{d.serial}]{suffix}", {m.name: m.timing for m in models}))
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
        lines = _head(header)
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
                f"threads {format_threads(o.threads)}, powersave {o.powersave}, "
                f"warmup {o.warmup}, loops {o.loops}, cooldown {cooldown}, "
                f"{o.precision}{f', pace {o.pace_ms} ms' if o.pace_ms else ''}; {where}"
            )
        more = self.runner_ratios() + self.startup() + self.scaling() + self.int8_parity()
        return "\n".join(lines + notes + more + self.profiles()) + "\n"

    def int8_parity(self) -> list[str]:
        """int8 runs: each embedding of the fixed face against host fp32 and against host
        ncnn on the same int8 files."""
        rows = []
        for source, r in self.sources:
            if r.options.precision != "int8":
                continue
            for label, m, t in self._records(r):
                p = t.parity or {}
                same = p.get("int8_files") or {}
                rows.append([
                    m.title or m.name,
                    label + (f" ({source})" if len(self.sources) > 1 else ""),
                    _num(p.get("cos")),
                    _num(same.get("cos")),
                    "—" if not p else "yes" if p.get("ok") else "NO",
                ])  # fmt: skip
        if not rows:
            return []
        header = ["Network", "Series", "cos to host fp32", "cos to host int8 (same files)", "ok"]
        return [
            "",
            "int8 parity of the fixed face: against host onnxruntime fp32 (tolerance: the int8 "
            "gate's worst face) and against host ncnn on the same int8 files (unpacked, exact "
            "int8 arithmetic as on ARM); onnxruntime, torch and LiteRT run fp32 and are held "
            "to fp32's.",
            "",
            *_head(header),
            *["| " + " | ".join(row) + " |" for row in rows],
        ]

    def profiled(self) -> list[tuple[str, ModelResult, Timing]]:
        """(series label, network, timing) of every record the runner profiled."""
        return [
            (label + (f" ({source})" if len(self.sources) > 1 else ""), m, t)
            for source, r in self.sources
            for label, m, t in self._records(r)
            if t.profile and t.profile.get("layers")
        ]

    def profiles(self, top: int = 10) -> list[str]:
        """Per profiled record: time by layer type, and the ``top`` slowest layers."""
        out: list[str] = []
        for label, m, t in self.profiled():
            p = t.profile
            layers = p["layers"]
            by_type: dict[str, list[float]] = {}
            for row in layers:
                by_type.setdefault(row["type"], []).append(row["ms"])
            total = p["layers_ms"] or sum(sum(v) for v in by_type.values()) or 1.0
            out += [
                "",
                f"Per-layer profile, {m.title or m.name}, {label}: {p['runs']} profiled run(s), "
                f"layers sum {p['layers_ms']:.3f} ms, whole run {p['run_ms']:.3f} ms.",
                "",
                *_head(["Layer type", "layers", "ms", "share"]),
            ]
            for kind, ms in sorted(by_type.items(), key=lambda kv: -sum(kv[1])):
                out.append(f"| {kind} | {len(ms)} | {sum(ms):.3f} | {sum(ms) / total:.1%} |")
            out += ["", *_head(["Slowest layers", "type", "ms", "share"])]
            for row in sorted(layers, key=lambda r: -r["ms"])[:top]:
                out.append(
                    f"| {row['name']} | {row['type']} | {row['ms']:.3f} | {row['share']:.1%} |"
                )
        return out

    def _records(self, r: Results):
        """(series label, model, timing) of one results file, every record that ran."""
        several = len(r.options.thread_counts) > 1
        for d in r.devices:
            phone = f"{(d.info or {}).get('model') or '?'} [{d.serial}]"
            where = "host" if r.target == "host" else phone
            for m in d.models:
                parts = (
                    [(b, m.series(b)) for b in d.backends or []]
                    if m.timing is None
                    else [(None, m.timing)]
                )
                for b, t in parts:
                    if t is None:
                        continue
                    label = where + (f" {b}" if b else "")
                    label += f", {_plural(_threads(r, m))}" if several else ""
                    yield label, m, t

    def startup(self) -> list[str]:
        """Load, first (cold) inference and peak memory, wherever a runtime reported them."""
        header = [
            "Network", "Series", "load ms (param + bin)", "cold ms", "warm median ms",
            "cold / warm", "peak RSS MB (after load)",
        ]  # fmt: skip
        rows = []
        for source, r in self.sources:
            for label, m, t in self._records(r):
                if t.load_ms is None and t.cold_ms is None and t.peak_rss_kb is None:
                    continue
                load = "—" if t.load_ms is None else f"{t.load_ms:.1f}"
                if t.load_ms_param is not None and t.load_ms_bin is not None:
                    load += f" ({t.load_ms_param:.1f} + {t.load_ms_bin:.1f})"
                peak = "—" if t.peak_rss_kb is None else f"{t.peak_rss_kb / 1024:.1f}"
                if t.load_peak_rss_kb is not None:
                    peak += f" ({t.load_peak_rss_kb / 1024:.1f})"
                cold, warm = t.cold_ms, _median(t)
                rows.append([
                    m.title or m.name,
                    label + (f" ({source})" if len(self.sources) > 1 else ""),
                    load,
                    "—" if cold is None else f"{cold:.1f}",
                    "—" if warm is None else f"{warm:.1f}",
                    _ratio(cold, warm),
                    peak,
                ])  # fmt: skip
        if not rows:
            return []
        return [
            "",
            "Start-up: load time, the first inference after loading (cold, not among the "
            "timed runs) and peak resident memory of the runner process (VmHWM; under qemu "
            "it includes the emulator); Python runtimes: load is building the session.",
            "",
            *_head(header),
            *["| " + " | ".join(row) + " |" for row in rows],
        ]

    def curves(self) -> list[tuple[str, Results, list[tuple[str, str, dict[int, float]]]]]:
        """Per run over several thread counts: (source, results, [(network title, series,
        {threads: median ms})]), series that measured nothing left out."""
        out = []
        for source, r in self.sources:
            if len(r.options.thread_counts) < 2:
                continue
            curves: dict[tuple[str, str], dict[int, float]] = {}
            titles: dict[str, str] = {}
            for d in r.devices:
                series = [(b, b) for b in d.backends or []] or [(None, d.serial)]
                for m in d.models:
                    titles[m.name] = m.title or m.name
                    for b, label in series:
                        median = _median(m.series(b))
                        if median is not None:
                            curves.setdefault((m.name, label), {})[_threads(r, m)] = median
            out.append((source, r, [(titles[n], label, c) for (n, label), c in curves.items()]))
        return out

    def scaling(self) -> list[str]:
        """Per run over several thread counts: median per count and speed-up over the first."""
        out: list[str] = []
        for source, r, curves in self.curves():
            counts = r.options.thread_counts
            header = ["Network", "Series", *[f"{_plural(n)} ms (speed-up)" for n in counts]]
            out += [
                "",
                f"{source}: thread scaling (powersave {r.options.powersave}; speed-up: "
                f"{_plural(counts[0])} median / this count's median):",
                "",
                *_head(header),
            ]
            for title, label, curve in curves:
                base = curve.get(counts[0])
                cells = []
                for n in counts:
                    v = curve.get(n)
                    speedup = f" ({_ratio(base, v)}x)" if base else ""
                    cells.append("—" if v is None else f"{v:.2f}{speedup}")
                out.append("| " + " | ".join([title, label, *cells]) + " |")
        return out

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
                counts = r.options.thread_counts
                out += [
                    "",
                    f"{source}: latency / the ncnn runner's, same network, same run "
                    f"({format_threads(r.options.threads)} thread{'s' if counts != (1,) else ''}):",
                    "",
                    *_head(header),
                ]
                for m in d.models:
                    ref = _median(m.series(REFERENCE_BACKEND))
                    title = m.title or m.name
                    title += f", {_plural(_threads(r, m))}" if len(counts) > 1 else ""
                    row = [title, "—" if ref is None else f"{ref:.2f}"]
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
        curves = [(source, c) for source, _, cs in self.curves() for c in cs]
        profiled = self.profiled()[:1]  # one network's layers: a chart, not a wall
        width_in = max(8, 1.1 * len(nets) + 2)
        panels = 1 + bool(curves) + bool(profiled)
        # Wide when there is more than the bars: the legends name network and series.
        fig, axes = plt.subplots(
            panels, 1, figsize=(max(width_in, 15) if panels > 1 else width_in, 5 * panels)
        )
        axes = list(np.atleast_1d(axes))
        ax = axes.pop(0)
        if curves:  # a --threads list: the scaling curves below the bars
            self._plot_scaling(axes.pop(0), curves)
        if profiled:
            self._plot_profile(axes.pop(0), *profiled[0])
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

    def _plot_scaling(self, ax, curves) -> None:
        """Speed-up over each curve's first thread count, one line per network and series."""
        several = len({source for source, _ in curves}) > 1
        counts: set[int] = set()
        for source, (title, label, curve) in curves:
            xs = sorted(curve)
            base = curve[xs[0]]
            counts |= set(xs)
            name = f"{title}, {label}" + (f" ({source})" if several else "")
            ax.plot(xs, [base / curve[n] for n in xs], marker="o", label=name)
        ax.plot(sorted(counts), [n / min(counts) for n in sorted(counts)], "k:", label="linear")
        ax.set_xticks(sorted(counts))
        ax.set_xlabel("threads")
        ax.set_ylabel("speed-up over the fewest threads (median)")
        ax.set_title("Thread scaling")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(alpha=0.3)

    def _plot_profile(self, ax, label: str, m: ModelResult, t: Timing) -> None:
        """One network's layers in execution order, ms each, coloured by layer type."""
        layers = t.profile["layers"]
        kinds = list(dict.fromkeys(row["type"] for row in layers))
        colours = {k: f"C{i % 10}" for i, k in enumerate(kinds)}
        ax.bar(
            range(len(layers)),
            [row["ms"] for row in layers],
            color=[colours[row["type"]] for row in layers],
        )
        for kind in kinds:  # one legend entry per type
            ax.bar([0], [0], color=colours[kind], label=kind)
        ax.set_xlabel("layer, in execution order")
        ax.set_ylabel("ms per run (mean of the profiled runs)")
        ax.set_title(f"Per-layer time: {m.title or m.name}, {label}")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(axis="y", alpha=0.3)

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


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.6f}"


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
