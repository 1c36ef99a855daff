"""Activation (input) scales of the int8 layers, from a calibration set run through ncnn.

The fp32 model runs on every calibration input with ncnn's Python ``Extractor``,
which reads the input blob of each int8 layer. Three ways to turn what it saw into
a threshold (the input scale is ``127 / threshold``), as ncnn's ``ncnn2table`` names them:

- ``kl``: a 2048-bin histogram of |x| up to the largest |x| seen (exact zeros left
  out: they quantize exactly); for every clipping point from bin 128 to 2048, the
  distribution clipped there is compared, by KL divergence, with itself merged into
  128 levels; the clipping point with the least divergence wins.
- ``aciq``: analytic clipping for a Gaussian: sigma is estimated from the largest |x|
  among the N values of one image's blob (the largest of N Gaussian draws is about
  sigma * sqrt(2 ln N)), and 8-bit clipping is ACIQ's 3.92 sigma (Banner et al. 2019).
- ``eq``: starting from ``kl``, the input scale in [0.5, 2] times it whose int8 layer
  output (simulated: integer products, then ncnn's dequantisation) has the highest
  mean cosine to the fp32 output. Unlike ``ncnn2table`` it keeps the weight scales at
  127 / absmax instead of searching them channel by channel, and searches on a few
  images and the centre of large feature maps, so that it takes seconds, not hours.

Deterministic: inputs run in order, ncnn on one thread, histograms count integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfn_deploy.errors import MfnError
from mfn_deploy.export.backends import load_ncnn_net
from mfn_deploy.export.ncnn_model import Layer

METHODS = ("kl", "aciq", "eq")
BINS = 2048  # histogram bins of |x|, as ncnn2table
LEVELS = 128  # int8's positive levels the histogram is merged into
KL_EPS = 1e-4  # smoothing, so an empty level cannot make the divergence infinite
ACIQ_ALPHA_8BIT = 3.92403714  # optimal clip / sigma for a Gaussian at 8 bits
ACIQ_SIGMA_CONST = 0.5 * 0.35 * (1 + math.sqrt(math.pi * math.log(4)))
EQ_OCTAVES = 1  # the search spans kl's scale * 2**[-1, 1] ...
EQ_STEPS = 33  # ... geometrically, kl's own scale (the middle step) included
EQ_IMAGES = 4  # the search runs the layer once per step and image: keep it small
EQ_CROP = 28  # and on the centre of larger feature maps only (4x less work at 56x56)


@dataclass
class BlobStats:
    """What calibration saw at one layer's input."""

    absmax: float = 0.0
    elements: int = 0  # values in one image's blob (aciq's N)
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))


def _extract_all(net, in_blob: str, x: np.ndarray, blobs: list[str]) -> list[np.ndarray]:
    """Every blob of ``blobs`` for one (3, H, W) input."""
    import ncnn

    with net.create_extractor() as ex:
        ex.set_light_mode(False)  # keep intermediate blobs: one forward pass serves all
        ex.input(in_blob, ncnn.Mat(np.ascontiguousarray(x)).clone())
        out = []
        for name in blobs:
            ret, mat = ex.extract(name)
            if ret != 0:
                raise MfnError(f"ncnn could not extract blob {name!r} (error {ret})")
            out.append(np.array(mat, dtype=np.float32))
        return out


def collect(
    param: Path, binary: Path, in_blob: str, layers: list[Layer], calib: np.ndarray
) -> dict[str, BlobStats]:
    """Absmax, then the |x| histogram, of each layer's input over the calibration set."""
    net = load_ncnn_net(param, binary)
    names = [layer.bottoms[0] for layer in layers]
    stats = {layer.name: BlobStats() for layer in layers}
    for x in calib:  # pass 1: the range of each histogram
        for layer, blob in zip(layers, _extract_all(net, in_blob, x, names), strict=True):
            s = stats[layer.name]
            s.absmax = max(s.absmax, float(np.abs(blob).max()))
            s.elements = blob.size
    for x in calib:  # pass 2: the histograms
        for layer, blob in zip(layers, _extract_all(net, in_blob, x, names), strict=True):
            s = stats[layer.name]
            if s.absmax == 0:
                continue
            a = np.abs(blob[blob != 0]).astype(np.float64)
            index = np.minimum((a / s.absmax * BINS).astype(np.int64), BINS - 1)
            s.histogram += np.bincount(index, minlength=BINS)
    return stats


