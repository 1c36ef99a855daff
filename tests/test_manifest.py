"""One reader for every manifest: whatever is wrong with it is one line naming file and problem."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import run_cli
from mfn_deploy.errors import MfnError
from mfn_deploy.export.manifest import (
    DETECTOR,
    EMBEDDER,
    read_detector_manifest,
    read_manifest,
    verify_artifacts,
)

GOOD = {
    "format": EMBEDDER.format,
    "model": "m",
    "source": {"kind": "default"},
    "input": {"height": 112, "width": 112},
    "ncnn_blobs": {"inputs": ["in0"], "outputs": ["out0"]},
    "artifacts": {"onnx": {"file": "m.onnx", "bytes": 1, "sha256": "0" * 64}},
}


def _write(tmp_path, content) -> object:
    d = tmp_path / "export"
    d.mkdir(exist_ok=True)
    text = content if isinstance(content, str | bytes) else json.dumps(content)
    (d / "manifest.json").write_bytes(text.encode() if isinstance(text, str) else text)
    return d


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", r"not valid JSON \(Expecting property name enclosed in double quotes"),
        (b"\xff\xfe", r"not valid JSON \(not UTF-8 text\)"),
        ([1, 2], "not a manifest: the top level is a list"),
        ("null", "not a manifest: the top level is null"),
        ({"format": "someone-else/v1"}, "not an export manifest \\(format 'someone-else/v1'"),
        ({k: v for k, v in GOOD.items() if k != "artifacts"}, "missing key 'artifacts'"),
        (GOOD | {"input": [112, 112]}, "'input' is a list, expected an object"),
        (GOOD | {"input": {"height": 112}}, "input 'width' missing or not an integer"),
        (GOOD | {"artifacts": {"onnx": "m.onnx"}}, "artifact 'onnx' needs a 'file' and a 'sha256'"),
    ],
)
def test_a_bad_embedder_manifest_is_one_line(tmp_path, content, problem):
    d = _write(tmp_path, content)
    with pytest.raises(MfnError, match=problem) as e:
        read_manifest(d)
    assert str(e.value).startswith(f"{d / 'manifest.json'}: ")
    assert "\n" not in str(e.value)


def test_the_same_reader_reads_detector_manifests(tmp_path):
    d = _write(tmp_path, GOOD)
    with pytest.raises(MfnError, match="not a detector export manifest"):
        read_detector_manifest(d)
    net = {
        "artifacts": {"onnx": {"file": "pnet.onnx", "sha256": "0" * 64}},
        "ncnn_blobs": {"inputs": ["in0"], "outputs": ["out0"]},
    }
    good = {"format": DETECTOR.format, "input": {}, "weights": {}, "nets": {"pnet": net}}
    assert read_detector_manifest(_write(tmp_path, good), verify=False)["nets"]["pnet"] == net
    with pytest.raises(MfnError, match=r"pnet\.onnx: listed in the manifest but missing"):
        read_detector_manifest(_write(tmp_path, good))
    with pytest.raises(MfnError, match="net 'pnet' lists no artifacts"):
        read_detector_manifest(_write(tmp_path, good | {"nets": {"pnet": []}}))
    no_blobs = good | {"nets": {"pnet": {"artifacts": net["artifacts"]}}}
    with pytest.raises(MfnError, match="net 'pnet': 'ncnn_blobs' missing or not an object"):
        read_detector_manifest(_write(tmp_path, no_blobs), verify=False)
    with pytest.raises(MfnError, match=r"not a detector export \(no manifest.json\); run export"):
        read_detector_manifest(tmp_path)
    with pytest.raises(MfnError, match="export directory not found"):
        read_manifest(tmp_path / "absent")


def test_verify_artifacts_names_the_changed_file(mfn_export, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(mfn_export, copy)
    manifest = read_manifest(copy)
    assert set(verify_artifacts(copy, manifest)) == set(manifest["artifacts"])
    (copy / "mobilefacenet.onnx").unlink()
    with pytest.raises(MfnError, match=r"mobilefacenet\.onnx: listed in the manifest but missing"):
        verify_artifacts(copy, manifest)


def test_check_on_a_broken_manifest_is_one_line(tmp_path):
    d = _write(tmp_path, [1, 2])
    r = run_cli("check", d)
    assert r.returncode == 1
    assert r.stderr == f"error: {d / 'manifest.json'}: not a manifest: the top level is a list\n"


def test_artifacts_are_hashed_once_per_process_unless_they_change(
    mfn_export, tmp_path, monkeypatch
):
    from mfn_deploy.export import manifest as manifest_module

    copy = tmp_path / "copy"
    shutil.copytree(mfn_export, copy)
    calls = []
    real = manifest_module.sha256_of
    monkeypatch.setattr(manifest_module, "sha256_of", lambda p: calls.append(p) or real(p))
    manifest = read_manifest(copy)  # verifies every artifact
    first = len(calls)
    assert first == len(manifest["artifacts"])
    read_manifest(copy)
    assert len(calls) == first  # cached by path, mtime and size
    onnx = copy / "mobilefacenet.onnx"
    data = onnx.read_bytes()
    onnx.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, new mtime
    with pytest.raises(MfnError, match=r"mobilefacenet\.onnx: sha256 differs from the manifest"):
        read_manifest(copy)
    onnx.write_bytes(b"short")
    with pytest.raises(MfnError, match=r"mobilefacenet\.onnx: 5 bytes, the manifest records \d+"):
        read_manifest(copy)
