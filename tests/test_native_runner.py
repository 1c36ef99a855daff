"""Tests for the native mfn-bench runner (src/mfn_deploy/native/mfn_bench.cpp).

They need the runners built by `mfn-deploy native build` (`make native`) and skip
with the reason otherwise. The test model is a tiny seeded CNN built here; only
the runners' location and the pinned ncnn version come from the package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pnnx = pytest.importorskip("pnnx")

from mfn_deploy.native import PLUGIN_SOURCE  # noqa: E402
from mfn_deploy.native.build import NCNN_VERSION, runner_dir  # noqa: E402

HOST_RUNNER = runner_dir("host") / "mfn-bench"
ARM64_RUNNER = runner_dir("arm64-v8a") / "mfn-bench"
ARMV7_RUNNER = runner_dir("armeabi-v7a") / "mfn-bench"

# The tiny model's input: 28 -> 14 -> 7 after two stride-2 convs, then a 7x7
# depthwise "GDC" conv to 1x1, like MobileFaceNet's head at 112x112.
W, H, C = 28, 28, 3
EMBEDDING_DIM = 16
TIMEOUT_S = 120  # generous for qemu on a loaded CI box; a hang still fails

# `make test` builds the runners first and sets this: a missing runner is then a failure.
REQUIRED = os.environ.get("MFN_REQUIRE_NATIVE") == "1"

needs_host = pytest.mark.skipif(
    not REQUIRED and not HOST_RUNNER.is_file(),
    reason=f"{HOST_RUNNER} missing; run `make native`",
)
needs_arm64 = pytest.mark.skipif(
    not REQUIRED and (not ARM64_RUNNER.is_file() or shutil.which("qemu-aarch64") is None),
    reason=f"{ARM64_RUNNER} or qemu-aarch64 missing; "
    "run `make native` (apt-get install -y qemu-user)",
)
# armeabi-v7a is best-effort in the build, so it may legitimately be absent.
needs_armv7 = pytest.mark.skipif(
    not ARMV7_RUNNER.is_file() or shutil.which("qemu-arm") is None,
    reason=f"{ARMV7_RUNNER} or qemu-arm missing (v7 is best-effort)",
)
needs_gcc = pytest.mark.skipif(
    shutil.which("gcc") is None, reason="gcc is needed to build tools/qemu_insn_plugin.c"
)

# Command prefix per runner. ARM binaries run under qemu explicitly so the
# tests do not depend on binfmt_misc being registered.
RUNNERS = [
    pytest.param([str(HOST_RUNNER)], id="host", marks=needs_host),
    pytest.param(["qemu-aarch64", str(ARM64_RUNNER)], id="arm64", marks=needs_arm64),
    pytest.param(["qemu-arm", str(ARMV7_RUNNER)], id="armv7", marks=needs_armv7),
]


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=TIMEOUT_S, env=env
    )


def run_ok(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    proc = run(cmd, env=env)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


def bench_args(model: dict, *extra: str) -> list[str]:
    shape = f"{W},{H},{C}"
    return ["--param", str(model["param"]), "--bin", str(model["bin"]), "--shape", shape, *extra]


def embed(prefix: list[str], model: dict, dump: Path, *extra: str) -> tuple[dict, np.ndarray]:
    """Run the runner once or more and return its JSON and the dumped embedding."""
    result = run_ok([*prefix, *bench_args(model, "--dump", str(dump), *extra)])
    return result, np.fromfile(dump, dtype="<f4")


def seeded_pattern(seed: int, count: int) -> np.ndarray:
    """The runner's documented input pattern (see `mfn-bench --help`)."""
    out = np.empty(count, dtype=np.float32)
    state = seed
    for i in range(count):
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out[i] = (state >> 40) / 8388608.0 - 1.0
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


