"""The ARM peer: NCNN and LiteRT (XNNPACK) on the same trained MobileFaceNet, counted in
arm64 guest instructions per inference under qemu-user, cortex-a57 and cortex-a76.

Usage: .venv/bin/python benchmarks/arm_peer.py
Writes benchmarks/results/arm_peer.json and .md.

The network is ``mobilefacenet_tf``: NCNN runs its export (weights imported from the
pinned ``MobileFaceNet.tflite``), LiteRT runs that file itself. LiteRT for arm64 is
Debian's arm64 Python (``apt-get download``, unpacked with ``dpkg -x``, not installed)
with the aarch64 ``ai-edge-litert`` and ``numpy`` wheels (``pip download``, unzipped),
at the versions this virtual environment has, so guest and host run the same LiteRT.
That set-up is cached under ``cache_root()/arm-peer/``, keyed by those versions.

Both runtimes: 1 thread, per image (batch 1: the file's batch-2 RESHAPE relaxed as
``bench.litert.batch_one`` does for the host backend), counted by the project's
qemu plugin as (count with 3 inferences - count with 1) / 2, so start-up, loading and
XNNPACK's weight packing (first invoke) cancel. The NCNN rows are
``arm_instructions.measure_int8``'s, measured again in this run. The file is fp32 only;
LiteRT's fp16 and int8 rows are made from it without a TensorFlow converter
(``litert_models``), and the notes in the results say how and what they are worth.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from arm_instructions import CPUS, measure_int8
from mfn_deploy.bench.litert import batch_one, litert_backend
from mfn_deploy.contract import InputSpec
from mfn_deploy.export.manifest import read_manifest, tool_versions
from mfn_deploy.face.calibration import builtin_calibration, holdout_faces
from mfn_deploy.face.samples import face_inputs
from mfn_deploy.files import cache_fill, cache_root, sha256_of, write_json
from mfn_deploy.native import insn_plugin
from mfn_deploy.pretrained.catalog import get
from mfn_deploy.pretrained.importer import tflite_file
from mfn_deploy.runtime import cached_pretrained_export

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "mobilefacenet_tf"
PYTHON = "3.11"  # Debian bookworm's; the wheels are fetched for it
DEBS = (
    f"python{PYTHON} python{PYTHON}-minimal libpython{PYTHON}-minimal libpython{PYTHON}-stdlib "
    "libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 "
    "libsqlite3-0 libuuid1 libcrypt1"
).split()
WHEELS = ("ai-edge-litert", "numpy")
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64")
# MIDR_EL1 of qemu's models (target/arm cpu64.c): implementer, variant, part, revision
MIDR = {"cortex-a57": 0x411FD070, "cortex-a76": 0x414FD0B1}
# AT_HWCAP bits 0-31 in the arm64 kernel's order, which is also /proc/cpuinfo's
HWCAP_NAMES = (  # noqa: SIM905 - the kernel's names read best as one string
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt "
    "fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs "
    "sb paca pacg"
).split()
EXTRA = 2  # inferences counted: (1 + EXTRA) minus 1
NCNN_ROWS = {
    "fp32": "NCNN fp32",
    "fp16": "NCNN fp16",
    "int8": "NCNN int8 (all layers)",
    "int8_auto": "NCNN int8_auto (gated)",
    "int8_depthwise_fp32": "NCNN int8, depthwise fp32 (--int8-skip depthwise, gated)",
}
LITERT_ROWS = {
    "fp32": "LiteRT fp32",
    "fp16": "LiteRT fp16 (XNNPACK hint)",
    "int8": "LiteRT int8 (post-training, ungated)",
}

GUEST_SCRIPT = """\
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

model, face, runs, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
it = Interpreter(model_path=model, num_threads=1,
                 experimental_op_resolver_type=OpResolverType.AUTO)
(inp,), (res,) = it.get_input_details(), it.get_output_details()
it.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
it.allocate_tensors()
x = np.fromfile(face, "<f4").reshape(1, *inp["shape"][1:])
for _ in range(runs):
    it.set_tensor(inp["index"], x)
    it.invoke()
