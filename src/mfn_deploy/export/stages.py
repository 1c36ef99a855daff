"""Every export stage, declared once as data.

A stage is a name (as parity tables and manifests show it), the artifacts it writes
(manifest key -> file suffix after the model name), a function that writes them
from what earlier stages left in a ``Work``, a function that runs what it wrote, its
parity tolerance, and two switches: a side branch (fp16) is judged but is not the
input of the next stage's comparison; a torch-only stage needs a torch graph and
is skipped for an ONNX source. ``run_plan`` runs any list of these, which is how
``export``, ``check`` and the MTCNN detector export all work; a new stage (int8,
say) is one more ``Stage`` here and its two functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from mfn_deploy.export.backends import Runner, ncnn_runner, onnx_runner, torch_runner
from mfn_deploy.export.fold import fold_batchnorm, load_folded, save_folded
from mfn_deploy.export.int8 import Gate, Int8Request, quantize
from mfn_deploy.export.manifest import MANIFEST, PARITY
from mfn_deploy.export.parity import ParityReport, Tolerance, run_parity
from mfn_deploy.export.simplify import simplify_onnx
from mfn_deploy.export.to_ncnn import convert_to_ncnn
from mfn_deploy.export.to_onnx import DEFAULT_OPSET, export_onnx

FP32 = Tolerance(cos_min=0.99999, rel_l2_max=5e-3)
FP16 = Tolerance(cos_min=0.999, rel_l2_max=5e-2)
# int8 is judged twice: by parity like every stage (loosely: random inputs are far
# from what it was calibrated on), and by its own gate on held-out faces, against the
# fp32 ncnn embedding, and, when the real pairs set is handed down, by the verify/reject
# decisions on it at the fp32 threshold, before anything is written (``int8.quantize``).
INT8 = Tolerance(cos_min=0.9, rel_l2_max=0.5)
INT8_GATE = Gate(cos_mean_min=0.995, cos_min=0.98, flips_max=0)
# One real face through an int8 pair elsewhere (a phone, ``bench --int8``): against host
# fp32 as close as the gate's worst face, and against host ncnn running the same int8
# files unpacked (exact int8) close enough that only rounding order differs: ARM
# computes exact int8 (the trained model: 0.99999), but an fp32 layer between int8
# ones can round an input to the next level the other way, and x86's packed int8
# depthwise kernels round differently (0.998 on the trained model).
INT8_FACE = Tolerance(cos_min=INT8_GATE.cos_min, rel_l2_max=0.2)
INT8_SAME_FILES = Tolerance(cos_min=0.995, rel_l2_max=0.1)


@dataclass(frozen=True)
class ArtifactNames:
    """The file names of one model's artifacts: the model name plus each stage's suffix."""

    model: str

    manifest = MANIFEST
    parity = PARITY

    def file(self, key: str) -> str:
        return self.model + _SUFFIXES[key]

    @property
    def folded(self) -> str:
        return self.file("folded")

    @property
    def raw_onnx(self) -> str:
        return self.file("raw_onnx")

    @property
    def onnx(self) -> str:  # the simplified ONNX: the one to ship
        return self.file("onnx")

    def ncnn_pair(self, precision: str = "fp32") -> tuple[str, str]:
        """The param and bin of one precision: ``fp32``, ``fp16`` or ``int8``."""
        stage = {"fp32": "ncnn", "fp16": "ncnn_fp16", "int8": "ncnn_int8"}[precision]
        return self.file(f"{stage}_param"), self.file(f"{stage}_bin")

    def ncnn_param(self, fp16: bool = False) -> str:
        return self.ncnn_pair("fp16" if fp16 else "fp32")[0]

    def ncnn_bin(self, fp16: bool = False) -> str:
        return self.ncnn_pair("fp16" if fp16 else "fp32")[1]


@dataclass
class Work:
    """What a plan runs on: where the artifacts are, and what earlier stages left."""

    dir: Path
    names: ArtifactNames
    size: tuple[int, int]  # (H, W) the graph is exported and converted at
    graph: nn.Module | None = None  # the torch graph to export; the folded one once fold ran
    opset: int = DEFAULT_OPSET
    dynamic_batch: bool = False
    dynamic_hw: bool = False  # fully convolutional nets (MTCNN's P-Net)
    test_shape: list[int] | None = None  # the shape onnxsim checks a dynamic graph at
    paths: dict[str, Path] = field(default_factory=dict)  # artifact key -> file
    blobs: dict | None = None  # ncnn's input/output blob names, once converted
    int8: Int8Request | None = None  # calibration and choices, when int8 is asked for
    reports: dict[str, dict] = field(default_factory=dict)  # stage -> its report

    def place(self, stage: Stage) -> None:
        """Name the files ``stage`` will write, in ``dir``."""
        for key in stage.artifacts:
            self.paths[key] = self.dir / self.names.file(key)


@dataclass(frozen=True)
class Stage:
    name: str
    artifacts: dict[str, str]  # manifest key -> file suffix after the model name
    build: Callable[[Work], dict]  # writes the artifacts, returns the stage's report
    runner: Callable[[Work], Runner]  # runs what the stage wrote
    tolerance: Tolerance
    side_branch: bool = False  # judged, but the next stage is compared with the one before
    torch_only: bool = False  # needs a torch graph: skipped for an ONNX source
    option: str | None = None  # the ExportOptions flag that asks for it; None: always runs


# --- the stages' functions ---------------------------------------------------------------


def _fold(work: Work) -> dict:
    folded, report = fold_batchnorm(work.graph)
    save_folded(folded, work.paths["folded"])
    work.graph = folded
    return report.to_dict()


def _run_folded(work: Work) -> Runner:
    if work.graph is None:  # check: rebuilt from the file
        work.graph = load_folded(work.names.model, work.size, work.paths["folded"])
    return torch_runner(work.graph)


def _to_onnx(work: Work) -> dict:
    report = export_onnx(
        work.graph,
        work.size,
        work.paths["raw_onnx"],
        work.opset,
        dynamic_batch=work.dynamic_batch,
        dynamic_hw=work.dynamic_hw,
    )
    return report.to_dict()


def _simplify(work: Work) -> dict:
    report = simplify_onnx(work.paths["raw_onnx"], work.paths["onnx"], test_shape=work.test_shape)
    return report.to_dict()


def _onnx_file(key: str) -> Callable[[Work], Runner]:
    return lambda work: onnx_runner(work.paths[key])


def _ncnn(fp16: bool) -> Callable[[Work], dict]:
    prefix = "ncnn_fp16" if fp16 else "ncnn"

    def build(work: Work) -> dict:
        param, binary = work.paths[f"{prefix}_param"], work.paths[f"{prefix}_bin"]
        blobs = convert_to_ncnn(work.paths["onnx"], work.size, param, binary, fp16=fp16)
        work.blobs = blobs.to_dict()
        return {"blobs": work.blobs}

    return build


def _ncnn_file(fp16: bool) -> Callable[[Work], Runner]:
    prefix = "ncnn_fp16" if fp16 else "ncnn"
    return lambda work: ncnn_runner(
        work.paths[f"{prefix}_param"], work.paths[f"{prefix}_bin"], work.blobs, fp16=fp16
    )


def _int8(work: Work) -> dict:
    fp32 = (work.paths["ncnn_param"], work.paths["ncnn_bin"])
    out = (work.paths["ncnn_int8_param"], work.paths["ncnn_int8_bin"], work.paths["int8_table"])
    return quantize(fp32, work.blobs, work.int8, INT8_GATE, out)


def _run_int8(work: Work) -> Runner:
    # Unpacked: exact int8 arithmetic, as ARM phones compute it (``backends.load_ncnn_net``).
    paths = work.paths["ncnn_int8_param"], work.paths["ncnn_int8_bin"]
    return ncnn_runner(*paths, work.blobs, packing=False)


# --- the declarations: in the order they run ----------------------------------------------

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("fold", {"folded": ".folded.pt"}, _fold, _run_folded, FP32, torch_only=True),
        Stage(
            "onnx",
            {"raw_onnx": ".raw.onnx"},
            _to_onnx,
            _onnx_file("raw_onnx"),
            FP32,
            torch_only=True,
        ),
        Stage("simplify", {"onnx": ".onnx"}, _simplify, _onnx_file("onnx"), FP32),
        Stage(
            "ncnn",
            {"ncnn_param": ".ncnn.param", "ncnn_bin": ".ncnn.bin"},
            _ncnn(fp16=False),
            _ncnn_file(fp16=False),
            FP32,
        ),
        Stage(
            "ncnn_fp16",
            {"ncnn_fp16_param": ".fp16.ncnn.param", "ncnn_fp16_bin": ".fp16.ncnn.bin"},
            _ncnn(fp16=True),
            _ncnn_file(fp16=True),
            FP16,
            side_branch=True,
            option="fp16",
        ),
        Stage(
            "ncnn_int8",
            {
                "ncnn_int8_param": ".int8.ncnn.param",
                "ncnn_int8_bin": ".int8.ncnn.bin",
                "int8_table": ".int8.table",
            },
            _int8,
            _run_int8,
            INT8,
            side_branch=True,
            option="int8",
        ),
    )
}
TOLERANCES: dict[str, Tolerance] = {name: s.tolerance for name, s in STAGES.items()}
_SUFFIXES = {key: suffix for s in STAGES.values() for key, suffix in s.artifacts.items()}


def select(torch_source: bool, wanted: Callable[[Stage], bool]) -> list[Stage]:
    """The stages, in order, that apply to a source and that ``wanted`` keeps."""
    return [s for s in STAGES.values() if (torch_source or not s.torch_only) and wanted(s)]


# () -> ({input set name: (N, 3, H, W) inputs}, a description of them for the report)
Inputs = Callable[[], tuple[dict[str, np.ndarray], dict]]


def run_plan(
    plan: Sequence[Stage],
    work: Work,
    reference: tuple[str, Runner],
    inputs: Inputs,
    build: bool = True,
    on_stage: Callable[[str], None] = lambda _s: None,
) -> ParityReport:
    """Run ``plan``'s stages in order, then judge every one against ``reference``.

    ``build``: each stage writes its artifacts into ``work.dir`` first; otherwise
    (``check``) the stages run the files already in ``work.paths``.
    """
    judged = []
    for stage in plan:
        if build:
            on_stage(stage.name)
            work.place(stage)
            work.reports[stage.name] = stage.build(work)
        judged.append((stage, stage.runner(work)))
    on_stage("parity")
    input_sets, inputs_info = inputs()
    return run_parity(reference, judged, input_sets, inputs_info)
