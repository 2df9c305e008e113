"""Console helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


def one_line(message: str) -> str:
    """``message`` on one line: its non-empty lines joined with "; " (a space after a line
    that ends in ":"), so a multi-line message (a list of problems under a heading) keeps
    every part instead of only the first line, and stderr stays one line per message."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    out = lines[0] if lines else ""
    for line in lines[1:]:
        out += (" " if out.endswith(":") else "; ") + line
    return out


def err_line(label: str, style: str, message: str) -> None:
    """``<label> <message>`` on stderr as one line: the label styled, the message literal
    (a path holding ``[red]`` is not rich markup), never wrapped or highlighted."""
    line = Text(label, style=style)
    line.append(" " + one_line(message))
    err_console.print(line, highlight=False, soft_wrap=True)


def _first_existing(path: Path) -> Path | None:
    return next((p for p in (path, *path.parents) if p.exists()), None)


def check_folder_option(option: str, folder: Path) -> None:
    """Refuse (one line) a folder option that names, or lies below, a file; a folder that
    does not exist yet is fine (it is created)."""
    from east.errors import ConfigError

    existing = _first_existing(folder.expanduser())
    if existing is not None and not existing.is_dir():
        where = (
            "is a file" if existing == folder.expanduser() else f"lies below the file {existing}"
        )
        raise ConfigError(f"{option} {folder} {where}; name a folder")


def check_file_option(option: str, file: Path) -> None:
    """Refuse (one line) an output-file option that names a folder or lies in a folder that
    does not exist (a typo there would otherwise make a stray folder tree)."""
    from east.errors import ConfigError

    path = file.expanduser()
    if path.is_dir():
        raise ConfigError(f"{option} {file} is a folder; name the file to write")
    parent = path.parent
    if not parent.is_dir():
        what = "is a file" if parent.exists() else "does not exist"
        raise ConfigError(f"{option} {file}: its folder {parent} {what}; create the folder first")
