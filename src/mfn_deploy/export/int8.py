"""int8 ncnn models, written by this project: weight scales, the table, the int8 param/bin.

ncnn's own ``ncnn2table`` / ``ncnn2int8`` are not in its source distribution, so this
module does their job from the format as ncnn's loaders read it
(``src/layer/convolution.cpp`` and friends, ``src/modelbin.cpp``):

- ``Convolution``, ``ConvolutionDepthWise`` and ``InnerProduct`` become int8: param 8
  (``int8_scale_term``) is 2 for Convolution / InnerProduct (a scale per output
  channel) and 1 for depthwise (a scale per group); their bin holds the weights as
  int8 (tag 0x000D4B38, padded to 4 bytes), the fp32 bias, the weight scales, then
  the one input scale. Every other layer, and any layer left out of the table, stays
  fp32: ncnn dequantizes after each int8 layer, so PReLU and the residual adds run
  in fp32 between them.
- Weight scale = 127 / absmax of each output channel (group), 31 / absmax for a
  regular 3x3 stride-1 convolution (ncnn's int8 Winograd needs 6-bit weights);
  a channel of zeros gets 1. Input scales come from ``calibrate``.
- The table is ncnn's: ``NAME_param_0 s0 s1 ...`` (weight scales) and ``NAME s``
  (input scale, keyed by the layer), written with 9 significant digits so that every
  float32 scale reads back exactly.

``quantize`` is the export stage's work: calibrate, report each layer's effect on
the embedding when it alone is int8 (the sensitivity report), judge the whole int8
model on faces that were not used for calibration and on verification pairs
(the gate: cosine lines and decision flips against fp32), optionally keep the
most sensitive layers fp32 until the gate passes (``auto``), and write the files.
A model that fails the gate is not written.
"""

from __future__ import annotations

import struct
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mfn_deploy.errors import MfnError
from mfn_deploy.export import INT8_SKIP_GROUPS, calibrate
from mfn_deploy.export.backends import ncnn_runner
from mfn_deploy.export.ncnn_model import (
    CONV_LIKE,
    TAG_FP32,
    TAG_INT8,
    Layer,
    NcnnModel,
    read_model,
    write_model,
)
from mfn_deploy.export.parity import Metrics, compare
from mfn_deploy.files import atomic_write
from mfn_deploy.metrics import best_threshold

METHODS = calibrate.METHODS
SCALE_TERM = {"Convolution": 2, "ConvolutionDepthWise": 1, "InnerProduct": 2}
SENSITIVITY_FACES = 8  # faces each one-layer trial runs on (50 trials for MobileFaceNet)

# layer name -> (weight scales, input scale): what the table holds
Table = dict[str, tuple[np.ndarray, float]]


@dataclass(frozen=True)
class Gate:
    """How close the int8 embedding must stay to the fp32 one, on held-out faces, and
    how many verify/reject decisions of a pairs set may flip against fp32 at the fp32
    threshold (judged only when the calibration carries pairs: ``Calibration.pairs``)."""

    cos_mean_min: float
    cos_min: float
    flips_max: int = 0

    def passes(self, m: Metrics, flips: int | None = None) -> bool:
        cosine = m.cos_mean >= self.cos_mean_min and m.cos_min >= self.cos_min
        return cosine and (flips is None or flips <= self.flips_max)


@dataclass
class Pairs:
    """A verification pairs set, aligned above the export (``face.calibration``).

    ``images``: (N, 3, H, W) normalised inputs; pair k is ``images[a[k]]`` against
    ``images[b[k]]``, the same person when ``same[k]``; ``info``: where it came from.
    """

    images: np.ndarray
    a: np.ndarray
    b: np.ndarray
    same: np.ndarray
    info: dict = field(default_factory=dict)

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        e = np.asarray(embeddings, np.float64).reshape(len(self.images), -1)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return np.sum(e[self.a] * e[self.b], axis=1)


