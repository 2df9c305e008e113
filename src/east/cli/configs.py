"""CLI: ``east configs list | copy NAME DIR`` — the papers' run configs and label maps that ship
inside the package, for a user without a source checkout."""

from __future__ import annotations

from pathlib import Path

import typer

from east.cli.common import console

configs_app = typer.Typer(
    name="configs",
    help=(
        "The papers' ready-made run configs and label maps shipped with east (the checkout's "
        "configs/): list them, copy them to a folder to edit and run."
    ),
    no_args_is_help=True,
)


@configs_app.command("list")
def list_command(
    under: str = typer.Argument("", help="Only the configs under this folder (e.g. paper1/mtat)."),
) -> None:
    """Print the shipped config names (paths under the configs folder), one a line."""
    from east.resources import config_names

    for name in config_names(under):
        console.print(name, highlight=False, markup=False, soft_wrap=True)


@configs_app.command("copy")
def copy_command(
    name: str = typer.Argument(
        ..., help="A config (paper1/mtat/baseline), a folder (paper2/esc50) or 'all'."
    ),
    dest: Path = typer.Argument(..., help="Folder to copy into (created when missing)."),
    force: bool = typer.Option(False, "--force", help="Overwrite files already there."),
) -> None:
    """Copy shipped configs to DEST, keeping their paths under the configs folder (so DEST
    works as east.reproduce's --configs and label maps land in DEST/label_maps)."""
    from east.resources import copy_configs

    written = copy_configs(name, dest, force=force)
    console.print(f"copied {len(written)} files to {dest}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(configs_app)
