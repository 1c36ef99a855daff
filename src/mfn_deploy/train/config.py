"""What a training run is asked to do: every setting and its default, once.

Light on purpose (no torch): ``mfn-deploy train --help`` shows these defaults without
loading torch, and the CLI takes them from here instead of restating them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

# MobileFaceNet's recipe (Sec. 4.1): batch 512, SGD momentum 0.9, learning rate
# 0.1 divided by 10 at each milestone; the milestones for 60k iterations.
BATCH = 512
ITERATIONS = 60_000
LEARNING_RATE = 0.1
MILESTONES = (36_000, 52_000, 58_000)
MOMENTUM = 0.9
# The paper's two weight decays: 4e-5, and 4e-4 for the layers after the global operator.
WEIGHT_DECAY = 4e-5
LAST_LAYERS_WEIGHT_DECAY = 4e-4
# The ArcFace paper's defaults, also MobileFaceNet's training recipe.
ARCFACE_SCALE = 64.0
ARCFACE_MARGIN = 0.5
CHECKPOINT_EVERY = 5_000
LOG_EVERY = 20
VALIDATE_EVERY = 2_000
WORKERS = 4


@dataclass
class TrainConfig:
    model: str
    data: Path
    out: Path
    batch: int = BATCH
    iters: int = ITERATIONS
    lr: float = LEARNING_RATE
    milestones: tuple[int, ...] = MILESTONES
    momentum: float = MOMENTUM
    weight_decay: float = WEIGHT_DECAY
    last_layers_weight_decay: float = LAST_LAYERS_WEIGHT_DECAY
    scale: float = ARCFACE_SCALE
    margin: float = ARCFACE_MARGIN
    ckpt_every: int = CHECKPOINT_EVERY
    log_every: int = LOG_EVERY
    val_every: int = VALIDATE_EVERY
    workers: int = WORKERS
    seed: int = 0
    amp: bool = False
    align: bool = False  # detect + align photos not already at the input size
    resume: bool = False
    device: str | None = None  # None: CUDA when available (LOCAL_RANK's GPU), else CPU

    @classmethod
    def default(cls, key: str) -> object:
        """The default of one setting, as the CLI offers and shows it."""
        return next(f.default for f in dataclasses.fields(cls) if f.name == key)

    def to_dict(self) -> dict:
        """Plain types only, so the checkpoint stays weights_only-readable."""
        d = dataclasses.asdict(self)
        d["data"], d["out"], d["milestones"] = str(self.data), str(self.out), list(self.milestones)
        return d
