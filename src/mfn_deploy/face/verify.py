"""Detect, align and embed faces in image files; compare two embeddings."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfn_deploy.errors import MfnError
from mfn_deploy.face.align import aligned_input
from mfn_deploy.face.detect import DetectorConfig, Face, detect
from mfn_deploy.images import load_image
from mfn_deploy.runtime import detector_nets, embedder


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

    def embed_files(self, paths: Iterable[Path]) -> FileFaces:
        """Every face of every file; a file that fails or shows no face is noted, not fatal."""
        return self._each(paths, self.embed_all)

    def main_faces(self, paths: Iterable[Path]) -> FileFaces:
        """The largest face of each file, as `compare` and `evaluate` use it."""
        return self._each(paths, lambda p: [self.embed_main_face(p)])

    @staticmethod
    def _each(paths: Iterable[Path], embed: Callable[[Path], list[EmbeddedFace]]) -> FileFaces:
        result = FileFaces()
        for path in paths:
            try:
                found = embed(path)
            except MfnError as e:
                result.failures[str(path)] = str(e).removeprefix(f"{path}: ")
                continue
            if not found:
                result.failures[str(path)] = "no face found"
            result.faces += [(path, i, ef) for i, ef in enumerate(found)]
        return result


@dataclass
class FileFaces:
    """Faces found per file, in file order, and why the other files gave none."""

    faces: list[tuple[Path, int, EmbeddedFace]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    def first(self, path: Path) -> EmbeddedFace:
        return next(ef for p, _, ef in self.faces if p == path)

    def rows(self) -> list[dict]:
        return [
            {"file": str(p), "face": i, **ef.face.to_dict(), "embedding": ef.embedding}
            for p, i, ef in self.faces
        ]


def main_face_embedders(
    export_dir: Path, backends: Iterable[str], detector: Path | None, config: DetectorConfig
) -> dict[str, Callable[[Path], np.ndarray]]:
    """One largest-face embedding function per backend, as `evaluate` compares them."""
    pipes = {b: FacePipeline(export_dir, b, detector, config) for b in backends}
    return {
        b: (lambda p, pipe=pipe: pipe.embed_main_face(p).embedding) for b, pipe in pipes.items()
    }
