from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mfn_deploy.native import EMULATORS, runner_built

# `make test` builds the runners first and sets this: a missing runner is then a failure.
REQUIRE_NATIVE = os.environ.get("MFN_REQUIRE_NATIVE") == "1"


def needs_runner(target: str) -> pytest.MarkDecorator:
    """Skip without the built runner for `target` (and its emulator), unless required."""
    emulator = EMULATORS.get(target)
    missing = not runner_built(target) or (emulator and shutil.which(emulator) is None)
    return pytest.mark.skipif(
        not REQUIRE_NATIVE and bool(missing),
        reason=f"needs the {target} runner (`make native`)"
        + (f" and {emulator} (apt-get install -y qemu-user)" if emulator else ""),
    )


def run_cli(
    *args: object, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """The real entry point, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mfn_deploy", *map(str, args)],
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
