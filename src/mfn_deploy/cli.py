"""The ``mfn-deploy`` command line: a thin layer over the stage modules.

Commands parse options, call one library function and print its report. User
errors (``MfnError``, bad options) become one ``error: ...`` line and a non-zero
exit; a traceback appears only with ``--verbose``.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import traceback
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import click
from tqdm import tqdm

from mfn_deploy import __version__
from mfn_deploy.bench.options import HOST_BACKENDS, LIMITS, TARGETS, BenchOptions
from mfn_deploy.errors import Interrupted, MfnError, on_signal
from mfn_deploy.export import (  # export/__init__ imports nothing: cheap
    DEFAULT_OPSET,
    DEFAULT_PARITY_SEED,
    DEFAULT_RANDOM_INPUTS,
    INT8_SKIP_GROUPS,
)
from mfn_deploy.face.options import ALIASES, BACKENDS, DEFAULT_BACKEND, DetectorConfig, backend_name
from mfn_deploy.files import atomic_write, write_json
from mfn_deploy.train.config import TrainConfig

T = TypeVar("T")


@dataclass
class Settings:
    verbose: bool = False
    quiet: bool = False

    def progress(self, items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
        """A progress bar on a terminal; nothing in a pipe or with --quiet."""
        return iter(
            tqdm(
                items,
                desc=desc,
                total=total,
                leave=False,
                file=sys.stderr,
                disable=True if self.quiet else None,  # None: only when stderr is a TTY
            )
        )

    def bar(self, total: int, desc: str) -> tqdm:
        return tqdm(
            total=total,
            desc=desc,
            leave=False,
            file=sys.stderr,
            disable=True if self.quiet else None,
            bar_format="{desc}: {n_fmt}/{total_fmt}{postfix} [{elapsed}]",  # postfix: ", stage"
        )


# main() needs --verbose even when the error happens before a command gets its context.
_settings = Settings()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="mfn-deploy")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs and tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Print only results and errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """Train-to-phone toolchain for MobileFaceNet: fold, export, convert, check, bench."""
    _settings.verbose, _settings.quiet = verbose, quiet
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    ctx.obj = _settings


def _format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(  # noqa: E731 - a one-line formatter reads best inline
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
    )
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_obj
def info(settings: Settings, as_json: bool) -> None:
    """List every registered network: input, embedding, params, MAdds, size, paper ms.

    MAdds are counted by torch's FLOP counter on one image; paper ms is the
    Snapdragon 820 latency of the paper's Table 2 (NCNN, 4 threads).
    """
    from mfn_deploy.stats import zoo_stats

    stats = zoo_stats(lambda names: settings.progress(names, "counting"))
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in stats], indent=2))
        return
    header = ["name", "input", "dim", "params", "MAdds", "fp32 MB", "paper SD820 ms"]
    rows = [
        [
            s.name,
            "x".join(map(str, s.input_size)),
            str(s.embedding_dim),
            f"{s.params / 1e6:.2f}M",
            f"{s.madds / 1e6:.0f}M",
            f"{s.size_mb:.1f}",
            "—" if s.paper_ms is None else f"{s.paper_ms:g}",  # not in the paper's Table 2
        ]
        for s in stats
    ]
    click.echo(_format_table(rows, header))


def _parse_size(_ctx, _param, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HxW, e.g. 112x96") from None
    return h, w


def _channel_values(_ctx, _param, value: str | None) -> float | tuple[float, ...] | None:
    """--mean/--scale: M or M,M,M (one per channel); each a number or 1/X, so that
    --scale 1/X reads as it is written (1/255, not 0.00392157)."""
    if value is None:
        return None
    try:
        values = tuple(
            float(num) / float(den) if slash else float(num)
            for num, slash, den in (v.partition("/") for v in value.split(","))
        )
    except (ValueError, ZeroDivisionError):
        values = ()
    if len(values) not in (1, 3):
        raise click.BadParameter(f"{value!r} is not one number or three (one per channel)")
    return values[0] if len(values) == 1 else values


# export and check judge parity on the same number of seeded inputs.
_random_inputs = click.option(
    "--random-inputs",
    default=DEFAULT_RANDOM_INPUTS,
    show_default=True,
    type=click.IntRange(1, 10000),
    help="Seeded parity inputs.",
)


@cli.command()
@click.option("--model", "model", metavar="NAME", help="Registered network (see `info`).")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A state_dict or mfn-deploy checkpoint (loaded weights-only).",
)
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Start from an existing ONNX face model; the torch stages are skipped.",
)
@click.option(
    "--pretrained",
    metavar="NAME",
    help="A trained network (see `pretrained`): fetched once, imported, exported as a checkpoint.",
)
@click.option(
    "--channel-order",
    type=click.Choice(["RGB", "BGR"]),
    help="--onnx only: the channel order the model was trained on.",
)
@click.option(
    "--mean",
    metavar="M[,M,M]",
    callback=_channel_values,
    help="--onnx only: pixel mean, one or per channel; (x - mean) * scale.",
)
@click.option(
    "--scale",
    metavar="S[,S,S]",
    callback=_channel_values,
    help="--onnx only: the multiplier after the mean, e.g. 1/255; one or per channel. "
    "Unset ones keep the contract's default.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--fp16/--no-fp16", default=False, help="Also write an fp16 NCNN pair.")
@click.option("--int8", is_flag=True, help="Also write an int8 NCNN pair and its table.")
@click.option(
    "--calib",
    type=click.Path(path_type=Path, file_okay=False),
    help="--int8: calibration faces (photos, aligned crops or .npy); default: built-in samples.",
)
@click.option(
    "--calib-method",
    type=click.Choice(["kl", "aciq", "eq"]),
    default="kl",
    show_default=True,
    help="--int8: how activation scales are chosen.",
)
@click.option(
    "--int8-skip",
    metavar="L1,L2",
    default="",
    help="--int8: layers kept fp32, by name or group: "
    f"{', '.join(INT8_SKIP_GROUPS)} (depthwise: the fastest int8 on ARM).",
)
@click.option(
    "--int8-auto", is_flag=True, help="--int8: keep the fewest layers fp32 that pass the gate."
)
@click.option("--batch-dynamic", is_flag=True, help="Dynamic batch axis in the ONNX files.")
@click.option("--opset", default=DEFAULT_OPSET, show_default=True, help="ONNX opset.")
@click.option(
    "--input-size",
    callback=_parse_size,
    metavar="HxW",
    help="Input size other than the network's own (GDConv kernel is re-derived).",
)
@_random_inputs
@click.option("--force", is_flag=True, help="Replace --out if it holds a previous export.")
@click.pass_obj
def export(
    settings: Settings,
    model: str | None,
    checkpoint: Path | None,
    onnx_path: Path | None,
    pretrained: str | None,
    channel_order: str | None,
    mean: float | tuple[float, ...] | None,
    scale: float | tuple[float, ...] | None,
    out: Path,
    fp16: bool,
    batch_dynamic: bool,
    opset: int,
    input_size: tuple[int, int] | None,
    random_inputs: int,
    force: bool,
    int8: bool,
    calib: Path | None,
    calib_method: str,
    int8_skip: str,
    int8_auto: bool,
) -> None:
    """Fold, export to ONNX, simplify, convert to NCNN and check parity into --out.

    Every stage is compared with the torch reference on seeded random inputs and
    on real photos; the export appears in --out only if all stages pass.
    """
    from mfn_deploy.contract import Pixels
    from mfn_deploy.export.int8 import Int8GateError, format_sensitivity
    from mfn_deploy.export.parity import ParityError, format_table
    from mfn_deploy.export.plan import ExportOptions
    from mfn_deploy.export.plan import export as run_export
    from mfn_deploy.face.calibration import int8_calibration
    from mfn_deploy.face.samples import face_inputs

    if pretrained is not None:
        from mfn_deploy.pretrained.importer import checkpoint as pretrained_checkpoint

        if checkpoint is not None or onnx_path is not None:
            raise MfnError("give one of --pretrained, --checkpoint and --onnx")
        checkpoint = pretrained_checkpoint(pretrained)
    declared = {"channel_order": channel_order, "mean": mean, "scale": scale}
    declared = {k: v for k, v in declared.items() if v is not None}
    opts = ExportOptions(
        out=out,
        model=model,
        checkpoint=checkpoint,
        onnx=onnx_path,
        # What the ONNX was trained on; ExportOptions refuses it for a torch source.
        preprocessing=Pixels(**declared) if declared else None,
        fp16=fp16,
        batch_dynamic=batch_dynamic,
        opset=opset,
        input_size=input_size,
        force=force,
        n_random=random_inputs,
        int8=int8,
        calibration=lambda spec: int8_calibration(calib, spec),
        calib_method=calib_method,
        int8_skip=tuple(s for s in int8_skip.split(",") if s),
        int8_auto=int8_auto,
    )
    if calib is not None and not int8:
        raise MfnError("--calib needs --int8")
    with settings.bar(total=8 if int8 else 6, desc="export") as bar:

        def on_stage(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(0 if name == "source" else 1)

        try:
            result = run_export(opts, on_stage, faces=face_inputs)
        except ParityError as e:
            bar.close()
            click.echo(format_table(e.report))
            raise
        except Int8GateError as e:
            bar.close()
            click.echo(format_sensitivity(e.report, top=10))
            raise
    m = result.manifest
    if not settings.quiet:
        click.echo(format_table(result.parity))
        click.echo()
        if m["source"]["kind"] == "default":
            click.echo(f"note: {m['source']['note']}")
        if "provenance" in m["source"]:
            origin = m["source"]["provenance"]
            click.echo(
                f"weights: trained, {origin.get('package', origin.get('file'))} "
                f"{origin.get('version', '')} ({origin.get('license', 'license unknown')})"
            )
        if "ncnn_int8" in m["stages"]:
            click.echo(format_sensitivity(m["stages"]["ncnn_int8"], top=10))
            click.echo()
        for meta in m["artifacts"].values():
            click.echo(f"  {meta['file']:<36} {meta['bytes'] / 1e6:7.2f} MB")
        total = sum(result.timings.values())
        click.echo(f"exported {m['model']} to {out} in {total:.1f} s")


@cli.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@_random_inputs
@click.option(
    "--seed", default=DEFAULT_PARITY_SEED, show_default=True, help="Seed of the random inputs."
)
@click.option("--json", "as_json", is_flag=True, help="Print the parity report as JSON.")
def check(export_dir: Path, random_inputs: int, seed: int, as_json: bool) -> None:
    """Re-run the parity gates on an existing export (read-only).

    Verifies every artifact against the manifest's sha256, then compares every
    stage with the reference as `export` does. Exits non-zero on any failure.
    """
    from mfn_deploy.export.parity import format_table
    from mfn_deploy.export.plan import check as run_check
    from mfn_deploy.face.samples import face_inputs

    report = run_check(export_dir, n_random=random_inputs, seed=seed, faces=face_inputs)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_table(report))
    if not report.ok:
        raise MfnError(f"{export_dir}: parity failed, first broken stage: {report.blamed}")


# --- face pipeline -------------------------------------------------------------------


# The detector's defaults, as --help shows them: DetectorConfig's, not restated here.
_DETECTOR = DetectorConfig()


def _parse_thresholds(_ctx, _param, value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not three numbers in [0, 1]") from None


def _detector_options(old_spelling: bool = True):
    """--detector, --min-face-size, --detector-thresholds (DetectorConfig checks them).

    ``compare`` has its own --threshold, so it does not take --thresholds, the old
    spelling of --detector-thresholds: one command, one meaning per word.
    """
    names = (
        ("--detector-thresholds", "--thresholds") if old_spelling else ("--detector-thresholds",)
    )

    def decorate(f):
        f = click.option(
            "--detector",
            type=click.Path(path_type=Path, file_okay=False),
            help="MTCNN export (export-detector); default: exported once into the cache.",
        )(f)
        f = click.option(
            "--min-face-size",
            type=int,
            default=_DETECTOR.min_face_size,
            show_default=True,
            help="Smallest face in pixels.",
        )(f)
        return click.option(
            *names,
            "thresholds",
            default=",".join(f"{t:g}" for t in _DETECTOR.thresholds),
            show_default=True,
            callback=_parse_thresholds,
            help="P-, R-, O-Net score thresholds"
            + (" (--thresholds is the old spelling)." if old_spelling else "."),
        )(f)

    return decorate


def _detector_config(min_face_size: int, thresholds: tuple[float, ...]) -> DetectorConfig:
    return DetectorConfig(min_face_size=min_face_size, thresholds=thresholds)


def _backend_names(_ctx, _param, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
    """The one name of each backend given ('onnx' is onnxruntime's old name)."""
    return backend_name(value) if isinstance(value, str) else tuple(map(backend_name, value))


def _backend_option(multiple: bool = False):
    """--backend for every face command: ncnn (the runtime the phone runs) by default."""
    return click.option(
        "--backend",
        "backends" if multiple else "backend",
        type=click.Choice([*BACKENDS, *ALIASES]),
        default=() if multiple else DEFAULT_BACKEND,
        show_default=not multiple,
        multiple=multiple,
        callback=_backend_names,
        help="Runtime of the networks ('onnx' is onnxruntime's old name)"
        + (f"; repeatable, default {DEFAULT_BACKEND}." if multiple else "."),
    )


def _check_writable(path: Path | None, option: str) -> None:
    """An output's folder must exist and be writable before the work, not after it."""
    if path is None:
        return
    folder = path.parent
    if path.is_dir():
        raise MfnError(f"{option} {path}: is a directory; give a file name")
    if not folder.is_dir():
        raise MfnError(f"{option} {path}: folder {folder} does not exist")
    import os

    if not os.access(folder, os.W_OK | os.X_OK):
        raise MfnError(f"{option} {path}: folder {folder} is not writable")


def _check_image_writer(path: Path | None) -> None:
    import cv2

    _check_writable(path, "--draw")
    if path is not None and not cv2.haveImageWriter(str(path)):
        raise MfnError(
            f"--draw {path}: cannot write {path.suffix or 'extensionless'} images; use .png or .jpg"
        )


@cli.command("export-detector")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--force", is_flag=True, help="Replace --out if it holds a previous export.")
@click.pass_obj
def export_detector_cmd(settings: Settings, out: Path, force: bool) -> None:
    """Export MTCNN (P-, R-, O-Net) to ONNX and NCNN with parity gates.

    P-Net keeps dynamic height and width; R-Net and O-Net a dynamic batch.
    The pretrained weights come from the facenet-pytorch wheel (sha256 pinned),
    fetched into the cache on first use (see fetch-weights).
    """
    from mfn_deploy.face.detector_export import export_detector

    with settings.bar(total=3, desc="export-detector") as bar:
        manifest = export_detector(out, force=force, on_stage=bar.set_postfix_str)
    for name, net in manifest["nets"].items():
        click.echo(f"{name}: parity cos min {net['parity_cos_min']:.7f} (torch vs ncnn and onnx)")
    click.echo(f"exported MTCNN to {out}")


@cli.command("fetch-weights")
def fetch_weights_cmd() -> None:
    """Fetch MTCNN's pretrained weights into the cache (done on first use otherwise).

    They come from the facenet-pytorch wheel on the package index, pinned by version
    and sha256; each weight file is checked against its own sha256.
    """
    from mfn_deploy.face.mtcnn import fetch_weights

    click.echo(fetch_weights())


@cli.command("pretrained")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def pretrained_cmd(as_json: bool) -> None:
    """List the trained networks `export --pretrained NAME` can fetch.

    Each comes from a package registry, pinned by version and sha256 (package and
    file); the first use fetches, imports and checks it, then it is cached.
    """
    from mfn_deploy.pretrained.catalog import available

    entries = available()
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    header = ["name", "source", "file", "license", "preprocessing", "what"]
    rows = [
        [
            e["name"],
            f"{e['registry']}:{e['package']}@{e['version']}",
            Path(e["file"]).name,
            e["license"],
            e["preprocessing"],
            e["summary"],
        ]
        for e in entries
    ]
    click.echo(_format_table(rows, header))


@cli.command("import-tflite")
@click.argument("tflite", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--model",
    default="mobilefacenet_tf",
    show_default=True,
    metavar="NAME",
    help="The zoo network the graph must be (see `info`).",
)
@_random_inputs
def import_tflite_cmd(tflite: Path, out: Path, model: str, random_inputs: int) -> None:
    """Import a float32 TFLite MobileFaceNet as an mfn-deploy checkpoint (--out).

    The graph must be the zoo network --model, layer by layer (PReLU written as
    relu(x) + a * (x - |x|) is read as one PReLU). The torch model is compared with
    LiteRT on real aligned faces and seeded random inputs; the checkpoint is written
    only if every embedding's cosine is at least 0.99999.
    """
    from mfn_deploy.pretrained.importer import import_tflite

    report = import_tflite(tflite, out, model, n_random=random_inputs)
    for a in report.agreements:
        click.echo(
            f"vs LiteRT, {a.input_set:<6} ({a.n}): cos min {a.metrics.cos_min:.7f}, "
            f"max |d| {a.metrics.max_abs:.2e}"
        )
    click.echo(f"imported {report.ops} TFLite ops as {model} into {out}")


@cli.command()
@click.argument("image", type=click.Path(path_type=Path))
@_backend_option()
@_detector_options()
@click.option("--json", "as_json", is_flag=True, help="Print faces as JSON.")
@click.option("--draw", type=click.Path(path_type=Path), help="Write the image with faces drawn.")
def detect(
    image: Path,
    backend: str,
    detector: Path | None,
    min_face_size: int,
    thresholds: tuple[float, ...],
    as_json: bool,
    draw: Path | None,
) -> None:
    """Detect faces and five landmarks (eyes, nose tip, mouth corners) with MTCNN."""
    import cv2

    from mfn_deploy.face.detect import detect as run_detect
    from mfn_deploy.face.detect import draw as draw_faces
    from mfn_deploy.images import load_image
    from mfn_deploy.runtime import detector_nets

    cfg = _detector_config(min_face_size, thresholds)
    _check_image_writer(draw)
    img = load_image(image)
    faces = run_detect(img, detector_nets(backend, detector), cfg)
    if as_json:
        click.echo(
            json.dumps({"file": str(image), "faces": [f.to_dict() for f in faces]}, indent=2)
        )
    else:
        for i, f in enumerate(faces):
            d = f.to_dict()
            click.echo(
                f"face {i}: box {d['box']} score {d['score']:.4f} landmarks {d['landmarks']}"
            )
    if draw is not None:
        with atomic_write(draw) as tmp:
            if not cv2.imwrite(str(tmp), draw_faces(img, faces)):
                raise MfnError(f"{draw}: cannot write image (unknown extension or full disk)")
    if not faces:
        raise MfnError(f"{image}: no face found")


def _report_failures(failures: dict[str, str], total: int) -> None:
    for path, problem in failures.items():
        click.echo(f"error: {path}: {problem}", err=True)
    if failures:
        raise MfnError(f"{len(failures)} of {total} images failed")


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--export", "export_dir", required=True, type=click.Path(path_type=Path))
@_backend_option()
@_detector_options()
@click.option("--npy", type=click.Path(path_type=Path), help="Also write (N, D) float32 .npy.")
def embed(
    images: tuple[Path, ...],
    export_dir: Path,
    backend: str,
    detector: Path | None,
    min_face_size: int,
    thresholds: tuple[float, ...],
    npy: Path | None,
) -> None:
    """Aligned, L2-normalised embedding of every face in every image, as JSON.

    With --npy the embeddings are also written as one (N, D) array whose rows
    follow the JSON's order.
    """
    import numpy as np

    from mfn_deploy.face.verify import FacePipeline

    cfg = _detector_config(min_face_size, thresholds)
    _check_writable(npy, "--npy")
    found = FacePipeline(export_dir, backend, detector, cfg).embed_files(images)
    rows = found.rows()
    # A JSON list with one face per line: grep-able, and still one json.loads.
    lines = [
        json.dumps(r | {"embedding": [round(float(v), 6) for v in r["embedding"]]}) for r in rows
    ]
    click.echo("[\n" + ",\n".join(lines) + "\n]" if lines else "[]")
    if npy is not None and rows:
        with atomic_write(npy) as tmp:
            np.save(tmp, np.stack([r["embedding"] for r in rows]).astype(np.float32))
    _report_failures(found.failures, len(images))


@cli.command()
@click.argument("image1", type=click.Path(path_type=Path))
@click.argument("image2", type=click.Path(path_type=Path))
@click.option("--export", "export_dir", required=True, type=click.Path(path_type=Path))
@_backend_option()
@_detector_options(old_spelling=False)
@click.option(
    "--threshold",
    # A placeholder: untrained weights make any threshold meaningless; with trained
    # ones, calibrate it with `evaluate` (the 10-fold thresholds it reports).
    default=0.4,
    show_default=True,
    type=click.FloatRange(-1, 1),
    help="Cosine similarity threshold for 'same', in [-1, 1].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def compare(
    image1: Path,
    image2: Path,
    export_dir: Path,
    backend: str,
    detector: Path | None,
    min_face_size: int,
    thresholds: tuple[float, ...],
    threshold: float,
    as_json: bool,
) -> None:
    """Cosine similarity of the largest face in each image, and the decision.

    Calibrate --threshold with `evaluate` on your own weights; with the untrained
    default weights no threshold means anything.
    """
    from mfn_deploy.face.verify import FacePipeline, cosine

    pipe = FacePipeline(export_dir, backend, detector, _detector_config(min_face_size, thresholds))
    found = pipe.main_faces([image1, image2])
    _report_failures(found.failures, 2)
    sim = cosine(found.first(image1).embedding, found.first(image2).embedding)
    same = sim >= threshold
    if as_json:
        click.echo(json.dumps({"similarity": sim, "threshold": threshold, "same": same}))
    else:
        click.echo(
            f"similarity {sim:.4f} (threshold {threshold}): {'same' if same else 'different'}"
        )


@cli.command()
@click.option("--pairs", required=True, type=click.Path(path_type=Path), help="LFW pairs.txt.")
@click.option("--root", required=True, type=click.Path(path_type=Path), help="Image root.")
@click.option("--export", "export_dir", required=True, type=click.Path(path_type=Path))
@_backend_option(multiple=True)
@_detector_options()
@click.option("--roc", "roc_png", type=click.Path(path_type=Path), help="Write the ROC PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON, not a table.")
@click.option(
    "--json-out", type=click.Path(path_type=Path, dir_okay=False), help="Also write the JSON."
)
def evaluate(
    pairs: Path,
    root: Path,
    export_dir: Path,
    backends: tuple[str, ...],
    detector: Path | None,
    min_face_size: int,
    thresholds: tuple[float, ...],
    roc_png: Path | None,
    as_json: bool,
    json_out: Path | None,
) -> None:
    """LFW protocol: 10-fold accuracy, TAR at FAR 1e-3/1e-4, ROC, decision flips.

    Each fold's threshold is chosen on the other nine. With several --backend,
    every backend is also judged with the first backend's thresholds and the
    number of flipped verify/reject decisions is reported.
    """
    from mfn_deploy.evaluate import evaluate as run_eval
    from mfn_deploy.evaluate import format_report, load_pairs, plot_roc
    from mfn_deploy.face.verify import main_face_embedders

    cfg = _detector_config(min_face_size, thresholds)
    _check_writable(roc_png, "--roc")
    _check_writable(json_out, "--json-out")
    pair_list = load_pairs(pairs, root)
    embedders = main_face_embedders(export_dir, backends or (DEFAULT_BACKEND,), detector, cfg)
    report = run_eval(pair_list, embedders)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))
    if roc_png is not None:
        plot_roc(report, pair_list, roc_png)
    if json_out is not None:
        write_json(json_out, report.to_dict())
    _report_failures(report.failures, report.images)


