"""CLI: ``east datasets list | show | check``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from east.cli.common import console, err_console

if TYPE_CHECKING:
    from east.datasets.base import Manifest
    from east.datasets.check import OffLengthClip

__all__ = [
    "check_command",
    "datasets_app",
    "list_command",
    "register",
    "show_command",
]

OPTION_HELP = (
    "Dataset option KEY=VALUE, repeatable, e.g. -o test_fold=1 -o split=folds "
    "(see docs/datasets.md; `east datasets list` shows each dataset's options)."
)
ROOT_HELP = "Folder holding the dataset in its official layout."

datasets_app = typer.Typer(
    name="datasets",
    help=(
        "Inspect the datasets east reads (openmic, mtat, esc50, fma_small, folder): list them, "
        "show a dataset's splits and labels, check that every clip decodes."
    ),
    no_args_is_help=True,
)


@datasets_app.command("list")
def list_command() -> None:
    """List the dataset names with a one-line description and their options."""
    from rich.table import Table

    from east.datasets import dataset_info, list_datasets

    table = Table(box=None, show_header=True, header_style="bold")
    table.add_column("name")
    table.add_column("description")
    table.add_column("clip")
    table.add_column("options (default)")
    for name in list_datasets():
        info = dataset_info(name)
        opts = ", ".join(f"{k}={p.default!r}" for k, p in info.options().items())
        clip = f"{info.nominal_seconds:g} s" if info.nominal_seconds else "-"
        table.add_row(name, info.description, clip, opts)
    console.print(table)


def _load(name: str, root: Path, options: list[str] | None, **forced: Any) -> Manifest:
    from east.datasets import load_manifest, parse_options

    opts = parse_options(options)
    for key, value in forced.items():
        opts.setdefault(key, value)
    return load_manifest(name, root, **opts)


def _summary(manifest: Manifest) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {
        "dataset": manifest.name,
        "root": str(manifest.root),
        "task": manifest.task,
        "clips": len(manifest),
        "classes": manifest.num_classes,
        "splits": manifest.split_counts(),
        "manifest_hash": manifest.hash,
        "labels_hash": manifest.labels_hash,
    }
    if "fold" in manifest.extra:
        folds, counts = np.unique(manifest.extra["fold"], return_counts=True)
        out["folds"] = {int(f): int(c) for f, c in zip(folds, counts, strict=True)}
    per_class: dict[str, dict[str, Any]] = {}
    multi = manifest.multi_hot()
    known = manifest.known_mask()
    for split in manifest.split_counts():
        rows = manifest.indices(split)
        pos = ((multi[rows] > 0.5) & known[rows]).sum(axis=0)
        kn = known[rows].sum(axis=0)
        for c, name in enumerate(manifest.class_names):
            entry = per_class.setdefault(name, {})
            entry[split] = int(pos[c])
            if manifest.multilabel:
                entry[f"{split}_known"] = int(kn[c])
    out["per_class"] = per_class
    if manifest.multilabel:
        out["positives_per_clip"] = float(((multi > 0.5) & known).sum(axis=1).mean())
        out["known_fraction"] = float(known.mean())
    out["info"] = {
        k: (v if not isinstance(v, list) else {"count": len(v), "ids": v[:20]})
        for k, v in manifest.info.items()
    }
    return out


@datasets_app.command("show")
def show_command(
    name: str = typer.Argument(..., help="Dataset name (see `east datasets list`)."),
    root: Path = typer.Option(..., "--root", "-r", help=ROOT_HELP),
    option: list[str] = typer.Option(None, "--option", "-o", help=OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Show a dataset: clips per split, classes, label statistics and the manifest hash.

    Example: east datasets show esc50 --root data/ESC-50 -o test_fold=1
    """
    from rich.table import Table

    manifest = _load(name, root, option)
    summary = _summary(manifest)
    if as_json:
        console.print_json(json.dumps(summary))
        return

    p = console.print
    p(f"dataset: {manifest.name}  ({manifest.task})", highlight=False)
    p(f"root: {manifest.root}", highlight=False, soft_wrap=True)
    p(f"clips: {len(manifest)}", highlight=False)
    p(f"classes: {manifest.num_classes}", highlight=False)
    splits = ", ".join(f"{s}: {n}" for s, n in summary["splits"].items())
    rule = manifest.info.get("split_rule")
    p(f"splits: {splits}" + (f"  ({rule})" if rule else ""), highlight=False, soft_wrap=True)
    if "folds" in summary:
        p("folds: " + ", ".join(f"{f}: {n}" for f, n in summary["folds"].items()), highlight=False)
    if manifest.multilabel:
        p(
            f"labels: {summary['positives_per_clip']:.2f} positive per clip, "
            f"{100 * summary['known_fraction']:.1f}% of labels known",
            highlight=False,
        )
    p(f"manifest hash: {manifest.hash}  (labels hash: {manifest.labels_hash})", highlight=False)
    for key, value in manifest.info.items():
        if key == "split_rule":
            continue
        if isinstance(value, list):
            shown = ", ".join(map(str, value[:8])) + (" ..." if len(value) > 8 else "")
            p(f"{key}: {len(value)} ({shown})", highlight=False, soft_wrap=True)
        else:
            p(f"{key}: {value}", highlight=False, soft_wrap=True)

    table = Table(title="positives per class" + (" (known)" if manifest.multilabel else ""))
    table.add_column("class")
    split_names = list(summary["splits"])
    for s in split_names:
        table.add_column(s, justify="right")
    for cls, stats in summary["per_class"].items():
        if manifest.multilabel:
            cells = [f"{stats[s]} / {stats[s + '_known']}" for s in split_names]
        else:
            cells = [str(stats[s]) for s in split_names]
        table.add_row(cls, *cells)
    p(table)


