#!/usr/bin/env python3
"""Build ncnn from its source distribution (cached) and the mfn-bench runner.

Usage, from the repository root:

    .venv/bin/python tools/build_native.py [--targets host,arm64-v8a,armeabi-v7a]

Outputs land in build/native/<target>/mfn-bench. The ncnn static library is
built once per (version, target, flags) and kept in the user cache:
$MFN_DEPLOY_CACHE, else $XDG_CACHE_HOME/mfn-deploy, else ~/.cache/mfn-deploy.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Run with the project's .venv, where mfn_deploy is installed: one definition of the
# cache location and of file hashing for the whole project.
from mfn_deploy.artifacts import cache_root, sha256_of

# Must match the ncnn Python wheel so runner results compare like for like.
NCNN_VERSION = "1.0.20261020"
NCNN_SDIST_SHA256 = "ad8cdd63e9755cfa8e23b9b6d9ce46156077d80298a89e7c3ba325ffccfca200"

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNNER_SOURCE_DIR = REPO_ROOT / "src" / "native"
RUNNER_BUILD_ROOT = REPO_ROOT / "build" / "native"

# Everything not listed keeps ncnn's default. NCNN_VERSION must be given: the
# sdist's CMakeLists otherwise stamps *today's* date into the version string.
NCNN_CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DCMAKE_INSTALL_LIBDIR=lib",
    f"-DNCNN_VERSION={NCNN_VERSION.rsplit('.', 1)[1]}",
    "-DNCNN_VULKAN=OFF",
    "-DNCNN_OPENMP=ON",
    "-DNCNN_SHARED_LIB=OFF",
    "-DNCNN_BUILD_BENCHMARK=OFF",  # these three folders are not in the sdist
    "-DNCNN_BUILD_TOOLS=OFF",
    "-DNCNN_BUILD_EXAMPLES=OFF",
    "-DNCNN_BUILD_TESTS=OFF",
    "-DNCNN_PYTHON=OFF",
)


@dataclass(frozen=True)
class Target:
    name: str
    cc: str
    cxx: str
    apt_packages: tuple[str, ...]
    # Describes the toolchain to CMake; used for ncnn and the runner alike.
    toolchain_flags: tuple[str, ...]
    # Phones have no glibc/libgomp we could rely on: ARM runners are static.
    static: bool
    # Emulator to smoke-test the binary with, or None when it runs natively.
    emulator: str | None
    best_effort: bool


def _cross(processor: str, triple: str, extra_flags: str = "") -> tuple[str, ...]:
    flags = [
        "-DCMAKE_SYSTEM_NAME=Linux",
        f"-DCMAKE_SYSTEM_PROCESSOR={processor}",
        f"-DCMAKE_C_COMPILER={triple}-gcc",
        f"-DCMAKE_CXX_COMPILER={triple}-g++",
    ]
    if extra_flags:
        flags += [f"-DCMAKE_C_FLAGS={extra_flags}", f"-DCMAKE_CXX_FLAGS={extra_flags}"]
    return tuple(flags)


TARGETS = {
    "host": Target(
        "host", "gcc", "g++", ("g++",), (), static=False, emulator=None, best_effort=False
    ),
    "arm64-v8a": Target(
        "arm64-v8a",
        "aarch64-linux-gnu-gcc",
        "aarch64-linux-gnu-g++",
        ("g++-aarch64-linux-gnu",),
        _cross("aarch64", "aarch64-linux-gnu"),
        static=True,
        emulator="qemu-aarch64",
        best_effort=False,
    ),
    # Debian's armhf compiler defaults to VFPv3-D16 without NEON; ncnn's arm
    # kernels want NEON, which every armeabi-v7a phone has.
    "armeabi-v7a": Target(
        "armeabi-v7a",
        "arm-linux-gnueabihf-gcc",
        "arm-linux-gnueabihf-g++",
        ("g++-arm-linux-gnueabihf",),
        _cross("armv7-a", "arm-linux-gnueabihf", "-march=armv7-a -mfpu=neon -mfloat-abi=hard"),
        static=True,
        emulator="qemu-arm",
        best_effort=True,
    ),
}

# Where each tool comes from on Debian; used for the "apt-get install" hint.
TOOL_PACKAGES = {
    "cmake": "cmake",
    "make": "make",
    "qemu-aarch64": "qemu-user",
    "qemu-arm": "qemu-user",
}


class BuildError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[build_native] {message}", flush=True)


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(cmd: list[str], *, log_file: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    output = proc.stdout + proc.stderr
    if log_file is not None:
        with log_file.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{output}\n")
    if proc.returncode != 0:
        where = f" (full log: {log_file})" if log_file is not None else ""
        raise BuildError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}{where}\n{tail(output)}"
        )
    return proc.stdout


# --- prerequisites ---------------------------------------------------------

APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


@functools.cache
def apt_update() -> None:
    """Once per invocation, however many targets need packages."""
    log("apt-get update")
    run(["apt-get", "update"], env=APT_ENV)


def apt_install(packages: list[str]) -> None:
    apt_update()
    log(f"apt-get install -y {' '.join(packages)}")
    run(["apt-get", "install", "-y", *packages], env=APT_ENV)


def ensure_tools(required: dict[str, str], optional: dict[str, str]) -> set[str]:
    """Install (as root) or explain how to install missing tools.

    `required` and `optional` map executable -> Debian package. Returns the
    optional executables that are still missing.
    """
    missing_req = {exe: pkg for exe, pkg in required.items() if shutil.which(exe) is None}
    missing_opt = {exe: pkg for exe, pkg in optional.items() if shutil.which(exe) is None}
    packages = sorted(set(missing_req.values()) | set(missing_opt.values()))
    if packages and os.geteuid() == 0 and shutil.which("apt-get"):
        apt_install(packages)
        missing_req = {e: p for e, p in missing_req.items() if shutil.which(e) is None}
        missing_opt = {e: p for e, p in missing_opt.items() if shutil.which(e) is None}
    if missing_req:
        pkgs = " ".join(sorted(set(missing_req.values()) | set(missing_opt.values())))
        raise BuildError(
            f"missing {', '.join(sorted(missing_req))}; install with: apt-get install -y {pkgs}"
        )
    for exe, pkg in missing_opt.items():
        log(
            f"warning: {exe} not found, skipping its checks; install with: apt-get install -y {pkg}"
        )
    return set(missing_opt)


# --- ncnn source distribution ----------------------------------------------


def fetch_sdist(cache: Path) -> Path:
    dest = cache / "sdist" / f"ncnn-{NCNN_VERSION}.tar.gz"
    if dest.is_file() and sha256_of(dest) == NCNN_SDIST_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log(f"downloading ncnn=={NCNN_VERSION} sdist with pip")
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        # The sdist's setup.py reports a date-based version, so the normal
        # resolver rejects it as not matching the pin; the legacy one accepts.
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--use-deprecated=legacy-resolver",
                "--dest",
                tmp,
                f"ncnn=={NCNN_VERSION}",
            ]
        )
        downloaded = Path(tmp) / dest.name
        if not downloaded.is_file():
            raise BuildError(
                f"pip did not produce {dest.name} in {tmp}: {sorted(Path(tmp).iterdir())}"
            )
        actual = sha256_of(downloaded)
        if actual != NCNN_SDIST_SHA256:
            raise BuildError(
                f"sha256 mismatch for {dest.name}: expected {NCNN_SDIST_SHA256}, got {actual}"
            )
        downloaded.replace(dest)
    return dest


# --- ncnn library ----------------------------------------------------------


def ncnn_cmake_args(target: Target) -> list[str]:
    return [*NCNN_CMAKE_FLAGS, *target.toolchain_flags]


def ncnn_cache_key(target: Target) -> str:
    # The compiler version is part of the key so a toolchain upgrade rebuilds.
    compiler = (
        run([target.cxx, "-dumpfullversion"]).strip()
        + " "
        + run([target.cxx, "-dumpmachine"]).strip()
    )
    blob = json.dumps(
        {"sdist": NCNN_SDIST_SHA256, "cmake": ncnn_cmake_args(target), "cxx": compiler}
    )
    return f"{target.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def remove_stale_temp_dirs(parent: Path, key: str) -> None:
    for stale in parent.glob(f".tmp-{key}-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and pid_alive(int(pid)):
            continue
        shutil.rmtree(stale, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_ncnn(target: Target, cache: Path, sdist: Path, jobs: int) -> Path:
    """Return the install prefix of ncnn for `target`, building it if needed."""
    parent = cache / f"ncnn-{NCNN_VERSION}"
    key = ncnn_cache_key(target)
    prefix = parent / key
    # Only a finished build is ever renamed to `prefix`, so existence means done.
    if (prefix / "lib" / "cmake" / "ncnn" / "ncnnConfig.cmake").is_file():
        log(f"ncnn {NCNN_VERSION} for {target.name}: cached at {prefix}")
        return prefix

    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(parent, key)
    work = parent / f".tmp-{key}-{os.getpid()}"
    work.mkdir()
    log_file = parent / f"{key}.log"
    log_file.unlink(missing_ok=True)
    log(f"building ncnn {NCNN_VERSION} for {target.name} with {jobs} jobs (minutes)")
    log(f"build log: {log_file}")
    started = time.monotonic()
    try:
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        source = work / f"ncnn-{NCNN_VERSION}"
        build = work / "build"
        staged = work / "install"
        run(
            [
                "cmake",
                "-S",
                str(source),
                "-B",
                str(build),
                f"-DCMAKE_INSTALL_PREFIX={staged}",
                *ncnn_cmake_args(target),
            ],
            log_file=log_file,
        )
        run(["cmake", "--build", str(build), f"-j{jobs}"], log_file=log_file)
        run(["cmake", "--install", str(build)], log_file=log_file)
        info = {
            "version": NCNN_VERSION,
            "target": target.name,
            "cmake_args": ncnn_cmake_args(target),
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (staged / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
        try:
            staged.rename(prefix)
        except OSError:
            # A concurrent build finished first; its result is equivalent.
            if not prefix.is_dir():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"ncnn for {target.name} built in {time.monotonic() - started:.0f}s")
    return prefix


# --- runner ----------------------------------------------------------------


def cmake_project(
    target: Target,
    ncnn_prefix: Path,
    source_dir: Path,
    build_dir: Path,
    jobs: int,
    extra_args: tuple[str, ...] = (),
) -> Path:
    """Configure and build a CMake project against a cached ncnn; returns `build_dir`.

    The project gets -Dncnn_DIR and -DMFN_STATIC; its log goes to build.log.
    """
    # Our projects are C++ only; CMake would warn that the C settings went unused.
    toolchain = [
        f
        for f in target.toolchain_flags
        if not f.startswith(("-DCMAKE_C_COMPILER=", "-DCMAKE_C_FLAGS="))
    ]
    build_dir.mkdir(parents=True, exist_ok=True)
    log_file = build_dir / "build.log"
    log_file.unlink(missing_ok=True)
    run(
        [
            "cmake",
            "-S",
            str(source_dir),
            "-B",
            str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-Dncnn_DIR={ncnn_prefix / 'lib' / 'cmake' / 'ncnn'}",
            f"-DMFN_STATIC={'ON' if target.static else 'OFF'}",
            *toolchain,
            *extra_args,
        ],
        log_file=log_file,
    )
    run(["cmake", "--build", str(build_dir), f"-j{jobs}"], log_file=log_file)
    return build_dir


def build_runner(target: Target, ncnn_prefix: Path, jobs: int) -> Path:
    build = cmake_project(
        target, ncnn_prefix, RUNNER_SOURCE_DIR, RUNNER_BUILD_ROOT / target.name, jobs
    )
    log_file = build / "build.log"
    binary = build / "mfn-bench"
    if not binary.is_file():
        raise BuildError(f"build finished but {binary} is missing (log: {log_file})")
    return binary


def smoke_test(target: Target, binary: Path, skip: set[str]) -> None:
    if target.emulator in skip:
        return
    cmd = [str(binary), "--version"]
    if target.emulator:
        cmd = [target.emulator, *cmd]
    log(f"{target.name}: {run(cmd).strip()}")


def build_target(target: Target, cache: Path, jobs: int) -> Path:
    required = {
        "cmake": "cmake",
        "make": "make",
        target.cc: target.apt_packages[0],
        target.cxx: target.apt_packages[0],
    }
    optional = {target.emulator: TOOL_PACKAGES[target.emulator]} if target.emulator else {}
    missing_optional = ensure_tools(required, optional)
    sdist = fetch_sdist(cache)
    prefix = build_ncnn(target, cache, sdist, jobs)
    binary = build_runner(target, prefix, jobs)
    smoke_test(target, binary, missing_optional)
    return binary


# --- extra CMake projects --------------------------------------------------
# For projects other than the runner (android-demo/host): build one against the
# cached ncnn of a target, with that target's toolchain. Nothing above uses it.


def build_extra_project(
    target_name: str,
    source_dir: Path,
    build_dir: Path,
    extra_args: tuple[str, ...] = (),
    jobs: int | None = None,
) -> Path:
    """Configure and build the CMake project in `source_dir`; returns `build_dir`.

    The project gets -Dncnn_DIR and -DMFN_STATIC like the runner does. ncnn is
    built first if the cache lacks it (minutes), otherwise reused (seconds).
    """
    target = TARGETS[target_name]
    jobs = jobs or os.cpu_count() or 1
    ensure_tools(
        {
            "cmake": "cmake",
            "make": "make",
            target.cc: target.apt_packages[0],
            target.cxx: target.apt_packages[0],
        },
        {},
    )
    cache = cache_root()
    prefix = build_ncnn(target, cache, fetch_sdist(cache), jobs)
    return cmake_project(target, prefix, source_dir, build_dir, jobs, tuple(extra_args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--targets",
        default="host,arm64-v8a,armeabi-v7a",
        help="comma-separated subset of: " + ", ".join(TARGETS),
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="parallel build jobs (default: nproc)"
    )
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")

    # Turn a plain `kill` into an exception so temp build dirs are removed and
    # subprocess.run kills the cmake it is waiting for.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    cache = cache_root()
    started = time.monotonic()
    failed = False
    for name in names:
        target = TARGETS[name]
        try:
            binary = build_target(target, cache, args.jobs)
            log(f"{name}: {binary.relative_to(REPO_ROOT)}")
        except BuildError as exc:
            if target.best_effort:
                log(f"WARNING: {name} is best-effort and failed; continuing without it.\n{exc}")
            else:
                print(f"[build_native] error: {name}: {exc}", file=sys.stderr)
                failed = True
    log(f"done in {time.monotonic() - started:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