@cli.command("sample-pairs")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New directory.")
@click.option(
    "--real", is_flag=True, help="The real pairs set verify-report uses (117 pairs, 9 people)."
)
def sample_pairs_cmd(out: Path, real: bool) -> None:
    """Write a small LFW-layout pairs set (60 pairs, 6 identities) to try `evaluate` on.

    Built from the faces scikit-image ships, with augmented copies; nothing is
    downloaded. Then: mfn-deploy evaluate --pairs OUT/pairs.txt --root OUT --export DIR
    """
    from mfn_deploy.face.sample_pairs import write_sample_pairs

    pairs = write_sample_pairs(out, real=real)
    if real:
        click.echo(f"wrote {pairs}; try: mfn-deploy verify-report DIR --pairs {pairs}")
    else:
        click.echo(
            f"wrote {pairs}; try: mfn-deploy evaluate --pairs {pairs} --root {out} --export DIR"
        )


@cli.command("verify-report")
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.option(
    "--pairs", type=click.Path(path_type=Path), help="LFW pairs.txt (default: built-in real set)."
)
@click.option(
    "--root", type=click.Path(path_type=Path), help="Image root (default: the pairs file's folder)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON, not a table.")
@click.option(
    "--json-out", type=click.Path(path_type=Path, dir_okay=False), help="Also write the JSON."
)
def verify_report_cmd(
    export_dir: Path, pairs: Path | None, root: Path | None, as_json: bool, json_out: Path | None
) -> None:
    """Genuine/impostor scores and decision flips vs torch, per backend of one export.

    Every backend the export carries (torch, onnxruntime, ncnn, ncnn_fp16, ncnn_int8)
    embeds the same detected, aligned faces; decisions are taken at torch's
    best-accuracy threshold on these pairs. Not LFW: a few photos from installed packages.
    """
    from mfn_deploy.face.verify_report import format_verification, real_pairs_report

    if root is not None and pairs is None:
        raise MfnError("--root needs --pairs")
    _check_writable(json_out, "--json-out")
    report = real_pairs_report(export_dir, pairs, root)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_verification(report))
    if json_out is not None:
        write_json(json_out, report.to_dict())