@datasets_app.command("check")
def check_command(
    name: str = typer.Argument(..., help="Dataset name (see `east datasets list`)."),
    root: Path = typer.Option(..., "--root", "-r", help=ROOT_HELP),
    workers: int = typer.Option(
        0, "--workers", "-w", min=0, help="Decoding processes (0 = up to 8, one per CPU)."
    ),
    option: list[str] = typer.Option(None, "--option", "-o", help=OPTION_HELP),
) -> None:
    """Decode every clip in parallel and list each unreadable one with its reason.

    Missing files are reported too, and (as a warning) clips that decode to less than half or
    more than twice the dataset's nominal clip length. Exit code 0 when every clip decodes,
    1 when any does not.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from east.datasets import dataset_info
    from east.datasets.check import check_manifest, default_workers

    manifest = _load(name, root, option, on_missing="keep")
    nominal = dataset_info(name).nominal_seconds
    n_workers = workers or default_workers()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
    ) as progress:
        task = progress.add_task(f"decoding {manifest.name}", total=len(manifest))
        report = check_manifest(
            manifest,
            workers=n_workers,
            on_progress=lambda n: progress.advance(task, n),
            nominal_seconds=nominal,
        )
    bad = report.bad
    if report.off_length:
        _print_off_length(report.off_length, manifest.name, nominal or 0.0)
    if not bad:
        console.print(f"all {len(manifest)} clips of {manifest.name} decode", highlight=False)
        return
    # plain lines, not a table: long paths stay whole and the output greps well
    console.print(
        f"{len(bad)} of {len(manifest)} clips of {manifest.name} are unreadable:", highlight=False
    )
    for clip in bad:
        console.print(f"  {clip.rel_path}: {clip.reason}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _print_off_length(clips: list[OffLengthClip], name: str, nominal: float) -> None:
    from east.datasets.check import LONG_FACTOR, SHORT_FRACTION

    console.print(
        f"warning: {len(clips)} clips of {name} are far from its nominal {nominal:g} s "
        f"(under {SHORT_FRACTION * nominal:g} s or over {LONG_FACTOR * nominal:g} s; "
        "truncated files decode like this):",
        highlight=False,
        soft_wrap=True,
    )
    for clip in clips:
        console.print(
            f"  {clip.clip_id}: {clip.seconds:.3g} s  ({clip.rel_path})",
            highlight=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    """Add the ``datasets`` command group to the root app."""
    app.add_typer(datasets_app)
