"""CLI: ``east students list`` — the students, their parameter counts and measured speed."""

from __future__ import annotations

import time

import typer

from east.cli.common import console
from east.errors import ConfigError

students_app = typer.Typer(help="Student networks: sizes and speed.", no_args_is_help=True)

#: classes of each student's dataset in the papers (only the total count depends on it)
PAPER_CLASSES = {"cp_resnet": 20, "mobile_fcn": 50, "short_chunk_cnn": 50, "harmonic_cnn": 50}


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(students_app, name="students")


@students_app.command("list")
def list_command(
    device: str = typer.Option("auto", help="Device for the speed test (auto, cpu, cuda, ...)."),
    batch_size: int = typer.Option(1, min=1, help="Spectrograms per iteration."),
    iters: int = typer.Option(10, min=0, help="Timed iterations per student (0: skip timing)."),
    warmup: int = typer.Option(2, min=0, help="Untimed iterations first."),
    frames: int = typer.Option(1000, min=1, help="Time frames of the test spectrogram."),
    bins: int = typer.Option(128, min=1, help="Frequency bins of the test spectrogram."),
    mode: str = typer.Option(
        "train", help="train: forward + backward per iteration; inference: forward only."
    ),
) -> None:
    """Each student's backbone and total parameters and its iterations/s on a bins × frames
    spectrogram (the papers' Table 2 protocol: 128 × 1000, front-end bypassed)."""
    import torch
    from rich.progress import Progress
    from rich.table import Table

    from east.settings import best_device
    from east.train.students import STUDENTS, create_student, list_students

    if mode not in ("train", "inference"):
        raise ConfigError(f"--mode must be 'train' or 'inference', got {mode!r}")
    dev = torch.device(best_device(device))  # one-line ConfigError for a device not here

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    table = Table(title=f"students — {mode}, batch {batch_size}, {bins}×{frames}, {dev}")
    table.add_column("student", no_wrap=True)
    for column in ("backbone (M)", "total (M)", "paper (M)", "it/s"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("source")
    names = list_students()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("measuring", total=len(names) * (iters + warmup))
        for name in names:
            info = STUDENTS[name]
            student = create_student(name, PAPER_CLASSES.get(name, 50)).to(dev)
            rate = "–"
            if iters > 0:
                progress.update(task, description=f"measuring {name}")
                spec = torch.randn(batch_size, bins, frames, device=dev)
                if student.spectrogram_channels != 1:
                    spec = spec.unsqueeze(1).expand(-1, student.spectrogram_channels, -1, -1)
                # eval-mode BN/dropout in both modes: same arithmetic, and batch-norm heads
                # accept a batch of one (training-mode BN needs two samples)
                student.eval()
                start = 0.0
                for step in range(warmup + iters):
                    if step == warmup:
                        sync()
                        start = time.perf_counter()
                    if mode == "train":
                        student.zero_grad(set_to_none=True)
                        student(spec, is_spectrogram=True).logits.sum().backward()
                    else:
                        with torch.inference_mode():
                            student(spec, is_spectrogram=True)
                    progress.advance(task)
                sync()
                rate = f"{iters / (time.perf_counter() - start):.1f}"
            table.add_row(
                name,
                f"{student.num_parameters(backbone_only=True) / 1e6:.2f}",
                f"{student.num_parameters(backbone_only=False) / 1e6:.2f}",
                f"{info.paper_params_m:g}",
                rate,
                info.paper,
            )
            del student
    console.print(table)
