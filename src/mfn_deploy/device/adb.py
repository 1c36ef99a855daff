"""adb, wrapped: find the executable, pick devices, run shell/push/pull with clear errors.

Every call goes through ``subprocess.run([...])``. A command for the phone's shell is
always built from an argument list with ``shlex.join``: adb hands its shell a single
string, so a model name such as ``x; rm -rf /`` must reach the phone as one quoted word.
The only unquoted scripts are constants of this package (``Device.script``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mfn_deploy.errors import MfnError

ADB_ENV = "MFN_ADB"  # an explicit adb executable; tests point it at tests/fake_adb.py
SERIAL_ENV = "ANDROID_SERIAL"  # adb's own variable, honoured the same way
INSTALL_HINT = (
    "install it with `apt-get install -y adb` (Debian/Ubuntu) or the Android SDK "
    "platform-tools (https://developer.android.com/tools/releases/platform-tools), "
    f"or set {ADB_ENV}=/path/to/adb"
)
STATE_HELP = {
    "unauthorized": "unlock the phone and accept the 'Allow USB debugging' prompt",
    "offline": "reconnect the cable or run `adb reconnect offline`; else `adb kill-server`",
    "no permissions": "add a udev rule for the phone (see `adb devices` output)",
}
NO_DEVICE = "no device attached: connect a phone with USB debugging on (`adb devices`)"
# What adb prints when the device went away under a running command.
_LOST_MARKERS = ("not found", "no devices/emulators", "device offline", "error: closed")


class AdbError(MfnError):
    """adb or the phone refused a command."""


class DeviceLostError(AdbError):
    """The device disappeared (unplugged, rebooted, went offline) during a command."""


def adb_executable() -> str:
    explicit = os.environ.get(ADB_ENV)
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            raise AdbError(f"{ADB_ENV}={explicit}: not an executable file")
        return explicit
    found = shutil.which("adb")
    if found is None:
        raise AdbError(f"adb not found on PATH; {INSTALL_HINT}")
    return found


def _tail(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or "").strip().splitlines() or (proc.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


def run_adb(args: Sequence[str], timeout: float | None = 120) -> subprocess.CompletedProcess:
    cmd = [adb_executable(), *args]
    try:
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AdbError(f"`adb {' '.join(args[:3])}` timed out after {timeout:g} s") from None
    except OSError as e:
        raise AdbError(f"cannot run {cmd[0]}: {e.strerror}") from None


@dataclass(frozen=True)
class DeviceEntry:
    serial: str
    state: str  # "device" when usable; "unauthorized", "offline", "no permissions", ...


def list_devices() -> list[DeviceEntry]:
    proc = run_adb(["devices"])
    if proc.returncode != 0:
        raise AdbError(f"`adb devices` failed: {_tail(proc)}")
    entries = []
    for line in proc.stdout.splitlines():
        # Skip the header and the daemon's "* daemon started successfully" chatter.
        if not line.strip() or line.startswith(("List of devices", "*")):
            continue
        serial, _, state = line.partition("\t")
        state = state.strip()
        entries.append(DeviceEntry(serial.strip(), state.split(";")[0].split(" (")[0]))
    return entries


def _check_ready(serial: str, attached: dict[str, str]) -> None:
    state = attached.get(serial)
    if state is None:
        have = ", ".join(attached) or "none"
        raise AdbError(f"device {serial!r} not found; attached: {have}")
    if state != "device":
        hint = STATE_HELP.get(state, "it must show as 'device' in `adb devices`")
        raise AdbError(f"device {serial!r} is {state}: {hint}")


def select_serials(requested: Sequence[str] = ()) -> list[str]:
    """The serials to benchmark: --serial values, ``all``, $ANDROID_SERIAL, or the only phone.

    ``all`` means every device in state 'device'; phones in other states are left out
    (``device list`` shows them), but if none is usable the first one's problem is raised.
    """
    devices = list_devices()
    attached = {d.serial: d.state for d in devices}
    if not devices:
        raise AdbError(NO_DEVICE)
    if list(requested) == ["all"]:
        ready = [d.serial for d in devices if d.state == "device"]
        if not ready:
            _check_ready(devices[0].serial, attached)
        return ready
    if "all" in requested:
        raise AdbError("--serial all cannot be combined with other serials")
    if not requested and os.environ.get(SERIAL_ENV):
        requested = [os.environ[SERIAL_ENV]]
    if not requested:
        if len(devices) > 1:
            have = ", ".join(attached)
            raise AdbError(
                f"{len(devices)} devices attached ({have}): pass --serial S (or --serial all) "
                f"or set {SERIAL_ENV}"
            )
        requested = [devices[0].serial]
    for serial in requested:
        _check_ready(serial, attached)
    return list(dict.fromkeys(requested))


class Device:
    """One phone, addressed by serial on every call (``adb -s SERIAL ...``)."""

    def __init__(self, serial: str) -> None:
        self.serial = serial

    def _adb(self, *args: str, timeout: float | None = 120) -> subprocess.CompletedProcess:
        return run_adb(["-s", self.serial, *args], timeout=timeout)

    def is_connected(self) -> bool:
        proc = self._adb("get-state", timeout=30)
        return proc.returncode == 0 and proc.stdout.strip() == "device"

    def _raise_if_lost(self, proc: subprocess.CompletedProcess, what: str) -> None:
        text = f"{proc.stderr}\n{proc.stdout}".lower()
        if any(m in text for m in _LOST_MARKERS) or not self.is_connected():
            raise DeviceLostError(
                f"{self.serial}: device disconnected during {what}: {_tail(proc)}"
            )

    def script(self, script: str, timeout: float | None = 120) -> subprocess.CompletedProcess:
        """Run a constant shell script of this package; user data never goes in here."""
        proc = self._adb("shell", script, timeout=timeout)
        if proc.returncode != 0:
            self._raise_if_lost(proc, "a shell command")
        return proc

    def shell(
        self, argv: Sequence[str], timeout: float | None = 120, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run one command on the phone; each argument arrives as exactly one word."""
        proc = self.script(shlex.join(argv), timeout=timeout)
        if check and proc.returncode != 0:
            raise AdbError(f"{self.serial}: `{argv[0]}` failed on the device: {_tail(proc)}")
        return proc

    def getprops(self) -> dict[str, str]:
        """All system properties from one ``getprop`` call ('[key]: [value]' lines)."""
        props = {}
        for line in self.shell(["getprop"]).stdout.splitlines():
            key, sep, value = line.partition("]: [")
            if sep and key.startswith("[") and value.endswith("]"):
                props[key[1:]] = value[:-1]
        return props

    def push(self, local: Path, remote: str) -> None:
        proc = self._adb("push", str(local), remote, timeout=600)
        if proc.returncode != 0:
            self._raise_if_lost(proc, f"push of {local.name}")
            raise AdbError(f"{self.serial}: push of {local} to {remote} failed: {_tail(proc)}")

    def pull(self, remote: str, local: Path) -> None:
        proc = self._adb("pull", remote, str(local), timeout=600)
        if proc.returncode != 0:
            self._raise_if_lost(proc, f"pull of {remote}")
            raise AdbError(f"{self.serial}: pull of {remote} failed: {_tail(proc)}")
