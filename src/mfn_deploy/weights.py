"""Where a network's weights come from: built-in defaults or a checkpoint file.

Checkpoints are read with ``torch.load(weights_only=True)``, so a checkpoint can
never run code. Two layouts are accepted: a plain ``state_dict`` and our own
checkpoint (a dict with ``format == CHECKPOINT_FORMAT``), which also records the
architecture name and the input spec.
"""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from mfn_deploy.contract import InputSpec
from mfn_deploy.errors import MfnError
from mfn_deploy.files import atomic_write
from mfn_deploy.models import FaceModel, create

CHECKPOINT_FORMAT = "mfn-deploy/checkpoint-v1"
DEFAULT_SEED = 20180416  # arXiv submission date of the paper: any fixed value would do
# Smallest weight magnitude kept: fp16 subnormals start at 6.1e-5 and are slow on
# many ARM cores, so default weights stay well above that even after BN folding.
MIN_MAGNITUDE = 1e-3
UNTRAINED_NOTE = "untrained default weights: parity and speed are real, accuracy is not"


def _away_from_zero(t: torch.Tensor, floor: float) -> None:
    small = t.abs() < floor
    t[small] = torch.where(t[small] < 0, -floor, floor)


@torch.no_grad()
def default_weights(model: FaceModel, seed: int = DEFAULT_SEED) -> FaceModel:
    """Deterministic, untrained weights with realistic BatchNorm statistics.

    Convolutions get Kaiming-normal weights and BatchNorm affine parameters are
    drawn around 1 and 0; the running statistics are then *measured* on seeded
    random images, the way a trained network's are, so every BatchNorm has means
    and variances far from (0, 1) and folding is really exercised, while the
    activations stay well scaled all the way to the embedding.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2 / fan_in))
            _away_from_zero(m.weight, MIN_MAGNITUDE)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            _away_from_zero(m.bias, MIN_MAGNITUDE)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        elif isinstance(m, nn.PReLU):
            m.weight.copy_(0.1 + 0.2 * torch.rand(m.weight.shape, generator=gen))
    h, w = model.input_spec.size
    model.train()
    for _ in range(4):
        model(torch.rand(8, 3, h, w, generator=gen) * 2 - 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.momentum = 0.1
    return model.eval()


def _describe_keys(kind: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    return f"{len(keys)} {kind} ({shown})"


def _recorded_spec(path: Path, spec: dict | None) -> InputSpec | None:
    """The input a checkpoint was trained on: size and preprocessing (None: not recorded)."""
    if not spec:
        return None
    try:
        return InputSpec.from_dict(spec)
    except (KeyError, TypeError, ValueError, MfnError) as e:
        raise MfnError(f"{path}: unreadable input_spec: {e}") from None


def _recorded_origin(obj: object) -> dict:
    """Whether the weights are trained and where they came from, as our checkpoint
    records them (an export's manifest repeats it)."""
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        return {}
    return {k: obj[k] for k in ("trained", "provenance") if k in obj}


def load_checkpoint(path: Path, model_name: str | None) -> tuple[FaceModel, dict]:
    """Build the network a checkpoint belongs to and load its weights.

    Returns the model in eval mode and a description for the manifest.
    """
    if not path.is_file():
        raise MfnError(f"{path}: checkpoint file not found")
    with path.open("rb") as f:
        head = f.read(2)
    # torch.save writes a zip archive (or, in the legacy format, a pickle stream).
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":
        raise MfnError(f"{path}: unreadable checkpoint: not a file written by torch.save")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"it references {found.group(1)}" if found else "it holds more than tensors"
        raise MfnError(
            f"{path}: refused: not a weights-only checkpoint, loading it could run code ({what})"
        ) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for damaged files
        first = (str(e).strip().splitlines() or [""])[0]
        raise MfnError(f"{path}: unreadable checkpoint: {type(e).__name__}: {first}") from None

    input_spec = None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        arch = obj.get("arch")
        if model_name is not None and arch != model_name:
            raise MfnError(f"{path}: checkpoint is for architecture {arch!r}, not {model_name!r}")
        model_name = arch
        input_spec = _recorded_spec(path, obj.get("input_spec"))
        state = obj.get("state_dict")
    else:
        state = obj
    if model_name is None:
        raise MfnError(f"{path}: plain state_dict records no architecture; pass --model NAME")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MfnError(f"{path}: not a state_dict (expected a mapping of names to tensors)")

    # DistributedDataParallel prefixes every key with "module."
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    model = create(model_name, input_spec.size if input_spec else None)
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing:
        problems.append(_describe_keys("missing keys", missing))
    if unexpected:
        problems.append(_describe_keys("unexpected keys", unexpected))
    if shapes:
        problems.append(_describe_keys("shape mismatches", shapes))
    if problems:
        raise MfnError(f"{path}: does not fit architecture {model_name!r}: " + "; ".join(problems))
    model.load_state_dict(state)
    if input_spec is not None:
        model.input_spec = input_spec
    return model.eval(), {
        "kind": "checkpoint",
        "path": str(path),
        "arch": model_name,
        **_recorded_origin(obj),
    }


def save_checkpoint(path: Path, model: FaceModel, config: dict | None = None, **extra) -> None:
    """Write our checkpoint layout atomically (also used by training)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": model.name,
        "input_spec": model.input_spec.to_dict(),
        "state_dict": model.state_dict(),
        "config": config or {},
        **extra,
    }
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
