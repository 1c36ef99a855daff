from __future__ import annotations

import collections
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
_forkserver = None if os.environ.get("MFN_TEST_FORKSERVER") == "0" else _ForkserverClient()
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
    if _forkserver is not None:
        try:
            proc = _forkserver.run(argv, None if cwd is None else str(cwd), env, timeout=600)
            _cli_runs["forked"] += 1
            return proc
        except ForkserverUnavailableError as e:
            _cli_runs[f"fresh interpreter: {e}"] += 1
    else:
        _cli_runs["fresh interpreter: MFN_TEST_FORKSERVER=0"] += 1
    return subprocess.run(
        [sys.executable, "-m", "mfn_deploy", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="session")
def mfn_export(tmp_path_factory) -> Path:
    """One fp32 + fp16 export of the default MobileFaceNet, shared by many tests."""
    from mfn_deploy.export.plan import ExportOptions, export
    from mfn_deploy.face.samples import face_inputs

    out = tmp_path_factory.mktemp("exports") / "mobilefacenet"
    export(ExportOptions(out=out, model="mobilefacenet", fp16=True), faces=face_inputs)
    return out


def pytest_terminal_summary(terminalreporter) -> None:
    """How run_cli ran its commands (forked from the import-once server, or fresh)."""
    if _cli_runs:
        terminalreporter.write_line(
            "run_cli: " + ", ".join(f"{n} {how}" for how, n in sorted(_cli_runs.items()))
        )
