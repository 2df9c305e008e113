"""CLI: ``east teachers convert`` — official weights that are not PyTorch → east state dicts.

Only MULE needs it: its official weights are a Keras ``model.keras`` (Git LFS file of
PandoraMedia/music-audio-representations). ``east.cli.teachers`` calls :func:`register`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from east.cli.common import check_file_option, console, err_console

CONVERTIBLE = ("mule",)


def register(teachers_app: typer.Typer) -> None:
    """Add ``convert`` to the ``east teachers`` group."""

    @teachers_app.command("convert")
    def convert_command(
        teacher: str = typer.Argument(..., help="Teacher whose official weights to convert: mule."),
        source: Path = typer.Option(
            None,
            "--from",
            help="Clone of the official repository (after `git lfs pull`), its model folder or "
            "the model.keras file. Default: mule/model.keras in the weights dir "
            "(`east teachers download mule`).",
        ),
        out: Path = typer.Option(
            None, "--out", help="Output file (default: mule/mule_sfnfnet_f0.pt in the weights dir)."
        ),
    ) -> None:
        """Convert a teacher's official non-PyTorch weights into east's state dict."""
        from east.errors import EastError

        if teacher not in CONVERTIBLE:
            raise EastError(
                f"teacher {teacher!r} needs no conversion; convertible: {', '.join(CONVERTIBLE)}"
            )
        if out is not None:  # checked before the (slow) conversion
            check_file_option("--out", out)
        from east.extract.teachers.mule import OFFICIAL_WEIGHTS, converted_path
        from east.extract.teachers.mule_convert import convert
        from east.extract.weights import weights_path

        if source is None:
            source = weights_path(OFFICIAL_WEIGHTS)
            if not source.is_file():
                raise EastError(
                    f"{source} not found: pass --from DIR (a clone of the official repository "
                    "after `git lfs pull`) or run `east teachers download mule` first"
                )
        summary = convert(source, out or converted_path())
        official = "the official release" if summary["official"] else "not the pinned official file"
        err_console.print(
            f"[green]ok[/] converted {summary['tensors']} tensors, "
            f"{summary['parameters']:,} parameters from {summary['source']} "
            f"(sha256 {summary['source_sha256'][:16]}…, {official})",
            highlight=False,
        )
        console.print(summary["out"], highlight=False, soft_wrap=True)