class TinyFaceNet(torch.nn.Module):
    """conv+BN+PReLU, depthwise conv, 1x1 conv, GDC, flatten, linear+BN."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(
            nn.Conv2d(C, 8, 3, 2, 1, bias=False),
            nn.BatchNorm2d(8),
            nn.PReLU(8),
            nn.Conv2d(8, 8, 3, 2, 1, groups=8, bias=False),
            nn.BatchNorm2d(8),
            nn.PReLU(8),
            nn.Conv2d(8, 16, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.Conv2d(16, 16, 7, 1, 0, groups=16, bias=False),
            nn.BatchNorm2d(16),
        )
        self.fc = nn.Linear(16, EMBEDDING_DIM, bias=False)
        self.bn = nn.BatchNorm1d(EMBEDDING_DIM)

    def forward(self, x):
        return self.bn(self.fc(torch.flatten(self.body(x), 1)))


def export_and_convert(model: torch.nn.Module, out: Path) -> tuple[Path, Path, Path]:
    onnx_path = out / "tiny.onnx"
    with warnings.catch_warnings():
        # torch >= 2.9 calls the TorchScript exporter legacy; dynamo=False is deliberate.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            torch.zeros(1, C, H, W),
            str(onnx_path),
            dynamo=False,
            opset_version=17,
            input_names=["data"],
            output_names=["embedding"],
        )
    proc = subprocess.run(
        [pnnx.EXEC_PATH, onnx_path.name, f"inputshape=[1,{C},{H},{W}]", "fp16=0"],
        check=False,
        capture_output=True,
        text=True,
        cwd=out,
        timeout=TIMEOUT_S,
    )
    param, bin_ = out / "tiny.ncnn.param", out / "tiny.ncnn.bin"
    if proc.returncode != 0 or not param.is_file() or not bin_.is_file():
        pytest.fail(f"pnnx failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-2000:]}")
    return onnx_path, param, bin_


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> dict:
    """ONNX + pnnx-converted ncnn files, an input tensor and the ORT reference."""
    out = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    model = TinyFaceNet()
    # Non-trivial BN statistics and PReLU slopes, so folding them is exercised.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(0.05, 0.4)
    model.eval()
    onnx_path, param, bin_ = export_and_convert(model, out)

    rng = np.random.default_rng(1234)
    x = np.clip(rng.normal(0.0, 0.5, size=(1, C, H, W)), -1.0, 1.0).astype("<f4")
    input_path = out / "input.f32"
    x.tofile(input_path)

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def reference(tensor: np.ndarray) -> np.ndarray:
        feed = {"data": tensor.reshape(1, C, H, W).astype(np.float32)}
        return session.run(None, feed)[0].reshape(-1)

    return {
        "onnx": onnx_path,
        "param": param,
        "bin": bin_,
        "input": input_path,
        "expected": reference(x),
        "reference": reference,
    }


class WideNet(torch.nn.Module):
    """Milliseconds per inference (tens of MAdds per layer) at the tiny model's input, so
    per-layer times are far above the profiler's per-call cost."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        layers = [nn.Conv2d(C, 64, 3, 1, 1), nn.PReLU(64)]
        for _ in range(3):
            layers += [nn.Conv2d(64, 64, 3, 1, 1), nn.PReLU(64)]
        layers += [nn.Conv2d(64, 64, (H, W), groups=64, bias=False)]  # GDC: to 1x1
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(64, EMBEDDING_DIM)

    def forward(self, x):
        return self.fc(torch.flatten(self.body(x), 1))


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("wide_model")
    torch.manual_seed(0)
    _, param, bin_ = export_and_convert(WideNet().eval(), out)
    return {"param": param, "bin": bin_}


# --- numerical parity --------------------------------------------------------


@pytest.mark.parametrize("prefix", RUNNERS)
@pytest.mark.parametrize("threads", ["1", "2"])
def test_fp32_matches_onnxruntime(prefix, threads, tiny_model, tmp_path):
    result, got = embed(
        prefix, tiny_model, tmp_path / "emb.f32", "--input", str(tiny_model["input"]),
        "--threads", threads, "--warmup", "1", "--loops", "2",
    )  # fmt: skip
    expected = tiny_model["expected"]
    assert result["output_shape"] == [EMBEDDING_DIM]
    assert got.shape == expected.shape
    max_abs, cos = float(np.max(np.abs(got - expected))), cosine(got, expected)
    print(f"fp32 {prefix[-1]}: max abs {max_abs:.3g}, cosine {cos:.9f}")
    assert max_abs <= 1e-4
    assert cos >= 0.99999


