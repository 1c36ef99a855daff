"""What a phone is and how hot it runs: properties, CPU clusters, clocks, thermal zones.

Everything is read from the phone over ``adb shell`` (sysfs files and ``getprop``),
the same on a real phone and on the test double.

Throttling rule (``throttled``): a run is flagged when, on any core, the frequency
cap (``scaling_max_freq``, which thermal drivers lower) is below the cap before the
run, or when a core pinned to a fixed clock by its governor (``performance``,
``userspace``) runs slower after the run than before. The current frequency of a
core under a dynamic governor says nothing after a run (it idles down), so it is
recorded but not judged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from mfn_deploy.device.adb import STATE_HELP, Device, list_devices

# Constant scripts: they only read sysfs, one line per core / zone, '-' when unreadable.
CPU_SCRIPT = (
    "for d in /sys/devices/system/cpu/cpu[0-9]*; do "
    'f=$d/cpufreq; echo "${d##*/}'
    " $(cat $f/scaling_governor 2>/dev/null || echo -)"
    " $(cat $f/scaling_cur_freq 2>/dev/null || echo -)"
    " $(cat $f/scaling_max_freq 2>/dev/null || echo -)"
    ' $(cat $f/cpuinfo_max_freq 2>/dev/null || echo -)"; done'
)
THERMAL_SCRIPT = (
    "for z in /sys/class/thermal/thermal_zone*; do "
    'echo "${z##*/} $(cat $z/temp 2>/dev/null || echo -) $(cat $z/type 2>/dev/null || echo -)"'
    "; done"
)
SUPPORTED_ABIS = ("arm64-v8a", "armeabi-v7a")  # the runner builds we have, in preference order
FIXED_CLOCK_GOVERNORS = ("performance", "userspace")
# Cool-down: back within this many degrees of the session's first reading, caps restored.
COOLDOWN_MARGIN_C = 2.0
COOLDOWN_MAX_S = 120.0
COOLDOWN_POLL_S = 2.0


@dataclass(frozen=True)
class Core:
    cpu: int
    governor: str
    cur_khz: int | None
    cap_khz: int | None  # scaling_max_freq: what the kernel allows now
    max_khz: int | None  # cpuinfo_max_freq: what the silicon can do


def _int(text: str) -> int | None:
    return int(text) if text.lstrip("-").isdigit() else None


def read_cores(dev: Device) -> list[Core]:
    cores = []
    for line in dev.script(CPU_SCRIPT).stdout.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0].removeprefix("cpu").isdigit():
            name, gov, cur, cap, top = parts
            cores.append(Core(int(name[3:]), gov, _int(cur), _int(cap), _int(top)))
    return sorted(cores, key=lambda c: c.cpu)


def _celsius(raw: int) -> float:
    # Most zones report millidegrees; a few old drivers report whole degrees.
    return raw / 1000 if abs(raw) >= 1000 else float(raw)


def read_thermal(dev: Device) -> dict:
    """The hottest plausible zone (0-150 °C; some zones report nonsense such as -273)."""
    zones = []
    for line in dev.script(THERMAL_SCRIPT).stdout.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and _int(parts[1]) is not None:
            c = _celsius(_int(parts[1]))
            if 0 < c < 150:
                zones.append((c, parts[2], parts[0]))
    if not zones:
        return {"hottest_c": None, "zone": None, "type": None}
    c, kind, zone = max(zones)
    return {"hottest_c": round(c, 1), "zone": zone, "type": kind}


def snapshot(dev: Device) -> dict:
    return {
        "time": round(time.time(), 3),
        "cores": [asdict(c) for c in read_cores(dev)],
        "thermal": read_thermal(dev),
    }


def clusters(cores: list[dict]) -> list[dict]:
    """Cores grouped by max frequency, fastest first (big, then little)."""
    by_max: dict[int | None, list[int]] = {}
    for c in cores:
        by_max.setdefault(c["max_khz"], []).append(c["cpu"])
    order = sorted(by_max, key=lambda k: -(k or 0))
    return [{"max_mhz": k // 1000 if k else None, "cpus": by_max[k]} for k in order]


def device_info(dev: Device) -> dict:
    props = dev.getprops()
    cores = snapshot(dev)["cores"]
    abis = props.get("ro.product.cpu.abilist") or props.get("ro.product.cpu.abi", "")
    groups = clusters(cores)
    return {
        "serial": dev.serial,
        "model": props.get("ro.product.model"),
        "manufacturer": props.get("ro.product.manufacturer"),
        "platform": props.get("ro.board.platform"),
        "soc": props.get("ro.soc.model"),
        "abi": props.get("ro.product.cpu.abi"),
        "abilist": [a for a in abis.split(",") if a],
        "android": props.get("ro.build.version.release"),
        "sdk": props.get("ro.build.version.sdk"),
        "cores": len(cores),
        "clusters": groups,
        "big_little": " + ".join(f"{len(g['cpus'])}x{g['max_mhz']}MHz" for g in groups),
    }


def pick_abi(info: dict) -> str | None:
    offered = info["abilist"] or [info["abi"]]
    return next((a for a in SUPPORTED_ABIS if a in offered), None)


def throttled(before: dict, after: dict) -> str | None:
    """Why a run counts as throttled (see the module docstring), or None."""
    first = {c["cpu"]: c for c in before["cores"]}
    reasons = []
    for c in after["cores"]:
        b = first.get(c["cpu"])
        if b is None:
            continue
        if b["cap_khz"] and c["cap_khz"] and c["cap_khz"] < b["cap_khz"]:
            reasons.append(f"cpu{c['cpu']} cap {b['cap_khz'] // 1000}->{c['cap_khz'] // 1000} MHz")
        elif (
            b["governor"] in FIXED_CLOCK_GOVERNORS
            and b["cur_khz"]
            and c["cur_khz"]
            and c["cur_khz"] < b["cur_khz"]
        ):
            reasons.append(
                f"cpu{c['cpu']} clock {b['cur_khz'] // 1000}->{c['cur_khz'] // 1000} MHz"
            )
    return "; ".join(reasons) or None


def recovered(baseline: dict, now: dict) -> bool:
    """Caps back to the session's first reading and temperature within the margin of it."""
    caps = {c["cpu"]: c["cap_khz"] for c in baseline["cores"]}
    if any(c["cap_khz"] and (caps.get(c["cpu"]) or 0) > c["cap_khz"] for c in now["cores"]):
        return False
    t0, t = baseline["thermal"]["hottest_c"], now["thermal"]["hottest_c"]
    return t0 is None or t is None or t <= t0 + COOLDOWN_MARGIN_C


