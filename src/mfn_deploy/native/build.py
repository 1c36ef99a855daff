"""Build ncnn from its pinned source distribution, then the mfn-bench runner, into the cache.

Everything is keyed, so a build happens once per combination and is then found by
path: ncnn per (source sha256, CMake flags, compiler), the runner per (ncnn key,
target, runner sources). The runner's sources ship inside this package, so an
installed mfn-deploy builds the same runner as a checkout (`mfn-deploy native
build`). Builds happen in a temporary directory and appear by one rename.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mfn_deploy.errors import MfnError
from mfn_deploy.files import cache_root
from mfn_deploy.pinned import PinnedFile, fetch

# Must match the ncnn Python wheel so runner results compare like for like.
NCNN_VERSION = "1.0.20261020"
NCNN_SOURCE = PinnedFile(
    "ncnn",
    f"ncnn-{NCNN_VERSION}.tar.gz",
    "ad8cdd63e9755cfa8e23b9b6d9ce46156077d80298a89e7c3ba325ffccfca200",
)

SOURCE_DIR = Path(__file__).resolve().parent
RUNNER_SOURCES = ("CMakeLists.txt", "mfn_bench.cpp")
# Fixes for ncnn defects, applied to the extracted source before building; each
# file's header says what it fixes and where the evidence is.
PATCH_DIR = SOURCE_DIR / "patches"
FP16_DEPTHWISE_FIX = "ncnn-convdw3x3s2-pack8-fp16sa-tail.patch"

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
    apt_package: str
    # Describes the toolchain to CMake; used for ncnn and the runner alike.
    toolchain_flags: tuple[str, ...]
    # Phones have no glibc/libgomp we could rely on: ARM runners are static.
    static: bool
    # Emulator to smoke-test the binary with, or None when it runs natively.
    emulator: str | None
    best_effort: bool
    # Patches from PATCH_DIR for code only this target compiles.
    patches: tuple[str, ...] = ()
    # ncnn options for this target alone, after NCNN_CMAKE_FLAGS.
    ncnn_flags: tuple[str, ...] = ()


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


# x86 kernels no path here can reach, not compiled (about a sixth of the host build's
# units): FMA4 and XOP exist only on AMD's 2011-2016 cores, and the bf16 kernels run
# only with bf16 storage, which every ncnn net here turns off (fp32 means fp32).
HOST_UNREACHABLE_KERNELS = ("-DNCNN_FMA4=OFF", "-DNCNN_XOP=OFF", "-DNCNN_AVX512BF16=OFF")

TARGETS = {
    "host": Target(
        "host",
        "gcc",
        "g++",
        "g++",
        (),
        static=False,
        emulator=None,
        best_effort=False,
        ncnn_flags=HOST_UNREACHABLE_KERNELS,
    ),
    "arm64-v8a": Target(
        "arm64-v8a",
        "aarch64-linux-gnu-gcc",
        "aarch64-linux-gnu-g++",
        "g++-aarch64-linux-gnu",
        _cross("aarch64", "aarch64-linux-gnu"),
        static=True,
        emulator="qemu-aarch64",
        best_effort=False,
        # The fp16-arithmetic kernels (ARMv8.2) are compiled for aarch64 only.
        patches=(FP16_DEPTHWISE_FIX,),
    ),
    # Debian's armhf compiler defaults to VFPv3-D16 without NEON; ncnn's arm
    # kernels want NEON, which every armeabi-v7a phone has.
    "armeabi-v7a": Target(
        "armeabi-v7a",
        "arm-linux-gnueabihf-gcc",
        "arm-linux-gnueabihf-g++",
        "g++-arm-linux-gnueabihf",
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

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


class BuildError(MfnError):
    """A failed build step; the message carries the tool's output tail and the log path."""


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(cmd: list[str], *, log_file: Path | None = None, env: dict[str, str] | None = None) -> str:
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    except FileNotFoundError:
        raise BuildError(f"{cmd[0]}: not found") from None
    output = proc.stdout + proc.stderr
    if log_file is not None:
        with log_file.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{output}\n")
    if proc.returncode != 0:
        where = f" (full log: {log_file})" if log_file is not None else ""
        raise BuildError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}{where}\n{_tail(output)}"
        )
    return proc.stdout


