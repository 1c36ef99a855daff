from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real entry point, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mfn_deploy", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=cwd,
    )


@pytest.fixture(scope="session")
def mfn_export(tmp_path_factory) -> Path:
    """One fp32 + fp16 export of the default MobileFaceNet, shared by many tests."""
    from mfn_deploy.pipeline import ExportOptions, export

    out = tmp_path_factory.mktemp("exports") / "mobilefacenet"
    export(ExportOptions(out=out, model="mobilefacenet", fp16=True))
    return out