def _parse_milestones(_ctx, _param, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of iterations") from None


def _train_option(name: str, help_text: str, **kwargs):
    """A train option whose default (and what --help shows) is TrainConfig's, stated there
    only; train.config is torch-free, so --help stays instant."""
    default = TrainConfig.default(name)
    if isinstance(default, tuple):  # milestones: typed as the user types them
        default = ",".join(map(str, default))
    return click.option(
        f"--{name.replace('_', '-')}", default=default, show_default=True, help=help_text, **kwargs
    )


@cli.command("train")
@click.option("--model", required=True, metavar="NAME", help="Registered network (see `info`).")
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path),
    help="Image folder (a sub-folder per identity), train.rec, or a folder with train.rec/.idx.",
)
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Run dir (new, or --resume)."
)
@_train_option("batch", "Global batch, split over processes.")
@_train_option("iters", "Training iterations.")
@_train_option("lr", "Initial learning rate.")
@_train_option(
    "milestones",
    "Iterations after which the learning rate is divided by 10.",
    callback=_parse_milestones,
)
@click.option(
    "--val",
    "val_pairs",
    type=click.Path(path_type=Path),
    help="LFW pairs.txt to validate on (needs the face pipeline).",
)
@click.option("--val-root", type=click.Path(path_type=Path), help="Images of --val [its folder].")
@_train_option("val_every", "Validate every N iterations.")
@_train_option("ckpt_every", "Checkpoint every N.")
@_train_option("log_every", "Log every N iterations.")
@_train_option("workers", "Data loader processes per GPU.")
@_train_option("seed", "Seed of weights, order and flips.")
@click.option("--device", help="cpu, cuda or cuda:N [CUDA when available].")
@click.option("--align", is_flag=True, help="Detect and align faces in photos not at input size.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--amp", is_flag=True, help="Mixed precision (float16 on GPU, bfloat16 on CPU).")
@click.pass_obj
def train_cmd(
    settings: Settings,
    model: str,
    data: Path,
    out: Path,
    batch: int,
    iters: int,
    lr: float,
    milestones: tuple[int, ...],
    val_pairs: Path | None,
    val_root: Path | None,
    val_every: int,
    ckpt_every: int,
    log_every: int,
    workers: int,
    seed: int,
    device: str | None,
    align: bool,
    resume: bool,
    amp: bool,
) -> None:
    """Train with ArcFace (s=64, m=0.5) and the MobileFaceNet recipe into --out.

    One CPU or GPU, or every GPU with torchrun (DistributedDataParallel):
    `torchrun --standalone --nproc-per-node 8 -m mfn_deploy train ...`.
    Writes log.jsonl, checkpoint-<iter>.pt and final.pt, which `export
    --checkpoint` reads directly.
    """
    from mfn_deploy.train.trainer import train as run_train
    from mfn_deploy.train.validation import pairs_validator

    validate = pairs_validator(val_pairs, val_root) if val_pairs is not None else None
    config = TrainConfig(
        model=model,
        data=data,
        out=out,
        batch=batch,
        iters=iters,
        lr=lr,
        milestones=milestones,
        val_every=val_every,
        ckpt_every=ckpt_every,
        log_every=log_every,
        workers=workers,
        seed=seed,
        device=device,
        align=align,
        resume=resume,
        amp=amp,
    )
    result = run_train(config, validate=validate, progress=not settings.quiet)
    if result is None:  # a torchrun process other than rank 0: it reports nothing
        return
    procs = f"{result.world_size} processes" if result.world_size > 1 else "1 process"
    if result.replicas_in_sync is not None:
        procs += ", replicas in sync" if result.replicas_in_sync else ", REPLICAS DIFFER"
    click.echo(
        f"trained {model}: iterations {result.start_iteration} -> {result.iterations} "
        f"in {result.seconds:.1f} s ({procs})"
    )
    if result.loss is not None:
        click.echo(
            f"  loss {result.loss:.4f}  accuracy {result.accuracy:.4f}  "
            f"{result.images_per_s:.0f} images/s  unusable images {result.bad_images}"
        )
    if result.validation:
        v = result.validation
        click.echo(
            f"  validation on {v['set']}: accuracy {v['accuracy']:.4f} +- {v['accuracy_std']:.4f}"
        )
    click.echo(f"  checkpoint {result.checkpoint}")
    if result.replicas_in_sync is False:
        raise MfnError(f"{out}: processes ended with different weights; do not trust this run")


