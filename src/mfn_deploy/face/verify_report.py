"""Does an export still tell people apart, in every backend it ships? (``verify-report``)

Every image of a pairs set is detected once (MTCNN in NCNN, the phone's runtime and
the face commands' default, within a pixel of torch's; the largest face) and aligned
once, so the backends differ only in the embedding network: torch (the folded
checkpoint), onnxruntime, NCNN fp32, NCNN fp16 and, when the export has it, NCNN int8
(ncnn's unpacked layout: exact int8 arithmetic, as the export's gate runs it). Per
backend: genuine and impostor cosine distributions, the smallest genuine and largest
impostor score, and how many verify/reject decisions flip against torch at torch's
threshold (the best-accuracy threshold on these pairs).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfn_deploy.errors import MfnError
from mfn_deploy.evaluate import Pair, load_pairs
from mfn_deploy.export.backends import Runner, ncnn_runner
from mfn_deploy.export.manifest import artifact_path, read_manifest
from mfn_deploy.face.align import aligned_input
from mfn_deploy.face.detect import DetectorConfig, detect
from mfn_deploy.face.sample_pairs import REAL_SET, write_real_pairs
from mfn_deploy.images import load_image
from mfn_deploy.metrics import best_threshold
from mfn_deploy.runtime import detector_nets, embedder

REFERENCE = "torch"


def backend_runners(export_dir: Path) -> tuple[dict[str, Runner], object]:
    """name -> embedding runner for every backend the export carries, and its input spec."""
    manifest = read_manifest(export_dir)
    runners = {}
    spec = None
    for name in ("torch", "onnxruntime", "ncnn"):
        runners[name], spec = embedder(export_dir, name)
    blobs = manifest["ncnn_blobs"]
    fp16 = artifact_path(export_dir, manifest, "ncnn_fp16_param", required=False)
    if fp16 is not None:
        binary = artifact_path(export_dir, manifest, "ncnn_fp16_bin")
        runners["ncnn_fp16"] = ncnn_runner(fp16, binary, blobs, fp16=True)
    int8 = artifact_path(export_dir, manifest, "ncnn_int8_param", required=False)
    if int8 is not None:
        binary = artifact_path(export_dir, manifest, "ncnn_int8_bin")
        runners["ncnn_int8"] = ncnn_runner(int8, binary, blobs, packing=False)
    return runners, spec


def _stats(x: np.ndarray) -> dict:
    return {"n": len(x), "min": float(x.min()), "mean": float(x.mean()), "max": float(x.max())}


@dataclass
class BackendVerification:
    backend: str
    genuine: dict  # n, min, mean, max of genuine-pair cosines
    impostor: dict
    accuracy: float  # at the torch threshold
    flips_vs_torch: int
    cos_to_torch_min: float  # the embeddings themselves, worst image
    hardest: dict = field(default_factory=dict)  # smallest genuine, largest impostor pair

    @property
    def separated(self) -> bool:
        return self.genuine["min"] > self.impostor["max"]

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "genuine": self.genuine,
            "impostor": self.impostor,
            "smallest_genuine": self.genuine["min"],
            "largest_impostor": self.impostor["max"],
            "separated": self.separated,
            "accuracy_at_torch_threshold": self.accuracy,
            "decision_flips_vs_torch": self.flips_vs_torch,
            "embedding_cos_to_torch_min": self.cos_to_torch_min,
            "hardest_pairs": self.hardest,
        }


@dataclass
class VerificationReport:
    export: str
    model: str
    trained: bool
    pairs_total: int
    genuine_pairs: int
    impostor_pairs: int
    images: int
    threshold: float  # torch's best-accuracy threshold on these pairs
    pairs_source: str
    photos: str = ""  # where the images come from, for the built-in set
    failures: dict[str, str] = field(default_factory=dict)
    backends: list[BackendVerification] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "export": self.export,
            "model": self.model,
            "trained": self.trained,
            "pairs_source": self.pairs_source,
            "photos": self.photos,
            "pairs_total": self.pairs_total,
            "pairs_used": self.genuine_pairs + self.impostor_pairs,
            "genuine_pairs": self.genuine_pairs,
            "impostor_pairs": self.impostor_pairs,
            "images": self.images,
            "torch_threshold": self.threshold,
            "failures": self.failures,
            "backends": [b.to_dict() for b in self.backends],
        }


def _faces(
    files: list[Path], spec, config: DetectorConfig, failures: dict[str, str], detector: str
):
    """path -> aligned input of its largest face; failures noted."""
    nets = detector_nets(detector)
    out = {}
    for f in files:
        try:
            image = load_image(f)
            faces = detect(image, nets, config)
        except MfnError as e:
            failures[str(f)] = str(e).removeprefix(f"{f}: ")
            continue
        if not faces:
            failures[str(f)] = "no face found"
            continue
        face = max(faces, key=lambda x: (x.box[2] - x.box[0]) * (x.box[3] - x.box[1]))
        out[f] = aligned_input(image, face.landmarks, spec)
    return out


def verification_report(
    export_dir: Path,
    pairs: list[Pair],
    pairs_source: str = "",
    config: DetectorConfig | None = None,
    detector: str = "ncnn",
) -> VerificationReport:
    """Score every usable pair with every backend of the export; compare against torch."""
    manifest = read_manifest(export_dir)
    runners, spec = backend_runners(export_dir)
    files = sorted({p.a for p in pairs} | {p.b for p in pairs})
    failures: dict[str, str] = {}
    inputs = _faces(files, spec, config or DetectorConfig(), failures, detector)
    usable = [p for p in pairs if p.a in inputs and p.b in inputs]
    same = np.array([p.same for p in usable], bool)
    if not same.any() or same.all():
        raise MfnError(
            f"only {len(usable)} usable pairs ({int(same.sum())} genuine): "
            "a verification report needs genuine and impostor pairs"
        )
    names = list(inputs)
    index = {f: i for i, f in enumerate(names)}
    batch = np.stack([inputs[f] for f in names])
    ia = np.array([index[p.a] for p in usable])
    ib = np.array([index[p.b] for p in usable])
    embeddings = {}
    for name, run in runners.items():
        e = np.asarray(run(batch), np.float64).reshape(len(names), -1)
        embeddings[name] = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    ref = embeddings[REFERENCE]
    ref_scores = np.sum(ref[ia] * ref[ib], axis=1)
    threshold = best_threshold(ref_scores, same)
    ref_decisions = ref_scores >= threshold
    source = manifest.get("source", {})
    report = VerificationReport(
        export=str(export_dir),
        model=str(manifest.get("model", "")),
        trained=bool(source.get("trained", False)),
        pairs_total=len(pairs),
        genuine_pairs=int(same.sum()),
        impostor_pairs=int((~same).sum()),
        images=len(files),
        threshold=threshold,
        pairs_source=pairs_source,
        failures=failures,
    )

    def label(p: Pair) -> str:
        return f"{p.a.parent.name}/{p.a.name} vs {p.b.parent.name}/{p.b.name}"

    genuine_idx, impostor_idx = np.nonzero(same)[0], np.nonzero(~same)[0]
    for name, e in embeddings.items():
        scores = np.sum(e[ia] * e[ib], axis=1)
        decisions = scores >= threshold
        g = genuine_idx[np.argmin(scores[genuine_idx])]
        i = impostor_idx[np.argmax(scores[impostor_idx])]
        report.backends.append(
            BackendVerification(
                backend=name,
                genuine=_stats(scores[same]),
                impostor=_stats(scores[~same]),
                accuracy=float(np.mean(decisions == same)),
                flips_vs_torch=int(np.sum(decisions != ref_decisions)),
                cos_to_torch_min=float(np.min(np.sum(e * ref, axis=1))),
                hardest={
                    "smallest_genuine": label(usable[g]),
                    "largest_impostor": label(usable[i]),
                },
            )
        )
    return report


def real_pairs_report(
    export_dir: Path, pairs_file: Path | None = None, root: Path | None = None
) -> VerificationReport:
    """The report on ``pairs_file`` (LFW layout, images under ``root``, by default the
    file's folder), or on the real pairs set built afresh (``write_real_pairs``)."""
    if pairs_file is not None:
        root = root if root is not None else pairs_file.parent
        return verification_report(export_dir, load_pairs(pairs_file, root), str(pairs_file))
    read_manifest(export_dir)  # a bad export is reported before the set is built
    with tempfile.TemporaryDirectory(prefix="mfn-real-pairs-") as tmp:
        pairs = load_pairs(write_real_pairs(Path(tmp)), Path(tmp))
        report = verification_report(export_dir, pairs, "built-in real pairs set (not LFW)")
        report.photos = REAL_SET
        report.failures = {k.replace(tmp, "<real-pairs>"): v for k, v in report.failures.items()}
        return report


def format_verification(report: VerificationReport) -> str:
    lines = [
        f"{report.model} ({'trained' if report.trained else 'untrained'} weights), "
        f"{report.pairs_source or 'pairs'}: {report.genuine_pairs} genuine + "
        f"{report.impostor_pairs} impostor pairs used of {report.pairs_total}, "
        f"{report.images} images",
        f"torch threshold (best accuracy on these pairs): {report.threshold:.4f}",
        f"{'backend':<12} {'genuine min/mean/max':>22} {'impostor min/mean/max':>23} "
        f"{'sep':>4} {'acc':>6} {'flips':>5} {'cos>torch':>9}",
    ]
    for b in report.backends:
        g, i = b.genuine, b.impostor
        lines.append(
            f"{b.backend:<12} {g['min']:>6.4f}/{g['mean']:.4f}/{g['max']:.4f} "
            f"{i['min']:>7.4f}/{i['mean']:.4f}/{i['max']:.4f} "
            f"{'yes' if b.separated else 'NO':>4} {b.accuracy:>6.4f} {b.flips_vs_torch:>5} "
            f"{b.cos_to_torch_min:>9.6f}"
        )
    for path, problem in report.failures.items():
        lines.append(f"skipped {path}: {problem}")
    return "\n".join(lines)
