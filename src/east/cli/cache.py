"""CLI: ``east cache info | verify | audio | export`` — inspect, check, fill and export caches."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from east.cli.common import console, err_console

cache_app = typer.Typer(
    name="cache",
    help=(
        "Inspect and verify embedding caches (dataset stores and clip caches); store decoded "
        "audio (`east cache audio`)."
    ),
    no_args_is_help=True,
)


def _human(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if num_bytes < 1024 or unit == "TB":
            return f"{num_bytes:.1f} {unit}" if unit != "B" else f"{int(num_bytes)} B"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TB"


def _stored_bytes(path: str) -> int | None:
    """Bytes the store occupies (local folders only)."""
    if "://" in path and not path.startswith("file://"):
        return None
    root = Path(path.removeprefix("file://"))
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


@cache_app.command("info")
def info_command(
    path: str = typer.Argument(..., help="Store path or URL, or a clip-cache folder."),
    failures: int = typer.Option(10, "--failures", help="How many failed clips to list."),
) -> None:
    """What a store holds: teacher, dataset, shape, coverage, size and provenance (for a clip
    cache: its identity groups with teacher, weights, entries and bytes)."""
    from rich.table import Table

    from east.cache_schema import EmbeddingStore, open_any
    from east.clip_cache import is_clip_cache

    if is_clip_cache(path):
        _clip_info(path)
        return

    store = open_any(path)
    status = store.status
    a = store.attrs
    done, failed = int((status == 1).sum()), int((status == 2).sum())
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("path", store.path)
    table.add_row("kind", store.kind)
    if isinstance(store, EmbeddingStore):
        table.add_row("teacher", f"{a.get('teacher')} ({a.get('teacher_family', '?')})")
        table.add_row("weights sha256", str(a.get("weights_sha256")))
        shape = f"{store.num_clips} clips × {store.max_frames} frames × {store.dim} dims"
        table.add_row("embeddings", f"{shape} ({a.get('dtype')})")
        if a.get("window_s") is None:
            table.add_row("frames", "clip level (T = 1)")
        else:
            table.add_row("frames", f"window {a.get('window_s')} s, hop {a.get('hop_s')} s")
    else:
        table.add_row("audio", f"{store.num_clips} clips, ≤ {store.max_samples} samples (int16)")
    table.add_row("sample rate", f"{a.get('sample_rate')} Hz")
    table.add_row("dataset", f"{a.get('dataset')} (manifest {a.get('manifest_hash')})")
    n = max(store.num_clips, 1)
    table.add_row(
        "coverage",
        f"{done}/{store.num_clips} done ({100 * done / n:.1f} %), {failed} failed, "
        f"{store.num_clips - done - failed} pending",
    )
    table.add_row("chunks", f"{store.num_chunks} of {store.chunk_clips} clips")
    size = _stored_bytes(store.path)
    if size is not None:
        table.add_row("size on disk", _human(size))
    table.add_row(
        "created",
        f"{a.get('created')} by east {a.get('code_version')}, schema {a.get('schema_version')}",
    )
    console.print(table)
    for clip, reason in store.failures()[:failures]:
        console.print(f"  failed {clip}: {reason}", highlight=False)


@cache_app.command("verify")
def verify_command(
    path: str = typer.Argument(..., help="Store path or URL, or a clip-cache folder."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Check provenance against it."),
    root: Path = typer.Option(None, "--root", help="Dataset root (with --dataset)."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Dataset option KEY=VALUE."),
    strict: bool = typer.Option(False, "--strict", help="Failed clips count as problems too."),
    repair: bool = typer.Option(
        False,
        "--repair",
        help=(
            "Mark the clips of damaged chunks pending, so that `east extract` recomputes them "
            "(clip cache: remove damaged entries and leftover temp files; recomputed on demand)."
        ),
    ),
) -> None:
    """Read every written chunk and check it: checksum (missing, corrupt or changed objects),
    NaN/Inf, frame counts and times, coverage and (with --dataset/--root) provenance. A clip
    cache: read every entry against its checksum.

    Exit 0 when sound, 1 when problems were found (each listed with its clips or entries).
    """
    from east.cache_schema import open_any, validate
    from east.clip_cache import is_clip_cache
    from east.errors import EastError

    if is_clip_cache(path):
        if dataset or root or option:
            raise EastError(f"{path} is a clip cache; --dataset/--root/--option check a store")
        _clip_verify(path, repair)
        return

    manifest = None
    if dataset or root:
        if not (dataset and root):
            raise EastError("--dataset and --root go together")
        from east.datasets import load_manifest, parse_options

        manifest = load_manifest(dataset, root, **parse_options(option))
    store = open_any(path)
    report = validate(store, manifest, allow_failed=not strict)
    console.print(
        f"{path}: {report.done}/{report.num_clips} done, {report.failed} failed, "
        f"{report.pending} pending",
        highlight=False,
        soft_wrap=True,
    )
    if report.failed and not strict:
        console.print(f"note: {report.failed} failed clips (listed by `east cache info`)")
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if repair and report.damaged_chunks:
        _repair(path, report.damaged_chunks)
    if not report.ok:
        for problem in report.problems:
            err_console.print(f"[bold red]problem:[/] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print("[green]ok[/]")


def _repair(path: str, chunks: list[int]) -> None:
    """Reset the damaged chunks to pending, under the store's writer lock."""
    from east.cache_schema import open_any
    from east.locking import WriterLock, store_lock_path

    lock_file = store_lock_path(path)
    with WriterLock(lock_file, f"store {path}") if lock_file else contextlib.nullcontext():
        store = open_any(path, mode="r+")
        store.reset_chunks(chunks)
    clips = sum(len(range(*store.chunk_bounds(c))) for c in chunks)
    console.print(
        f"repaired: {len(chunks)} chunks ({clips} clips) marked pending; run the same "
        "`east extract` (or `east cache audio`) again to recompute them",
        highlight=False,
        soft_wrap=True,
    )


