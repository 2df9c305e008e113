"""CLI: ``east train``, ``east eval``, ``east predict``, ``east export`` (stage 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from east.cli.common import err_console


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("train")(train_command)
    app.command("eval")(eval_command)
    app.command("predict")(predict_command)
    app.command("export")(export_command)


def train_command(
    config: Path = typer.Option(None, "--config", "-c", help="YAML run config (see configs/)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config value, e.g. --set loss.lambda=0.8 (repeatable)."
    ),
    resume: Path = typer.Option(
        None, "--resume", help="Continue the run in this directory from its last checkpoint."
    ),
    out: Path = typer.Option(None, "--out", help="Parent folder of the run (default: output_dir)."),
    check: bool = typer.Option(
        False, "--check", help="Validate the config and its caches, then exit without training."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a student (or the Teacher_LR probe) from audio plus cached teacher embeddings."""
    from east.config import load_config
    from east.errors import ConfigError
    from east.train.plan import check_run
    from east.train.trainer import train

    if resume is None and config is None:
        raise ConfigError("give --config FILE (or --resume RUN_DIR)")
    if resume is not None:
        if set_:
            raise ConfigError("--set cannot change a resumed run; its config.yaml is fixed")
        run_dir = train(None, resume=resume, progress=not quiet)  # type: ignore[arg-type]
    else:
        cfg = load_config(config, set_)
        if check:  # the checks of a real run, before its first file is written
            plan = check_run(cfg, out)
            if plan.long_clips:
                err_console.print(
                    f"note: {plan.long_clips} clips are longer than crop.max_seconds "
                    f"({cfg.crop.max_seconds:g} s); training uses a window of them",
                    highlight=False,
                    soft_wrap=True,
                )
            typer.echo(f"config ok: {cfg.run_name()} ({len(plan.manifest)} clips)")
            return
        run_dir = train(cfg, out_dir=out, progress=not quiet)

    from east.run_dir import RunDir

    results = RunDir(run_dir).test_results
    if results.is_file() and os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 reports
        typer.echo(f"run {run_dir}: {results.read_text()}")


def eval_command(
    run_dir: Path = typer.Argument(..., help="A finished run directory."),
    dataset: str = typer.Option(None, "--dataset", help="Evaluate on another dataset."),
    root: Path = typer.Option(None, "--root", help="Root of that dataset."),
    option: list[str] = typer.Option([], "--option", "-o", help="Dataset option KEY=VALUE."),
    label_map: Path = typer.Option(
        None, "--label-map", help="YAML/JSON/CSV mapping run classes to the dataset's classes."
    ),
    split: str = typer.Option("test", "--split", help="train, valid, test or all."),
    device: str = typer.Option("auto", "--device"),
    out: Path = typer.Option(None, "--out", help="Write the result JSON here too."),
) -> None:
    """Evaluate a run's best student (on its test split, or another dataset via a label map)."""
    from east.datasets.registry import parse_options
    from east.train.evaluation import evaluate_run

    result = evaluate_run(
        run_dir,
        dataset=dataset,
        root=root,
        options=parse_options(option) if option else None,
        label_map=label_map,
        split=split,
        device=device,
    )
    text = json.dumps(result, indent=2)
    if out is not None:
        _write_text(out, text)
    typer.echo(text)  # plain JSON: never wrapped or coloured on a pipe


def predict_command(
    run_dir: Path = typer.Argument(..., help="A finished run directory."),
    files: list[Path] = typer.Argument(..., help="Audio files."),
    top_k: int = typer.Option(5, "--top-k", help="Labels shown per file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Print the most likely labels of audio files with their probabilities."""
    from east.train.predict import predict_files

    results = predict_files(run_dir, files, top_k=top_k, device=device)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    for item in results:
        labels = ", ".join(f"{x['label']} {x['probability']:.3f}" for x in item["labels"])
        # plain lines (no rich): never wrapped at 80 columns on a pipe, no markup in file names
        typer.echo(f"{item['file']}: {labels}")


def export_command(
    run_dir: Path = typer.Argument(..., help="A finished run directory."),
    fmt: str = typer.Option(
        "torchscript", "--format", help="torchscript, onnx or hear (an installable HEAR module)."
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="Output file; with --format hear a new package folder (default: in the run).",
    ),
    seconds: float = typer.Option(None, "--seconds", help="Length of the test input."),
    name: str = typer.Option(
        None, "--name", help="--format hear: the module name (default: from the --out folder)."
    ),
) -> None:
    """Write a standalone model (waveform → logits, or a HEAR module) and check it equals the
    run's student."""
    from east.train.export import export_run

    path, diff = export_run(run_dir, fmt, out, seconds, name)
    typer.echo(f"wrote {path} (max |difference| to the run's student: {diff:.2e})")


def _write_text(path: Path, text: str) -> None:
    from east.errors import EastError

    if path.is_dir() or not path.parent.is_dir():
        raise EastError(f"--out {path}: give a file in an existing folder")
    try:
        path.write_text(text)
    except OSError as exc:
        raise EastError(f"--out {path}: cannot write ({exc.strerror or exc})") from None
