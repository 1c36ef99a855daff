"""Training data: face images with identity labels, in a fixed, resumable order.

Two sources, picked by ``open_dataset``:

* an image folder: one sub-folder per identity (sorted names give labels
  0..C-1; empty folders are skipped), face images inside (.jpg, .jpeg, .png, .bmp);
* InsightFace RecordIO: ``train.rec`` + ``train.idx`` (or a folder holding them).

An image at the network's input size is taken as an aligned crop (what
InsightFace's .rec files hold). Any other image goes through ``align`` when one
is given (``face_align.FaceAligner``: detection + five-point alignment by the
face pipeline, for folders of ordinary photos), else through a centre crop +
resize, which is what InsightFace's 112x112 crops need for a 112x96 network.

An image that cannot be decoded, or in which the aligner finds no face, does
not stop training: it comes back as a blank image with the label ``IGNORE``,
which the loss skips, and a warning naming it. The trainer counts these and
stops once they stop being rare (see ``trainer.BAD_IMAGE_*``).

The order is a pure function of (seed, position): the sample at position p of
the endless stream is element p mod N of the permutation of epoch p div N, and
its horizontal flip is a coin from the same seeded generator. A resumed run
therefore sees exactly the batches the uninterrupted run would have, and
each DistributedDataParallel rank reads its own slice of every global batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mfn_deploy.errors import MfnError
from mfn_deploy.images import center_crop_resize, normalize
from mfn_deploy.models import InputSpec
from mfn_deploy.train.arcface import IGNORE
from mfn_deploy.train.recordio import RecordFile, image_layout

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
REC_NAME = "train.rec"
MIN_IDENTITIES = 2
FLIP_PROBABILITY = 0.5
# Epoch e of seed s draws from generator s * STRIDE + e: a prime larger than any
# epoch count, so no two (seed, epoch) pairs share a generator.
EPOCH_SEED_STRIDE = 1_000_003
Align = Callable[[np.ndarray], np.ndarray | None]  # None: no face found


class FaceDataset(Dataset):
    """Base: subclasses list their samples and provide ``_sample(i)``.

    Items are requested as (index, flip) pairs, so augmentation is decided by
    the sampler and is as reproducible as the order.
    """

    source: Path
    num_classes: int

    def __init__(self, spec: InputSpec, align: Align | None = None) -> None:
        self.spec, self.align = spec, align

    def __len__(self) -> int:
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """Where sample i lives, for messages."""
        raise NotImplementedError

    def _sample(self, i: int) -> tuple[np.ndarray | None, int]:
        """The decoded BGR image (None if undecodable) and its label."""
        raise NotImplementedError

    def _fit(self, img: np.ndarray) -> np.ndarray | None:
        if img.shape[:2] == self.spec.size:
            return img
        return self.align(img) if self.align else center_crop_resize(img, self.spec.size)

    def __getitem__(self, item: tuple[int, bool]) -> tuple[torch.Tensor, int]:
        i, flip = item
        img, label = self._sample(i)
        problem = "cannot decode image" if img is None else None
        if img is not None:
            img = self._fit(img)
            problem = "no face found" if img is None else None
        if problem:
            log.warning("%s: %s; skipped", self.describe(i), problem)
            return torch.zeros(3, *self.spec.size), IGNORE
        if flip:
            img = img[:, ::-1]
        return torch.from_numpy(normalize(img, self.spec)), label

    def check_first(self) -> None:
        """Fail before training if even the first image cannot be read."""
        if self._sample(0)[0] is None:
            raise MfnError(f"{self.describe(0)}: cannot decode the first training image")


class ImageFolder(FaceDataset):
    def __init__(self, root: Path, spec: InputSpec, align: Align | None = None) -> None:
        super().__init__(spec, align)
        self.source = root
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        self.files: list[Path] = []
        labels: list[int] = []
        identities = 0
        for folder in folders:
            images = sorted(
                p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if images:  # an empty folder is not an identity: no label for it
                self.files += images
                labels += [identities] * len(images)
                identities += 1
        if not self.files:
            raise MfnError(
                f"{root}: no images found (expected one sub-folder per identity holding "
                f"{', '.join(IMAGE_SUFFIXES)} files)"
            )
        self.labels = np.array(labels, np.int64)
        self.num_classes = identities

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, i: int) -> str:
        return str(self.files[i])

    def _sample(self, i: int) -> tuple[np.ndarray | None, int]:
        return cv2.imread(str(self.files[i]), cv2.IMREAD_COLOR), int(self.labels[i])


class RecordDataset(FaceDataset):
    def __init__(self, rec: Path, spec: InputSpec, align: Align | None = None) -> None:
        super().__init__(spec, align)
        self.source = rec
        self.records = RecordFile(rec)
        layout = image_layout(self.records)
        if not layout.image_keys:
            raise MfnError(f"{rec}: no image records")
        self.keys = layout.image_keys
        self.num_classes = layout.num_classes
        if layout.labels is not None and min(layout.labels) < 0:
            raise MfnError(f"{rec}: negative identity label {min(layout.labels)}")

    def __len__(self) -> int:
        return len(self.keys)

    def describe(self, i: int) -> str:
        return f"{self.source} record {self.keys[i]}"

    def _sample(self, i: int) -> tuple[np.ndarray | None, int]:
        record = self.records.read(self.keys[i])
        label = int(record.labels[0])
        if not 0 <= label < self.num_classes:
            raise MfnError(f"{self.describe(i)}: label {label} outside 0..{self.num_classes - 1}")
        data = np.frombuffer(record.image, np.uint8)
        return (cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None), label


def open_dataset(path: Path, spec: InputSpec, align: Align | None = None) -> FaceDataset:
    """An image folder, a ``.rec`` file, or a folder holding ``train.rec``."""
    if not path.exists():
        raise MfnError(f"{path}: training data not found")
    if path.is_file():
        if path.suffix != ".rec":
            raise MfnError(f"{path}: expected an image folder or a RecordIO .rec file")
        data: FaceDataset = RecordDataset(path, spec, align)
    elif (path / REC_NAME).is_file():
        data = RecordDataset(path / REC_NAME, spec, align)
    else:
        data = ImageFolder(path, spec, align)
    if data.num_classes < MIN_IDENTITIES:
        raise MfnError(
            f"{path}: {data.num_classes} identity found; a classifier needs at least "
            f"{MIN_IDENTITIES}"
        )
    data.check_first()
    return data


class StreamOrder:
    """Epoch permutations and flip coins, a pure function of (seed, position)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._epoch, self._perm, self._flip = -1, np.empty(0, np.int64), np.empty(0, bool)

    def _load(self, epoch: int) -> None:
        # A separate generator per epoch: no state to carry across a resume.
        gen = torch.Generator().manual_seed(self.seed * EPOCH_SEED_STRIDE + epoch)
        self._perm = torch.randperm(self.n, generator=gen).numpy()
        self._flip = (torch.rand(self.n, generator=gen) < FLIP_PROBABILITY).numpy()
        self._epoch = epoch

    def __getitem__(self, position: int) -> tuple[int, bool]:
        epoch, i = divmod(position, self.n)
        if epoch != self._epoch:
            self._load(epoch)
        return int(self._perm[i]), bool(self._flip[i])


class BatchOrder(Sampler[list[tuple[int, bool]]]):
    """This rank's share of global batches ``start .. stop - 1``.

    Global batch k covers stream positions [k * B, (k + 1) * B); rank r of W
    takes the r-th of W equal slices.
    """

    def __init__(
        self, n: int, global_batch: int, start: int, stop: int, seed: int, rank=0, world=1
    ) -> None:
        self.order = StreamOrder(n, seed)
        self.global_batch, self.start, self.stop = global_batch, start, stop
        self.local = global_batch // world
        self.offset = rank * self.local

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for k in range(self.start, self.stop):
            first = k * self.global_batch + self.offset
            yield [self.order[p] for p in range(first, first + self.local)]
