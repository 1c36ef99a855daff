"""Real verification, shown: the pretrained MobileFaceNet on the real pairs set, in
every backend its export carries (`mfn-deploy verify-report`).

The set is a few photos that ship in installed packages and label-preserving
augmentations of them, each detected anew by MTCNN: not LFW. What it shows is that the
trained network separates these people, and that no backend flips a decision torch
makes at its threshold.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli
from mfn_deploy.errors import MfnError
from mfn_deploy.evaluate import load_pairs
from mfn_deploy.export.plan import ExportOptions, export
from mfn_deploy.face.sample_pairs import augmentations, real_photos, write_sample_pairs
from mfn_deploy.face.samples import face_inputs
from mfn_deploy.face.verify_report import (
    format_verification,
    real_pairs_report,
    verification_report,
)
from mfn_deploy.pretrained.importer import checkpoint

MODEL = "mobilefacenet_tf"
FP32 = ("torch", "onnxruntime", "ncnn")


@pytest.fixture(scope="session")
def pretrained_fp16_export(tmp_path_factory) -> Path:
    """`export --pretrained mobilefacenet_tf --fp16`, in process (the CLI path is
    tests/test_pretrained.py's)."""
    out = tmp_path_factory.mktemp("verify") / "mfn_tf"
    opts = ExportOptions(out=out, model=MODEL, checkpoint=checkpoint(MODEL), fp16=True, n_random=4)
    export(opts, faces=face_inputs)
    return out


@pytest.fixture(scope="session")
def real_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_pairs") / "set"  # as `sample-pairs --real` writes it
    return load_pairs(write_sample_pairs(root, real=True), root), root


@pytest.fixture(scope="session")
def report(pretrained_fp16_export, real_pairs):
    return verification_report(pretrained_fp16_export, real_pairs[0], "real pairs")


def test_the_real_set_is_photos_from_packages_and_their_augmentations(real_pairs):
    pairs, root = real_pairs
    people = real_photos()
    assert {"Eileen_Collins", "Grace_Hopper", "Cameraman"} <= set(people)
    kinds = 1 + len(augmentations(people["Grace_Hopper"]))
    assert sum(p.same for p in pairs) == len(people) * (kinds - 1)
    n = len(people) * (len(people) - 1) // 2
    assert sum(not p.same for p in pairs) == 2 * n
    for p in pairs:  # genuine: one person; impostor: two
        assert (p.a.parent == p.b.parent) == p.same and p.a != p.b
    # Augmentations are new pixels in files of their own, so detection runs anew.
    hopper = [cv2.imread(str(f)) for f in sorted((root / "Grace_Hopper").iterdir())]
    assert len(hopper) == kinds
    assert all(
        not np.array_equal(hopper[0], im) for im in hopper[1:] if im.shape == hopper[0].shape
    )


def test_every_face_is_found_and_every_backend_reported(report, real_pairs):
    assert report.failures == {}
    assert report.genuine_pairs + report.impostor_pairs == len(real_pairs[0])
    assert report.trained and report.model == MODEL
    assert [b.backend for b in report.backends] == [*FP32, "ncnn_fp16"]  # no int8 asked
    d = report.to_dict()
    assert d["torch_threshold"] == report.threshold
    for b in d["backends"]:
        assert {"genuine", "impostor", "smallest_genuine", "largest_impostor"} <= set(b)
        assert {"decision_flips_vs_torch", "accuracy_at_torch_threshold", "separated"} <= set(b)
        assert b["genuine"]["n"] == report.genuine_pairs
        assert b["impostor"]["n"] == report.impostor_pairs
        assert b["genuine"]["min"] <= b["genuine"]["mean"] <= b["genuine"]["max"]
    assert "flips" in format_verification(report)


def test_genuine_and_impostor_are_separated_in_every_backend(report):
    # Measured: smallest genuine 0.912 (LFW face 25 vs its brighter copy), largest
    # impostor 0.430 (LFW faces 22 and 26); int8 (not exported here) 0.894 / 0.460.
    for b in report.backends:
        assert b.genuine["min"] > 0.85, b.backend
        assert b.impostor["max"] < 0.5, b.backend
        assert b.separated and b.accuracy == 1.0, b.backend
    assert report.impostor_pairs and report.backends[0].impostor["max"] < report.threshold


def test_no_backend_flips_a_decision_at_the_torch_threshold(report):
    flips = {b.backend: b.flips_vs_torch for b in report.backends}
    assert flips == {name: 0 for name in flips}
    for b in report.backends:
        if b.backend in FP32:
            assert b.cos_to_torch_min > 0.99999, b.backend
        else:  # fp16 storage
            assert b.cos_to_torch_min > 0.999, b.backend


def test_bad_inputs_are_one_line(pretrained_fp16_export, tmp_path):
    with pytest.raises(MfnError, match="export directory not found"):
        real_pairs_report(tmp_path / "none")
    with pytest.raises(MfnError, match="pairs file not found"):
        real_pairs_report(pretrained_fp16_export, tmp_path / "no.txt")
    proc = run_cli("verify-report", pretrained_fp16_export, "--root", tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == "error: --root needs --pairs\n"