@dataclass
class Calibration:
    """The faces int8 needs, prepared above the export (``face.calibration``).

    ``calib``: (N, 3, H, W) normalised inputs the activation scales are measured on;
    ``holdout``: other faces, never calibrated on, that the gate judges; ``info``:
    where the calibration inputs came from, for the manifest.
    """

    calib: np.ndarray
    holdout: np.ndarray
    info: dict = field(default_factory=dict)
    holdout_names: list[str] = field(default_factory=list)
    pairs: Pairs | None = None  # the real pairs set: the gate's decision-flip line


@dataclass
class Int8Request:
    data: Calibration
    method: str = "kl"
    skip: tuple[str, ...] = ()  # layers the user keeps fp32
    auto: bool = False  # keep the most sensitive layers fp32 until the gate passes


class Int8GateError(MfnError):
    """The int8 model missed the gate; carries the stage's report for the CLI to print."""

    def __init__(self, report: dict) -> None:
        h, gate, pairs = report["holdout"], report["gate"], report.get("pairs")
        flips = (
            f", {pairs['flips']} of {pairs['n']} pair decisions flipped at the fp32 "
            f"threshold {pairs['threshold']:.4f} (allowed {gate['flips_max']})"
            if pairs
            else ""
        )
        super().__init__(
            f"int8 gate failed: cosine to fp32 mean {h['cos_mean']:.4f} (needs "
            f">= {gate['cos_mean_min']}), worst {h['cos_min']:.4f} (needs "
            f">= {gate['cos_min']}){flips}; nothing written"
        )
        self.report = report


# --- weights, layers, table ------------------------------------------------------------


def quantizable(model: NcnnModel) -> list[Layer]:
    """The layers that can run int8, in model order."""
    return [layer for layer in model.layers if layer.type in CONV_LIKE and layer.weight is not None]


def _gdconv(layer: Layer) -> bool:
    """The global depthwise convolution: depthwise with a 7x7 (or larger) kernel."""
    return layer.type == "ConvolutionDepthWise" and layer.int_param("1") >= 7


# ``--int8-skip`` names layers, or one of these groups of them. The 3x3 depthwise
# layers are where int8 costs more than fp32 on ARM (benchmarks/results/
# arm_instructions_int8.md): keeping them fp32 is the speed-minded choice.
SKIP_GROUPS = {
    "depthwise": lambda layer: layer.type == "ConvolutionDepthWise",
    "dw3x3": lambda layer: layer.type == "ConvolutionDepthWise" and not _gdconv(layer),
    "gdconv": _gdconv,
}
assert tuple(SKIP_GROUPS) == INT8_SKIP_GROUPS


def expand_skip(layers: list[Layer], skip: tuple[str, ...]) -> tuple[str, ...]:
    """``--int8-skip`` as layer names: groups expanded, order kept, or one line naming
    what is not a layer or a group."""
    names = [layer.name for layer in layers]
    unknown = [s for s in skip if s not in names and s not in SKIP_GROUPS]
    if unknown:
        raise MfnError(
            f"--int8-skip: no int8-capable layer or group {', '.join(unknown)}; "
            f"groups: {', '.join(SKIP_GROUPS)}; layers: {', '.join(names)}"
        )
    chosen = set(skip)
    for group in chosen & SKIP_GROUPS.keys():
        chosen |= {layer.name for layer in layers if SKIP_GROUPS[group](layer)}
    return tuple(name for name in names if name in chosen)


def _groups(layer: Layer) -> int:
    """How many weight scales the layer gets: output channels, or groups for depthwise."""
    if layer.type == "ConvolutionDepthWise":
        return layer.int_param("7", 1)
    return layer.int_param("0")


def _six_bit(layer: Layer) -> bool:
    """A regular 3x3 stride-1 dilation-1 convolution: ncnn's int8 Winograd candidate."""
    kw, dw, sw = layer.int_param("1"), layer.int_param("2", 1), layer.int_param("3", 1)
    return (
        layer.type == "Convolution"
        and (kw, layer.int_param("11", kw)) == (3, 3)
        and (dw, layer.int_param("12", dw)) == (1, 1)
        and (sw, layer.int_param("13", sw)) == (1, 1)
    )


