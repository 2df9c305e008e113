"""CLI: ``east extract`` — run a frozen teacher over a dataset into an embedding cache."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from east.cli.common import console, err_console


def default_store_path(
    cache_dir: str | Path, dataset: str, teacher: str, known_here: bool = True
) -> str:
    """``<cache-dir>/<dataset>/<teacher>.zarr`` (URL cache dirs stay URLs).

    A custom teacher spec (``torchscript:/path/m.pt``) is named after its declared name, so
    the store gets a plain file name rather than the path inside the spec.
    """
    from east.extract.teachers.registry import teacher_info

    declared = teacher_info(teacher).name if known_here else teacher  # (a service's teacher)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", declared)
    text = str(cache_dir).rstrip("/")
    return f"{text}/{dataset}/{name}.zarr"


def extract_command(
    teacher: str = typer.Option(
        ..., "--teacher", "-t", help="Teacher name (`east teachers list`)."
    ),
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="Dataset name (`east datasets list`)."
    ),
    root: Path = typer.Option(..., "--root", help="Folder holding the dataset (official layout)."),
    option: list[str] = typer.Option(
        None, "--option", "-o", help="Dataset option KEY=VALUE, repeatable (docs/datasets.md)."
    ),
    cache_dir: str = typer.Option(
        None,
        "--cache-dir",
        help="Where stores go (folder or fsspec URL); default $EAST_CACHE_DIR or ./cache.",
    ),
    store: str = typer.Option(
        None, "--store", help="Exact store path/URL (default <cache-dir>/<dataset>/<teacher>.zarr)."
    ),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1, mps or auto."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Clips per teacher forward."),
    num_workers: int = typer.Option(2, "--num-workers", "-j", help="Decode worker processes."),
    limit: int = typer.Option(None, "--limit", help="Process at most N more clips, then stop."),
    scheduler: str = typer.Option(
        None, "--scheduler", help="Run on dask: local:N (N worker processes) or tcp://host:port."
    ),
    weights: str = typer.Option(
        None, "--weights", help="Local weights file instead of the pinned one ('random': none)."
    ),
    chunk_clips: int = typer.Option(64, "--chunk-clips", help="Clips per store chunk."),
    dtype: str = typer.Option("float16", "--dtype", help="Stored dtype: float16 or float32."),
    max_seconds: float = typer.Option(
        None, "--max-seconds", help="Use only the first N seconds of each clip."
    ),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad clip."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Re-attempt clips recorded as failed."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete an existing store at the path and start over."
    ),
    plugin: str = typer.Option(
        None, "--plugin", help="Python module to import first (registers extra teachers)."
    ),
    optimize: bool = typer.Option(
        True,
        "--optimize/--no-optimize",
        help="On CPU, run the teacher as a frozen TorchScript graph where it has one (BN "
        "folded, conv+ReLU fused; same values within float rounding).",
    ),
    clip_cache: Path = typer.Option(
        None,
        "--clip-cache",
        help="A clip cache folder (docs/clip_cache.md): clips already embedded by this teacher "
        "(by any dataset, or `east serve`) are read from it, new ones added.",
    ),
    server: str = typer.Option(
        None, "--server", help="Embed through a running `east serve` at this URL (docs/serve.md)."
    ),
    token: str = typer.Option(
        None, "--token", envvar="EAST_SERVE_TOKEN", help="Bearer token of --server."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Extract a teacher's time-indexed embeddings of every clip into a Zarr store.

    Resumable: run the same command again after any interruption and only the missing clips
    are computed. Prints the store path on stdout.
    """
    from east.datasets import load_manifest, parse_options
    from east.extract.runner import ExtractConfig, TeacherSpec, extract, import_plugin
    from east.malloc import keep_freed_memory
    from east.settings import cache_dir as default_cache_dir

    if plugin:
        import_plugin(plugin)
    manifest = load_manifest(dataset, root, **parse_options(option))
    base = cache_dir or default_cache_dir()
    path = store or default_store_path(base, dataset, teacher, known_here=server is None)
    cfg = ExtractConfig(
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        chunk_clips=chunk_clips,
        dtype=dtype,
        max_seconds=max_seconds,
        strict=strict,
        limit=limit,
        overwrite=overwrite,
        retry_failed=retry_failed,
        optimize=optimize,
        progress=not quiet,
        clip_cache=str(clip_cache) if clip_cache else None,
    )
    spec = TeacherSpec(teacher, str(weights) if weights else None, plugin)
    keep_freed_memory()  # this process is ours (see east.malloc)
    executor = (
        _remote(server, token, scheduler, weights, max_seconds, clip_cache) if server else None
    )
    summary = extract(manifest, spec, path, cfg, scheduler=scheduler, executor=executor)
    for clip, reason in summary.failures[:10]:
        err_console.print(f"[yellow]failed[/] {clip}: {reason}", highlight=False)
    if len(summary.failures) > 10:
        err_console.print(f"... and {len(summary.failures) - 10} more (east cache info {path})")
    err_console.print(summary.line(), highlight=False, soft_wrap=True)
    console.print(path, highlight=False, soft_wrap=True)


def _remote(
    server: str, token: str | None, scheduler: str | None, weights: str | None,
    max_seconds: float | None, clip_cache: Path | None,
) -> object:  # fmt: skip
    """The executor of ``--server``; the options that only a local teacher has are refused."""
    from east.errors import ConfigError
    from east.extract.remote import Remote

    for given, option in ((scheduler, "--scheduler"), (weights, "--weights"),
                          (max_seconds, "--max-seconds"), (clip_cache, "--clip-cache")):  # fmt: skip
        if given is not None:
            raise ConfigError(f"{option} cannot be used with --server (the service has its own)")
    if not server.startswith(("http://", "https://")):
        raise ConfigError(f"--server {server!r}: give the service's URL, http://HOST:PORT")
    return Remote(server, token)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("extract")(extract_command)
