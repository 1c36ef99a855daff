"""The Android demo's native core, proven on the host (no Android SDK/NDK here).

- android-demo/app/src/main/cpp/face_engine.cpp, built against the host ncnn,
  gives the Python ncnn pipeline's detections and embeddings on real photos;
- jni_bridge.cpp compiles against the JDK's jni.h and a plain Java program calls
  it through the app's native method signatures;
- Kotlin, Java and the bridge declare the same natives, and the .so exports them;
- the core links statically for arm64-v8a (and runs under qemu when available);
- `mfn-deploy android-assets` fills an app's assets.

The builds go through mfn_deploy.native.build (cached ncnn: seconds when warm).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli
from mfn_deploy.native import build as bn

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO = REPO_ROOT / "android-demo"
CPP = DEMO / "app" / "src" / "main" / "cpp"
KOTLIN = DEMO / "app" / "src" / "main" / "java" / "com" / "mfndeploy" / "demo"
HOST_SRC = DEMO / "host"
JAVA_SRC = HOST_SRC / "java" / "com" / "mfndeploy" / "demo"
BUILD = REPO_ROOT / "build" / "android-host"
JNI_PREFIX = "Java_com_mfndeploy_demo_FaceEngine_"
TIMEOUT_S = 300

# What "match" means: same faces in the same order, boxes and landmarks within
# MAX_PIXELS, embeddings at cosine >= MIN_COSINE.
MAX_PIXELS = 2.0
MIN_COSINE = 0.9999


def build(target: str) -> Path:
    try:
        return bn.build_extra_project(target, HOST_SRC, BUILD / target)
    except bn.BuildError as e:
        pytest.fail(f"building android-demo/host for {target} failed:\n{e}")


JDK = {"javac": "default-jdk-headless", "java": "default-jdk-headless"}


@pytest.fixture(scope="module")
def host_build() -> Path:
    bn.ensure_tools(JDK, {})  # jni.h for the bridge; installs it when root
    return build("host")


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    from mfn_deploy.face.detector_export import export_detector

    out = tmp_path_factory.mktemp("android-det") / "mtcnn"
    export_detector(out)
    return out


def _composite() -> np.ndarray:
    """Three faces at three sizes, one mirrored: several faces, small crops upscaled."""
    from mfn_deploy.images import load_image, sample_photos

    img = load_image(sample_photos()[0])
    canvas = np.full((330, 601, 3), 40, np.uint8)
    canvas[10:310, 0:300] = cv2.resize(img, (300, 300), interpolation=cv2.INTER_AREA)
    canvas[50:187, 320:457] = cv2.resize(img[:, ::-1], (137, 137), interpolation=cv2.INTER_AREA)
    canvas[200:290, 480:570] = cv2.resize(img, (90, 90), interpolation=cv2.INTER_AREA)
    return canvas


@pytest.fixture(scope="module")
def photos(tmp_path_factory, mfn_export, detector) -> dict:
    """name -> (raw RGB path, width, height, Python ncnn reference faces)."""
    from mfn_deploy.face.verify import FacePipeline
    from mfn_deploy.images import sample_photos

    root = tmp_path_factory.mktemp("android-photos")
    pipeline = FacePipeline(mfn_export, "ncnn", detector)
    shutil.copyfile(sample_photos()[0], root / "astronaut.png")
    cv2.imwrite(str(root / "three.png"), _composite())
    out = {}
    for name in ("astronaut", "three"):
        png = root / f"{name}.png"
        bgr = cv2.imread(str(png), cv2.IMREAD_COLOR)
        raw = root / f"{name}.rgb"
        raw.write_bytes(np.ascontiguousarray(bgr[:, :, ::-1]).tobytes())
        out[name] = (raw, bgr.shape[1], bgr.shape[0], pipeline.embed_all(png))
    return out


def _engine_args(mfn_export: Path, detector: Path, raw: Path, w: int, h: int) -> list[str]:
    return [
        str(detector),
        str(mfn_export / "mobilefacenet.ncnn.param"),
        str(mfn_export / "mobilefacenet.ncnn.bin"),
        str(raw),
        str(w),
        str(h),
    ]


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stdout


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _assert_matches(faces: list[dict], reference) -> dict:
    assert len(faces) == len(reference), f"C++ found {len(faces)} faces, Python {len(reference)}"
    worst = {"box": 0.0, "landmarks": 0.0, "cosine": 1.0}
    for got, ref in zip(faces, reference, strict=True):
        box = np.abs(np.array(got["box"]) - np.array(ref.face.box)).max()
        marks = np.abs(np.array(got["landmarks"]).reshape(5, 2) - ref.face.landmarks).max()
        cos = _cos(got["embedding"], ref.embedding)
        worst = {
            "box": max(worst["box"], box),
            "landmarks": max(worst["landmarks"], marks),
            "cosine": min(worst["cosine"], cos),
        }
    assert worst["box"] <= MAX_PIXELS and worst["landmarks"] <= MAX_PIXELS, worst
    assert worst["cosine"] >= MIN_COSINE, worst
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("photo", ["astronaut", "three"])
def test_host_engine_matches_python_ncnn_pipeline(photo, host_build, photos, mfn_export, detector):
    raw, w, h, reference = photos[photo]
    binary = host_build / "face_engine_host_test"
    result = json.loads(_run([str(binary), *_engine_args(mfn_export, detector, raw, w, h)]))
    assert result["ncnn"] == bn.NCNN_VERSION
    assert len(reference) == (1 if photo == "astronaut" else 3)
    worst = _assert_matches(result["faces"], reference)
    print(f"{photo}: {len(reference)} faces, worst {worst}")


def _natives_kotlin() -> dict[str, tuple[str, ...]]:
    kotlin_types = {
        "Long": "long",
        "Int": "int",
        "Boolean": "boolean",
        "Float": "float",
        "Double": "double",
        "String": "String",
        "ByteArray": "byte[]",
        "FloatArray": "float[]",
        "DoubleArray": "double[]",
        None: "void",
    }
    text = (KOTLIN / "FaceEngine.kt").read_text()
    out = {}
    for m in re.finditer(r"external fun (\w+)\((.*?)\)\s*(?::\s*(\w+))?\s*\n", text, re.S):
        params = [p.split(":")[1].strip() for p in m.group(2).split(",") if p.strip()]
        out[m.group(1)] = (kotlin_types[m.group(3)], *(kotlin_types[p] for p in params))
    return out


def _natives_java() -> dict[str, tuple[str, ...]]:
    text = (JAVA_SRC / "FaceEngine.java").read_text()
    out = {}
    for m in re.finditer(r"native\s+(\S+)\s+(\w+)\((.*?)\);", text, re.S):
        params = [p.split()[0] for p in m.group(3).split(",") if p.strip()]
        out[m.group(2)] = (m.group(1), *params)
    return out


def _natives_bridge() -> dict[str, tuple[str, ...]]:
    jni_types = {
        "jlong": "long",
        "jint": "int",
        "jboolean": "boolean",
        "jfloat": "float",
        "jdouble": "double",
        "jstring": "String",
        "jbyteArray": "byte[]",
        "jfloatArray": "float[]",
        "jdoubleArray": "double[]",
        "void": "void",
    }
    text = (CPP / "jni_bridge.cpp").read_text()
    out = {}
    for m in re.finditer(r"MFN_JNI\((\w+),\s*(\w+)\)\((.*?)\)\s*\{", text, re.S):
        params = [p.split()[0] for p in m.group(3).split(",")]
        assert params[:2] == ["JNIEnv*", "jobject"], f"{m.group(2)}: not an instance method"
        out[m.group(2)] = (jni_types[m.group(1)], *(jni_types[p] for p in params[2:]))
    return out


def test_kotlin_java_and_bridge_declare_the_same_natives():
    kotlin, java, bridge = _natives_kotlin(), _natives_java(), _natives_bridge()
    assert len(kotlin) >= 10
    assert kotlin == java
    assert kotlin == bridge


@pytest.mark.slow
def test_jni_library_exports_every_declared_native(host_build):
    nm = shutil.which("nm")
    if nm is None:
        pytest.fail("nm missing; apt-get install -y binutils")
    symbols = _run([nm, "-D", "--defined-only", str(host_build / "libface_engine_jni.so")])
    exported = {line.split()[-1] for line in symbols.splitlines() if line.strip()}
    jni = {s.removeprefix(JNI_PREFIX) for s in exported if s.startswith(JNI_PREFIX)}
    assert jni == set(_natives_kotlin()) == set(_natives_java())
    # ncnn stays inside the library, as on Android.
    assert not any("ncnn" in s for s in exported), sorted(s for s in exported if "ncnn" in s)


@pytest.mark.slow
def test_java_calls_the_bridge_like_the_app(host_build, photos, mfn_export, detector, tmp_path):
    classes = tmp_path / "classes"
    sources = sorted(str(p) for p in JAVA_SRC.glob("*.java"))
    _run(["javac", "-Xlint:all", "-Werror", "-d", str(classes), *sources])
    raw, w, h, reference = photos["astronaut"]
    lib = host_build / "libface_engine_jni.so"
    cmd = ["java", "-cp", str(classes), "com.mfndeploy.demo.FaceEngineTest", str(lib)]
    result = json.loads(_run([*cmd, *_engine_args(mfn_export, detector, raw, w, h)]))
    assert result["faces"] == len(reference) == 1
    face = {k: result[k] for k in ("box", "landmarks", "embedding")}
    _assert_matches([face], reference[:1])


def _elf_machine_and_interp(path: Path) -> tuple[int, bool]:
    """(e_machine, has PT_INTERP) of a 64-bit little-endian ELF file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path}: not ELF64 LE"
    machine = int.from_bytes(data[18:20], "little")
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    types = [
        int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little")
        for i in range(phnum)
    ]
    return machine, 3 in types  # PT_INTERP: asks for a dynamic loader


