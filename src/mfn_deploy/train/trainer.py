"""The training loop: ArcFace on MobileFaceNet with the paper's recipe.

One process (CPU or one GPU) or one process per GPU under ``torchrun`` with
DistributedDataParallel. ``--batch`` is the *global* batch, split evenly over
the processes, so a run's recipe (and its data order) does not depend on how
many GPUs trained it.

The ArcFace head is replicated: every process holds all class centres and DDP
averages their gradients like any other layer's. At CASIA (10.6k identities)
and MS1M (85k) scale the head is 128 x 85k floats = 44 MB, less than the
activations of one batch, and replication keeps the loss exactly the full
softmax. Sharding the centres across GPUs (model-parallel softmax, Partial FC)
only pays off at millions of identities, where the head outgrows one GPU.

Rank 0 alone writes the run directory: ``log.jsonl`` (one JSON object per
logged step, no TensorBoard), ``checkpoint-<iter>.pt`` every ``ckpt_every``
iterations, and ``final.pt``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from mfn_deploy.errors import MfnError
from mfn_deploy.files import atomic_write
from mfn_deploy.models import FaceModel, create, get_spec
from mfn_deploy.train import distributed, state
from mfn_deploy.train.arcface import IGNORE, ArcFaceHead
from mfn_deploy.train.config import TrainConfig
from mfn_deploy.train.data import BatchOrder, open_dataset
from mfn_deploy.train.face_align import FaceAligner
from mfn_deploy.train.param_groups import parameter_groups
from mfn_deploy.train.validation import Validator

log = logging.getLogger(__name__)

LR_DECAY = 0.1  # the learning rate is divided by 10 at each milestone
# Unreadable images are skipped until they are no longer rare: more than this
# many, and more than this fraction of the images seen, stops the run.
BAD_IMAGE_MIN = 100
BAD_IMAGE_FRACTION = 0.01
LOG_NAME = "log.jsonl"


# A resumed run must be the same experiment: these settings fix the data order, the
# loss, the network and the optimiser's schedule, so they must not change between the
# two halves (the resumed run is bit for bit the uninterrupted one). --iters may grow.
MUST_MATCH = (
    "model",
    "batch",
    "seed",
    "lr",
    "milestones",
    "amp",
    "scale",
    "margin",
    "momentum",
    "weight_decay",
    "last_layers_weight_decay",
)
_CLI_OPTIONS = {"model", "batch", "seed", "lr", "milestones", "amp", "iters"}


def _as_option(key: str, value: object) -> str:
    """A recorded setting as the user spells it: --lr 0.1, --milestones 3,5, no --amp."""
    if key not in _CLI_OPTIONS:
        return f"{key}={value!r}"
    if isinstance(value, bool):
        return f"--{key}" if value else f"no --{key}"
    if isinstance(value, list | tuple):
        return f"--{key} {','.join(map(str, value))}"
    return f"--{key} {value}"


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    start_iteration: int
    iterations: int
    loss: float | None  # mean of the last logged window; None if nothing ran
    accuracy: float | None
    images_per_s: float | None
    seconds: float
    bad_images: int
    world_size: int
    replicas_in_sync: bool | None  # None for one process
    validation: dict | None = None
    history: list[dict] = field(default_factory=list, repr=False)  # this call's log records


def lr_at(step: int, base: float, milestones: tuple[int, ...]) -> float:
    """Learning rate of 1-based ``step``: divided by 10 once ``milestone`` steps are done."""
    return base * LR_DECAY ** sum(step > m for m in milestones)


def _check(config: TrainConfig) -> None:
    get_spec(config.model)  # an unknown name fails here, with the valid ones listed
    positive = {
        "batch": config.batch,
        "iters": config.iters,
        "ckpt_every": config.ckpt_every,
        "log_every": config.log_every,
        "val_every": config.val_every,
    }
    for name, value in positive.items():
        if value < 1:
            raise MfnError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not config.lr > 0:
        raise MfnError(f"--lr must be positive, got {config.lr}")
    if list(config.milestones) != sorted(config.milestones) or any(
        m < 1 for m in config.milestones
    ):
        raise MfnError(f"--milestones must be increasing positive iterations: {config.milestones}")
    if config.workers < 0:
        raise MfnError(f"--workers must be 0 or more, got {config.workers}")


def _prepare_run_dir(config: TrainConfig) -> Path | None:
    """The checkpoint to resume from (None: a fresh run); refuses to overwrite a run."""
    out = config.out
    if config.resume:
        if not out.is_dir():
            raise MfnError(f"{out}: --resume given but the run directory does not exist")
        found = state.latest(out)
        if found is None:
            raise MfnError(f"{out}: --resume given but it holds no checkpoint to resume from")
        return found
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MfnError(f"{out}: run directory exists; pass --resume to continue it")
    return None


def _check_resumable(path: Path, saved: dict, config: TrainConfig, data: dict) -> None:
    old = saved.get("config", {})
    now_config = config.to_dict()
    for key in MUST_MATCH:
        now = now_config[key]
        if key in old and old[key] != now:
            raise MfnError(
                f"{path}: the run was trained with {_as_option(key, old[key])}, this resume "
                f"asks for {_as_option(key, now)}; a resume must repeat the run's options"
            )
    if isinstance(old.get("iters"), int) and config.iters < old["iters"]:
        raise MfnError(
            f"{path}: the run was trained with {_as_option('iters', old['iters'])}, this "
            f"resume asks for {_as_option('iters', config.iters)}; --iters may grow, not shrink"
        )
    for key in ("images", "classes"):
        before = saved["train_state"]["data"].get(key)
        if before != data[key]:
            raise MfnError(
                f"{path}: was trained on {before} {key}, but {config.data} has {data[key]}"
            )


class _Net(nn.Module):
    """Network and head as one module, so a single DDP wrapper syncs both."""

    def __init__(self, model: FaceModel, head: ArcFaceHead) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model(x)
        # The head stays in float32: near cos = 1 float16 resolves the cosine to
        # ~5e-4 only, so sin = sqrt(1 - cos^2) moves in steps of ~0.03 and its
        # derivative explodes, and s = 64 magnifies every rounding error.
        with torch.autocast(x.device.type, enabled=False):
            return self.head(emb.float(), labels)


class _JsonLog:
    """``log.jsonl``, cut back to ``start`` on resume so no iteration appears twice."""

    def __init__(self, path: Path, start: int, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        if enabled and start > 0 and path.is_file():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("iter", 0) <= start
            ]
            with atomic_write(path) as tmp:
                tmp.write_text("".join(f"{line}\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def _amp_dtype(device: torch.device) -> torch.dtype:
    # float16 on GPUs (tensor cores everywhere, with a grad scaler); bfloat16 on
    # CPU, whose autocast supports it and whose range needs no scaler.
    return torch.float16 if device.type == "cuda" else torch.bfloat16


class _Run:
    """One training run's state: built (or restored) once, then stepped."""

    def __init__(self, config: TrainConfig, d: distributed.Dist, resume: Path | None) -> None:
        self.config, self.d, self.device = config, d, d.device
        torch.manual_seed(config.seed)
        self.model = create(config.model)
        align = FaceAligner(self.model.input_spec.size) if config.align else None
        self.dataset = open_dataset(config.data, self.model.input_spec, align)
        self.data_info = {
            "source": str(self.dataset.source),
            "images": len(self.dataset),
            "classes": self.dataset.num_classes,
        }
        with torch.no_grad():
            dim = self.model(torch.zeros(1, 3, *self.model.input_spec.size)).shape[1]
        self.head = ArcFaceHead(dim, self.dataset.num_classes, config.scale, config.margin)
        self.optimizer = torch.optim.SGD(
            parameter_groups(
                self.model, self.head, config.weight_decay, config.last_layers_weight_decay
            ),
            lr=config.lr,
            momentum=config.momentum,
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=config.amp and self.device.type == "cuda"
        )
        self.start = self._restore(resume) if resume is not None else 0

        self.model.to(self.device).train()
        self.head.to(self.device)
        for s in self.optimizer.state.values():  # restored momentum arrives on the CPU
            for k, v in s.items():
                if isinstance(v, torch.Tensor):
                    s[k] = v.to(self.device)
        self.net: nn.Module = _Net(self.model, self.head)
        if d.enabled:
            ids = [self.device] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.net, device_ids=ids)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        # Window sums stay on the device: reading them every step would stall a GPU.
        self.window = torch.zeros(4, dtype=torch.float64, device=self.device)
        self.window_steps, self.window_t0 = 0, time.perf_counter()
        self.bad_total = self.seen_total = 0

    def _restore(self, path: Path) -> int:
        saved = state.load(path)
        _check_resumable(path, saved, self.config, self.data_info)
        ts = saved["train_state"]
        self.model.load_state_dict(saved["state_dict"])
        self.head.load_state_dict(ts["head"])
        self.optimizer.load_state_dict(ts["optimizer"])
        self.scaler.load_state_dict(ts["scaler"])
        state.set_rng_state(ts["rng"])
        if self.d.main:
            log.info("resuming %s from iteration %d", path, ts["iteration"])
        return int(ts["iteration"])

    def loader(self) -> DataLoader:
        c, d = self.config, self.d
        order = BatchOrder(len(self.dataset), c.batch, self.start, c.iters, c.seed, d.rank, d.world)
        return DataLoader(
            self.dataset,
            batch_sampler=order,
            num_workers=c.workers,
            pin_memory=self.device.type == "cuda",
        )

    def step(self, step: int, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One SGD step; returns the learning rate it used."""
        lr = lr_at(step, self.config.lr, self.config.milestones)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = images.to(self.device, non_blocking=True)
        y = labels.to(self.device, non_blocking=True)
        amp_dtype = _amp_dtype(self.device)
        with torch.autocast(self.device.type, dtype=amp_dtype, enabled=self.config.amp):
            logits, cos = self.net(x, y)
        valid = y != IGNORE
        n_valid = valid.sum()
        total = F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="sum")
        loss = total / n_valid.clamp(min=1)  # all-unreadable batch: zero loss, not NaN
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

        correct = ((cos.argmax(1) == y) & valid).sum()
        self.window += torch.stack([loss.detach() * n_valid, correct, n_valid, (~valid).sum()])
        self.window_steps += 1
        return lr

    def close_window(self, step: int, lr: float) -> dict:
        """The log record for the steps since the last one, summed over every process."""
        c = self.config
        loss_sum, correct, n, bad = distributed.sum_across(self.d, self.window).tolist()
        self.window.zero_()
        now = time.perf_counter()
        seconds = now - self.window_t0
        self.bad_total += int(bad)
        self.seen_total += self.window_steps * c.batch
        record = {
            "iter": step,
            "loss": loss_sum / max(n, 1),
            "acc": correct / max(n, 1),
            "lr": lr,
            "images_per_s": self.window_steps * c.batch / seconds,
            "eta_s": seconds / self.window_steps * (c.iters - step),
            "bad_images": self.bad_total,
        }
        self.window_steps, self.window_t0 = 0, now
        # Every process sees the same sums, so all of them stop here together.
        if not math.isfinite(record["loss"]):
            raise MfnError(
                f"loss became {record['loss']} at iteration {step}; lower --lr "
                f"(now {c.lr}) or check the data"
            )
        if self.bad_total > BAD_IMAGE_MIN and self.bad_total > BAD_IMAGE_FRACTION * self.seen_total:
            raise MfnError(
                f"{c.data}: {self.bad_total} of {self.seen_total} images seen so far were "
                "unusable (undecodable, or no face found); fix or remove them (the warnings "
                "above name them)"
            )
        return record

    def save(self, path: Path, step: int) -> None:
        if self.d.main:
            state.save(
                path,
                self.model,
                self.config.to_dict(),
                iteration=step,
                head=self.head,
                optimizer=self.optimizer,
                scaler=self.scaler,
                data=self.data_info,
            )


def train(
    config: TrainConfig,
    validate: Validator | None = None,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
) -> TrainResult | None:
    """Train (or resume) into ``config.out``; returns the result on rank 0, None elsewhere.

    ``validate(model) -> dict`` runs on rank 0 every ``val_every`` iterations
    and at the end; ``on_log`` receives every record written to ``log.jsonl``.
    """
    _check(config)
    d = distributed.setup(config.device)
    try:
        return _train(config, d, validate, progress, on_log)
    finally:
        distributed.teardown(d)


def _train(
    config: TrainConfig,
    d: distributed.Dist,
    validate: Validator | None,
    progress: bool,
    on_log: Callable[[dict], None] | None,
) -> TrainResult | None:
    if config.batch % d.world:
        raise MfnError(f"--batch {config.batch} does not split evenly over {d.world} processes")
    resume_from = _prepare_run_dir(config)
    distributed.barrier(d)  # every rank has looked at --out before rank 0 writes to it
    run = _Run(config, d, resume_from)
    if d.main:
        config.out.mkdir(parents=True, exist_ok=True)
    json_log = _JsonLog(config.out / LOG_NAME, run.start, d.main)
    history: list[dict] = []

    def emit(record: dict) -> None:
        json_log.write(record)
        history.append(record)
        if on_log is not None and d.main:
            on_log(record)

    bar = tqdm(
        total=config.iters,
        initial=run.start,
        desc="train",
        unit="it",
        file=sys.stderr,
        leave=False,
        disable=None if (progress and d.main) else True,
    )
    t0 = time.perf_counter()
    last: dict = {}
    validation = None
    step = run.start
    for step, (images, labels) in enumerate(run.loader(), run.start + 1):
        lr = run.step(step, images, labels)
        bar.update(1)
        if step % config.log_every == 0 or step == config.iters:
            last = run.close_window(step, lr)
            emit(last)
            bar.set_postfix(
                loss=f"{last['loss']:.3f}",
                acc=f"{last['acc']:.3f}",
                img_s=f"{last['images_per_s']:.0f}",
                refresh=False,
            )
        if validate is not None and (step % config.val_every == 0 or step == config.iters):
            if d.main:
                validation = {"iter": step, "val": validate(run.model)}
                emit(validation)
            distributed.barrier(d)
        if step % config.ckpt_every == 0 and step != config.iters:
            run.save(config.out / state.periodic_name(step), step)
    bar.close()

    checkpoint = config.out / state.FINAL_NAME
    if step > run.start or resume_from is None:
        run.save(checkpoint, step)
    else:  # resumed a finished run: nothing to do
        checkpoint = resume_from
    in_sync = distributed.replicas_in_sync(d, run.net)
    distributed.barrier(d)  # no rank ends the group while rank 0 still writes
    if not d.main:
        return None
    return TrainResult(
        run_dir=config.out,
        checkpoint=checkpoint,
        start_iteration=run.start,
        iterations=step,
        loss=last.get("loss"),
        accuracy=last.get("acc"),
        images_per_s=last.get("images_per_s"),
        seconds=time.perf_counter() - t0,
        bad_images=run.bad_total,
        world_size=d.world,
        replicas_in_sync=in_sync,
        validation=validation["val"] if validation else None,
        history=history,
    )


def load_history(run_dir: Path) -> list[dict]:
    """Every record of a run's ``log.jsonl``."""
    path = run_dir / LOG_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
