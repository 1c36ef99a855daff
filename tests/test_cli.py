"""The CLI through its real entry point, as a user runs it."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli as run
from mfn_deploy import __version__


@pytest.fixture(scope="module")
def info_json():
    r = run("info", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_info_json_lists_every_network_with_the_documented_keys(info_json):
    assert len(info_json) == 12  # Table 2's eleven and the pretrained mobilefacenet_tf
    for row in info_json:
        assert set(row) == {
            "name",
            "input_size",
            "embedding_dim",
            "params",
            "madds",
            "size_mb",
            "paper_ms",
        }
    by_name = {r["name"]: r for r in info_json}
    assert by_name["mobilefacenet"]["input_size"] == [112, 112]
    assert by_name["mobilefacenet_112x96"]["input_size"] == [112, 96]
    assert by_name["mobilefacenet"]["paper_ms"] == 24
    assert by_name["mobilefacenet_tf"]["paper_ms"] is None  # not in the paper


def test_info_json_is_quiet_in_a_pipe(info_json):
    r = run("info", "--json")
    assert r.stderr == ""  # no progress bar when stderr is not a terminal


def test_info_table_has_one_row_per_network(info_json):
    r = run("info")
    assert r.returncode == 0
    lines = r.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["name", "input"]
    assert [ln.split()[0] for ln in lines[2:]] == [x["name"] for x in info_json]
    assert "221M" in next(ln for ln in lines if ln.startswith("mobilefacenet "))


def test_version():
    r = run("--version")
    assert r.returncode == 0
    assert __version__ in r.stdout


def test_help_on_every_command():
    from mfn_deploy.cli import cli

    for name in ["", *cli.commands]:
        r = run(*([name] if name else []), "--help")
        assert r.returncode == 0, name
        assert "Usage: mfn-deploy" in r.stdout


def test_usage_error_is_one_line_and_nonzero():
    r = run("no-such-command")
    assert r.returncode == 2
    assert r.stderr.startswith("error: No such command 'no-such-command'")
    assert len(r.stderr.strip().splitlines()) == 1