@pytest.mark.parametrize("prefix", RUNNERS)
def test_fp16_close_to_onnxruntime(prefix, tiny_model, tmp_path):
    result, got = embed(
        prefix, tiny_model, tmp_path / "emb.f32", "--input", str(tiny_model["input"]),
        "--fp16", "on", "--warmup", "0", "--loops", "1",
    )  # fmt: skip
    assert result["options"]["fp16"] is True
    expected = tiny_model["expected"]
    max_abs, cos = float(np.max(np.abs(got - expected))), cosine(got, expected)
    print(f"fp16 {prefix[-1]}: max abs {max_abs:.3g}, cosine {cos:.9f}")
    assert cos >= 0.999


@pytest.mark.parametrize("prefix", RUNNERS)
def test_seeded_pattern_follows_documented_formula(prefix, tiny_model, tmp_path):
    _, got = embed(prefix, tiny_model, tmp_path / "emb.f32", "--seed", "7", "--loops", "1")
    pattern = seeded_pattern(7, W * H * C)
    assert pattern.min() >= -1.0
    assert pattern.max() <= 1.0
    assert np.max(np.abs(got - tiny_model["reference"](pattern))) <= 1e-4


# --- JSON contract -----------------------------------------------------------


@needs_host
def test_json_contract(tiny_model):
    loops = 5
    extra = ("--loops", str(loops), "--warmup", "1", "--threads", "2", "--cooldown", "0.01")
    result = run_ok([str(HOST_RUNNER), *bench_args(tiny_model, *extra)])
    assert result["runner"] == "mfn-bench"
    assert result["ncnn_version"] == NCNN_VERSION
    assert isinstance(result["runner_version"], str)
    times = result["times_ms"]
    assert isinstance(times, list)
    assert len(times) == loops
    assert all(isinstance(t, float) and t >= 0 for t in times)
    for key in ("min_ms", "median_ms", "mean_ms", "p90_ms", "max_ms", "std_ms", "load_ms"):
        assert isinstance(result[key], float), key
    assert result["min_ms"] <= result["median_ms"] <= result["p90_ms"] <= result["max_ms"]
    assert result["min_ms"] <= result["mean_ms"] <= result["max_ms"]
    for key in ("cpu_count", "big_cpu_count", "little_cpu_count"):
        assert isinstance(result[key], int), key
    assert result["cpu_count"] >= 1
    assert result["output_shape"] == [EMBEDDING_DIM]
    assert result["options"] == {
        "param": str(tiny_model["param"]),
        "bin": str(tiny_model["bin"]),
        "input": None,
        "shape": [W, H, C],
        "seed": 0,
        "threads": 2,
        "powersave": 0,
        "warmup": 1,
        "loops": loops,
        "expect_dim": None,
        "cooldown": 0.01,
        "fp16": False,
        "dump": None,
        "input_blob": "in0",
        "output_blob": "out0",
        "pace_ms": 0,
        "profile": False,
    }
    assert result["profile"] is None


# --- start-up, memory, per-layer profile, pacing (issue 15) -------------------


@pytest.mark.parametrize("prefix", RUNNERS[:2])
def test_load_cold_and_peak_memory(prefix, tiny_model):
    result = run_ok([*prefix, *bench_args(tiny_model, "--warmup", "0", "--loops", "2")])
    for key in ("load_ms_param", "load_ms_bin", "cold_ms"):
        assert isinstance(result[key], float), key
        assert result[key] >= 0, key
    # load_ms stays the whole load: the two parts, as printed (4 decimals each).
    assert result["load_ms"] == pytest.approx(
        result["load_ms_param"] + result["load_ms_bin"], abs=2e-4
    )
    assert result["cold_ms"] > 0
    assert len(result["times_ms"]) == 2  # the cold run is not among the timed runs
    assert isinstance(result["peak_rss_kb"], int)
    assert result["peak_rss_kb"] > 0
    assert 0 < result["load_peak_rss_kb"] <= result["peak_rss_kb"]


@needs_host
def test_cold_run_also_with_zero_loops(tiny_model):
    result = run_ok([str(HOST_RUNNER), *bench_args(tiny_model, "--loops", "0", "--warmup", "0")])
    assert result["cold_ms"] > 0
    assert result["peak_rss_kb"] > 0


