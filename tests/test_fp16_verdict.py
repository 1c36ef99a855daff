"""The fp16 verdict: ncnn's fp16-arithmetic depthwise kernel had the defect, not qemu.

Three pieces of evidence, each a test:
- the pinned ncnn source loads two pixels of its stride-2 two-column tail through
  the wrong row pointer (read from the sdist itself);
- an independent fp16 program with its own loads, run under the same qemu and CPU
  model, is right in every column of the same shape, and traps on an ARMv8.0 model
  (so it really executes ARMv8.2 fp16 arithmetic);
- the arm64 build applies the project's patch, and with it every column of every
  affected width is within fp16 rounding.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REQUIRE_NATIVE, needs_runner, run_runner
from mfn_deploy.export.backends import onnx_runner
from mfn_deploy.export.to_ncnn import convert_to_ncnn
from mfn_deploy.export.to_onnx import export_onnx
from mfn_deploy.native import (
    RunnerOptions,
    read_dump,
    runner_args,
    write_input,
)
from mfn_deploy.native.build import (
    FP16_DEPTHWISE_FIX,
    NCNN_VERSION,
    PATCH_DIR,
    TARGETS,
    fetch_source,
)

KERNEL = "src/layer/arm/convolutiondepthwise_3x3_pack8_fp16s.h"
CHECK_SOURCE = "tests/native/fp16_depthwise_check.c"
# The two-column tail runs when the output width is 2 or 3 mod 4; its second column
# was wrong. 28 -> 14 and 14 -> 7 are MobileFaceNet's two such layers.
WIDTHS = {28: 13, 14: 5, 22: 9}


def test_the_pinned_source_loads_rows_1_and_2_through_row_0s_pointer(tmp_path):
    with tarfile.open(fetch_source()) as tar:
        text = tar.extractfile(f"ncnn-{NCNN_VERSION}/{KERNEL}").read().decode()
    tail = text[text.index("static void convdw3x3s2_pack8_fp16sa_neon") :]
    tail = tail[tail.index("for (; j + 1 < outw; j += 2)") :]
    tail = tail[: tail.index("for (; j < outw; j++)")]
    # %1 is r0, %2 is r1, %3 is r2: the comments say r14 and r24, the operands say r0.
    assert '"ld1    {v21.8h}, [%1]              \\n" // r14' in tail
    assert '"ld1    {v26.8h}, [%1]              \\n" // r24' in tail
    # ... and the patch changes exactly those two loads.
    patch = (PATCH_DIR / FP16_DEPTHWISE_FIX).read_text()
    changed = [line for line in patch.splitlines() if line[:1] in "+-" and line[:3] not in "+++---"]
    assert changed == [
        '-                    "ld1    {v21.8h}, [%1]              \\n" // r14',
        '+                    "ld1    {v21.8h}, [%2]              \\n" // r14',
        '-                    "ld1    {v26.8h}, [%1]              \\n" // r24',
        '+                    "ld1    {v26.8h}, [%3]              \\n" // r24',
    ]
    assert FP16_DEPTHWISE_FIX in TARGETS["arm64-v8a"].patches


def _cross_compiler() -> str | None:
    return shutil.which(TARGETS["arm64-v8a"].cc)


@needs_runner("arm64-v8a")
@pytest.mark.skipif(
    not REQUIRE_NATIVE and _cross_compiler() is None, reason="needs aarch64-linux-gnu-gcc"
)
def test_qemu_computes_fp16_arithmetic_right_on_the_defect_shape(tmp_path):
    binary = tmp_path / "fp16_check"
    source = Path(__file__).resolve().parent.parent / CHECK_SOURCE
    subprocess.run(
        [_cross_compiler(), "-O2", "-static", "-march=armv8.2-a+fp16", "-o", binary, source, "-lm"],
        check=True,
    )
    qemu = shutil.which("qemu-aarch64")
    v82 = subprocess.run(
        [qemu, "-cpu", "cortex-a76", binary], capture_output=True, text=True, check=False
    )
    assert v82.returncode == 0, v82.stdout + v82.stderr
    columns = [float(v) for v in v82.stdout.splitlines()[0].split(":")[1].split()]
    assert len(columns) == 14 and max(columns) < 0.02  # the last column included
    # ARMv8.0 has no fp16 arithmetic: the program must trap, so it really used it.
    v80 = subprocess.run(
        [qemu, "-cpu", "cortex-a57", binary], capture_output=True, text=True, check=False
    )
    assert v80.returncode != 0


def _one_layer_error(tmp_path, width: int, cpu: str, fp16: bool) -> np.ndarray:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 1),
        torch.nn.Conv2d(8, 8, 3, 2, 1, groups=8),
    ).eval()
    onnx_path, param, binary = tmp_path / "m.onnx", tmp_path / "m.param", tmp_path / "m.bin"
    export_onnx(model, (width, width), onnx_path)
    convert_to_ncnn(onnx_path, (width, width), param, binary, fp16=True)
    x = np.random.default_rng(0).normal(size=(1, 3, width, width)).astype(np.float32)
    ref = onnx_runner(onnx_path)(x)[0]
    write_input(x[0], tmp_path / "in.f32")
    opts = RunnerOptions(threads=1, warmup=0, loops=0, fp16=fp16)  # the cold run's output
    args = runner_args(
        str(param), str(binary), (width, width, 3), opts, str(tmp_path / "in.f32"),
        str(tmp_path / "out.f32"),
    )  # fmt: skip
    run_runner("arm64-v8a", cpu, args, cpu)
    return np.abs(read_dump(tmp_path / "out.f32").reshape(ref.shape) - ref)


@needs_runner("arm64-v8a")
@pytest.mark.parametrize("width", sorted(WIDTHS))
def test_patched_fp16_depthwise_stride2_is_right_in_every_column(tmp_path, width):
    """Before the patch: column WIDTHS[width] off by up to 0.76 on cortex-a76."""
    error = _one_layer_error(tmp_path, width, "cortex-a76", fp16=True)
    assert error.max(axis=(0, 1)).max() < 0.02, error.max(axis=(0, 1))
    assert _one_layer_error(tmp_path, width, "cortex-a57", fp16=True).max() < 0.02