def weight_scales(layer: Layer) -> np.ndarray:
    """float32 scale per output channel (per group for depthwise): top / absmax."""
    absmax = np.abs(layer.weight.reshape(_groups(layer), -1)).max(axis=1)
    top = np.float32(31 if _six_bit(layer) else 127)
    safe = np.where(absmax > 0, absmax, np.float32(1))
    return np.where(absmax > 0, top / safe, np.float32(1)).astype(np.float32)


def quantize_weights(layer: Layer, scales: np.ndarray) -> np.ndarray:
    """The layer's weights as int8, each row (channel or group) with its own scale."""
    rows = layer.weight.reshape(len(scales), -1)
    return calibrate.quantize(rows, scales[:, None]).astype(np.int8).reshape(-1)


def int8_layer(
    layer: Layer, scales: np.ndarray, input_scale: float, int8_weights: bool = True
) -> Layer:
    """``layer`` with int8_scale_term set and its bin in ncnn's int8 layout.

    ``int8_weights=False`` keeps the weights fp32 (tag 0) next to the scales, which
    ncnn quantizes itself at load time: the tests use it to check our quantizer.
    """
    if int8_weights:
        q = quantize_weights(layer, scales).tobytes()
        blob = struct.pack("<I", TAG_INT8) + q + b"\0" * (-len(q) % 4)
    else:
        blob = struct.pack("<I", TAG_FP32) + layer.weight.astype("<f4").tobytes()
    if layer.bias is not None:
        blob += layer.bias.astype("<f4").tobytes()
    blob += scales.astype("<f4").tobytes() + np.float32(input_scale).astype("<f4").tobytes()
    params = dict(layer.params) | {"8": str(SCALE_TERM[layer.type])}
    return replace(layer, params=params, raw=blob)


def int8_model(model: NcnnModel, table: Table, int8_weights: bool = True) -> NcnnModel:
    """A copy of ``model`` with the layers in ``table`` int8; the rest untouched."""
    layers = [
        int8_layer(layer, *table[layer.name], int8_weights) if layer.name in table else layer
        for layer in model.layers
    ]
    return NcnnModel(layers)


def table_text(table: Table) -> str:
    """ncnn's table format: all weight-scale lines, then all input-scale lines."""
    weights = [
        f"{name}_param_0 " + " ".join(f"{float(s):.9g}" for s in w)
        for name, (w, _) in table.items()
    ]
    inputs = [f"{name} {float(np.float32(s)):.9g}" for name, (_, s) in table.items()]
    return "\n".join(weights + inputs) + "\n"


def write_table(path: Path, table: Table) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(table_text(table))