# --- prerequisites ---------------------------------------------------------

APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


@functools.cache
def _apt_update() -> None:
    """Once per process, however many targets need packages."""
    run(["apt-get", "update"], env=APT_ENV)


def ensure_tools(required: dict[str, str], optional: dict[str, str], log: Log = _quiet) -> set[str]:
    """Install (as root) or explain how to install missing tools.

    `required` and `optional` map executable -> Debian package. Returns the
    optional executables that are still missing.
    """
    missing_req = {exe: pkg for exe, pkg in required.items() if shutil.which(exe) is None}
    missing_opt = {exe: pkg for exe, pkg in optional.items() if shutil.which(exe) is None}
    packages = sorted(set(missing_req.values()) | set(missing_opt.values()))
    if packages and os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"apt-get install -y {' '.join(packages)}")
        _apt_update()
        run(["apt-get", "install", "-y", *packages], env=APT_ENV)
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


def _compiler_tools(target: Target) -> dict[str, str]:
    tools = {
        "cmake": "cmake",
        "make": "make",
        target.cc: target.apt_package,
        target.cxx: target.apt_package,
    }
    if target.patches:
        tools["patch"] = "patch"
    return tools


# --- keys: what a build depends on -------------------------------------------


def _digest(obj: object) -> str:
    # Key order is part of the key: keep it, so existing caches stay valid.
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:12]


def _with_patches(blob: dict, target: Target) -> dict:
    # Only a patched target's key changes, so the other targets' builds stay cached.
    if target.patches:
        blob["patches"] = {
            name: hashlib.sha256((PATCH_DIR / name).read_bytes()).hexdigest()
            for name in target.patches
        }
    return blob


def ncnn_cmake_args(target: Target) -> list[str]:
    return [*NCNN_CMAKE_FLAGS, *target.toolchain_flags, *target.ncnn_flags]


def ncnn_key(target: Target) -> str:
    # The compiler version is part of the key so a toolchain upgrade rebuilds.
    compiler = (
        run([target.cxx, "-dumpfullversion"]).strip()
        + " "
        + run([target.cxx, "-dumpmachine"]).strip()
    )
    blob = {"sdist": NCNN_SOURCE.sha256, "cmake": ncnn_cmake_args(target), "cxx": compiler}
    return f"{target.name}-{_digest(_with_patches(blob, target))}"


def runner_key(target: Target) -> str:
    """Needs no compiler, so finding a built runner is only hashing two small files."""
    sources = {
        name: hashlib.sha256((SOURCE_DIR / name).read_bytes()).hexdigest()
        for name in RUNNER_SOURCES
    }
    blob = {
        "sdist": NCNN_SOURCE.sha256,
        "cmake": ncnn_cmake_args(target),
        "static": target.static,
        "sources": sources,
    }
    return f"{target.name}-{_digest(_with_patches(blob, target))}"


def runner_dir(target: str) -> Path:
    return cache_root() / "runners" / runner_key(TARGETS[target])