# What the Android demo runs unless told otherwise: the trained network, not a zoo one.
APP_EMBEDDER = "mobilefacenet_tf"


@cli.command("android-assets")
@click.option(
    "--export",
    "export_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help=f"Embedder export (mfn-deploy export); default: the trained {APP_EMBEDDER}, "
    "exported once into the cache.",
)
@click.option(
    "--detector",
    type=click.Path(path_type=Path, file_okay=False),
    help="MTCNN export (mfn-deploy export-detector); default: one exported into the cache.",
)
@click.option(
    "--app",
    type=click.Path(path_type=Path, file_okay=False),
    help="The Android demo project (default: this checkout's android-demo/).",
)
def android_assets_cmd(export_dir: Path | None, detector: Path | None, app: Path | None) -> None:
    """Copy the ncnn models and their manifests into the Android demo's assets.

    Replaces APP/app/src/main/assets/models/ atomically and writes assets.json
    there (every file with its sha256). See android-demo/README.md.
    """
    from mfn_deploy.android_assets import ASSETS_SUBDIR, android_assets, check_app

    if app is None:
        # Only a checkout has the demo beside the package: src/mfn_deploy -> repo root.
        app = Path(__file__).resolve().parents[2] / "android-demo"
        if not app.is_dir():
            raise MfnError("--app is required: this mfn-deploy is not run from a checkout")
    from mfn_deploy.runtime import cached_pretrained_export, detector_dir

    check_app(app)  # before the defaults below export anything
    if export_dir is None:
        export_dir = cached_pretrained_export(APP_EMBEDDER)
    assets = android_assets(export_dir, detector_dir(detector), app)
    total = sum(f["bytes"] for f in assets["files"].values())
    click.echo(
        f"copied {len(assets['files'])} files ({total / 1e6:.2f} MB) to {app / ASSETS_SUBDIR}"
        f" (embedder: {assets['embedder']['model']}, {export_dir})"
    )


