"""Output directories that appear whole or not at all, and never replace the wrong thing.

``staged_directory`` is how every export (embedder, detector, the app's assets)
writes a directory: built in a staging directory next to it, swapped in by renames
once complete, under a lock that keeps a second writer out; ``check_replaceable``
is what ``--force`` may replace. File names come from ``stages.ArtifactNames``.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mfn_deploy.errors import MfnError, raise_if_interrupted
from mfn_deploy.export.manifest import MANIFEST, written_by_us
from mfn_deploy.files import sha256_of, umask


def describe(path: Path) -> dict:
    """A manifest's record of one artifact."""
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_of(path)}


@contextmanager
def _deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM over the two renames of a swap, then deliver them.

    Between the renames ``out`` does not exist: an interrupt there would leave the
    previous export parked in a hidden ``.old-`` directory instead of in place.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers run in the main thread: this one is never interrupted
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(s, lambda n, _f: caught.append(n)) for s in held]
    try:
        yield
    finally:
        for s, handler in zip(held, previous, strict=True):
            signal.signal(s, handler)
        for n in caught[:1]:
            signal.raise_signal(n)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextmanager
def _exclusive(out: Path, target: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` next to ``out``: a second export to it fails at once.

    The file holds the owner's pid, for the message. It is removed on release, which
    is safe because the owner unlinks it while still holding the lock and a new owner
    checks that the file it locked is still the one at that path (else it retries).
    """
    path = target.parent / f".{target.name}.lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise MfnError(f"{out}: cannot create lock file {path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise MfnError(
                f"{out}: another mfn-deploy export to this directory is running (pid {pid})"
            ) from None
        except OSError as e:
            os.close(fd)
            raise MfnError(f"{out}: cannot lock {path}: {e.strerror}") from None
        try:
            if os.path.samestat(os.fstat(fd), path.stat()):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _sweep(target: Path) -> None:
    """Remove staging and old directories that exports killed outright left next to ``target``."""
    leftover = re.compile(rf"\.{re.escape(target.name)}\.(staging|old)-(\d+)-.+")
    for entry in target.parent.iterdir():
        m = leftover.fullmatch(entry.name)
        if m is None or _alive(int(m[2])):
            continue
        parked = entry / target.name
        if m[1] == "old" and parked.is_dir() and not os.path.lexists(target):
            parked.replace(target)  # killed between the renames of a swap: put it back
        shutil.rmtree(entry, ignore_errors=True)


def check_replaceable(
    out: Path, force: bool, sources: Iterable[Path] = (), manifest: str = MANIFEST
) -> None:
    """Refuse to replace ``out`` unless it is absent or (with ``force``) a previous export.

    ``--force`` exists to redo an export; it must never delete the user's files, the
    checkpoint being exported, or the directory the user stands in.
    """
    if not os.path.lexists(out):
        return
    if not force:
        raise MfnError(f"{out}: output directory exists; pass --force to replace it")
    if not out.is_dir():
        raise MfnError(f"{out}: exists and is not a directory")
    real = out.resolve()
    if Path.cwd().resolve().is_relative_to(real):
        raise MfnError(f"{out}: refusing to replace the current directory or one of its parents")
    for src in sources:
        # Where the bytes live and where the name lives: a link in out is lost with it too.
        if any(p.is_relative_to(real) for p in (src.resolve(), src.parent.resolve() / src.name)):
            raise MfnError(f"{out}: refusing to replace: it holds {src}, a source of this export")
    if not written_by_us(out, manifest):
        raise MfnError(
            f"{out}: refusing to replace: not a previous mfn-deploy export (no valid {manifest})"
        )


def _swap(stage: Path, target: Path) -> None:
    raise_if_interrupted()
    if not os.path.lexists(target):
        stage.replace(target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
    with _deferred_signals():
        target.replace(old / target.name)
        try:
            stage.replace(target)
        except OSError:
            (old / target.name).replace(target)  # on failure here, _sweep restores it later
            old.rmdir()
            raise
        shutil.rmtree(old)


@contextmanager
def staged_directory(
    out: Path, force: bool, sources: Iterable[Path] = (), manifest: str = MANIFEST
) -> Iterator[Path]:
    """Yield a fresh directory that replaces ``out`` only if the block succeeds.

    The staging directory sits next to ``out`` (same filesystem, so the final rename
    is atomic); on any failure it is removed and ``out`` is left untouched. A lock
    next to ``out`` keeps a second export out for the whole run, and ``out`` is
    checked with ``check_replaceable`` both before the work and at swap time.
    """
    sources = list(sources)
    # One canonical path: every spelling of out shares a lock, and "a/b/.." gets a real name.
    target = out.resolve()
    check_replaceable(out, force, sources, manifest)  # before creating anything
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MfnError(f"{out}: cannot create output directory: {e.strerror}") from None
    with _exclusive(out, target):
        _sweep(target)
        check_replaceable(out, force, sources, manifest)
        prefix = f".{target.name}.staging-{os.getpid()}-"  # the pid lets _sweep find orphans
        try:
            stage = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
            stage.chmod(0o777 & ~umask())  # mkdtemp's 0700 would outlive the rename
        except OSError as e:
            raise MfnError(f"{out}: cannot create output directory: {e.strerror}") from None
        try:
            yield stage
            check_replaceable(out, force, sources, manifest)  # changed behind our back?
            _swap(stage, target)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
