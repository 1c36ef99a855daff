"""`export --force` deletes only previous exports; concurrent runs and signals lose nothing.

Signals and locks are exercised on the real entry point in subprocesses. Exports use
mobilefacenet_96x96 at 32x32 with one random input: the smallest that runs every stage.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from mfn_deploy.errors import MfnError
from mfn_deploy.export.artifacts import check_replaceable, staged_directory
from mfn_deploy.export.manifest import MANIFEST_FORMAT, verify_artifacts
from mfn_deploy.export.plan import ExportOptions, export
from mfn_deploy.face.samples import face_inputs

SMALL = ["--model", "mobilefacenet_96x96", "--input-size", "32x32", "--random-inputs", "1"]
TIMEOUT = 600  # a loaded two-core CI machine takes seconds per export; never minutes


def _small(out: Path, **kw) -> ExportOptions:
    return ExportOptions(
        out=out, model="mobilefacenet_96x96", input_size=(32, 32), n_random=1, **kw
    )


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _start(*args) -> subprocess.Popen:
    """The real entry point, as run_cli runs it, but left running for us to signal."""
    return subprocess.Popen(
        [sys.executable, "-m", "mfn_deploy", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _staging(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if ".staging-" in p.name]


def _reaped_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def previous_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("previous") / "out"
    export(_small(out), faces=face_inputs)
    return out


@pytest.fixture
def out(previous_export, tmp_path) -> Path:
    """A copy of a finished export, alone in its parent folder."""
    copy = tmp_path / "work" / "out"
    shutil.copytree(previous_export, copy)
    return copy


# --- what --force may replace ---------------------------------------------------------


def test_only_a_manifest_written_by_mfn_deploy_marks_a_previous_export(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for content in [b'{"format": "someone-else/v1"}', b"[1, 2]", b"{not json", b"\xff"]:
        (d / "manifest.json").write_bytes(content)
        with pytest.raises(MfnError, match=r"/d: refusing to replace: not a previous mfn-deploy"):
            check_replaceable(d, force=True)
    for fmt in (MANIFEST_FORMAT, "mfn-deploy/detector-v1"):
        (d / "manifest.json").write_text(json.dumps({"format": fmt}))
        check_replaceable(d, force=True)
    with pytest.raises(MfnError, match=r"/d: output directory exists; pass --force"):
        check_replaceable(d, force=False)
    check_replaceable(tmp_path / "absent", force=False)


def test_other_outputs_name_their_own_manifest(tmp_path):
    """android-assets replaces the app's models folder: only one it wrote (assets.json)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "notes.txt").write_text("mine")
    refused = pytest.raises(MfnError, match=r"not a previous mfn-deploy export \(no valid assets")
    with refused, staged_directory(models, True, manifest="assets.json"):
        pytest.fail("refused before the block runs")
    assert [p.name for p in tmp_path.iterdir()] == ["models"]
    (models / "assets.json").write_text('{"format": "mfn-deploy/android-assets-v1"}')
    with staged_directory(models, True, manifest="assets.json") as stage:
        (stage / "assets.json").write_text('{"format": "mfn-deploy/android-assets-v1"}')
    assert [p.name for p in models.iterdir()] == ["assets.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["models"]


def test_force_never_replaces_the_working_directory_or_its_parents(out, monkeypatch):
    inner = out / "sub"
    inner.mkdir()
    monkeypatch.chdir(inner)
    for target in (out, Path(".."), Path("../sub/..")):
        with pytest.raises(MfnError, match="refusing to replace the current directory"):
            check_replaceable(target, force=True)


def test_force_never_replaces_a_folder_holding_a_source_at_any_depth(out, tmp_path):
    nested = out / "runs" / "model.onnx"
    nested.parent.mkdir()
    nested.write_bytes(b"onnx")
    link = out / "link.onnx"
    link.symlink_to(tmp_path / "elsewhere.onnx")  # the name lives in out, the bytes do not
    for src in (nested, link, out / "runs" / ".." / "runs" / "model.onnx"):
        with pytest.raises(MfnError, match=rf"{out}: refusing to replace: it holds .*, a source"):
            check_replaceable(out, force=True, sources=[src])
    check_replaceable(out, force=True, sources=[tmp_path / "elsewhere.onnx"])


def _refusal_case(case: str, out: Path, tmp_path: Path) -> tuple[list, Path, Path, str]:
    """(export arguments, cwd, the folder that must stay untouched, expected message)."""
    if case == "user files":
        user = tmp_path / "photos"
        user.mkdir()
        (user / "holiday.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        return [*SMALL, "--out", user], tmp_path, user, "not a previous mfn-deploy export"
    if case == "checkpoint source":
        # A training run that also looks like an export: only the source rule can save it.
        ckpt = out / "t4" / "final.pt"
        ckpt.parent.mkdir()
        ckpt.write_bytes(b"weights the user trained for a week")
        args = ["--checkpoint", ckpt, "--random-inputs", "1", "--out", out]
        return args, tmp_path, out, f"it holds {ckpt}, a source of this export"
    assert case == "cwd"
    return [*SMALL, "--out", "."], out, out, "refusing to replace the current directory"


@pytest.mark.parametrize("case", ["user files", "checkpoint source", "cwd"])
def test_refused_force_is_one_line_and_changes_nothing(case, out, tmp_path):
    args, cwd, kept, reason = _refusal_case(case, out, tmp_path)
    files = {p: p.read_bytes() for p in sorted(kept.rglob("*")) if p.is_file()}
    around = sorted(p.name for p in kept.parent.iterdir())

    r = run_cli("export", *args, "--force", cwd=cwd)

    assert r.returncode == 1, r.stdout
    assert r.stderr.startswith("error: ")
    assert reason in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert {p: p.read_bytes() for p in sorted(kept.rglob("*")) if p.is_file()} == files
    assert sorted(p.name for p in kept.parent.iterdir()) == around  # no lock, staging, .old-


def test_force_replaces_a_previous_export(out):
    (out / "stale.txt").write_text("from an older export")
    before = json.loads((out / "manifest.json").read_text())

    result = export(_small(out, force=True, seed=1), faces=face_inputs)

    assert not (out / "stale.txt").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest != before
    verify_artifacts(out, manifest)
    assert [p.name for p in out.parent.iterdir()] == ["out"]


# --- two exports, one directory ---------------------------------------------------------


def test_a_second_export_to_the_same_directory_fails_at_once(out):
    parent = out.parent
    first = _start("export", *SMALL, "--out", out, "--force")
    try:
        _wait_for(lambda: _staging(parent), first, "the first export's staging directory")
        first.send_signal(signal.SIGSTOP)  # hold it mid-export, however fast this machine is
        second = run_cli("export", *SMALL, "--out", out, "--force")
        first.send_signal(signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=TIMEOUT)
    finally:
        first.kill()

    assert second.returncode == 1
    assert second.stderr == (
        f"error: {out}: another mfn-deploy export to this directory is running (pid {first.pid})\n"
    )
    assert "exported" not in second.stdout
    assert first.returncode == 0, stderr
    assert f"exported mobilefacenet_96x96 to {out}" in stdout
    verify_artifacts(out, json.loads((out / "manifest.json").read_text()))
    assert [p.name for p in parent.iterdir()] == ["out"]  # the lock file went with its owner


# --- signals ------------------------------------------------------------------------------


# A child inherits an ignored SIGINT (a background job of a script): ^C tests mean nothing then.
needs_sigint = pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) == signal.SIG_IGN, reason="SIGINT is ignored here"
)


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=needs_sigint)],
)
def test_a_signal_mid_export_is_one_line_and_keeps_the_previous_export(sig, code, out):
    parent, before = out.parent, _snapshot(out)
    proc = _start("export", *SMALL, "--out", out, "--force")
    try:
        _wait_for(lambda: _staging(parent), proc, "the staging directory")
        # Hold it mid-export: on a loaded machine this test may not run again before a
        # small export finishes, and then the signal would land after the work.
        proc.send_signal(signal.SIGSTOP)
        assert _staging(parent), "the export finished before it could be held"
        proc.send_signal(sig)  # pending until it runs again
        proc.send_signal(signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()

    assert proc.returncode == code, (stdout, stderr)
    assert stderr.strip() == "error: interrupted"  # click adds a blank line after a ^C echo
    assert "exported" not in stdout
    assert _snapshot(out) == before
    assert [p.name for p in parent.iterdir()] == ["out"]


def test_a_signal_whose_interrupt_was_swallowed_still_stops_the_swap(out, monkeypatch):
    """A library can eat the KeyboardInterrupt a signal raises (seen: one landing in
    torch's deepcopy inside torch.fx's fuse, under load, let the export finish with exit
    0). The CLI's handler remembers the signal, and no export is committed after one."""
    from mfn_deploy import errors

    parent, before = out.parent, _snapshot(out)
    monkeypatch.setattr(errors, "_received", [signal.SIGTERM])  # received, then swallowed
    with pytest.raises(errors.Interrupted) as e:
        export(_small(out, force=True), faces=face_inputs)
    assert e.value.signum == signal.SIGTERM
    assert _snapshot(out) == before
    assert [p.name for p in parent.iterdir()] == ["out"]


@needs_sigint
def test_a_sigint_during_the_slow_imports_is_one_line(tmp_path):
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc to see when torch is being loaded")
    proc = _start("export", *SMALL, "--out", tmp_path / "out")
    loading = Path(f"/proc/{proc.pid}/maps")
    try:
        _wait_for(lambda: "libtorch" in loading.read_text(), proc, "torch to start loading")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()

    assert proc.returncode == 130, stderr
    assert stderr.strip() == "error: interrupted"
    assert list(tmp_path.iterdir()) == []


def test_importing_the_cli_loads_no_torch():
    probe = "import sys, mfn_deploy.cli; print(sorted({'torch', 'onnx'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_leftovers_of_a_killed_export_are_swept_by_the_next(out):
    parent, before = out.parent, _snapshot(out)
    proc = _start("export", *SMALL, "--out", out, "--force")
    try:
        _wait_for(lambda: _staging(parent), proc, "the staging directory")
        proc.kill()
        proc.wait(timeout=TIMEOUT)
    finally:
        proc.kill()
    orphans = _staging(parent)
    assert len(orphans) == 1
    assert orphans[0].name.startswith(f".out.staging-{proc.pid}-")
    assert (parent / ".out.lock").read_text() == f"{proc.pid}\n"  # flock died with it
    assert _snapshot(out) == before
    alive = parent / f".out.staging-{os.getpid()}-busy"  # a live owner: not ours to delete
    alive.mkdir()

    export(_small(out, force=True), faces=face_inputs)

    assert sorted(p.name for p in parent.iterdir()) == sorted(["out", alive.name])
    verify_artifacts(out, json.loads((out / "manifest.json").read_text()))


def test_a_previous_export_parked_by_a_killed_swap_is_put_back(out):
    """SIGKILL between the swap's two renames leaves out missing, its files in .old-."""
    parent, before = out.parent, _snapshot(out)
    parked = parent / f".out.old-{_reaped_pid()}-x1y2"
    parked.mkdir()
    out.replace(parked / "out")

    with pytest.raises(MfnError, match="output directory exists"), staged_directory(out, False):
        pass

    assert _snapshot(out) == before
    assert [p.name for p in parent.iterdir()] == ["out"]