def wait_cooldown(
    dev: Device,
    baseline: dict,
    max_s: float = COOLDOWN_MAX_S,
    poll_s: float = COOLDOWN_POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict, dict]:
    """Poll until ``recovered`` or ``max_s`` passed; (report, last snapshot)."""
    t0 = time.monotonic()
    now = snapshot(dev)
    polls = 1
    while not recovered(baseline, now) and time.monotonic() - t0 < max_s:
        sleep(poll_s)
        now = snapshot(dev)
        polls += 1
    report = {
        "mode": "auto",
        "waited_s": round(time.monotonic() - t0, 2),
        "polls": polls,
        "recovered": recovered(baseline, now),
        "target_c": None
        if baseline["thermal"]["hottest_c"] is None
        else baseline["thermal"]["hottest_c"] + COOLDOWN_MARGIN_C,
    }
    return report, now


# --- device list ------------------------------------------------------------------------


@dataclass(frozen=True)
class Phone:
    """One line of ``adb devices``, with ``device_info`` when the phone is usable."""

    serial: str
    state: str
    info: dict | None = None

    @property
    def hint(self) -> str | None:
        """What to do about a phone that is not usable."""
        if self.state == "device":
            return None
        return STATE_HELP.get(self.state, "it must show as 'device' in `adb devices`")

    def to_dict(self) -> dict:
        return {"serial": self.serial, "state": self.state, **(self.info or {})}

    def row(self) -> list[str]:
        i = self.info or {}
        return [
            self.serial,
            self.state,
            i.get("model") or "-",
            " / ".join(v for v in (i.get("platform"), i.get("soc")) if v) or "-",
            i.get("abi") or "-",
            f"{i['cores']} cores: {i['big_little']}" if i.get("cores") else "-",
            i.get("android") or "-",
        ]


@dataclass(frozen=True)
class PhoneList:
    """Every attached phone (``device list``), as a table, JSON, and what to do."""

    phones: tuple[Phone, ...]
    header: tuple[str, ...] = ("serial", "state", "model", "SoC", "ABI", "CPU (big + little)",
                               "Android")  # fmt: skip

    def rows(self) -> list[list[str]]:
        return [p.row() for p in self.phones]

    def to_json(self) -> list[dict]:
        return [p.to_dict() for p in self.phones]

    def hints(self) -> list[str]:
        return [f"{p.serial}: {p.state}: {p.hint}" for p in self.phones if p.hint]


def list_phones() -> PhoneList:
    """Every phone ``adb devices`` shows; the usable ones probed (model, SoC, ABI, cores)."""
    return PhoneList(
        tuple(
            Phone(d.serial, d.state, device_info(Device(d.serial)) if d.state == "device" else None)
            for d in list_devices()
        )
    )
