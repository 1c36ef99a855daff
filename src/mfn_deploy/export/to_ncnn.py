"""Stage 4: ONNX -> NCNN param/bin with pnnx (the converter ncnn itself ships).

pnnx stores fp16 weights unless told ``fp16=0``; the fp32 pair is the reference
build and the fp16 pair is written only on request. pnnx leaves several side files
(its own IR, Python stubs) next to its input, so it runs in a scratch directory
and only the param/bin pair is moved into the export.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pnnx

from mfn_deploy.errors import MfnError

PNNX_TIMEOUT_S = 600


@dataclass(frozen=True)
class NcnnBlobs:
    inputs: list[str]
    outputs: list[str]
    layers: int

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "outputs": self.outputs, "layers": self.layers}


def read_blobs(param: Path) -> NcnnBlobs:
    """Input and output blob names of an ncnn .param file (text format)."""
    lines = param.read_text().split("\n")
    if not lines or lines[0].strip() != "7767517":
        raise MfnError(f"{param}: not an ncnn text param file (bad magic)")
    produced, consumed, inputs = [], set(), []
    layers = 0
    for line in lines[2:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        layers += 1
        kind, _name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
        bottoms = fields[4 : 4 + n_in]
        tops = fields[4 + n_in : 4 + n_in + n_out]
        consumed.update(bottoms)
        produced += tops
        if kind == "Input":
            inputs += tops
    outputs = [b for b in produced if b not in consumed]
    return NcnnBlobs(inputs=inputs, outputs=outputs, layers=layers)


def convert_to_ncnn(
    onnx_path: Path, size: tuple[int, int], param: Path, binary: Path, fp16: bool
) -> NcnnBlobs:
    h, w = size
    with tempfile.TemporaryDirectory(prefix="mfn-pnnx-") as tmp:
        scratch = Path(tmp)
        src = scratch / "model.onnx"
        shutil.copyfile(onnx_path, src)
        cmd = [
            pnnx.EXEC_PATH,
            str(src),
            f"inputshape=[1,3,{h},{w}]",
            f"fp16={int(fp16)}",
            f"ncnnparam={scratch / 'out.param'}",
            f"ncnnbin={scratch / 'out.bin'}",
            f"ncnnpy={scratch / 'out_ncnn.py'}",
            f"pnnxparam={scratch / 'out.pnnx.param'}",
            f"pnnxbin={scratch / 'out.pnnx.bin'}",
            f"pnnxpy={scratch / 'out_pnnx.py'}",
            f"pnnxonnx={scratch / 'out.pnnx.onnx'}",
        ]
        try:
            proc = subprocess.run(
                cmd, check=False, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise MfnError(f"{onnx_path}: pnnx timed out after {PNNX_TIMEOUT_S} s") from None
        out_param, out_bin = scratch / "out.param", scratch / "out.bin"
        if proc.returncode != 0 or not out_param.is_file() or not out_bin.is_file():
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise MfnError(f"{onnx_path}: pnnx failed (exit {proc.returncode}): {tail}")
        blobs = read_blobs(out_param)
        if len(blobs.inputs) != 1 or len(blobs.outputs) != 1:
            raise MfnError(
                f"{onnx_path}: pnnx produced {len(blobs.inputs)} inputs and "
                f"{len(blobs.outputs)} outputs; a face model needs exactly one of each"
            )
        shutil.move(out_param, param)
        shutil.move(out_bin, binary)
    return blobs
