"""The one interface a benchmark target implements (phones over adb, this machine).

A target is constructed with what it needs (``AdbTarget(serials)``,
``HostTarget(backends)``), fails fast in ``check`` (before any network is exported),
and in ``run`` times every job, appending its ``DeviceResult`` to the session's
results and calling ``session.save()`` after every model, so the results file always
holds what was measured. On an interrupt (``KeyboardInterrupt``, which SIGTERM also
raises in the CLI) ``run`` stops measuring and re-raises once nothing writes any more;
the caller marks what was under way as interrupted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mfn_deploy.bench.jobs import ModelJob
from mfn_deploy.bench.options import BenchOptions
from mfn_deploy.bench.results import Results, ResultsFile


@dataclass
class Progress:
    device: str
    model: str
    index: int  # 1-based model number
    n_models: int
    done: int  # timed runs that really finished
    total: int
    phase: str  # "push", "cooldown", "run", "done", "failed"
    median_ms: float | None = None


ProgressFn = Callable[[Progress], None]


@dataclass
class Session:
    """What a target gets besides the jobs: the options, where results go, whom to tell."""

    options: BenchOptions
    file: ResultsFile
    on_progress: ProgressFn = lambda _p: None
    stop: threading.Event = field(default_factory=threading.Event)  # set on an interrupt

    @property
    def results(self) -> Results:
        return self.file.results

    def save(self) -> None:
        self.file.save()


class Target(Protocol):
    name: str  # the results' "target": "adb" | "host"

    def check(self) -> None:
        """Refuse at once what cannot run (no phone, unknown backend), before any export."""

    def run(self, jobs: list[ModelJob], session: Session) -> None:
        """Time every job; results go into ``session.results``, saved after every model."""