# --- native runner: fetch ncnn's source, build, locate ---------------------------------

_TARGET_CHOICE = click.Choice(["host", "arm64-v8a", "armeabi-v7a"])


@cli.group()
def native() -> None:
    """The mfn-bench runner: ncnn built from its pinned source, cached per target."""


@native.command("fetch")
@click.option(
    "--dest",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory to fetch into (default: the cache).",
)
def native_fetch(dest: Path | None) -> None:
    """Fetch ncnn's pinned source distribution from the package index and check its sha256."""
    from mfn_deploy.files import sha256_of
    from mfn_deploy.native.build import fetch_source

    path = fetch_source(dest)
    click.echo(f"{path} sha256 {sha256_of(path)}")


@native.command("build")
@click.option(
    "--target",
    "targets",
    type=click.Choice(["host", "arm64-v8a", "armeabi-v7a", "all"]),
    multiple=True,
    default=["host"],
    show_default=True,
    help="Target ABI; repeat it or say all (armeabi-v7a is best-effort).",
)
@click.option("--jobs", type=click.IntRange(1, 256), help="Parallel build jobs (default: nproc).")
@click.pass_obj
def native_build(settings: Settings, targets: tuple[str, ...], jobs: int | None) -> None:
    """Build ncnn (minutes, once) and the runner for each target into the cache."""
    from mfn_deploy.native.build import TARGETS, build_runners

    names = list(TARGETS) if "all" in targets else list(dict.fromkeys(targets))

    def log(message: str) -> None:
        if not settings.quiet or message.startswith("warning"):
            click.echo(f"native: {message}", err=True)

    for name, path in build_runners(names, jobs, log).items():
        click.echo(f"{name}: {path}")


