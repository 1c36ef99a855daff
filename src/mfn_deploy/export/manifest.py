"""The manifests exports write: their formats, and the one reader and verifier of them.

An embedder export (``mfn-deploy export``) and a detector export (``export-detector``)
each write ``manifest.json``: the format, the preprocessing contract, every artifact
with its size and sha256, the tool versions. ``read_manifest`` reads either kind and
turns every way a manifest can be wrong (missing, not JSON, not an object, another
format, a missing or mistyped key) into one line naming the file and the problem;
``verify_file`` / ``verify_artifacts`` check files against their recorded size and
sha256. Reading a manifest verifies every artifact it lists, so every command that
loads an export (``embed``, ``compare``, ``bench --export``, the cached detector) runs
only the bytes that were exported; each file is hashed once per process (cached by
path, mtime and size).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path

from mfn_deploy import __version__
from mfn_deploy.errors import MfnError
from mfn_deploy.files import sha256_of

MANIFEST = "manifest.json"
PARITY = "parity.json"
TOOLS = ("torch", "onnx", "onnxsim", "onnxruntime", "pnnx", "ncnn")


def tool_versions() -> dict[str, str]:
    return {t: importlib.metadata.version(t) for t in TOOLS} | {"mfn-deploy": __version__}


@dataclass(frozen=True)
class Kind:
    """One kind of export: its format string and the keys its readers rely on."""

    what: str  # in messages: "an export", "a detector export"
    format: str
    keys: dict[str, type]  # top-level key -> the JSON type it must have
    how: str = ""  # how to make one, appended to "not found" messages

    def describe_missing(self, directory: Path) -> str:
        return f"{directory}: not {self.what} (no {MANIFEST}){self.how}"


EMBEDDER = Kind(
    "an export",
    "mfn-deploy/export-v1",
    {
        "model": str,
        "source": dict,
        "input": dict,
        "ncnn_blobs": dict,
        "artifacts": dict,
    },
)
DETECTOR = Kind(
    "a detector export",
    "mfn-deploy/detector-v1",
    {"input": dict, "nets": dict, "weights": dict},
    "; run export-detector",
)
MANIFEST_FORMAT = EMBEDDER.format
DETECTOR_FORMAT = DETECTOR.format
_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "a number"}


def _type_name(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return next((n for t, n in _JSON_TYPES.items() if isinstance(value, t)), "a number")


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MfnError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise MfnError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except OSError as e:
        raise MfnError(f"{path}: cannot read: {e.strerror}") from None
    if not isinstance(data, dict):
        raise MfnError(f"{path}: not a manifest: the top level is {_type_name(data)}")
    return data


def _check_artifacts(path: Path, where: str, artifacts: dict) -> None:
    for key, meta in artifacts.items():
        if not isinstance(meta, dict) or not all(
            isinstance(meta.get(k), str) for k in ("file", "sha256")
        ):
            raise MfnError(f"{path}: {where}artifact {key!r} needs a 'file' and a 'sha256'")


def _check_blobs(path: Path, where: str, blobs: dict) -> None:
    for key in ("inputs", "outputs"):
        names = blobs.get(key)
        if not (isinstance(names, list) and len(names) == 1 and isinstance(names[0], str)):
            raise MfnError(f"{path}: {where}ncnn_blobs {key!r} must be a list of one blob name")


def read_manifest(directory: Path, kind: Kind = EMBEDDER, verify: bool = True) -> dict:
    """The manifest of an export of ``kind`` in ``directory``, checked, or a one-line MfnError.

    With ``verify`` (the default) every artifact it lists must also be present with
    the recorded size and sha256.
    """
    path = directory / MANIFEST
    if not directory.is_dir():
        raise MfnError(f"{directory}: export directory not found")
    if not path.is_file():
        raise MfnError(kind.describe_missing(directory))
    manifest = _load(path)
    if manifest.get("format") != kind.format:
        raise MfnError(
            f"{path}: not {kind.what} manifest (format {manifest.get('format')!r}, "
            f"expected {kind.format!r})"
        )
    for key, typ in kind.keys.items():
        if key not in manifest:
            raise MfnError(f"{path}: missing key {key!r}")
        if not isinstance(manifest[key], typ):
            raise MfnError(
                f"{path}: {key!r} is {_type_name(manifest[key])}, expected {_JSON_TYPES[typ]}"
            )
    if kind is EMBEDDER:
        _check_artifacts(path, "", manifest["artifacts"])
        for key in ("height", "width"):
            if not isinstance(manifest["input"].get(key), int):
                raise MfnError(f"{path}: input {key!r} missing or not an integer")
        if not isinstance(manifest["source"].get("kind"), str):
            raise MfnError(f"{path}: source 'kind' missing or not a string")
        _check_blobs(path, "", manifest["ncnn_blobs"])
    else:
        for name, net in manifest["nets"].items():
            if not isinstance(net, dict) or not isinstance(net.get("artifacts"), dict):
                raise MfnError(f"{path}: net {name!r} lists no artifacts")
            _check_artifacts(path, f"net {name!r}: ", net["artifacts"])
            if not isinstance(net.get("ncnn_blobs"), dict):
                raise MfnError(f"{path}: net {name!r}: 'ncnn_blobs' missing or not an object")
            _check_blobs(path, f"net {name!r}: ", net["ncnn_blobs"])
    if verify:
        nets = manifest["nets"].values() if kind is DETECTOR else [manifest]
        for entry in nets:
            verify_artifacts(directory, entry)
    return manifest


def read_detector_manifest(directory: Path, verify: bool = True) -> dict:
    return read_manifest(directory, DETECTOR, verify)


def written_by_us(directory: Path, manifest: str = MANIFEST) -> bool:
    """Whether ``directory`` holds a manifest this tool wrote (any kind: export, assets)."""
    try:
        data = json.loads((directory / manifest).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and str(data.get("format", "")).startswith("mfn-deploy/")


# (real path, mtime_ns, size) -> sha256: a file is hashed once per process unless it changes.
_HASHED: dict[tuple[str, int, int], str] = {}


def _sha256_cached(path: Path, st: os.stat_result) -> str:
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
    if key not in _HASHED:
        _HASHED[key] = sha256_of(path)
    return _HASHED[key]


def verify_file(path: Path, meta: dict) -> Path:
    """``path``, present and byte-identical to what a manifest recorded in ``meta``.

    The size is compared first (a truncated copy is named as such without hashing);
    the sha256 is computed once per process for each (path, mtime, size).
    """
    try:
        st = path.stat()
    except OSError:
        st = None
    if st is None or not path.is_file():
        raise MfnError(f"{path}: listed in the manifest but missing")
    expected = meta.get("bytes")
    if isinstance(expected, int) and st.st_size != expected:
        raise MfnError(
            f"{path}: {st.st_size} bytes, the manifest records {expected} "
            "(truncated or changed since export)"
        )
    try:
        digest = _sha256_cached(path, st)
    except OSError as e:
        raise MfnError(f"{path}: cannot read: {e.strerror}") from None
    if digest != meta["sha256"]:
        raise MfnError(f"{path}: sha256 differs from the manifest (file changed since export)")
    return path


def verify_artifacts(directory: Path, manifest: dict) -> dict[str, Path]:
    """Every artifact the manifest lists, present and byte-identical: key -> path."""
    return {
        key: verify_file(directory / meta["file"], meta)
        for key, meta in manifest["artifacts"].items()
    }


def artifact_path(directory: Path, manifest: dict, key: str, required: bool = True) -> Path | None:
    """Where ``manifest`` (an export's, or one detector net's) puts artifact ``key``.

    A listed file that is missing is an error; an unlisted one is too when
    ``required``, else None.
    """
    meta = manifest["artifacts"].get(key)
    if meta is None:
        if required:
            raise MfnError(f"{directory / MANIFEST}: lists no {key!r} artifact")
        return None
    path = directory / meta["file"]
    if not path.is_file():
        raise MfnError(f"{path}: listed in the manifest but missing")
    return path
