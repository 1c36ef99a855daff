from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_forkserver import Client as _ForkserverClient
from cli_forkserver import ForkserverUnavailableError
from mfn_deploy.native import EMULATORS, local_command, parse_output, runner_built

# `make test` builds the runners first and sets this: a missing runner is then a failure.
REQUIRE_NATIVE = os.environ.get("MFN_REQUIRE_NATIVE") == "1"


def _torch_threads() -> int | None:
    """torch's intra-op threads for a test process: the cores shared out among the
    pytest-xdist workers (None outside xdist: torch's default, every core).

    Two workers that each run torch with every core's worth of OpenMP threads fight
    over the cores: on a 2-core machine torch MTCNN's many small convolutions (every
    detection) then ran 5 to 10 times slower than with one thread each.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return None
    return max(1, len(os.sched_getaffinity(0)) // workers)


TORCH_THREADS = _torch_threads()
if TORCH_THREADS is not None:
    import torch

    torch.set_num_threads(TORCH_THREADS)
_forkserver = (
    None
    if os.environ.get("MFN_TEST_FORKSERVER") == "0"
    else _ForkserverClient(torch_threads=TORCH_THREADS)
)
_cli_runs: collections.Counter[str] = collections.Counter()


def needs_runner(target: str) -> pytest.MarkDecorator:
    """Skip without the built runner for `target` (and its emulator), unless required."""
    emulator = EMULATORS.get(target)
    missing = not runner_built(target) or (emulator and shutil.which(emulator) is None)
    return pytest.mark.skipif(
        not REQUIRE_NATIVE and bool(missing),
        reason=f"needs the {target} runner (`make native`)"
        + (f" and {emulator} (apt-get install -y qemu-user)" if emulator else ""),
    )


def run_runner(target: str, cpu: str | None, args: list[str], label: str | None = None) -> dict:
    """One mfn-bench run on this machine (ARM under qemu with CPU model ``cpu``): its
    parsed JSON; a failed run fails the test with the runner's own message."""
    proc = subprocess.run(
        [*local_command(target, cpu), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return parse_output(proc, label or cpu or target)


def _forked(how: str, argv: list[str], cwd: Path | None, env: dict[str, str] | None):
    """``how`` ("run" or "start") the CLI forked from the server; None where a fresh
    interpreter must run it (counted for the summary either way)."""
    if _forkserver is None:
        _cli_runs["fresh interpreter: MFN_TEST_FORKSERVER=0"] += 1
        return None
    try:
        proc = getattr(_forkserver, how)(argv, None if cwd is None else str(cwd), env, timeout=600)
    except ForkserverUnavailableError as e:
        _cli_runs[f"fresh interpreter: {e}"] += 1
        return None
    _cli_runs["forked"] += 1
    return proc


def run_cli(
    *args: object, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """The real entry point, as a user runs it: `python -m mfn_deploy ARGS` in its own
    process, with its own exit status, fds 0-2, cwd and environment.

    The process is forked from a server that has already imported torch and the other
    heavy libraries (tests/cli_forkserver.py), which saves seconds per call; where a
    fork could differ from a fresh interpreter (a start-up variable in `env`), or with
    MFN_TEST_FORKSERVER=0, a fresh interpreter runs it.
    """
    argv = [str(a) for a in args]
    proc = _forked("run", argv, cwd, env)
    if proc is not None:
        return proc
    return subprocess.run(
        [sys.executable, "-m", "mfn_deploy", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=cwd,
        env=env,
    )


def start_cli(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None):
    """`python -m mfn_deploy ARGS` started, not waited for: a ``subprocess.Popen`` with
    stdout and stderr piped as text (or the part of it a forked process offers:
    ``pid``, ``poll``, ``send_signal``, ``communicate``, ``returncode``), forked from
    the server as in ``run_cli``, else a fresh interpreter."""
    argv = [str(a) for a in args]
    proc = _forked("start", argv, cwd, env)
    if proc is not None:
        return proc
    return subprocess.Popen(
        [sys.executable, "-m", "mfn_deploy", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
    )


@contextlib.contextmanager
def _locked(path: Path):
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def mfn_export(tmp_path_factory) -> Path:
    """One fp32 + fp16 export of the default MobileFaceNet, shared by many tests.

    Made once per test run: under pytest-xdist the first worker that needs it exports
    it into the run's temporary folder (the workers' common parent) while the others
    wait on a lock, then all read the same files (no test writes into them). An
    export is written whole or not at all, so a manifest means it is complete.
    """
    from mfn_deploy.export.plan import ExportOptions, export
    from mfn_deploy.face.samples import face_inputs

    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "shared-exports"  # this run's
        shared.mkdir(exist_ok=True)
        out = shared / "mobilefacenet"
        with _locked(shared / ".lock"):
            if not (out / "manifest.json").is_file():
                export(ExportOptions(out=out, model="mobilefacenet", fp16=True), faces=face_inputs)
        return out
    out = tmp_path_factory.mktemp("exports") / "mobilefacenet"
    export(ExportOptions(out=out, model="mobilefacenet", fp16=True), faces=face_inputs)
    return out


# `make test` runs the files on two workers (pytest-xdist --dist loadfile): each file
# whole on one worker, handed out in order whenever a worker is nearly done. xdist's
# own order (the files with most tests first) started test_device.py, the longest file,
# in the middle of the run and left one worker running it alone at the end. These go
# out first, longest first (seconds in a full `make test` on the 2-core machine; the
# first two are mostly qemu); every other file follows, most tests first as before.
LONGEST_FIRST = (
    "test_device.py",  # 155
    "test_pretrained.py",  # 92
    "test_export.py",  # 66
    "test_train.py",  # 45
    "test_android_host.py",  # 40
    "test_fault_matrix.py",  # 36
    "test_bench_host.py",  # 32
    "test_install.py",  # 27
    "test_export_safety.py",  # 25
    "test_int8.py",  # 25
    "test_native_export.py",  # 23
)


def pytest_configure(config) -> None:
    if getattr(config.option, "dist", "no") in ("loadfile", "loadscope"):
        config.option.loadscopereorder = False  # the order is LONGEST_FIRST's (below)


def pytest_collection_modifyitems(config, items) -> None:
    """Under xdist, the files in LONGEST_FIRST's order, then the rest, most tests
    first; tests keep their order within a file."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    count = collections.Counter(item.path for item in items)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -count[item.path]))


def pytest_terminal_summary(terminalreporter) -> None:
    """How run_cli ran its commands (forked from the import-once server, or fresh)."""
    if _cli_runs:
        terminalreporter.write_line(
            "run_cli: " + ", ".join(f"{n} {how}" for how, n in sorted(_cli_runs.items()))
        )
