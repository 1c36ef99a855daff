#!/usr/bin/env python3
"""A loopback fake ``adb``: the project's one test double. Point $MFN_ADB at this file.

It implements ``devices``, ``-s SERIAL``, ``get-state``, ``push``, ``pull`` and
``shell`` by executing on this machine. $FAKE_ADB_STATE names a JSON file:

    {"root": "/tmp/x", "devices": [{"serial": "p1", "state": "device",
      "abi": "arm64-v8a", "props": {...}, "cpus": [[governor, cur_khz, max_khz], ...],
      "thermal": [[type, millidegrees], ...], "faults": {...}}]}

Each phone gets a root ``<root>/<serial>/`` holding ``data/local/tmp`` and a
``sys`` tree with cpufreq and thermal files. A shell command string is run with
``bash -c`` after replacing the leading ``/data/local/tmp`` and ``/sys`` of paths
by that root: the command string our code built is what the shell parses, so a
quoting mistake would execute here (inside the fake root) just as on a phone.

ARM programs pushed to the phone cannot run directly (no binfmt_misc here), so the
fake defines a bash function named after each pushed ARM executable's path that
starts it under ``qemu-aarch64 -cpu cortex-a57`` (or ``qemu-arm``). ``getprop`` is a
function reading the props file. A real phone needs none of this.

Faults (per device, in "faults"): ``disconnect_on_run: k`` (the k-th benchmark run
loses the device: exit 255, and from then on the device is gone),
``kill_run: k`` (the k-th benchmark run is SIGKILLed after a moment),
``push_fails: true``, ``throttle_on_run: k`` (after run k the hottest zone reads
85 °C and every core's scaling_max_freq halves, for ``hot_s`` seconds, default 2.5;
or, with ``hot_reads: n``, for the next n shell commands that read the clock caps
(``scaling_max_freq``), cooling before the one after: independent of how fast this
machine is).

Every call is a new process, so it starts lean: only the standard library's cheap
modules (no pathlib, shutil or subprocess: together 20 ms of a 45 ms call), and the
tests start it with ``python -I -S`` (tests/test_device.py), not through whatever
``python3`` $PATH finds first (a pyenv shim costs 0.1 to 0.3 s a call).
"""

# os and os.path rather than pathlib on purpose: see the docstring's last paragraph.
# ruff: noqa: PTH101, PTH103, PTH105, PTH113, PTH116, PTH120, PTH123

from __future__ import annotations

import json
import os
import re
import sys
import time

STATE = os.environ.get("FAKE_ADB_STATE", "/nonexistent")
QEMU = {183: ("qemu-aarch64", "cortex-a57"), 40: ("qemu-arm", "cortex-a15")}  # ELF e_machine
MAPPED = re.compile(r"(?<![\w./-])(/data/local/tmp|/sys)(?=[/\s'\"]|$)")
join = os.path.join


def fail(message: str, code: int = 1) -> None:
    sys.stderr.write(message + "\n")
    sys.exit(code)


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def load() -> dict:
    if not os.path.isfile(STATE):
        fail(f"fake adb: FAKE_ADB_STATE={STATE} missing")
    return json.loads(read_text(STATE))


def root_of(state: dict, serial: str) -> str:
    return join(state["root"], serial)


def counters(root: str) -> dict:
    path = join(root, ".fake.json")
    return json.loads(read_text(path)) if os.path.isfile(path) else {"runs": 0, "shells": 0}


def save_counters(root: str, c: dict) -> None:
    tmp = join(root, ".fake.json.tmp")
    write_text(tmp, json.dumps(c))
    os.replace(tmp, join(root, ".fake.json"))


def init_device(dev: dict, root: str) -> None:
    if os.path.isfile(join(root, ".fake.json")):
        return
    os.makedirs(join(root, "data/local/tmp"), exist_ok=True)
    for i, (gov, cur, top) in enumerate(dev.get("cpus", [])):
        d = join(root, f"sys/devices/system/cpu/cpu{i}/cpufreq")
        os.makedirs(d, exist_ok=True)
        for name, value in (
            ("scaling_governor", gov),
            ("scaling_cur_freq", cur),
            ("scaling_max_freq", top),
            ("cpuinfo_max_freq", top),
        ):
            write_text(join(d, name), f"{value}\n")
    for i, (kind, milli) in enumerate(dev.get("thermal", [])):
        z = join(root, f"sys/class/thermal/thermal_zone{i}")
        os.makedirs(z, exist_ok=True)
        write_text(join(z, "type"), f"{kind}\n")
        write_text(join(z, "temp"), f"{milli}\n")
    props = {"ro.product.cpu.abi": dev.get("abi", "arm64-v8a"), **dev.get("props", {})}
    write_text(join(root, "props.txt"), "".join(f"[{k}]: [{v}]\n" for k, v in props.items()))
    save_counters(root, {"runs": 0, "shells": 0, "gone": False, "hot_until": None})


def set_hot(dev: dict, root: str, hot: bool) -> None:
    for i, (_gov, _cur, top) in enumerate(dev.get("cpus", [])):
        cap = top // 2 if hot else top
        write_text(
            join(root, f"sys/devices/system/cpu/cpu{i}/cpufreq/scaling_max_freq"), f"{cap}\n"
        )
    if dev.get("thermal"):
        milli = 85000 if hot else dev["thermal"][0][1]
        write_text(join(root, "sys/class/thermal/thermal_zone0/temp"), f"{milli}\n")