def _clip_info(path: str) -> None:
    """``east cache info`` of a clip cache: one line per identity group."""
    from east.clip_cache import ClipCache

    summary = ClipCache(path, create=False).info()
    console.print(
        f"{summary.root}: clip cache version {summary.version}, {len(summary.groups)} groups, "
        f"{summary.entries} entries, {_human(summary.bytes)}",
        highlight=False,
        soft_wrap=True,
    )
    for g in summary.groups:
        console.print(
            f"  {g.id}  {_identity_words(g.identity)}  {g.entries} entries  {_human(g.bytes)}",
            highlight=False,
            soft_wrap=True,
        )


def _identity_words(ident: dict[str, Any] | None) -> str:
    """A group's identity as words: teacher, weights prefix, framing, dtype."""
    if not ident:
        return "? (identity.json missing or damaged)"
    if ident.get("clip_level"):
        framing = "clip level"
    else:
        framing = f"window {ident.get('window_s')} s hop {ident.get('hop_s')} s"
    if ident.get("max_seconds") is not None:
        framing += f", first {ident['max_seconds']} s"
    return (
        f"{ident.get('teacher')}  weights {str(ident.get('weights_sha256'))[:12]}  "
        f"{ident.get('sample_rate')} Hz  {framing}  {ident.get('dtype')}"
    )


def _clip_verify(path: str, repair: bool) -> None:
    """``east cache verify [--repair]`` of a clip cache."""
    from east.clip_cache import ClipCache

    cache = ClipCache(path, create=False)
    report = cache.verify()
    console.print(
        f"{path}: {report.sound}/{report.entries} entries sound in {report.groups} groups",
        highlight=False,
        soft_wrap=True,
    )
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if repair and (report.damaged or report.stale_temp):
        entries, temps = cache.repair(report)
        console.print(
            f"repaired: removed {entries} damaged entries (recomputed on demand) and {temps} "
            "leftover temp files",
            highlight=False,
            soft_wrap=True,
        )
    if not report.ok:
        for problem in report.problems:
            err_console.print(f"[bold red]problem:[/] {problem}", highlight=False, soft_wrap=True)
        if report.bad_identity:
            console.print("note: a damaged identity.json is rewritten by the next put to its group")
        raise typer.Exit(1)
    console.print("[green]ok[/]")


@cache_app.command("audio")
def audio_command(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name."),
    root: Path = typer.Option(..., "--root", help="Dataset root folder."),
    sr: int = typer.Option(16000, "--sr", help="Sample rate to store (the student's)."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Dataset option KEY=VALUE."),
    cache_dir: str = typer.Option(None, "--cache-dir", help="Default $EAST_CACHE_DIR or ./cache."),
    store: str = typer.Option(
        None, "--store", help="Exact store path (default <cache-dir>/<dataset>/audio-<sr>.zarr)."
    ),
    num_workers: int = typer.Option(2, "--num-workers", "-j", help="Decode worker processes."),
    max_seconds: float = typer.Option(None, "--max-seconds", help="Keep the first N seconds."),
    limit: int = typer.Option(None, "--limit", help="Process at most N more clips."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad clip."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Decode + resample every clip once into an int16 store, so training never decodes again."""
    from east.datasets import load_manifest, parse_options
    from east.extract.runner import ExtractConfig, extract_audio
    from east.settings import cache_dir as default_cache_dir

    manifest = load_manifest(dataset, root, **parse_options(option))
    base = str(cache_dir or default_cache_dir()).rstrip("/")
    path = store or f"{base}/{dataset}/audio-{sr}.zarr"
    cfg = ExtractConfig(
        num_workers=num_workers,
        max_seconds=max_seconds,
        limit=limit,
        strict=strict,
        overwrite=overwrite,
        progress=not quiet,
    )
    summary = extract_audio(manifest, path, sr, cfg)
    err_console.print(summary.line(), highlight=False, soft_wrap=True)
    console.print(path, highlight=False, soft_wrap=True)


@cache_app.command("export")
def export_command(
    path: str = typer.Argument(..., help="Embedding store path or URL."),
    fmt: str = typer.Option(..., "--format", help="Output layout: hear (hear-eval-kit)."),
    out: Path = typer.Option(
        ..., "--out", help="Folder to write (new, empty or an earlier export)."
    ),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Add its splits and labels."),
    root: Path = typer.Option(None, "--root", help="Dataset root (with --dataset)."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Dataset option KEY=VALUE."),
    embedding_type: str = typer.Option(
        None,
        "--embedding-type",
        help="event: frames + timestamps (default for frame stores); scene: one embedding per "
        "clip (default for clip-level stores; the time mean of a frame store).",
    ),
) -> None:
    """Write a store's done clips in hear-eval-kit's layout (docs/cache_schema.md), so that
    hear-eval-kit evaluates it without re-extraction. Prints the folder on stdout."""
    from east.errors import EastError
    from east.hear_layout import export_hear

    if fmt != "hear":
        raise EastError(f"--format must be hear (got {fmt!r})")
    manifest = None
    if dataset or root:
        if not (dataset and root):
            raise EastError("--dataset and --root go together")
        from east.datasets import load_manifest, parse_options

        manifest = load_manifest(dataset, root, **parse_options(option))
    summary = export_hear(path, out, manifest, embedding_type)  # type: ignore[arg-type]
    err_console.print(summary.line(), highlight=False, soft_wrap=True)
    console.print(str(summary.out), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(cache_app)