@needs_host
@pytest.mark.parametrize("threads", ["1", "2"])
def test_profile_rows_sum_to_the_whole_inference(wide_model, threads):
    loops = 5
    args = ("--threads", threads, "--warmup", "1", "--loops", str(loops), "--profile")
    result = run_ok([str(HOST_RUNNER), *bench_args(wide_model, *args)])
    assert result["options"]["profile"] is True
    profile = result["profile"]
    assert profile["runs"] == loops
    layers = profile["layers"]
    types = {row["type"] for row in layers}
    assert {"Convolution", "PReLU", "ConvolutionDepthWise", "InnerProduct"} <= types
    assert "Input" not in types
    for row in layers:
        assert set(row) == {"name", "type", "ms", "share"}
        assert row["ms"] >= 0
    total = sum(row["ms"] for row in layers)
    assert total == pytest.approx(profile["layers_ms"], abs=1e-3 + 1e-4 * len(layers))
    assert sum(row["share"] for row in layers) == pytest.approx(1.0, abs=1e-3)
    # The rows account for the whole profiled inference (within 10 %).
    assert abs(total - profile["run_ms"]) <= 0.1 * profile["run_ms"], profile
    print(f"profile, {threads} thread(s): layers {total:.3f} ms, run {profile['run_ms']:.3f} ms")


@needs_host
def test_profile_on_zero_loops_profiles_one_run(tiny_model):
    args = ("--loops", "0", "--warmup", "0", "--profile")
    result = run_ok([str(HOST_RUNNER), *bench_args(tiny_model, *args)])
    assert result["profile"]["runs"] == 1
    assert result["times_ms"] == []


@needs_host
def test_pace_spaces_the_runs(tiny_model):
    import time

    loops, pace = 5, 30
    args = ("--warmup", "1", "--loops", str(loops), "--pace-ms", str(pace))
    start = time.perf_counter()
    result = run_ok([str(HOST_RUNNER), *bench_args(tiny_model, *args)])
    wall_ms = (time.perf_counter() - start) * 1e3
    assert result["options"]["pace_ms"] == pace
    # Frame 0 is the cold run, then 1 warm-up and `loops` timed runs, each a frame later.
    assert result["runs_wall_ms"] >= (1 + loops) * pace
    assert wall_ms >= loops * pace
    unpaced = run_ok(
        [str(HOST_RUNNER), *bench_args(tiny_model, "--warmup", "1", "--loops", str(loops))]
    )
    assert unpaced["runs_wall_ms"] < loops * pace  # microseconds per run: the pace is what waits


@needs_host
@pytest.mark.parametrize("value", ["-1", "x", "60001"])
def test_bad_pace_is_one_line(tiny_model, value):
    proc = run([str(HOST_RUNNER), *bench_args(tiny_model, "--pace-ms", value)])
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "--pace-ms" in proc.stderr


@needs_host
def test_zero_loops_gives_null_stats_and_dumps_the_cold_run(tiny_model, tmp_path):
    """--loops 0 --warmup 0: no timed run, and the dump is the cold run's output (one
    inference: what the ARM parity checks under qemu pay), equal to a timed run's."""
    cold, timed = tmp_path / "cold.f32", tmp_path / "timed.f32"
    zero = ("--loops", "0", "--warmup", "0", "--dump", str(cold))
    result = run_ok([str(HOST_RUNNER), *bench_args(tiny_model, *zero)])
    assert result["times_ms"] == []
    assert result["median_ms"] is None
    assert result["output_shape"] == [EMBEDDING_DIM]
    run_ok([str(HOST_RUNNER), *bench_args(tiny_model, "--loops", "1", "--dump", str(timed))])
    assert cold.read_bytes() == timed.read_bytes()


@pytest.mark.parametrize("prefix", RUNNERS)
def test_version_and_help(prefix):
    version = run([*prefix, "--version"])
    assert version.returncode == 0
    assert NCNN_VERSION in version.stdout
    usage = run([*prefix, "--help"])
    assert usage.returncode == 0
    assert "--param" in usage.stdout
    assert "--fp16" in usage.stdout


# --- failures: one line on stderr, non-zero exit, no hang --------------------


