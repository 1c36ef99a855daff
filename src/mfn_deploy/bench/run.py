"""The one call behind ``mfn-deploy bench``: check, prepare, measure, keep every model.

``bench(request)`` refuses what cannot work before any work (an unwritable --out, no
phone, options out of range), exports or loads the networks, runs the target, and
returns a ``BenchReport``. ``run_bench`` is the measuring part alone, for callers that
hold prepared jobs: the results file is rewritten atomically after every model and
marked ``partial`` until the run ends, so an interrupt keeps what was measured.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mfn_deploy.bench.adb_target import AdbTarget
from mfn_deploy.bench.host import HostTarget, parse_backends
from mfn_deploy.bench.jobs import ModelJob, model_names, prepare_jobs
from mfn_deploy.bench.options import TARGETS, BenchOptions
from mfn_deploy.bench.report import Table2
from mfn_deploy.bench.results import Results, ResultsFile, new_results, now
from mfn_deploy.bench.target import ProgressFn, Session, Target
from mfn_deploy.errors import MfnError


@dataclass(frozen=True)
class BenchRequest:
    """What ``bench`` was asked: where, which networks, how (options), into which file."""

    out: Path
    target: str = TARGETS[0]
    models: str | None = None  # "a,b" or "all"
    exports: tuple[Path, ...] = ()
    pretrained: tuple[str, ...] = ()  # the catalogue's trained models
    serials: tuple[str, ...] = ()  # adb only
    backends: str | None = None  # host only; None: every runtime (litert: TFLite sources)
    options: BenchOptions = field(default_factory=BenchOptions)

    @property
    def names(self) -> list[str]:
        return model_names(self.models)

    def make_target(self) -> Target:
        if self.target not in TARGETS:
            raise MfnError(f"unknown target {self.target!r}; valid: {', '.join(TARGETS)}")
        if self.target == "adb":
            if self.backends is not None:
                raise MfnError("--backends applies to --target host only")
            return AdbTarget(self.serials)
        if self.serials:
            raise MfnError("--serial applies to --target adb only")
        return HostTarget(parse_backends(self.backends))


@dataclass
class BenchReport:
    results: Results
    out: Path
    problems: list[str]  # one line each; empty when every model ran cleanly

    def markdown(self) -> str:
        return Table2([(self.out.name, self.results)]).markdown()


def check_writable(path: Path) -> None:
    """One line naming ``path`` if a results file cannot be written there (tried, not guessed)."""
    if path.is_dir():
        raise MfnError(f"{path}: is a directory; --out names the results file")
    if not path.parent.is_dir():
        raise MfnError(f"{path}: folder {path.parent} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as e:
        raise MfnError(f"{path}: cannot write the results there: {e.strerror}") from None


def run_bench(
    target: Target,
    jobs: list[ModelJob],
    options: BenchOptions,
    out: Path,
    on_progress: ProgressFn = lambda _p: None,
) -> Results:
    """Time ``jobs`` on ``target`` into ``out`` (rewritten after every model)."""
    results = new_results(target.name, options)
    session = Session(options, ResultsFile(out, results), on_progress)
    try:
        target.run(jobs, session)
    except KeyboardInterrupt as e:
        results.interrupt()
        session.save()
        e.add_note(f"partial results kept in {out}")
        raise
    results.partial = False
    results.finished = now()
    session.save()
    return results


def bench(
    request: BenchRequest,
    on_progress: ProgressFn = lambda _p: None,
    on_model: Callable[[str], None] = lambda _name: None,
) -> BenchReport:
    """Everything ``mfn-deploy bench`` does; the CLI only renders the report."""
    check_writable(request.out)
    target = request.make_target()
    target.check()  # adb and phone problems show before any export
    jobs = prepare_jobs(
        request.names,
        list(request.exports),
        request.options.precision,
        on_model,
        list(request.pretrained),
    )
    results = run_bench(target, jobs, request.options, request.out, on_progress)
    return BenchReport(results, request.out, results.problems())
