"""``atomic_write``: the one way files are written: whole or not at all, a full disk in one line."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mfn_deploy.errors import MfnError
from mfn_deploy.files import atomic_write, write_json


def test_the_file_appears_whole_with_ordinary_permissions(tmp_path):
    target = tmp_path / "emb.npy"
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".emb.npy.")
        assert tmp.suffix == ".npy"  # tools that pick a format by extension see the right one
        assert not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["emb.npy"]


def test_a_failure_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "report.json"
    write_json(target, {"old": True})
    with pytest.raises(RuntimeError, match="writer broke"), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer broke")
    assert target.read_text() == '{\n  "old": true\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    target = tmp_path / "final.pt"
    with pytest.raises(MfnError) as e, atomic_write(target) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(e.value) == f"out of space writing {target}"
    assert list(tmp_path.iterdir()) == []


def test_a_writer_that_hits_dev_full_is_reported_as_out_of_space(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    target = tmp_path / "x.bin"
    with pytest.raises(MfnError, match=r"^out of space writing"), atomic_write(target) as tmp:
        tmp.unlink()
        tmp.symlink_to("/dev/full")  # every write to it fails with ENOSPC
        with tmp.open("wb") as f:
            f.write(b"x" * 65536)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_is_one_line(tmp_path):
    with pytest.raises(MfnError, match=r"missing/x.json: cannot write: No such file"):
        write_json(tmp_path / "missing" / "x.json", {})