@pytest.fixture(scope="module")
def files(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """The good model files plus broken variants, by name."""
    where = tmp_path_factory.mktemp("broken")
    good_bin = tiny_model["bin"].read_bytes()
    good_param = tiny_model["param"].read_bytes()
    broken = {
        "garbage.param": np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty.param": b"",
        "truncated.param": good_param[: len(good_param) // 2],
        # Right magic, nonsense body: gets past ncnn's first check.
        "bogus_layer.param": b"7767517\n2 2\nInput in0 0 1 in0\nNoSuchLayer x 1 1 in0 out0\n",
        "bad_counts.param": b"7767517\n-3 99999999\n",
        "empty.bin": b"",
        "truncated.bin": good_bin[: len(good_bin) // 2],
        "one_short.bin": good_bin[:-4],
        "too_long.bin": good_bin + bytes(64),
        "short_input.f32": tiny_model["input"].read_bytes()[:-8],
    }
    paths = {name: where / name for name in broken}
    for name, data in broken.items():
        paths[name].write_bytes(data)
    return {
        **paths,
        "param": tiny_model["param"],
        "bin": tiny_model["bin"],
        "input": tiny_model["input"],
        "missing": where / "does-not-exist",
        "dir": where,
    }


def _model(f: dict, *extra: str) -> list[str]:
    return bench_args(f, *extra)


def _pair(f: dict, param: str, bin_: str) -> list[str]:
    return ["--param", str(f[param]), "--bin", str(f[bin_])]


ERROR_CASES = {
    "missing_param": lambda f: _pair(f, "missing", "bin"),
    "missing_bin": lambda f: _pair(f, "param", "missing"),
    "param_is_directory": lambda f: _pair(f, "dir", "bin"),
    "garbage_param": lambda f: _pair(f, "garbage.param", "bin"),
    "empty_param": lambda f: _pair(f, "empty.param", "bin"),
    "truncated_param": lambda f: _pair(f, "truncated.param", "bin"),
    "bogus_layer_param": lambda f: _pair(f, "bogus_layer.param", "bin"),
    "bad_counts_param": lambda f: _pair(f, "bad_counts.param", "bin"),
    "empty_bin": lambda f: _pair(f, "param", "empty.bin"),
    "truncated_bin": lambda f: _pair(f, "param", "truncated.bin"),
    "one_float_short_bin": lambda f: _pair(f, "param", "one_short.bin"),
    "too_long_bin": lambda f: _pair(f, "param", "too_long.bin"),
    "no_args": lambda _: [],
    "missing_bin_arg": lambda f: ["--param", str(f["param"])],
    "unknown_option": lambda f: _model(f, "--frobnicate", "1"),
    "option_without_value": lambda f: _model(f, "--loops"),
    "stray_argument": lambda f: _model(f, "extra"),
    "shape_two_values": lambda f: _model(f, "--shape", "28,28"),
    "shape_not_numbers": lambda f: _model(f, "--shape", "a,b,c"),
    "shape_zero": lambda f: _model(f, "--shape", "0,28,3"),
    "shape_trailing_junk": lambda f: _model(f, "--shape", "28,28,3x"),
    # Valid shapes the model was not exported for: caught before inference.
    "shape_too_big_for_model": lambda f: _model(f, "--shape", "56,56,3"),
    "shape_huge_for_model": lambda f: _model(f, "--shape", "280,280,3"),
    "shape_wrong_channels": lambda f: _model(f, "--shape", "28,28,1"),
    "shape_vs_input_size": lambda f: _model(f, "--input", str(f["input"]), "--shape", "28,27,3"),
    "short_input_file": lambda f: _model(f, "--input", str(f["short_input.f32"])),
    "missing_input_file": lambda f: _model(f, "--input", str(f["missing"])),
    "threads_zero": lambda f: _model(f, "--threads", "0"),
    "loops_negative": lambda f: _model(f, "--loops", "-1"),
    "loops_not_int": lambda f: _model(f, "--loops", "3.5"),
    "powersave_3": lambda f: _model(f, "--powersave", "3"),
    "fp16_maybe": lambda f: _model(f, "--fp16", "maybe"),
    "cooldown_negative": lambda f: _model(f, "--cooldown", "-1"),
    "wrong_input_blob": lambda f: _model(f, "--input-blob", "data"),
    "wrong_output_blob": lambda f: _model(f, "--output-blob", "embedding"),
    "dump_unwritable": lambda f: _model(f, "--dump", str(f["missing"] / "out.f32")),
    "expect_dim_zero": lambda f: _model(f, "--expect-dim", "0"),
    "expect_dim_not_int": lambda f: _model(f, "--expect-dim", "128x"),
    # The shape fits every layer but the output has another size than the caller expects.
    "expect_dim_differs": lambda f: _model(f, "--expect-dim", str(EMBEDDING_DIM * 4)),
}


@pytest.mark.parametrize("prefix", RUNNERS)
@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_give_one_line_and_nonzero_exit(prefix, case, files):
    proc = run([*prefix, *ERROR_CASES[case](files)])
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mfn-bench: error: ")
    assert proc.stdout == ""


@needs_host
def test_expect_dim_passes_when_the_output_has_that_size(tiny_model):
    result = run_ok([str(HOST_RUNNER), *bench_args(tiny_model, "--expect-dim", str(EMBEDDING_DIM))])
    assert result["options"]["expect_dim"] == EMBEDDING_DIM
    assert result["output_shape"] == [EMBEDDING_DIM]


@needs_host
def test_expect_dim_names_both_sizes_and_exits_2(tiny_model):
    proc = run([str(HOST_RUNNER), *bench_args(tiny_model, "--expect-dim", "64")])
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        f"mfn-bench: error: --shape {W},{H},{C} does not fit the model: "
        f"output 'out0' has {EMBEDDING_DIM} values, --expect-dim is 64\n"
    )


def test_runner_args_pass_the_expected_dim():
    from mfn_deploy.native import RunnerOptions, runner_args

    args = runner_args("m.param", "m.bin", (96, 112, 3), RunnerOptions(), expect_dim=128)
    assert args[args.index("--expect-dim") + 1] == "128"
    assert "--expect-dim" not in runner_args("m.param", "m.bin", (96, 112, 3), RunnerOptions())


@needs_host
def test_truncated_bin_is_named_as_such(files):
    proc = run([str(HOST_RUNNER), *_pair(files, "param", "one_short.bin")])
    assert "truncated" in proc.stderr


# --- instruction count under qemu --------------------------------------------


@pytest.fixture(scope="module")
def insn_plugin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plugin") / "qemu_insn_plugin.so"
    proc = run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(out), str(PLUGIN_SOURCE)])
    assert proc.returncode == 0, proc.stderr
    return out


