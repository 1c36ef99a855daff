"""The one exception type the CLI turns into a one-line ``error: ...`` message, and the
interrupt the CLI raises for SIGINT and SIGTERM."""

from __future__ import annotations

import signal
from typing import NoReturn


class MfnError(Exception):
    """A user-facing error: bad input, a missing file, a tool that failed.

    The message must stand on its own on one line and name the file or value at fault.
    """


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised as ^C is (the same finally blocks clean up), carrying
    the signal's number for the exit status."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.signum = signum


_received: list[int] = []


def on_signal(signum: int, _frame: object) -> NoReturn:
    """The CLI's handler for SIGINT and SIGTERM: remembered, then raised."""
    _received.append(signum)
    raise Interrupted(signum)


def raise_if_interrupted() -> None:
    """Raise again a signal that was received but whose exception some library swallowed
    (a bare ``except:`` around an import eats a KeyboardInterrupt): called before an
    output is committed, so an interrupted run never completes with exit 0."""
    if _received:
        raise Interrupted(_received[0])