@pytest.mark.slow
def test_core_links_statically_for_arm64(photos, mfn_export, detector):
    binary = build("arm64-v8a") / "face_engine_host_test"
    machine, dynamic = _elf_machine_and_interp(binary)
    assert machine == 183, f"e_machine {machine}, want 183 (AArch64)"
    assert not dynamic, "arm64 build should be fully static"
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        return  # linking is the requirement; running under qemu is a bonus check
    raw, w, h, reference = photos["astronaut"]
    result = json.loads(_run([qemu, str(binary), *_engine_args(mfn_export, detector, raw, w, h)]))
    _assert_matches(result["faces"], reference)


def _fake_app(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "build.gradle.kts").write_text("// stand-in\n")
    return root


@pytest.mark.slow
def test_android_assets_copies_models_with_a_manifest(mfn_export, detector, tmp_path):
    app = _fake_app(tmp_path / "demo")
    proc = run_cli("android-assets", "--export", mfn_export, "--detector", detector, "--app", app)
    assert proc.returncode == 0, proc.stderr
    models = app / "app" / "src" / "main" / "assets" / "models"
    assets = json.loads((models / "assets.json").read_text())
    assert assets["embedder"] | {"width": 112, "height": 112} == assets["embedder"]
    expected = {
        "benchmark.png",
        "detector/manifest.json",
        "embedder/manifest.json",
        "embedder/mobilefacenet.ncnn.param",
        "embedder/mobilefacenet.ncnn.bin",
        *(f"detector/{n}.ncnn.{ext}" for n in ("pnet", "rnet", "onet") for ext in ("param", "bin")),
    }
    assert set(assets["files"]) == expected
    on_disk = {p.relative_to(models).as_posix() for p in models.rglob("*") if p.is_file()}
    assert on_disk == expected | {"assets.json"}
    for rel, meta in assets["files"].items():
        assert hashlib.sha256((models / rel).read_bytes()).hexdigest() == meta["sha256"], rel
    # Byte-identical to the exports the parity checks ran on.
    for name in ("mobilefacenet.ncnn.param", "mobilefacenet.ncnn.bin"):
        assert (models / "embedder" / name).read_bytes() == (mfn_export / name).read_bytes()
    assert (models / "detector" / "onet.ncnn.bin").read_bytes() == (
        detector / "onet.ncnn.bin"
    ).read_bytes()

    # A second run replaces the folder whole: stale files do not survive.
    (models / "stale.txt").write_text("old")
    assert run_cli(*proc.args[3:]).returncode == 0
    assert not (models / "stale.txt").exists()
    assert not [p for p in models.parent.iterdir() if p.name.startswith(".")]