@native.command("path")
@click.option("--target", type=_TARGET_CHOICE, default="host", show_default=True)
def native_path(target: str) -> None:
    """Print the built runner's path (or say which command builds it)."""
    from mfn_deploy.native import runner_path

    click.echo(runner_path(target))


# --- on-device latency: device list, bench, report ----------------------------------


@cli.group()
def device() -> None:
    """Android phones over adb ($MFN_ADB names another adb executable)."""


@device.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def device_list(as_json: bool) -> None:
    """Every attached phone: serial, state, model, SoC, ABI, CPU clusters, Android version.

    Phones that are not usable (unauthorized, offline) are listed with what to do.
    """
    from mfn_deploy.device.adb import NO_DEVICE
    from mfn_deploy.device.probe import list_phones

    phones = list_phones()
    if as_json:
        click.echo(json.dumps(phones.to_json(), indent=2))
        return
    if not phones.phones:
        raise MfnError(NO_DEVICE)
    click.echo(_format_table(phones.rows(), list(phones.header)))
    if phones.hints():
        click.echo("\n".join(phones.hints()), err=True)


def _bench_progress(settings: Settings, bars: ExitStack):
    """Per-device progress: a live line per phone on a terminal, else one line per model.

    Each device's bar is entered into ``bars``, which closes them all.
    """
    import threading

    by_device: dict[str, tqdm] = {}
    lock = threading.Lock()

    def on_progress(p) -> None:
        with lock:
            if p.device not in by_device:
                by_device[p.device] = bars.enter_context(
                    tqdm(
                        total=p.total,
                        desc=p.device,
                        position=len(by_device),
                        leave=False,
                        file=sys.stderr,
                        disable=True if settings.quiet else None,
                        bar_format="{desc}: {postfix} [{elapsed}]",
                    )
                )
            bar = by_device[p.device]
            ms = f", median {p.median_ms:.1f} ms" if p.median_ms is not None else ""
            bar.set_postfix_str(
                f"model {p.index}/{p.n_models} {p.model}: {p.phase}, run {p.done}/{p.total}{ms}"
            )
            if p.phase in ("done", "failed") and bar.disable and not settings.quiet:
                click.echo(
                    f"{p.device} [{p.index}/{p.n_models}] {p.model}: {p.phase}, {p.done} runs{ms}",
                    err=True,
                )

    return on_progress


