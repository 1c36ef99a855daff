"""Regenerate models/README.md, one model card per registered network.

Run after changing the zoo: `.venv/bin/python tools/write_model_cards.py`.
tests/test_model_cards.py fails while the committed cards are out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mfn_deploy.models import get_spec, names
from mfn_deploy.stats import model_stats

CARDS = Path(__file__).resolve().parent.parent / "models" / "README.md"

HEADER = """\
# Model cards

One card per network of the paper's Table 2, generated from the registry by
`tools/write_model_cards.py` (do not edit by hand). Exported artifacts land in
`models/<name>/` (git-ignored) when `mfn-deploy export --out models/<name>` runs.

**Weights.** No pretrained MobileFaceNet can be downloaded here. Unless you pass a
checkpoint, every network uses deterministic, *untrained* default weights: parity
and speed figures are real, embeddings carry no identity information.

All networks take an RGB image normalised as (x - 127.5) / 128, NCHW, and return
one embedding per image. Baselines keep their original activations and use the
output of their global operator as the face feature, as in the paper.
"""


def card(name: str) -> str:
    spec, s = get_spec(name), model_stats(name)
    h, w = s.input_size
    return f"""
## `{name}`: {spec.title}

| | |
|---|---|
| input | {h}x{w}x3 RGB, (x - 127.5) / 128 |
| embedding | {s.embedding_dim}-d |
| parameters | {s.params:,} ({s.params / 1e6:.2f}M) |
| multiply-adds | {s.madds:,} ({s.madds / 1e6:.0f}M) |
| fp32 size | {s.size_mb:.2f} MB |
| paper, Snapdragon 820, NCNN, 4 threads | {s.paper_ms:g} ms |
"""


def render() -> str:
    return HEADER + "".join(card(n) for n in names())


if __name__ == "__main__":
    CARDS.write_text(render())
    sys.stdout.write(f"wrote {CARDS}\n")