def test_android_assets_refuses_a_folder_that_is_not_the_app(tmp_path):
    proc = run_cli(
        "android-assets", "--export", tmp_path, "--detector", tmp_path, "--app", tmp_path
    )
    assert proc.returncode != 0
    assert "not the Android demo" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_app_sources_are_consistent():
    """What a Gradle build would catch first, checked without one."""
    gradle = (DEMO / "app" / "build.gradle.kts").read_text()
    assert "minSdk = 24" in gradle
    assert '"arm64-v8a", "armeabi-v7a"' in gradle
    release = bn.NCNN_VERSION.rsplit(".", 1)[1]
    assert f'ncnnRelease = "{release}"' in gradle
    script = (DEMO / "tools" / "fetch_ncnn_android.sh").read_text()
    assert f"RELEASE={release}" in script
    # The core stays portable: ncnn and the standard library only.
    for name in ("face_engine.h", "face_engine.cpp"):
        includes = re.findall(r'#include [<"]([^>"]+)[>"]', (CPP / name).read_text())
        assert not [i for i in includes if "android" in i or "jni" in i or "opencv" in i], includes

    kotlin = "\n".join(p.read_text() for p in KOTLIN.glob("*.kt"))
    res = DEMO / "app" / "src" / "main" / "res"
    layouts = "\n".join(p.read_text() for p in (res / "layout").glob("*.xml"))
    ids = set(re.findall(r"@\+id/(\w+)", layouts))
    assert set(re.findall(r"R\.id\.(\w+)", kotlin)) <= ids
    strings = set(re.findall(r'<string name="(\w+)"', (res / "values" / "strings.xml").read_text()))
    used = set(re.findall(r"R\.string\.(\w+)", kotlin))
    used |= set(re.findall(r"@string/(\w+)", layouts))
    manifest = (DEMO / "app" / "src" / "main" / "AndroidManifest.xml").read_text()
    used |= set(re.findall(r"@string/(\w+)", manifest))
    assert used <= strings, used - strings
    for activity in re.findall(r'android:name="\.(\w+)"', manifest):
        assert (KOTLIN / f"{activity}.kt").is_file(), activity
    # The library Kotlin loads is the one CMake builds.
    assert 'System.loadLibrary("mfndemo")' in kotlin
    assert "add_library(mfndemo SHARED" in (CPP / "CMakeLists.txt").read_text()