def _bench_number(name: str, help_text: str):
    """A numeric bench option: its default and bounds are BenchOptions' (checked there)."""
    low, high = LIMITS[name]
    default = BenchOptions.default(name)
    return click.option(
        f"--{name.replace('_', '-')}",
        name,
        type=str if name in ("cooldown", "threads") else int,
        default=default,
        show_default=True,
        help=f"{help_text} [{low:g}..{high:g}]",
    )


@cli.command()
@click.option("--target", type=click.Choice(TARGETS), default=TARGETS[0], show_default=True)
@click.option(
    "--serial",
    "serials",
    multiple=True,
    metavar="S",
    help="Phone serial (repeatable) or 'all'; default $ANDROID_SERIAL or the only phone.",
)
@click.option(
    "--models",
    metavar="NAME,...",
    help="Registered networks, or 'all' for Table 2 (default weights, exported once, cached).",
)
@click.option(
    "--pretrained",
    metavar="NAME,...",
    help="Trained networks (see `pretrained`), exported once and cached (int8: with --int8-auto).",
)
@click.option(
    "--export",
    "exports",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="An export directory instead of --models (repeatable).",
)
@_bench_number(
    "threads", "ncnn / runtime threads, or a list such as 1,2,4 measured in turn (scaling)."
)
@_bench_number("powersave", "ncnn cores: 0 all, 1 little, 2 big.")
@_bench_number("loops", "Timed runs per model.")
@_bench_number("warmup", "Untimed runs first.")
@_bench_number(
    "cooldown",
    "'auto': wait (<= 120 s) until temperature and clocks recover before each model; "
    "or SEC the runner sleeps after loading.",
)
@click.option(
    "--fp16",
    type=click.Choice(["on", "off"]),
    default="on" if BenchOptions.default("fp16") else "off",
    show_default=True,
)
@click.option(
    "--int8",
    is_flag=True,
    help="Time the int8 pair (export --int8); parity against host fp32 and host int8.",
)
@_bench_number("chunk", "Timed runs per runner start on a phone.")
@_bench_number(
    "pace_ms", "Start runs at least this many ms apart, like camera frames (0: back to back)."
)
@click.option(
    "--profile", is_flag=True, help="The runner's per-layer times (ms, share) after the timed runs."
)
@click.option(
    "--backends",
    metavar="NAME,...",
    help=f"--target host only: which runtimes to compare (default: {','.join(HOST_BACKENDS)}, "
    "and litert (LiteRT, XNNPACK) for an export whose weights came from a TFLite file).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_obj
def bench(
    settings: Settings,
    target: str,
    serials: tuple[str, ...],
    models: str | None,
    pretrained: str | None,
    exports: tuple[Path, ...],
    threads: str,
    powersave: int,
    loops: int,
    warmup: int,
    cooldown: str,
    fp16: str,
    int8: bool,
    chunk: int,
    pace_ms: int,
    profile: bool,
    backends: str | None,
    out: Path,
) -> None:
    """Measure ncnn latency on phones over adb (or on this machine) into --out JSON.

    On each phone (all of --serial in parallel, one run per phone at a time) the
    runner for its ABI and the models are pushed under /data/local/tmp/mfn-deploy/,
    clocks and temperature are recorded around every model, throttled runs are
    flagged and the embedding of a fixed face is checked against host onnxruntime.
    --target host times the ncnn runner, ncnn's Python binding, onnxruntime and
    torch (and LiteRT with XNNPACK, for an export made from a TFLite file) with the
    same threads, loops and input. --out is rewritten after every
    model: an interrupted run keeps what was measured, marked partial. Partial
    results are kept when a phone disconnects or a run dies; the command then exits
    non-zero.
    """
    from mfn_deploy.bench.options import parse_cooldown, parse_threads
    from mfn_deploy.bench.run import BenchRequest
    from mfn_deploy.bench.run import bench as run_bench

    request = BenchRequest(
        out=out,
        target=target,
        models=models,
        exports=exports,
        pretrained=tuple(n.strip() for n in (pretrained or "").split(",") if n.strip()),
        serials=serials,
        backends=backends,
        options=BenchOptions(
            threads=parse_threads(threads),
            powersave=powersave,
            loops=loops,
            warmup=warmup,
            cooldown=parse_cooldown(cooldown),
            fp16=fp16 == "on",
            int8=int8,
            chunk=chunk,
            pace_ms=pace_ms,
            profile=profile,
        ),
    )
    n_models = len(request.names) + len(request.pretrained) + len(exports)
    prepare = settings.bar(total=n_models, desc="preparing models")

    def on_model(name: str) -> None:
        prepare.set_postfix_str(name)
        prepare.update(1)

    with prepare, ExitStack() as bars:
        try:
            result = run_bench(request, _bench_progress(settings, bars), on_model)
        except KeyboardInterrupt as e:  # the notes say where the partial results are
            click.echo("\n".join(getattr(e, "__notes__", [])), err=True, nl=False)
            raise
    if not settings.quiet:
        click.echo(result.markdown())
    if result.problems:
        click.echo("\n".join(f"error: {line}" for line in result.problems), err=True)
        raise MfnError(f"{len(result.problems)} problem(s); partial results kept in {out}")
    click.echo(f"wrote {out}", err=True)


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--png", type=click.Path(path_type=Path, dir_okay=False), help="Bar chart to write.")
def report(results: tuple[Path, ...], png: Path | None) -> None:
    """Print the paper's Table 2 for bench RESULTS files as Markdown; --png adds a chart.

    Columns: network, params, MAdds, the paper's Snapdragon 820 ms and ratio, then
    per phone or host backend the measured median ± half IQR and the ratio to
    MobileFaceNet. The chart groups the paper's ms and every measured median.
    A results file in which nothing was measured is an error.
    """
    from mfn_deploy.bench.report import table2

    table = table2(results)
    click.echo(table.markdown(), nl=False)
    if png is not None:
        table.plot(png)
        click.echo(f"wrote {png}", err=True)


def _interrupted(e: KeyboardInterrupt) -> NoReturn:
    click.echo("error: interrupted", err=True)
    signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
    sys.exit(128 + signum)


_GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet")


def _hoist_global_flags(argv: list[str]) -> list[str]:
    """-v/-q after the command name mean what they mean before it: move them to the front
    (up to a ``--``, after which everything is an argument)."""
    end = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:end] if a in _GLOBAL_FLAGS]
    return [*flags, *(a for a in argv[:end] if a not in _GLOBAL_FLAGS), *argv[end:]]


def main(argv: list[str] | None = None) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    argv = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        code = cli.main(args=argv, prog_name="mfn-deploy", standalone_mode=False)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, KeyboardInterrupt):  # click wraps an interrupt in Abort
            _interrupted(e.__cause__)
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        if _settings.verbose:
            traceback.print_exc()
        click.echo(f"error: {e.format_message()} (see mfn-deploy --help)", err=True)
        sys.exit(e.exit_code)
    except MfnError as e:
        if _settings.verbose:
            traceback.print_exc()
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt as e:
        _interrupted(e)
    except Exception as e:  # a bug, not a user error: still one line unless --verbose
        if _settings.verbose:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        click.echo(
            f"error: internal error {type(e).__name__}: {first} (rerun with --verbose for details)",
            err=True,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
