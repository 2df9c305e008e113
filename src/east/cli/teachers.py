"""CLI: ``east teachers list | download`` (and ``convert`` where a family module adds it)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import typer

from east.cli.common import check_folder_option, console, err_line

teachers_app = typer.Typer(
    name="teachers",
    help=(
        "The pre-trained teachers east can extract embeddings from: list them with their "
        "facts and whether their weights are present, download pinned weight files."
    ),
    no_args_is_help=True,
)

# Modules that add more `east teachers` commands (e.g. `convert`) with a
# `register(app: typer.Typer)` function; skipped while they do not exist.
EXTRA_COMMAND_MODULES = ("east.cli.teachers_convert",)


def _frames(window_s: float | None, hop_s: float | None) -> str:
    if window_s is None:
        return "clip"
    return f"{window_s:g} / {hop_s:g}"


@teachers_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print the facts as JSON instead."),
) -> None:
    """List teachers: sample rate, window/hop (s) or clip-level, dim, weights present, licence."""
    from rich.table import Table

    from east.extract.teachers import list_teachers
    from east.extract.weights import weights_present
    from east.settings import weights_dir

    rows = []
    for info in sorted(list_teachers(), key=lambda i: (i.family, i.name)):
        present = [weights_present(wf) for wf in info.weights]
        rows.append((info, present))
    if as_json:
        data = [
            {
                "name": info.name,
                "family": info.family,
                "sample_rate": info.sample_rate,
                "window_s": info.window_s,
                "hop_s": info.hop_s,
                "dim": info.embedding_dim,
                "weights_present": all(present) if present else None,
                "weight_files": [wf.filename for wf in info.weights],
                "licence": info.licence,
            }
            for info, present in rows
        ]
        console.print_json(json.dumps(data))
        return
    table = Table(
        box=None,
        header_style="bold",
        caption=f"weights dir: {weights_dir()} (EAST_WEIGHTS_DIR)",
        caption_justify="left",
    )
    # the facts keep their width on an 80-column terminal; only the licence gives way
    table.add_column("name", no_wrap=True, min_width=12)
    table.add_column("family", no_wrap=True, overflow="ellipsis", max_width=8)
    table.add_column("rate", justify="right", no_wrap=True, min_width=5)
    table.add_column("window / hop (s)", no_wrap=True, min_width=11)
    table.add_column("dim", justify="right", no_wrap=True, min_width=4)
    table.add_column("weights", no_wrap=True, min_width=3)
    # licences can be long ("weights: …; code: …"): one line here, in full with --json
    table.add_column("licence", no_wrap=True, overflow="ellipsis", max_width=40, ratio=1)
    for info, present in rows:
        if not present:
            status = "-"
        elif all(present):
            status = "[green]yes[/]"
        elif any(present):
            status = f"[yellow]{sum(present)}/{len(present)}[/]"
        else:
            status = "[red]no[/]"
        table.add_row(
            info.name,
            info.family,
            str(info.sample_rate),
            _frames(info.window_s, info.hop_s),
            str(info.embedding_dim),
            status,
            info.licence,
        )
    console.print(table)


@teachers_app.command("download")
def download_command(
    names: list[str] = typer.Argument(..., help="Teacher names (`east teachers list`)."),
    dest: Path = typer.Option(
        None, "--dest", help="Folder to download into (default: the weights dir)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Download the pinned weight files of teachers, verify their checksums (resumable)."""
    from east.errors import WeightsError
    from east.extract.teachers import teacher_info
    from east.extract.weights import download
    from east.settings import weights_dir

    infos = [teacher_info(name) for name in names]  # unknown names fail before any download
    if dest is not None:
        check_folder_option("--dest", dest)
    else:
        check_folder_option("EAST_WEIGHTS_DIR", weights_dir())
    for info in infos:
        if not info.weights:
            raise WeightsError(f"teacher {info.name} has no weight files to download")
        for wf in info.weights:
            if not wf.url.startswith(("http://", "https://")):
                raise WeightsError(
                    f"{wf.filename} for {info.name} is not a plain download: {wf.note or wf.url}"
                )
            path = download(wf, dest_dir=dest, progress=not quiet)
            err_line("ok", "green", f"{info.name}: {wf.filename}")
            console.print(str(path), highlight=False, soft_wrap=True)


_extras_added = False


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    global _extras_added
    for module_name in () if _extras_added else EXTRA_COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(teachers_app)
    _extras_added = True
    app.add_typer(teachers_app, name="teachers")
