"""Entry point: builds the typer app from the command modules and turns user errors into one
line on stderr with exit code 2 (no traceback)."""

from __future__ import annotations

import errno
import sys

import typer

from east import __version__
from east.cli import cache, configs, datasets, extract, report, serve, students, teachers, train
from east.cli.common import err_console, err_line
from east.errors import EastError

app = typer.Typer(
    name="east",
    help=(
        "Embeddings As Teachers: train small, fast audio classifiers from the cached "
        "embeddings of large pre-trained audio models.\n\n"
        "Stage 1, `east extract`, runs a frozen teacher over a dataset into a Zarr cache; "
        "stage 2, `east train --config`, trains a student from audio plus that cache."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

for module in (datasets, extract, cache, serve, teachers, students, train, report, configs):
    module.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"east {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """east — Embeddings As Teachers."""


#: errors of a path the user named (a full disk, no permission, a read-only or missing
#: path): the user can act on them, so they are one line, not a traceback; any other
#: OSError (EIO, EBADF, ...) stays a traceback, as it points at a bug or a broken machine
USER_PATH_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
    }
)


def os_error_line(exc: OSError) -> str:
    """``<strerror>: <path>`` (``<path> -> <path2>`` for a failed rename or copy)."""
    text = exc.strerror or str(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{text}: {' -> '.join(paths)}" if paths else text


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except EastError as exc:
        err_line("error:", "bold red", str(exc))
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno not in USER_PATH_ERRNOS:
            raise
        err_line("error:", "bold red", os_error_line(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
