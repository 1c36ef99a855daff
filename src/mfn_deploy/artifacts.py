"""Names of everything an export writes, and the helpers that write it safely.

Every output name derives from ``ArtifactNames``, so the CLI, the manifest, the
checker and the benchmarks agree on where things are.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mfn_deploy.errors import MfnError


@dataclass(frozen=True)
class ArtifactNames:
    model: str

    @property
    def folded(self) -> str:
        return f"{self.model}.folded.pt"

    @property
    def raw_onnx(self) -> str:
        return f"{self.model}.raw.onnx"

    @property
    def onnx(self) -> str:  # the simplified ONNX: the one to ship
        return f"{self.model}.onnx"

    def ncnn_param(self, fp16: bool = False) -> str:
        return f"{self.model}{'.fp16' if fp16 else ''}.ncnn.param"

    def ncnn_bin(self, fp16: bool = False) -> str:
        return f"{self.model}{'.fp16' if fp16 else ''}.ncnn.bin"

    manifest = "manifest.json"
    parity = "parity.json"


def cache_root() -> Path:
    """Where builds and derived exports are cached: $MFN_DEPLOY_CACHE, else XDG's cache."""
    if os.environ.get("MFN_DEPLOY_CACHE"):
        return Path(os.environ["MFN_DEPLOY_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mfn-deploy"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe(path: Path) -> dict:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_of(path)}


def write_json(path: Path, obj: object) -> None:
    """Write JSON atomically: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        Path(tmp).chmod(0o666 & ~_umask())  # mkstemp's 0600 would surprise other users
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged_directory(out: Path, force: bool) -> Iterator[Path]:
    """Yield a fresh directory that replaces ``out`` only if the block succeeds.

    The staging directory sits next to ``out`` (same filesystem, so the final rename
    is atomic); on any failure it is removed and ``out`` is left untouched.
    """
    if out.exists() and not force:
        raise MfnError(f"{out}: output directory exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise MfnError(f"{out}: exists and is not a directory")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=parent))
        stage.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would outlive the rename
    except OSError as e:
        raise MfnError(f"{out}: cannot create output directory: {e.strerror}") from None
    try:
        yield stage
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            out.replace(old / out.name)
            stage.replace(out)
            shutil.rmtree(old)
        else:
            stage.replace(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