def read_table(path: Path) -> Table:
    """A table file as ``Table``; a layer needs both its weight and its input line."""
    weights, inputs = {}, {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MfnError(f"{path}: cannot read the int8 table ({e})") from None
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            values = np.array([float(t) for t in tokens[1:]], np.float32)
        except ValueError:
            raise MfnError(f"{path}: line {number}: scales must be numbers") from None
        if len(values) == 0:
            raise MfnError(f"{path}: line {number}: {tokens[0]} has no scale")
        if tokens[0].endswith("_param_0"):
            weights[tokens[0].removesuffix("_param_0")] = values
        elif len(values) == 1:
            inputs[tokens[0]] = float(values[0])
        else:
            raise MfnError(f"{path}: line {number}: {tokens[0]} needs one input scale")
    if set(weights) != set(inputs):
        odd = sorted(set(weights) ^ set(inputs))
        raise MfnError(f"{path}: layers without both a weight and an input line: {odd}")
    return {name: (weights[name], inputs[name]) for name in weights}


# --- the stage -------------------------------------------------------------------------


def make_table(
    layers: list[Layer],
    param: Path,
    binary: Path,
    in_blob: str,
    calib: np.ndarray,
    method: str,
) -> Table:
    """Weight scales from the weights, input scales from ``calib`` by ``method``."""
    if method not in METHODS:
        raise MfnError(f"calibration method {method!r}: choose one of {', '.join(METHODS)}")
    w = {layer.name: weight_scales(layer) for layer in layers}
    stats = calibrate.collect(param, binary, in_blob, layers, calib)
    scales = calibrate.input_scales(stats, method)
    if method == "eq":
        scales = calibrate.eq_scales(param, binary, in_blob, layers, calib, w, scales)
    return {layer.name: (w[layer.name], scales[layer.name]) for layer in layers}


class _Trials:
    """Runs int8 variants of one model on held-out faces (and verification pairs, when
    given), against its fp32 embeddings."""

    def __init__(
        self,
        model: NcnnModel,
        blobs: dict,
        fp32: tuple[Path, Path],
        faces: np.ndarray,
        pairs: Pairs | None = None,
    ):
        self.model, self.blobs, self.faces, self.pairs = model, blobs, faces, pairs
        run = ncnn_runner(*fp32, blobs)
        self.reference = run(faces)
        self.threshold: float | None = None
        if pairs is not None:
            scores = pairs.scores(run(pairs.images))
            self.threshold = best_threshold(scores, pairs.same)  # fp32's, on these pairs
            self.decisions = scores >= self.threshold
        self._dir = tempfile.TemporaryDirectory(prefix="mfn-int8-")
        self.dir = Path(self._dir.name)

    def _runner(self, table: Table):
        param, binary = self.dir / "trial.param", self.dir / "trial.bin"
        write_model(int8_model(self.model, table), param, binary)
        return ncnn_runner(param, binary, self.blobs, packing=False)

    def run(self, table: Table, n: int | None = None) -> Metrics:
        """The embedding of the model with ``table``'s layers int8 vs fp32, first ``n`` faces."""
        out = self._runner(table)(self.faces[:n])
        return compare(out, self.reference[:n])

    def judge(self, table: Table) -> tuple[Metrics, int | None]:
        """All held-out faces, and the pair decisions that flip against fp32 (None: no pairs)."""
        run = self._runner(table)
        m = compare(run(self.faces), self.reference)
        if self.pairs is None:
            return m, None
        decisions = self.pairs.scores(run(self.pairs.images)) >= self.threshold
        return m, int(np.sum(decisions != self.decisions))

    def close(self) -> None:
        self._dir.cleanup()


def _fewest_fp32(
    trials: _Trials, table: Table, order: list[str], gate: Gate
) -> tuple[list[str], tuple[Metrics, int | None]]:
    """The shortest run of ``order`` (most sensitive first) that, kept fp32, passes.

    Bisection over the run's length: about log2(layers) trial models, not one per
    layer. Keeping more layers fp32 almost always helps, and only a length that was
    run and passed is returned; if even all-fp32-but-none fails, all are kept.
    """

    def trial(n: int) -> tuple[Metrics, int | None]:
        return trials.judge({k: v for k, v in table.items() if k not in order[:n]})

    lo, hi = 0, len(order)  # lo fails (checked by the caller); hi: all fp32, taken to pass
    best = None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        m = trial(mid)
        if gate.passes(*m):
            hi, best = mid, m
        else:
            lo = mid
    return order[:hi], best if best is not None else trial(hi)


def _metrics(m: Metrics) -> dict:
    return {"cos_mean": m.cos_mean, "cos_min": m.cos_min}


def quantize(
    fp32: tuple[Path, Path],
    blobs: dict,
    request: Int8Request,
    gate: Gate,
    out: tuple[Path, Path, Path],
) -> dict:
    """Write the int8 param, bin and table (``out``) of the fp32 pair; return the report."""
    model = read_model(*fp32)
    layers = quantizable(model)
    skip = expand_skip(layers, request.skip)
    chosen = [layer for layer in layers if layer.name not in skip]
    (in_blob,) = blobs["inputs"]
    data = request.data
    table = make_table(chosen, *fp32, in_blob, data.calib, request.method)

    trials = _Trials(model, blobs, fp32, data.holdout, data.pairs)
    try:
        sensitivity = []
        for layer in chosen:
            m = trials.run({layer.name: table[layer.name]}, SENSITIVITY_FACES)
            sensitivity.append({"layer": layer.name, "type": layer.type} | _metrics(m))
        sensitivity.sort(key=lambda r: (r["cos_mean"], r["cos_min"]))
        kept: list[str] = []
        result, flips = trials.judge(table)
        if request.auto and not gate.passes(result, flips):
            order = [row["layer"] for row in sensitivity]
            kept, (result, flips) = _fewest_fp32(trials, table, order, gate)
        threshold = trials.threshold
    finally:
        trials.close()
    final = {k: v for k, v in table.items() if k not in kept}
    report = {
        "method": request.method,
        "calibration": data.info | {"n": len(data.calib)},
        "weight_scales": "127/absmax per output channel (per group for depthwise); "
        "31/absmax for regular 3x3 stride-1 convolutions",
        "layers_int8": len(final),
        "layers_fp32": {"skipped": list(skip), "asked": list(request.skip), "auto": kept},
        "gate": {
            "cos_mean_min": gate.cos_mean_min,
            "cos_min": gate.cos_min,
            "flips_max": gate.flips_max,
        },
        "holdout": {"n": len(data.holdout), "faces": data.holdout_names} | _metrics(result),
        "pairs": None
        if data.pairs is None
        else {
            "n": len(data.pairs.same),
            "genuine": int(np.sum(data.pairs.same)),
            "images": len(data.pairs.images),
            "threshold": threshold,
            "flips": flips,
        }
        | data.pairs.info,
        "sensitivity_faces": min(SENSITIVITY_FACES, len(data.holdout)),
        "sensitivity": sensitivity,
        "passed": gate.passes(result, flips),
    }
    if not report["passed"]:
        raise Int8GateError(report)
    param, binary, table_path = out
    write_model(int8_model(model, final), param, binary)
    write_table(table_path, final)
    return report


def quantize_ungated(
    fp32: tuple[Path, Path],
    blobs: dict,
    calib: np.ndarray,
    out: tuple[Path, Path, Path],
    method: str = "kl",
    skip: tuple[str, ...] = (),
) -> Table:
    """Every int8-capable layer but ``skip`` int8, calibrated on ``calib``, with NO gate.

    For cost benchmarks (instruction counts, latency) of networks whose weights are
    untrained: their int8 embedding cannot meet the gate, and the cost of an int8
    model does not depend on the weights' values. Never what ``export --int8`` writes.
    """
    model = read_model(*fp32)
    layers = quantizable(model)
    skip = expand_skip(layers, skip)
    layers = [layer for layer in layers if layer.name not in skip]
    (in_blob,) = blobs["inputs"]
    table = make_table(layers, *fp32, in_blob, calib, method)
    param, binary, table_path = out
    write_model(int8_model(model, table), param, binary)
    write_table(table_path, table)
    return table


def format_sensitivity(report: dict, top: int | None = None) -> str:
    """The sensitivity report as a table, most sensitive layer first."""
    rows = report["sensitivity"][:top]
    kept = set(report["layers_fp32"]["skipped"]) | set(report["layers_fp32"]["auto"])
    header = f"{'layer (alone int8)':<24} {'type':<21} {'cos mean':>10} {'cos min':>10}  fp32"
    lines = (
        [
            f"int8 sensitivity ({report['method']}, {report['sensitivity_faces']} held-out faces)",
            header,
            "-" * len(header),
        ]
        if rows
        else []
    )  # top=0: the summary alone
    for r in rows:
        lines.append(
            f"{r['layer']:<24} {r['type']:<21} {r['cos_mean']:>10.6f} {r['cos_min']:>10.6f}"
            f"  {'kept' if r['layer'] in kept else ''}"
        )
    h = report["holdout"]
    lines.append(
        f"int8 model: {report['layers_int8']} int8 layers, cosine to fp32 on "
        f"{h['n']} held-out faces mean {h['cos_mean']:.6f} worst {h['cos_min']:.6f} "
        f"(gate {report['gate']['cos_mean_min']} / {report['gate']['cos_min']})"
    )
    p = report.get("pairs")
    if p:
        lines.append(
            f"verification: {p['flips']} of {p['n']} pair decisions flip against fp32 at "
            f"the fp32 threshold {p['threshold']:.4f} (gate: at most "
            f"{report['gate']['flips_max']})"
        )
    return "\n".join(lines)
