"""Detect, align and embed faces in image files; compare two embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfn_deploy.errors import MfnError
from mfn_deploy.face.align import aligned_input
from mfn_deploy.face.detect import DetectorConfig, Face, detect
from mfn_deploy.images import load_image
from mfn_deploy.runtime import detector_nets, embedder

# Untrained default weights make any threshold meaningless; with trained weights,
# calibrate it with `mfn-deploy evaluate` (the 10-fold thresholds it reports).
DEFAULT_THRESHOLD = 0.4


@dataclass(frozen=True)
class EmbeddedFace:
    face: Face
    embedding: np.ndarray  # L2-normalised


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


class FacePipeline:
    """Detection, alignment and embedding with one backend."""

    def __init__(
        self,
        export_dir: Path,
        backend: str,
        detector: Path | None = None,
        config: DetectorConfig | None = None,
    ) -> None:
        self.backend = backend
        self.nets = detector_nets(backend, detector)
        self.embed_fn, self.spec = embedder(export_dir, backend)
        self.config = config or DetectorConfig()

    def detect(self, path: Path) -> tuple[np.ndarray, list[Face]]:
        image = load_image(path)
        return image, detect(image, self.nets, self.config)

    def embed_all(self, path: Path) -> list[EmbeddedFace]:
        """Every face in the file, best detection score first."""
        image, faces = self.detect(path)
        if not faces:
            return []
        x = np.stack([aligned_input(image, f.landmarks, self.spec) for f in faces])
        emb = self.embed_fn(x)
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return [EmbeddedFace(f, e) for f, e in zip(faces, emb, strict=True)]

    def embed_main_face(self, path: Path) -> EmbeddedFace:
        """The largest face: the one a verification photo is about."""
        found = self.embed_all(path)
        if not found:
            raise MfnError(f"{path}: no face found")
        return max(
            found, key=lambda e: (e.face.box[2] - e.face.box[0]) * (e.face.box[3] - e.face.box[1])
        )