def _xlogx(v: np.ndarray) -> np.ndarray:
    return v * np.log(v)


def kl_threshold(histogram: np.ndarray, absmax: float) -> float:
    """The clipping point of least KL divergence between the clipped |x| histogram and
    its 128-level quantisation (each level's mass spread over its non-empty bins).

    For ``b`` kept bins, with ``T`` the total count: ``p_j = h_j / T`` (the tail beyond
    ``b`` folded into the last bin) and ``q_j`` = its level's mass / (its non-empty
    bins * the kept mass) on non-empty bins, 0 on empty ones; both + ``KL_EPS``.
    Within a level ``q`` takes two values only, so ``sum p log q`` needs per-level sums,
    which prefix sums give for every ``b`` at once: all 1921 candidates cost about as
    much as one histogram pass.
    """
    h = histogram.astype(np.float64)
    total = h.sum()
    if total == 0:
        return absmax
    eps = KL_EPS
    cum = np.concatenate([[0.0], np.cumsum(h)])
    filled = np.concatenate([[0], np.cumsum(h > 0)])
    plogp = np.concatenate([[0.0], np.cumsum(_xlogx(h / total + eps))])
    b = np.arange(LEVELS, BINS + 1)[:, None]  # one row per candidate
    tail = (total - cum[b[:, 0]]) / total  # mass beyond the clip, folded into bin b-1
    last = b[:, 0] - 1
    # sum p log p: the bins before the last as they are, the last with the tail
    a = plogp[last] + _xlogx(h[last] / total + tail + eps)
    edges = np.arange(LEVELS + 1) * b // LEVELS  # level k: bins edges[k] .. edges[k+1]-1
    mass = cum[edges[:, 1:]] - cum[edges[:, :-1]]
    count = filled[edges[:, 1:]] - filled[edges[:, :-1]]
    size = np.diff(edges, axis=1)
    kept = cum[b[:, 0]][:, None]
    level_q = np.log(np.divide(mass, count * kept, out=np.zeros_like(mass), where=count > 0) + eps)
    # sum p log q: non-empty bins have p = h/T + eps, empty ones p = eps, q = eps
    cross = (level_q * (mass / total + count * eps) + np.log(eps) * eps * (size - count)).sum(1)
    cross += tail * np.where(h[last] > 0, level_q[:, -1], np.log(eps))
    best_bins = LEVELS + int(np.argmin(a - cross))
    return (best_bins + 0.5) * absmax / BINS  # the middle of the last kept bin


def aciq_threshold(stats: BlobStats) -> float:
    sigma = stats.absmax * 2 * ACIQ_SIGMA_CONST / math.sqrt(2 * math.log(max(stats.elements, 2)))
    return ACIQ_ALPHA_8BIT * sigma


def _scale(threshold: float) -> float:
    return 127.0 / threshold if threshold > 0 else 1.0


def input_scales(stats: dict[str, BlobStats], method: str) -> dict[str, float]:
    """Each layer's input scale by ``kl`` or ``aciq`` (``eq`` starts from ``kl``)."""
    if method == "aciq":
        return {name: _scale(aciq_threshold(s)) for name, s in stats.items()}
    return {name: _scale(kl_threshold(s.histogram, s.absmax)) for name, s in stats.items()}


# --- eq: the search, on an exact simulation of one int8 layer ---------------------------


def round_away(x: np.ndarray) -> np.ndarray:
    """C's round(): halves away from zero (numpy's round is to even)."""
    return np.trunc(x + np.copysign(np.float32(0.5), x))


def quantize(x: np.ndarray, scale) -> np.ndarray:
    """ncnn's float -> int8: round(x * scale), clamped to [-127, 127], in float32 math."""
    return np.clip(round_away(np.float32(x) * np.asarray(scale, np.float32)), -127, 127)


def _padding(layer: Layer) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) of a convolution, as ncnn's params 4, 15, 14, 16."""
    left = layer.int_param("4")
    right, top = layer.int_param("15", left), layer.int_param("14", left)
    bottom = layer.int_param("16", top)
    if min(left, right, top, bottom) < 0:
        raise MfnError(f"layer {layer.name}: 'same' padding is not supported by --calib-method eq")
    return left, right, top, bottom