it.get_tensor(res["index"]).astype("<f4").tofile(out)
print(sum(d["op_name"] == "DELEGATE" for d in it._get_ops_details()))
"""


def _run(cmd: list[str], what: str, **kw) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        sys.exit(f"error: {what} failed (exit {proc.returncode}): " + " | ".join(tail))
    return proc.stdout


# --- the arm64 Python with LiteRT, unpacked into the cache -------------------------------


def _deb_records() -> dict[str, dict]:
    """package -> the arm64 candidate's Version and SHA256, from apt's signed index."""
    if "arm64" not in _run(["dpkg", "--print-foreign-architectures"], "dpkg").split():
        if os.geteuid() != 0:
            sys.exit("error: run as root: dpkg --add-architecture arm64 && apt-get update")
        _run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64")
        _run(["apt-get", "update"], "apt-get update")
    cmd = ["apt-cache", "show", "--no-all-versions", *(f"{p}:arm64" for p in DEBS)]
    if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
        _run(["apt-get", "update"], "apt-get update")  # arm64 added but never fetched
    records = {}
    for block in _run(cmd, "apt-cache show").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "Package" in fields:
            records[fields["Package"]] = {"version": fields["Version"], "sha256": fields["SHA256"]}
    return records


def guest_env() -> tuple[Path, dict]:
    """(folder with root/ and site/, its manifest), built once per package versions."""
    debs = _deb_records()
    wheels = {w: importlib.metadata.version(w) for w in WHEELS}
    key = json.dumps({"debs": debs, "wheels": wheels, "platforms": PLATFORMS}, sort_keys=True)
    env = cache_root() / "arm-peer" / f"env-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    with cache_fill(env):
        if not (env / "manifest.json").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=".env-", dir=env.parent))
            try:
                manifest = _build_env(tmp, debs, wheels)
                write_json(tmp / "manifest.json", manifest)
                shutil.rmtree(env, ignore_errors=True)
                tmp.rename(env)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return env, json.loads((env / "manifest.json").read_text())


def _build_env(out: Path, debs: dict[str, dict], wheels: dict[str, str]) -> dict:
    downloads, root, site = out / "downloads", out / "root", out / "site"
    for d in (downloads, root, site):
        d.mkdir()
    debs_pinned = [f"{p}:arm64={r['version']}" for p, r in debs.items()]
    _run(["apt-get", "download", *debs_pinned], "apt-get download", cwd=downloads)
    manifest: dict = {"python": PYTHON, "debs": {}, "wheels": {}}
    for deb in sorted(downloads.glob("*.deb")):
        package = deb.name.split("_")[0]
        sha = sha256_of(deb)
        if sha != debs[package]["sha256"]:
            sys.exit(
                f"error: {deb.name}: sha256 {sha} is not the index's {debs[package]['sha256']}"
            )
        _run(["dpkg", "-x", str(deb), str(root)], f"dpkg -x {deb.name}")
        manifest["debs"][package] = debs[package] | {"file": deb.name}
    missing = set(debs) - set(manifest["debs"])
    if missing:
        sys.exit(f"error: apt-get download did not fetch {sorted(missing)}")
    opts = ["--no-deps", "--only-binary", ":all:", "--implementation", "cp"]
    opts += ["--python-version", PYTHON, "-d", str(downloads)]
    opts += [a for p in PLATFORMS for a in ("--platform", p)]
    pins = [f"{w}=={v}" for w, v in wheels.items()]
    _run([sys.executable, "-m", "pip", "download", *opts, *pins], "pip download (aarch64 wheels)")
    for whl in sorted(downloads.glob("*.whl")):
        with zipfile.ZipFile(whl) as z:
            z.extractall(site)
        name = whl.name.split("-")[0].replace("_", "-")
        manifest["wheels"][name] = {"version": wheels[name], "file": whl.name}
        manifest["wheels"][name]["sha256"] = sha256_of(whl)
    shutil.rmtree(downloads)
    return manifest


def _guest(
    env: Path, cpu: str, args: list, cpuinfo: Path | None = None, count: Path | None = None
) -> str:
    """Run the arm64 Python under qemu-user; stdout."""
    root = env / "root"
    cmd = [shutil.which("qemu-aarch64") or "qemu-aarch64", "-cpu", cpu, "-L", str(root)]
    if count is not None:
        cmd += ["-plugin", f"{insn_plugin()},outfile={count}"]
    cmd += [str(root / "usr" / "bin" / f"python{PYTHON}"), *map(str, args)]
    if cpuinfo is not None:
        # qemu-user shows the guest the host's x86 /proc/cpuinfo, and LiteRT's CPU
        # detection makes invoke() segfault on it: bind an arm64 one, in a private
        # mount namespace so nothing else sees it.
        mount = 'mount --bind "$0" /proc/cpuinfo && exec "$@"'
        cmd = ["unshare", "--mount", "sh", "-c", mount, str(cpuinfo), *cmd]
    # A clean environment: the host's (OPENBLAS_CORETYPE, QEMU_*) must not reach the
    # guest, and numpy's OpenBLAS worker threads would spin for a varying number of
    # instructions (millions) while numpy imports.
    clean = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONHOME": str(root / "usr"),
        "PYTHONPATH": str(env / "site"),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "LC_ALL": "C",
    }
    return _run(cmd, f"arm64 python under qemu -cpu {cpu}", env=clean)


def cpuinfo(env: Path, cpu: str, out: Path) -> dict:
    """An arm64 /proc/cpuinfo for ``cpu``: Features from the AT_HWCAP qemu gives the guest
    (so both of LiteRT's sources agree), MIDR fields from qemu's model."""
    probe = "import sys; sys.stdout.write(open('/proc/self/auxv', 'rb').read().hex())"
    auxv = dict(struct.iter_unpack("<QQ", bytes.fromhex(_guest(env, cpu, ["-S", "-c", probe]))))
    hwcap, hwcap2 = auxv.get(16, 0), auxv.get(26, 0)  # AT_HWCAP, AT_HWCAP2
    features = " ".join(n for bit, n in enumerate(HWCAP_NAMES) if hwcap >> bit & 1)
    midr = MIDR[cpu]
    entry = (
        f"BogoMIPS\t: 100.00\nFeatures\t: {features}\nCPU implementer\t: 0x{midr >> 24:02x}\n"
        f"CPU architecture: 8\nCPU variant\t: 0x{midr >> 20 & 0xF:x}\n"
        f"CPU part\t: 0x{midr >> 4 & 0xFFF:03x}\nCPU revision\t: {midr & 0xF}\n\n"
    )
    # one entry per CPU the host's /sys lists, all of the emulated model
    out.write_text("".join(f"processor\t: {i}\n{entry}" for i in range(os.cpu_count() or 1)))
    return {
        "hwcap": hex(hwcap),
        "hwcap2": hex(hwcap2),
        "features": features,
        "midr": hex(midr),
        "cpuinfo": out.read_text(),
    }


def litert_count(env: Path, cpu: str, info: Path, model: Path, face: Path, tmp: Path):
    """(instructions per inference, the guest's embedding, XNNPACK partitions)."""

    def count(runs: int) -> tuple[int, np.ndarray, int]:
        insns, emb = tmp / "insns.txt", tmp / f"emb{runs}.bin"
        args = [tmp / "guest.py", model, face, runs, emb]
        partitions = int(_guest(env, cpu, args, info, insns).split()[-1])
        return int(insns.read_text().split()[1]), np.fromfile(emb, "<f4"), partitions

    one, _, _ = count(1)
    more, embedding, partitions = count(1 + EXTRA)
    return (more - one) / EXTRA, embedding, partitions


# --- the LiteRT models -----------------------------------------------------------------


def litert_models(tflite: Path, spec: InputSpec, out: Path) -> dict[str, dict]:
    """fp32 (batch 1), fp16 (the same with XNNPACK's fp16 hint), int8 (post-training)."""
    fp32, changed = batch_one(tflite.read_bytes(), 2)
    made = {
        "fp32": (fp32, "the pinned file, batch 1: " + "; ".join(changed)),
        "fp16": (
            _fp16_hint(fp32),
            "the fp32 file plus the model metadata "
            "reduced_precision_support=fp16accfp16, which makes XNNPACK run fp16 "
            "where the CPU has fp16 arithmetic and fp32 elsewhere",
        ),
        "int8": (
            _int8(fp32, spec),
            "every op int8 (float input and output), by the "
            "calibrator and quantizer inside the ai-edge-litert wheel, on the 36 "
            "built-in calibration faces the NCNN int8 models use; no gate",
        ),
    }
    models = {}
    for variant, (content, how) in made.items():
        path = out / f"{MODEL}-{variant}.tflite"
        path.write_bytes(content)
        models[variant] = {"path": path, "how": how, "sha256": sha256_of(path)}
    return models


def _fp16_hint(content: bytes) -> bytes:
    # What the converter writes for fp16 accumulation; read by XNNPACK's delegate.
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = list(b"fp16accfp16")
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = "reduced_precision_support", len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _int8(content: bytes, spec: InputSpec) -> bytes:
    from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as calibration

    calib, _ = builtin_calibration(spec)
    wrapper = calibration.CalibrationWrapper(content, [], [])
    wrapper.Prepare([[1, *spec.size, 3]])
    for x in calib:
        wrapper.FeedTensor([np.ascontiguousarray(x.transpose(1, 2, 0)[None], np.float32)])
    f32, i8, i32 = (np.dtype(t).num for t in (np.float32, np.int8, np.int32))
    # input, output, allow float ops, activations, bias, no per-channel, no per-channel dense
    return bytes(wrapper.QuantizeModel(f32, f32, False, i8, i32, False, False))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _holdout_cos(model, ref, faces: np.ndarray) -> dict:
    """Cosine to LiteRT fp32 on the held-out faces (host), min and mean."""
    cos = []
    for x in faces:
        nhwc = np.ascontiguousarray(x.transpose(1, 2, 0)[None], np.float32)
        embs = []
        for m in (model, ref):
            it = m.infer.interpreter
            it.set_tensor(it.get_input_details()[0]["index"], nhwc)
            it.invoke()
            embs.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
        cos.append(_cos(*embs))
    return {"n": len(cos), "min": min(cos), "mean": float(np.mean(cos))}


# --- the run ---------------------------------------------------------------------------


def markdown(rows: dict[str, dict], notes: list[str]) -> str:
    base = rows["LiteRT fp32"]
    cols = [c.upper() for c in CPUS]
    head = ["runtime", *[f"{c} Minsn" for c in cols], *[f"{c} / LiteRT fp32" for c in cols]]
    lines = [
        "Millions of arm64 guest instructions per inference of the trained MobileFaceNet "
        f"(`{MODEL}`), 1 thread, batch 1, qemu-user; A57: ARMv8.0, A76: ARMv8.2 (fp16 "
        "arithmetic, dot product).",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for label, r in rows.items():
        cells = [f"{r[c] / 1e6:.1f}" for c in CPUS] + [f"{r[c] / base[c]:.2f}" for c in CPUS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *(f"- {n}" for n in notes)]) + "\n"


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("error: run as root: the guest's /proc/cpuinfo is bind-mounted (unshare --mount)")
    start = time.monotonic()
    env, guest = guest_env()
    export_dir = cached_pretrained_export(MODEL)
    spec = InputSpec.from_manifest(read_manifest(export_dir))
    pin = get(MODEL).source
    tflite = tflite_file(MODEL)

    ncnn = measure_int8(MODEL, previous={})
    rows = {NCNN_ROWS[v]: {c: ncnn["insn"][f"{v}_{c}"] for c in CPUS} for v in NCNN_ROWS}

    face = np.ascontiguousarray(face_inputs(spec)[0][0], np.float32)  # bench's fixed face
    holdout, _ = holdout_faces(spec)
    cpus, litert = {}, {}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        (tmp / "guest.py").write_text(GUEST_SCRIPT)
        face.transpose(1, 2, 0).astype("<f4").tofile(tmp / "face.bin")
        for key, cpu in CPUS.items():
            cpus[key] = {"qemu_cpu": cpu} | cpuinfo(env, cpu, tmp / f"cpuinfo-{key}")
        models = litert_models(tflite, spec, tmp)
        ref = litert_backend(models["fp32"]["path"], face, 1)
        for variant, m in models.items():
            host = litert_backend(m["path"], face, 1)
            host_emb = host.infer().ravel()
            partitions = sum(
                d["op_name"] == "DELEGATE" for d in host.infer.interpreter._get_ops_details()
            )
            m |= {
                "path": m["path"].name,
                "xnnpack_partitions": partitions,
                "cos_to_fp32_host": _cos(host_emb, ref.infer()),
            }
            if variant == "int8":  # the host has no fp16 arithmetic: fp16 is judged in the guest
                m["cos_to_fp32_holdout"] = _holdout_cos(host, ref, holdout)
            row = rows[LITERT_ROWS[variant]] = {}
            for key, cpu in CPUS.items():
                n, emb, guest_partitions = litert_count(
                    env, cpu, tmp / f"cpuinfo-{key}", tmp / m["path"], tmp / "face.bin", tmp
                )
                if guest_partitions != partitions:
                    sys.exit(
                        f"error: {variant} on {cpu}: XNNPACK took {guest_partitions} "
                        f"partitions in the guest, {partitions} on the host"
                    )
                row[key] = n
                m[f"cos_guest_{key}_to_host"] = _cos(emb, host_emb)
                print(
                    f"LiteRT {variant:<5} {cpu:<11} {n / 1e6:8.1f}M  cos to host "
                    f"{m[f'cos_guest_{key}_to_host']:.6f}",
                    file=sys.stderr,
                )
            litert[variant] = m
    for key in CPUS:
        if litert["fp32"][f"cos_guest_{key}_to_host"] < 0.9999:
            sys.exit(f"error: LiteRT fp32 on {CPUS[key]} computed another embedding than the host")

    notes = _notes(litert, ncnn)
    report = {
        "benchmark": "arm_peer",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "unit": "arm64 guest instructions per inference, 1 thread, batch 1, qemu-user, "
        f"(count with {1 + EXTRA} inferences - count with 1) / {EXTRA}",
        "model": {
            "name": MODEL,
            "tflite": pin.provenance(),
            "ncnn_export": export_dir.name,
            "ncnn_int8_auto_fp32_layers": ncnn.get("int8_auto_fp32_layers"),
        },
        "cpus": cpus,
        "instructions": rows,
        "ratio_to_litert_fp32": {
            label: {c: r[c] / rows["LiteRT fp32"][c] for c in CPUS} for label, r in rows.items()
        },
        "litert": litert,
        "notes": notes,
        "environment": {
            "host": platform.machine(),
            "tools": tool_versions(),
            "host_litert": ref.info["version"],
            "qemu": _run(["qemu-aarch64", "--version"], "qemu").splitlines()[0],
            "insn_plugin": insn_plugin().name,
            "guest": guest | {"cache": env.name},
        },
        "seconds": round(time.monotonic() - start, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "arm_peer.json", report)
    (RESULTS / "arm_peer.md").write_text(markdown(rows, notes))
    print(markdown(rows, notes))


def _notes(litert: dict, ncnn: dict) -> list[str]:
    fp16, int8 = litert["fp16"], litert["int8"]
    return [
        "LiteRT runs the pinned MobileFaceNet.tflite itself (batch 2 in the file; its "
        "RESHAPE relaxed and the input resized to batch 1 as the host backend does); NCNN "
        "runs the export whose weights were imported from it. Both 1 thread.",
        "The file has no fp16 or int8 form. LiteRT fp16: the same fp32 file with the "
        "reduced_precision_support metadata XNNPACK reads; it computes in fp16 on the A76 "
        "and stays fp32 on the A57, which has no fp16 arithmetic (the A76's embedding has "
        f"cosine {fp16['cos_guest_a76_to_host']:.5f} to the host's fp32 one).",
        "LiteRT int8: post-training full-integer quantization with the calibrator inside "
        "the ai-edge-litert wheel (no TensorFlow converter), not gated: cosine to fp32 on "
        f"the held-out faces {int8['cos_to_fp32_holdout']['mean']:.3f} mean / "
        f"{int8['cos_to_fp32_holdout']['min']:.3f} worst, which NCNN's gate would refuse; "
        f"XNNPACK takes it in {int8['xnnpack_partitions']} partitions, against 1 for fp32: "
        "the file writes each of its 33 PReLUs as five elementwise ops, and their int8 "
        "RELU, ABS and SUB stay outside XNNPACK, on LiteRT's built-in kernels between the "
        "partitions. A cost figure, not a model to ship.",
        "NCNN fp16: fp16 storage on the A57, fp16 arithmetic on the A76 (the project's "
        "patched ncnn). NCNN int8: every layer int8, no gate; int8_auto: what "
        f"`export --int8 --int8-auto` ships (gated; {len(ncnn.get('int8_auto_fp32_layers') or [])}"
        " layers kept fp32); depthwise fp32: every depthwise layer fp32, the 1x1 convolutions "
        "int8, what `export --int8 --int8-skip depthwise` ships (it passes the gate: "
        "benchmarks/results/pretrained_parity.md).",
        "Instructions are not time: memory traffic, caches and the cost of each "
        "instruction on a real core are not in them, and qemu's TCG is not a phone.",
    ]


if __name__ == "__main__":
    main()