# --- atomic build directories ------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _work_dir(final: Path) -> Path:
    """A fresh ``.tmp-NAME-PID`` next to ``final``; leftovers of dead builds are removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and _pid_alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    work = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return work


def _publish(staged: Path, final: Path) -> None:
    try:
        staged.rename(final)
    except OSError:
        # A concurrent build finished first; its result is equivalent.
        if not final.is_dir():
            raise


# --- ncnn library ----------------------------------------------------------


def fetch_source(dest_dir: Path | None = None) -> Path:
    """The pinned ncnn source distribution, verified (downloaded into the cache if needed)."""
    return fetch(NCNN_SOURCE, dest_dir)


def build_ncnn(target: Target, jobs: int, log: Log = _quiet) -> Path:
    """Return the install prefix of ncnn for `target`, building it if needed."""
    prefix = cache_root() / f"ncnn-{NCNN_VERSION}" / ncnn_key(target)
    # Only a finished build is ever renamed to `prefix`, so existence means done.
    if (prefix / "lib" / "cmake" / "ncnn" / "ncnnConfig.cmake").is_file():
        log(f"ncnn {NCNN_VERSION} for {target.name}: cached at {prefix}")
        return prefix
    sdist = fetch_source()
    work = _work_dir(prefix)
    log_file = prefix.with_suffix(".log")
    log_file.unlink(missing_ok=True)
    log(
        f"building ncnn {NCNN_VERSION} for {target.name} with {jobs} jobs (minutes); "
        f"log: {log_file}"
    )
    started = time.monotonic()
    try:
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        build, staged = work / "build", work / "install"
        source = work / f"ncnn-{NCNN_VERSION}"
        for name in target.patches:
            patch = ["patch", "-p1", "--forward", "--batch", "-d", str(source)]
            run([*patch, "-i", str(PATCH_DIR / name)], log_file=log_file)
        configure = [
            "cmake",
            "-S",
            str(source),
            "-B",
            str(build),
            f"-DCMAKE_INSTALL_PREFIX={staged}",
        ]
        run([*configure, *ncnn_cmake_args(target)], log_file=log_file)
        run(["cmake", "--build", str(build), f"-j{jobs}"], log_file=log_file)
        run(["cmake", "--install", str(build)], log_file=log_file)
        info = {
            "version": NCNN_VERSION,
            "target": target.name,
            "cmake_args": ncnn_cmake_args(target),
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (staged / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
        _publish(staged, prefix)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"ncnn for {target.name} built in {time.monotonic() - started:.0f}s")
    return prefix


# --- CMake projects against a cached ncnn -----------------------------------


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


def build_extra_project(
    target_name: str,
    source_dir: Path,
    build_dir: Path,
    extra_args: tuple[str, ...] = (),
    jobs: int | None = None,
) -> Path:
    """Build another CMake project (android-demo/host) with a target's toolchain and ncnn."""
    target = TARGETS[target_name]
    jobs = jobs or os.cpu_count() or 1
    ensure_tools(_compiler_tools(target), {})
    prefix = build_ncnn(target, jobs)
    return cmake_project(target, prefix, source_dir, build_dir, jobs, tuple(extra_args))


# --- the runner ------------------------------------------------------------


def _smoke_test(target: Target, binary: Path, log: Log) -> None:
    cmd = [str(binary), "--version"]
    if target.emulator:
        cmd = [target.emulator, *cmd]
    log(f"{target.name}: {run(cmd).strip()}")


def build_runner(name: str, jobs: int | None = None, log: Log = _quiet) -> Path:
    """The runner for target `name`, built (with its ncnn) unless the cache has it."""
    target = TARGETS[name]
    final = runner_dir(name)
    binary = final / "mfn-bench"
    optional = {target.emulator: TOOL_PACKAGES[target.emulator]} if target.emulator else {}
    if binary.is_file():
        log(f"{name}: cached at {binary}")
        return binary
    jobs = jobs or os.cpu_count() or 1
    missing_optional = ensure_tools(_compiler_tools(target), optional, log)
    prefix = build_ncnn(target, jobs, log)
    work = _work_dir(final)
    try:
        # CMake wants a writable source tree no more than a build tree; the sources
        # are copied so that a read-only site-packages builds too.
        source = work / "src"
        source.mkdir()
        for file in RUNNER_SOURCES:
            shutil.copy2(SOURCE_DIR / file, source / file)
        build = cmake_project(target, prefix, source, work / "build", jobs)
        staged = work / "out"
        staged.mkdir()
        shutil.copy2(build / "mfn-bench", staged / "mfn-bench")
        shutil.copy2(build / "build.log", staged / "build.log")
        if target.emulator not in missing_optional:
            _smoke_test(target, staged / "mfn-bench", log)
        _publish(staged, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return binary


def build_runners(names: list[str], jobs: int | None = None, log: Log = _quiet) -> dict[str, Path]:
    """Build each target in turn; best-effort targets may fail with a warning."""
    built: dict[str, Path] = {}
    for name in names:
        try:
            built[name] = build_runner(name, jobs, log)
        except BuildError as exc:
            if not TARGETS[name].best_effort:
                raise BuildError(f"{name}: {exc}") from None
            log(f"warning: {name} is best-effort and failed; continuing without it: {exc}")
    return built