def count_insns(plugin: Path, model: dict, where: Path, warmup: int, loops: int) -> int:
    """Guest instructions of one whole mfn-bench process under qemu-aarch64."""
    outfile = where / f"insns-{warmup}-{loops}.txt"
    # PASSIVE: idle OpenMP workers sleep in the kernel instead of spinning, so
    # the count does not depend on how long they happen to wait.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    runs = ("--threads", "1", "--warmup", str(warmup), "--loops", str(loops))
    plugin_arg = f"{plugin},outfile={outfile}"
    run_ok(
        ["qemu-aarch64", "-plugin", plugin_arg, str(ARM64_RUNNER), *bench_args(model, *runs)], env
    )
    label, value = outfile.read_text().split()
    assert label == "insns"
    return int(value)


def insns_per_inference(plugin: Path, model: dict, where: Path, extra: int = 128) -> float:
    # Both runs load the model, do one warm-up inference (which pays the
    # one-off allocation costs) and time nothing (--loops 0). They differ only
    # by `extra` more warm-up inferences, so the difference excludes startup,
    # loading and exit. What is left that is not deterministic is glibc
    # formatting the measured load_ms, whose cost (some tens of instructions)
    # depends on the digits; dividing by `extra` makes it negligible.
    base = count_insns(plugin, model, where, warmup=1, loops=0)
    more = count_insns(plugin, model, where, warmup=1 + extra, loops=0)
    return (more - base) / extra


@needs_arm64
@needs_gcc
def test_instruction_count_per_inference_is_deterministic(insn_plugin, tiny_model, tmp_path):
    first = insns_per_inference(insn_plugin, tiny_model, tmp_path)
    second = insns_per_inference(insn_plugin, tiny_model, tmp_path)
    print(f"tiny model: {first:.1f} guest instructions per inference (repeat: {second:.1f})")
    assert first > 1000
    assert abs(first - second) <= 1e-4 * first
