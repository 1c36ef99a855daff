"""Periodic verification accuracy during training: the LFW protocol on a pairs list.

The trainer only needs a callable ``validate(model) -> dict``. ``PairsValidator``
is that callable for a list of (image A, image B, same person?) pairs: each
image is embedded together with its mirror image (the usual LFW practice), pairs
are scored by cosine similarity, and ``metrics.ten_fold_accuracy`` gives the
accuracy, exactly the protocol of ``mfn-deploy evaluate``.

Images at the network's input size are taken as aligned crops; others (LFW's
250x250 photos) are detected and aligned with the face pipeline, or centre
cropped when no face is found (counted as ``unaligned`` in the result, so every
pair still counts and the ten folds stay LFW's). Crops are prepared on the first
call, which only rank 0 makes, and kept in memory (about 40 kB each).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mfn_deploy.errors import MfnError
from mfn_deploy.images import center_crop_resize, load_image, normalize
from mfn_deploy.metrics import fold_indices, ten_fold_accuracy
from mfn_deploy.models import FaceModel

Image = Path | str | np.ndarray  # a file, or a BGR uint8 array
Pair = tuple[Image, Image, bool]
Validator = Callable[[FaceModel], dict]
EMBED_BATCH = 64


def _key(img: Image) -> object:
    return id(img) if isinstance(img, np.ndarray) else str(img)


class PairsValidator:
    def __init__(self, pairs: Sequence[Pair], name: str = "pairs", detect: bool = True) -> None:
        self.pairs = [(a, b, bool(same)) for a, b, same in pairs]
        fold_indices(len(self.pairs))  # too few pairs: fail now, not hours into training
        self.name, self.detect = name, detect
        self.same = np.array([s for _, _, s in self.pairs])
        self._crops: dict[object, np.ndarray] = {}
        self._size: tuple[int, int] | None = None
        self.unaligned = 0

    def _prepare(self, size: tuple[int, int]) -> None:
        aligner = None
        self._crops, self.unaligned = {}, 0
        for a, b, _ in self.pairs:
            for img in (a, b):
                if _key(img) in self._crops:
                    continue
                arr = img if isinstance(img, np.ndarray) else load_image(Path(img))
                crop = arr if arr.shape[:2] == size else None
                if crop is None and self.detect:
                    if aligner is None:
                        from mfn_deploy.train.face_align import FaceAligner

                        aligner = FaceAligner(size)
                    crop = aligner(arr)
                if crop is None:
                    self.unaligned += 1
                    crop = center_crop_resize(arr, size)
                self._crops[_key(img)] = crop
        self._size = size

    @torch.no_grad()
    def _embed(self, model: FaceModel, images: list[Image]) -> torch.Tensor:
        device = next(model.parameters()).device
        spec = model.input_spec
        out = []
        for start in range(0, len(images), EMBED_BATCH):
            chunk = images[start : start + EMBED_BATCH]
            x = np.stack([normalize(self._crops[_key(i)], spec) for i in chunk])
            x = torch.from_numpy(x).to(device)
            out.append(F.normalize(model(x) + model(x.flip(3))).float().cpu())
        return torch.cat(out)

    def __call__(self, model: FaceModel) -> dict:
        if self._size != model.input_spec.size:
            self._prepare(model.input_spec.size)
        was_training = model.training
        model.eval()
        try:
            a = self._embed(model, [p[0] for p in self.pairs])
            b = self._embed(model, [p[1] for p in self.pairs])
        finally:
            model.train(was_training)
        scores = (a * b).sum(1).numpy()
        result = ten_fold_accuracy(scores, self.same)
        return {
            "set": self.name,
            "pairs": len(self.pairs),
            "accuracy": result.mean,
            "accuracy_std": result.std,
            "unaligned": self.unaligned,
        }


def pairs_validator(pairs_file: Path, root: Path | None = None) -> Validator:
    """``--val PAIRS [--val-root DIR]``: LFW's pairs.txt, read by ``evaluate.load_pairs``.

    ``root`` holds the images as ROOT/name/name_0001.jpg; by default the pairs
    file's own folder.
    """
    try:
        from mfn_deploy.evaluate import load_pairs
    except ImportError:
        raise MfnError(
            f"{pairs_file}: --val needs the face pipeline (mfn_deploy.evaluate), which this "
            "installation lacks; train without --val"
        ) from None
    pairs = load_pairs(pairs_file, root if root is not None else pairs_file.parent)
    missing = next((p for pair in pairs for p in (pair.a, pair.b) if not p.is_file()), None)
    if missing is not None:
        raise MfnError(f"{missing}: image listed in {pairs_file} not found")
    return PairsValidator([(p.a, p.b, p.same) for p in pairs], name=pairs_file.name)
