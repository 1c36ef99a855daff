"""The native mfn-bench runner (mfn_bench.cpp beside this file), seen from Python.

``mfn-deploy native build`` (``make native``; the code is in ``build.py``) builds it
into the user cache, keyed by its sources and ncnn's. This module finds those
binaries and builds the runner's argument list, so the host benchmark, the adb
benchmark and the tests call the runner one way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfn_deploy.errors import MfnError
from mfn_deploy.files import atomic_write, cache_root, sha256_of
from mfn_deploy.native.build import runner_dir

TARGETS = ("host", "arm64-v8a", "armeabi-v7a")
EMULATORS = {"arm64-v8a": "qemu-aarch64", "armeabi-v7a": "qemu-arm"}
# The CPU qemu emulates by default: ARMv8.0 like the paper's Snapdragon 820 (Kryo),
# so, as there, ncnn finds no fp16 arithmetic and "--fp16 on" means fp16 storage.
# "cortex-a76" (ARMv8.2) enables fp16 arithmetic, as on newer phones.
DEFAULT_CPU = {"arm64-v8a": "cortex-a57", "armeabi-v7a": "cortex-a15"}


def runner_path(target: str) -> Path:
    """The built runner for `target`, or a one-line error naming the command that builds it."""
    if target not in TARGETS:
        raise MfnError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    path = runner_dir(target) / "mfn-bench"
    if not path.is_file():
        raise MfnError(
            f"{path}: runner for {target} not built; "
            f"run `mfn-deploy native build --target {target}`"
        )
    return path


def runner_built(target: str) -> bool:
    try:
        runner_path(target)
    except MfnError:
        return False
    return True


def local_command(target: str, cpu: str | None = None) -> list[str]:
    """How to start the runner on this machine (ARM builds under qemu-user)."""
    path = runner_path(target)
    if target == "host":
        return [str(path)]
    emulator = shutil.which(EMULATORS[target])
    if emulator is None:
        raise MfnError(f"{EMULATORS[target]} not found; apt-get install -y qemu-user")
    return [emulator, "-cpu", cpu or DEFAULT_CPU[target], str(path)]


@dataclass(frozen=True)
class RunnerOptions:
    threads: int = 4
    powersave: int = 0
    warmup: int = 3
    loops: int = 10
    cooldown: float = 0.0
    fp16: bool = False
    pace_ms: int = 0  # > 0: runs start at least this far apart, like camera frames
    profile: bool = False  # per-layer times in the JSON's "profile"

    def args(self) -> list[str]:
        extra = (["--pace-ms", str(self.pace_ms)] if self.pace_ms else []) + (
            ["--profile"] if self.profile else []
        )
        return [
            "--threads", str(self.threads),
            "--powersave", str(self.powersave),
            "--warmup", str(self.warmup),
            "--loops", str(self.loops),
            "--cooldown", f"{self.cooldown:g}",
            "--fp16", "on" if self.fp16 else "off",
            *extra,
        ]  # fmt: skip


def runner_args(
    param: str,
    binary: str,
    shape: tuple[int, int, int],
    options: RunnerOptions,
    input_file: str | None = None,
    dump: str | None = None,
    expect_dim: int | None = None,
) -> list[str]:
    """Arguments after the executable; paths are strings because they may be on a phone.

    ``expect_dim`` (the manifest's ``embedding_dim``) makes the runner fail with one
    line when ``shape`` gives an output of another size, instead of timing it.
    """
    w, h, c = shape
    args = ["--param", param, "--bin", binary, "--shape", f"{w},{h},{c}", *options.args()]
    if expect_dim is not None:
        args += ["--expect-dim", str(expect_dim)]
    if input_file is not None:
        args += ["--input", input_file]
    if dump is not None:
        args += ["--dump", dump]
    return args


def parse_output(proc: subprocess.CompletedProcess, what: str) -> dict:
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise MfnError(f"{what}: runner failed (exit {proc.returncode}): {last}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise MfnError(f"{what}: runner printed no JSON: {proc.stdout[:200]!r}") from None


def write_input(x: np.ndarray, path: Path) -> None:
    """One CHW float32 image as the runner's raw little-endian input file."""
    np.ascontiguousarray(x, dtype="<f4").tofile(path)


def read_dump(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype="<f4")


# --- deterministic ARM cost: guest instructions counted by a qemu TCG plugin -----------

PLUGIN_SOURCE = Path(__file__).resolve().parent / "qemu_insn_plugin.c"


def insn_plugin() -> Path:
    """qemu_insn_plugin.c compiled into the cache, keyed by its source's hash."""
    out = cache_root() / "qemu-plugins" / f"insn-{sha256_of(PLUGIN_SOURCE)[:12]}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp:
        cmd = ["gcc", "-shared", "-fPIC", "-O2", "-o", str(tmp), str(PLUGIN_SOURCE)]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise MfnError(f"{PLUGIN_SOURCE}: gcc failed: {proc.stderr.strip()[-300:]}")
    return out


def guest_instructions(target: str, args: list[str], cpu: str | None = None) -> int:
    """Guest instructions executed by one runner invocation under qemu-user."""
    cmd = local_command(target, cpu)
    with tempfile.TemporaryDirectory() as tmp:
        count = Path(tmp) / "insns.txt"
        cmd[1:1] = ["-plugin", f"{insn_plugin()},outfile={count}"]
        # Spinning OpenMP workers would add a timing-dependent number of instructions.
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        proc = subprocess.run([*cmd, *args], check=False, capture_output=True, text=True, env=env)
        parse_output(proc, f"{target} under qemu")
        return int(count.read_text().split()[1])


def instructions_per_inference(
    target: str,
    param: str,
    binary: str,
    shape: tuple[int, int, int],
    fp16: bool = False,
    cpu: str | None = None,
    extra_runs: int = 2,
    expect_dim: int | None = None,
) -> float:
    """(count with 1 + extra warm-up runs - count with 1) / extra, one thread.

    Both invocations load the model, run once, print and exit; the difference is
    exactly ``extra_runs`` inferences, with start-up, loading and timing output
    cancelled out. Deterministic to a few instructions per inference.
    """

    def count(warmup: int) -> int:
        opts = RunnerOptions(threads=1, warmup=warmup, loops=0, fp16=fp16)
        args = runner_args(param, binary, shape, opts, expect_dim=expect_dim)
        return guest_instructions(target, args, cpu)

    return (count(1 + extra_runs) - count(1)) / extra_runs