def _linear(layer: Layer, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The layer's linear part on (already padded) inputs, (N, outputs, positions).

    float32 in torch: an int8 layer's integer sums stay below 2^26 here, so they are
    off by a few units in 10^7 at worst, which cannot move the search.
    """
    import torch
    import torch.nn.functional as F

    n_out = layer.int_param("0")
    n, c = x.shape[:2]
    if layer.type == "InnerProduct":
        return (x.reshape(n, -1) @ w.reshape(n_out, -1).T)[:, :, None]
    kw = layer.int_param("1")
    kh = layer.int_param("11", kw)
    group = layer.int_param("7", 1) if layer.type == "ConvolutionDepthWise" else 1
    dw, sw = layer.int_param("2", 1), layer.int_param("3", 1)
    dh, sh = layer.int_param("12", dw), layer.int_param("13", sw)
    # The two shapes MobileFaceNet is made of, in numpy: torch's grouped conv is slow.
    if (kh, kw, sh, sw, group) == (1, 1, 1, 1, 1):
        return w.reshape(n_out, c) @ x.reshape(n, c, -1)
    oh, ow = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1, (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    if group == c == n_out:
        k = w.reshape(c, kh, kw)
        out = np.zeros((n, c, oh, ow), np.float32)
        for i in range(kh):
            for j in range(kw):
                window = x[:, :, i * dh : i * dh + sh * oh : sh, j * dw : j * dw + sw * ow : sw]
                out += window * k[None, :, i, j, None, None]
        return out.reshape(n, c, -1)
    wt = torch.from_numpy(w.reshape(n_out, c // group, kh, kw))
    with torch.no_grad():
        out = F.conv2d(torch.from_numpy(x), wt, stride=(sh, sw), dilation=(dh, dw), groups=group)
    return out.numpy().reshape(n, n_out, -1)


def eq_scale(
    layer: Layer, weight_scales: np.ndarray, inputs: list[np.ndarray], start: float
) -> float:
    """The input scale near ``start`` whose int8 output best matches fp32 (mean cosine)."""
    n_out = layer.int_param("0")
    per_out = np.repeat(weight_scales, n_out // len(weight_scales)).astype(np.float32)
    w = layer.weight.reshape(n_out, -1).astype(np.float32)
    qw = quantize(w, per_out[:, None])
    x = np.stack(inputs).astype(np.float32)
    if layer.type != "InnerProduct":  # zeros quantize to zeros: pad once, before quantizing
        left, right, top, bottom = _padding(layer)
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    ref = _linear(layer, x, w).reshape(len(x), -1)
    ref_norm = np.linalg.norm(ref, axis=1)
    best, best_scale = -math.inf, start
    for factor in np.exp2(np.linspace(-EQ_OCTAVES, EQ_OCTAVES, EQ_STEPS)):
        s = np.float32(start * factor)
        out = _linear(layer, quantize(x, s), qw) / (per_out * s)[None, :, None]
        out = out.reshape(len(x), -1)
        cos = (out * ref).sum(1) / np.maximum(np.linalg.norm(out, axis=1) * ref_norm, 1e-30)
        if cos.mean() > best:
            best, best_scale = float(cos.mean()), float(s)
    return best_scale


def _centre(blob: np.ndarray) -> np.ndarray:
    """The central EQ_CROP x EQ_CROP window of a (C, H, W) blob (all of a smaller one)."""
    if blob.ndim != 3:
        return blob
    _, h, w = blob.shape
    top, left = max(0, (h - EQ_CROP) // 2), max(0, (w - EQ_CROP) // 2)
    return blob[:, top : top + EQ_CROP, left : left + EQ_CROP]


def eq_scales(
    param: Path,
    binary: Path,
    in_blob: str,
    layers: list[Layer],
    calib: np.ndarray,
    weight_scales: dict[str, np.ndarray],
    start: dict[str, float],
) -> dict[str, float]:
    net = load_ncnn_net(param, binary)
    names = [layer.bottoms[0] for layer in layers]
    seen = [_extract_all(net, in_blob, x, names) for x in calib[:EQ_IMAGES]]
    crop = [(lambda b: b) if layer.type == "InnerProduct" else _centre for layer in layers]
    return {
        layer.name: eq_scale(
            layer,
            weight_scales[layer.name],
            [crop[i](blobs[i]) for blobs in seen],
            start[layer.name],
        )
        for i, layer in enumerate(layers)
    }
