"""Writing files safely, their sha256, and the user cache every command shares.

``atomic_write`` is the one way this package writes a file that someone may read:
the bytes go to a temporary file next to the target, which replaces it by one
rename only when the writer finished. On any failure the temporary file is
removed and the target is left as it was; a full disk is one line,
``out of space writing PATH``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mfn_deploy.errors import MfnError

_FULL = (errno.ENOSPC, errno.EDQUOT)
# Tools that report a full disk in their own words (torch's "file write failed", a
# False from cv2.imwrite) are believed to have hit it when less than this is left.
_NEARLY_FULL_BYTES = 1 << 20


def cache_root() -> Path:
    """Where builds and derived exports are cached: $MFN_DEPLOY_CACHE, else XDG's cache."""
    if os.environ.get("MFN_DEPLOY_CACHE"):
        return Path(os.environ["MFN_DEPLOY_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mfn-deploy"


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL_BYTES
    except OSError:
        return False


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it becomes ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix, so tools that pick a format by
    extension (``np.save``, ``cv2.imwrite``, matplotlib) write the right one. The
    file gets the permissions a plain ``open`` would give it (not mkstemp's 0600).
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent
        )
    except OSError as e:
        if e.errno in _FULL:
            raise MfnError(f"out of space writing {path}") from None
        raise MfnError(f"{path}: cannot write: {e.strerror}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o666 & ~umask())
        tmp.replace(path)
    except MfnError:
        raise
    except OSError as e:
        if e.errno in _FULL:
            raise MfnError(f"out of space writing {path}") from None
        raise
    except Exception:
        if _nearly_full(path.parent):
            raise MfnError(f"out of space writing {path}") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: object) -> None:
    """JSON, indented, atomically: a reader never sees half a file."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


@contextmanager
def cache_fill(entry: Path) -> Iterator[None]:
    """Serialise the processes that fill one cache entry: the later ones wait, then
    find it filled. (An export's own lock refuses a second writer outright, which is
    right for a user's --out but not for a cache that several commands share.)"""
    entry.parent.mkdir(parents=True, exist_ok=True)
    with (entry.parent / f".{entry.name}.fill.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