def arm_functions(root: str) -> str:
    """bash functions named after every ARM executable under the fake /data/local/tmp."""
    lines = []
    for folder, _dirs, files in os.walk(join(root, "data/local/tmp")):
        for name in files:
            path = join(folder, name)
            if not os.path.isfile(path) or not os.access(path, os.X_OK):
                continue
            with open(path, "rb") as f:
                head = f.read(20)
            if head[:4] != b"\x7fELF":
                continue
            machine = int.from_bytes(head[18:20], "little")
            if machine in QEMU:
                qemu, cpu = QEMU[machine]
                lines.append(f'function {path} {{ {qemu} -cpu {cpu} {path} "$@"; }}')
    return "\n".join(lines)


def run_bash(script: str, cwd: str) -> int:
    """``bash -c script`` in ``cwd``, on this process's stdout and stderr; its status as
    subprocess reports it (negative: killed by that signal)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(cwd)
            os.execv("/bin/bash", ["bash", "-c", script])
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def shell(dev: dict, root: str, command: str) -> int:
    c = counters(root)
    c["shells"] += 1
    faults = dev.get("faults", {})
    is_run = "--param" in command and "mfn-bench" in command
    if is_run:
        c["runs"] += 1
    if c.get("hot_until") and time.time() > c["hot_until"]:
        c["hot_until"] = None  # the phone has cooled down
        set_hot(dev, root, hot=False)
    if c.get("hot_reads") is not None and "scaling_max_freq" in command:
        if c["hot_reads"] <= 0:
            c["hot_reads"] = None  # cooled down before this reading
            set_hot(dev, root, hot=False)
        else:
            c["hot_reads"] -= 1
    if is_run and faults.get("disconnect_on_run") == c["runs"]:
        c["gone"] = True
        save_counters(root, c)
        fail("error: closed", 255)
    save_counters(root, c)

    mapped = MAPPED.sub(lambda m: f"{root}{m.group(1)}", command)
    prelude = [
        arm_functions(root),
        f"getprop() {{ if [ $# -eq 0 ]; then cat {root}/props.txt; else "
        f'sed -n "s/^\\[$1\\]: \\[\\(.*\\)\\]$/\\1/p" {root}/props.txt; fi; }}',
    ]
    if is_run and faults.get("kill_run") == c["runs"]:
        # The runner is started, then killed from outside: the shell reports 128 + 9.
        mapped = f"( {mapped} ) & p=$!; sleep 0.3; pkill -9 -P $p; kill -9 $p; wait $p"
    sys.stdout.flush()
    sys.stderr.flush()
    returncode = run_bash("\n".join([*prelude, mapped]), join(root, "data/local/tmp"))
    if is_run and faults.get("throttle_on_run") == c["runs"]:
        set_hot(dev, root, hot=True)
        c = counters(root)
        if "hot_reads" in faults:
            c["hot_reads"] = faults["hot_reads"]
        else:
            c["hot_until"] = time.time() + faults.get("hot_s", 2.5)
        save_counters(root, c)
    return returncode


def map_remote(root: str, remote: str) -> str | None:
    if not remote.startswith("/data/local/tmp/"):
        return None
    return join(root, remote.lstrip("/"))


def copy(src: str, dst: str, mode: bool) -> None:
    """shutil.copy (``mode``: with the mode bits, as adb push keeps them) or copyfile."""
    with open(src, "rb") as f, open(dst, "wb") as g:
        while block := f.read(1 << 20):
            g.write(block)
    if mode:
        os.chmod(dst, os.stat(src).st_mode & 0o7777)


def main(argv: list[str]) -> int:
    state = load()
    devices = state["devices"]
    live = [d for d in devices if not counters(root_of(state, d["serial"])).get("gone")]
    if argv[:1] == ["devices"]:
        print("List of devices attached")
        for d in live:
            print(f"{d['serial']}\t{d.get('state', 'device')}")
        print()
        return 0
    serial = None
    if argv[:1] == ["-s"]:
        serial, argv = argv[1], argv[2:]
    elif os.environ.get("ANDROID_SERIAL"):
        serial = os.environ["ANDROID_SERIAL"]
    if serial is None:
        if not live:
            fail("adb: no devices/emulators found")
        if len(live) > 1:
            fail("adb: more than one device/emulator")
        serial = live[0]["serial"]
    dev = next((d for d in live if d["serial"] == serial), None)
    if dev is None:
        fail(f"adb: device '{serial}' not found")
    status = dev.get("state", "device")
    if argv[:1] == ["get-state"]:
        if status != "device":
            fail(f"error: device {status}")
        print("device")
        return 0
    if status == "unauthorized":
        fail("adb: device unauthorized.\nPlease check the confirmation dialog on your device.")
    if status != "device":
        fail(f"adb: device {status}")
    root = root_of(state, serial)
    init_device(dev, root)
    cmd, args = (argv[0], argv[1:]) if argv else ("", [])
    if cmd == "shell":
        return shell(dev, root, " ".join(args))
    if cmd == "push" and len(args) == 2:
        target = map_remote(root, args[1])
        if dev.get("faults", {}).get("push_fails") or target is None:
            fail(f"adb: error: failed to copy '{args[0]}' to '{args[1]}': remote No space left")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        copy(args[0], target, mode=True)
        print(f"{args[0]}: 1 file pushed, 0 skipped.")
        return 0
    if cmd == "pull" and len(args) == 2:
        source = map_remote(root, args[0])
        if source is None or not os.path.isfile(source):
            fail(f"adb: error: failed to stat remote object '{args[0]}': No such file")
        copy(source, args[1], mode=False)
        print(f"{args[0]}: 1 file pulled, 0 skipped.")
        return 0
    fail(f"fake adb: unsupported command {argv}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
