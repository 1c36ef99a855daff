"""The ``mfn-deploy`` command line: a thin layer over the stage modules.

Commands parse options, call one library function and print its report. User
errors (``MfnError``, bad options) become one ``error: ...`` line and a non-zero
exit; a traceback appears only with ``--verbose``.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import click
from tqdm import tqdm

from mfn_deploy import __version__
from mfn_deploy.errors import MfnError

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
    from mfn_deploy.models import names
    from mfn_deploy.stats import model_stats

    stats = [model_stats(n) for n in settings.progress(names(), "counting")]
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
            f"{s.paper_ms:g}",
        ]
        for s in stats
    ]
    click.echo(_format_table(rows, header))


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="mfn-deploy", standalone_mode=False)
    except click.exceptions.Abort:
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
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
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
