"""Import a TFLite file as a checkpoint, checked against LiteRT; cache the pretrained ones.

``import_tflite`` turns a float32 TFLite MobileFaceNet-class file into an mfn-deploy
checkpoint of a zoo network (``tflite_import``), after checking the torch model
against LiteRT on real aligned faces and seeded random inputs; a model that does
not match is never written. ``checkpoint(name)`` does that once for a catalogue
entry and caches the result, so ``export --pretrained NAME`` is an ordinary
checkpoint export whose manifest says where the weights came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mfn_deploy.errors import MfnError
from mfn_deploy.export import DEFAULT_RANDOM_INPUTS
from mfn_deploy.export.backends import torch_runner
from mfn_deploy.face.samples import face_inputs
from mfn_deploy.files import cache_fill, cache_root, sha256_of
from mfn_deploy.images import random_inputs
from mfn_deploy.pretrained.catalog import get
from mfn_deploy.pretrained.litert import TOLERANCE, Agreement, agreement, litert_runner
from mfn_deploy.pretrained.npm import fetch_file
from mfn_deploy.pretrained.tflite_graph import read_tflite
from mfn_deploy.pretrained.tflite_import import to_torch
from mfn_deploy.weights import load_checkpoint, save_checkpoint

DEFAULT_MODEL = "mobilefacenet_tf"
# Part of the cache key of imported checkpoints: bump when the import changes its output.
IMPORTER_VERSION = 1


@dataclass
class ImportReport:
    model: str
    tflite: Path
    ops: int  # TFLite operators read
    convolutions: int  # in the torch model they became
    agreements: list[Agreement]
    checkpoint: Path | None = None
    provenance: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(a.ok for a in self.agreements)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "tflite": str(self.tflite),
            "ops": self.ops,
            "convolutions": self.convolutions,
            "reference": "LiteRT, built-in kernels, no delegate",
            "tolerance": {"cos_min": TOLERANCE.cos_min, "rel_l2_max": TOLERANCE.rel_l2_max},
            "agreement": [a.to_dict() for a in self.agreements],
            "ok": self.ok,
        }


def import_tflite(
    path: Path,
    out: Path,
    model: str = DEFAULT_MODEL,
    provenance: dict | None = None,
    n_random: int = DEFAULT_RANDOM_INPUTS,
    seed: int = 0,
) -> ImportReport:
    """Import ``path`` as the zoo network ``model`` into the checkpoint ``out``.

    Written (atomically) only if the torch model matches LiteRT on the bundled real
    faces and on ``n_random`` seeded inputs within the export's fp32 tolerance.
    """
    if not out.parent.is_dir():
        raise MfnError(f"{out.parent}: no such directory for the checkpoint")
    graph = read_tflite(path)
    torch_model = to_torch(graph, model)
    spec = torch_model.input_spec
    inputs = {"faces": face_inputs(spec)[0], "random": random_inputs(spec, n_random, seed)}
    agreements = agreement(torch_runner(torch_model), litert_runner(path), inputs)
    provenance = provenance or {"file": str(path), "sha256": sha256_of(path)}
    convolutions = sum(isinstance(m, torch.nn.Conv2d) for m in torch_model.modules())
    report = ImportReport(model, path, len(graph.ops), convolutions, agreements, None, provenance)
    if not report.ok:
        worst = min(agreements, key=lambda a: a.metrics.cos_min)
        raise MfnError(
            f"{path}: the imported {model} does not match LiteRT on {worst.input_set} inputs "
            f"(cosine {worst.metrics.cos_min:.7f}, max |d| {worst.metrics.max_abs:.2e}; "
            f"needs cosine >= {TOLERANCE.cos_min}); no checkpoint written"
        )
    save_checkpoint(
        out,
        torch_model,
        config={"imported_from": "tflite", "import_check": report.to_dict()},
        trained=True,
        provenance=provenance | {"importer": f"mfn-deploy import-tflite v{IMPORTER_VERSION}"},
    )
    report.checkpoint = out
    return report


def tflite_file(name: str) -> Path:
    """The pinned TFLite file of a catalogue entry, fetched once into the cache."""
    pin = get(name).source
    return fetch_file(pin, cache_root() / "pretrained" / f"{pin.package}-{pin.version}")


def checkpoint(name: str) -> Path:
    """The imported checkpoint of a catalogue entry, made once and cached; a damaged
    cache entry is rebuilt."""
    pin = get(name).source
    key = {"sha256": pin.sha256, "importer": IMPORTER_VERSION, "torch": torch.__version__}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    entry = cache_root() / "pretrained" / f"{name}-{digest}.pt"

    def usable() -> bool:
        try:
            return entry.is_file() and load_checkpoint(entry, name)[1].get("trained") is True
        except MfnError:
            return False

    if usable():
        return entry
    with cache_fill(entry):
        if not usable():  # another process may have filled it meanwhile
            import_tflite(tflite_file(name), entry, name, provenance=pin.provenance())
    return entry
