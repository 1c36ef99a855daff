"""Training checkpoints: an export-ready checkpoint plus what an exact resume needs.

The file is ``weights.save_checkpoint``'s layout (format, arch, input_spec,
state_dict, config), so ``mfn-deploy export --checkpoint`` reads it directly,
with one extra key, ``train_state``: iteration, ArcFace head, optimizer (its
momentum buffers and the learning rate in use), AMP grad scaler, the
data set's size, and the random generators. Everything is tensors and plain
containers, so ``torch.load(weights_only=True)`` reads it back.

The data order and the flips are a function of the iteration (see
``data.StreamOrder``) and the learning rate a function of the iteration (see
``trainer.lr_at``), so no sampler or scheduler object needs saving. The random
generators are saved anyway (rank 0's) so any future stochastic layer resumes
exactly as well.
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from mfn_deploy.errors import MfnError
from mfn_deploy.models import FaceModel
from mfn_deploy.weights import CHECKPOINT_FORMAT, save_checkpoint

TRAIN_STATE_FORMAT = "mfn-deploy/train-state-v1"
FINAL_NAME = "final.pt"
PERIODIC = re.compile(r"^checkpoint-(\d+)\.pt$")


def periodic_name(iteration: int) -> str:
    return f"checkpoint-{iteration}.pt"


def rng_state() -> dict:
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def save(
    path: Path,
    model: FaceModel,
    config: dict,
    *,
    iteration: int,
    head: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    data: dict,
) -> None:
    train_state = {
        "format": TRAIN_STATE_FORMAT,
        "iteration": iteration,
        "head": head.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "data": data,
        "rng": rng_state(),
    }
    save_checkpoint(path, model, config=config, train_state=train_state)


def load(path: Path) -> dict:
    """A training checkpoint, weights-only, checked to be one."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise MfnError(f"{path}: unreadable checkpoint: {type(e).__name__}: {first}") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise MfnError(f"{path}: not an mfn-deploy checkpoint")
    state = obj.get("train_state")
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise MfnError(f"{path}: holds weights only, no training state to resume from")
    return obj


def iteration_of(path: Path) -> int:
    return int(load(path)["train_state"]["iteration"])


def latest(run_dir: Path) -> Path | None:
    """The checkpoint in ``run_dir`` with the highest iteration, or None."""
    periodic = {
        int(m.group(1)): p for p in run_dir.glob("checkpoint-*.pt") if (m := PERIODIC.match(p.name))
    }
    best = max(periodic, default=None)
    final = run_dir / FINAL_NAME
    if final.is_file() and (best is None or iteration_of(final) >= best):
        return final
    return periodic[best] if best is not None else None
