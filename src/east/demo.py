"""``make demo``: both stages of east end to end, offline, in a few minutes on a laptop CPU.

No pre-trained weights are reachable on a fresh offline machine, so the demo **makes its own
teacher**, the way a user brings a model of their own:

1. a synthetic "sound event" world — every class is a harmonic source with its own pitch,
   timbre, amplitude modulation, envelope and noise band; every clip jitters the pitch, moves
   the onset, adds background noise at 0–12 dB SNR and a quieter distractor event of another
   class;
2. a *source task* of 24 classes drawn from that world, on which a ~1 M-parameter CNN (the
   teacher, 5× the student) is trained and saved as TorchScript with a sidecar that declares
   its rate, frame hop and embedding size (``east.extract.teachers.custom``);
3. a *target task* of 10 new classes from the same world, few clips per class, written in the
   official ESC-50 layout;
4. ``east extract --teacher torchscript:…`` → Zarr cache, then ``east train`` for Baseline,
   Teacher_LR, EAsT_Final and EAsT_KD with a Mobile FCN student, then ``east report``.

``--real`` (``make demo-real``) runs the same stage-2 recipe on the real ESC-50 fold-4 clips
with the real pre-trained ``fcn-msd`` music tagger as the teacher (weights from
``EAST_WEIGHTS_DIR``, e.g. ``$EAST_SHARED/weights``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from east.cli.common import console
from east.errors import EastError
from east.run_dir import RunDir
from east.systems import system_info
from east.testing.layouts import ESC50_CATEGORIES, write_audio, write_esc50_meta

__all__ = [
    "SAMPLE_RATE",
    "SYSTEMS",
    "DemoTeacher",
    "main",
    "run_demo",
]

SAMPLE_RATE = 16000
SYSTEMS = ("baseline", "teacher_lr", "east_final", "east_kd")


# ----------------------------------------------------------------------------- the world
@dataclass(frozen=True)
class SoundClass:
    f0: float  # Hz
    harmonics: tuple[float, ...]  # amplitude of harmonics 1..H
    am_rate: float  # Hz
    attack: float  # seconds
    decay: float  # seconds (exponential time constant)
    noise_centre: float  # Hz, centre of its noise band
    noise_level: float


def draw_classes(count: int, rng: np.random.Generator) -> list[SoundClass]:
    """``count`` random classes; pitches overlap once jittered, so pitch alone is not enough."""
    return [
        SoundClass(
            f0=float(110.0 * 2.0 ** rng.uniform(0.0, 4.0)),
            harmonics=tuple(float(a) for a in rng.uniform(0.0, 1.0, size=5) ** 2),
            am_rate=float(rng.uniform(0.5, 12.0)),
            attack=float(rng.uniform(0.005, 0.3)),
            decay=float(rng.uniform(0.2, 3.0)),
            noise_centre=float(rng.uniform(300.0, 6000.0)),
            noise_level=float(rng.uniform(0.0, 0.6)),
        )
        for _ in range(count)
    ]


def _band_noise(n: int, centre: float, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spectrum *= np.exp(-0.5 * ((freqs - centre) / (0.25 * centre)) ** 2)
    x = np.fft.irfft(spectrum, n)
    return x / (np.abs(x).max() + 1e-9)


def _event(cls: SoundClass, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    f0 = cls.f0 * 2.0 ** (rng.uniform(-3.0, 3.0) / 12.0)  # ±3 semitones
    x = np.zeros(n)
    for h, amp in enumerate(cls.harmonics, start=1):
        if h * f0 < SAMPLE_RATE / 2:
            x += amp * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * cls.am_rate * t + rng.uniform(0, 2 * np.pi))
    x += cls.noise_level * _band_noise(n, cls.noise_centre, rng)
    envelope = np.minimum(t / cls.attack, 1.0) * np.exp(-np.maximum(t - cls.attack, 0) / cls.decay)
    x *= envelope
    return x / (np.abs(x).max() + 1e-9)


def render_clip(
    target: int, classes: list[SoundClass], seconds: float, rng: np.random.Generator
) -> np.ndarray:
    """One clip of class ``target``: event + distractor + background noise."""
    n = round(seconds * SAMPLE_RATE)
    clip = np.zeros(n)
    onset = rng.integers(0, n // 3)
    clip[onset:] += _event(classes[target], n - onset, rng)
    other = int(rng.choice([c for c in range(len(classes)) if c != target]))
    d_onset = rng.integers(0, n // 2)
    clip[d_onset:] += 0.4 * _event(classes[other], n - d_onset, rng)
    snr_db = rng.uniform(0.0, 12.0)
    noise = np.cumsum(rng.standard_normal(n))  # brown-ish background
    noise -= np.convolve(noise, np.ones(400) / 400, mode="same")
    noise *= np.sqrt(np.mean(clip**2) / (np.mean(noise**2) + 1e-12)) * 10 ** (-snr_db / 20)
    clip += noise
    return (0.7 * clip / (np.abs(clip).max() + 1e-9)).astype(np.float32)


# ----------------------------------------------------------------------------- the teacher
class DemoTeacher(nn.Module):
    """A small CNN on log-mel: 6 conv blocks (16…256 channels, ~1 M parameters, 3× the Mobile FCN
    student), frame embeddings every 0.32 s.

    ``forward(waveforms (B, L)) -> (B, T, 256)``; ``classify`` adds the source-task head. The
    front-end is inside the module so the saved TorchScript file is a complete teacher.
    """

    hop_s: float = 0.32

    def __init__(self, num_classes: int, n_mels: int = 40) -> None:
        super().__init__()
        import librosa  # only to build the filter bank once; not needed to run the model

        fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=512, n_mels=n_mels, fmin=50, fmax=8000)
        self.register_buffer("mel_fb", torch.from_numpy(fb).float())
        self.register_buffer("window", torch.hann_window(512))
        widths = (16, 32, 64, 128, 256, 256)
        # (freq, time) pooling: time stride 16 frames of 20 ms = 0.32 s
        pools = ((2, 2), (2, 2), (2, 2), (2, 2), (2, 1), (1, 1))
        blocks = []
        c_in = 1
        for width, pool in zip(widths, pools, strict=True):
            blocks += [
                nn.Conv2d(c_in, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(pool),
            ]
            c_in = width
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(256, num_classes)

    def spectrogram(self, waveforms: Tensor) -> Tensor:
        spec = (
            torch.stft(
                waveforms,
                512,
                hop_length=320,
                win_length=512,
                window=self.window,
                center=True,
                return_complex=True,
            ).abs()
            ** 2
        )
        return torch.log(self.mel_fb @ spec + 1e-6)

    def frames(self, spec: Tensor) -> Tensor:
        x = self.body((spec.unsqueeze(1) + 5.0) / 4.0)
        return x.mean(dim=2).transpose(1, 2)  # (B, T, 256)

    def forward(self, waveforms: Tensor) -> Tensor:
        return self.frames(self.spectrogram(waveforms))

    def classify(self, spec: Tensor) -> Tensor:
        return self.head(self.frames(spec).mean(dim=1))


def train_teacher(
    out_dir: Path,
    *,
    classes: int = 24,
    clips_per_class: int = 24,
    seconds: float = 3.0,
    epochs: int = 8,
    seed: int = 7,
) -> tuple[Path, float]:
    """Train the demo teacher on the source task; save ``teacher.pt`` + ``teacher.yaml``."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    source = draw_classes(classes, rng)
    labels = np.repeat(np.arange(classes), clips_per_class)
    audio = np.stack([render_clip(int(c), source, seconds, rng) for c in labels])
    model = DemoTeacher(classes)
    with torch.no_grad():
        specs = model.spectrogram(torch.from_numpy(audio))
    held_out = np.arange(len(labels)) % 8 == 0  # 1/8 of the clips to report the teacher's accuracy
    train_idx, test_idx = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    y = torch.from_numpy(labels)
    for _ in range(epochs):
        model.train()
        for batch in np.array_split(rng.permutation(train_idx), max(len(train_idx) // 32, 1)):
            loss = nn.functional.cross_entropy(model.classify(specs[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model.classify(specs[test_idx]).argmax(1) == y[test_idx]).float().mean()
    out_dir.mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.script(model)
    scripted.save(str(out_dir / "teacher.pt"))
    sidecar = {
        "name": "demo-teacher",
        "sample_rate": SAMPLE_RATE,
        "dim": 256,
        "window_s": DemoTeacher.hop_s,
        "hop_s": DemoTeacher.hop_s,
        "description": f"east demo: CNN trained on a synthetic {classes}-class source task",
        "licence": "MIT (made by make demo)",
    }
    (out_dir / "teacher.yaml").write_text(yaml.safe_dump(sidecar, sort_keys=False))
    return out_dir / "teacher.pt", float(accuracy)


def make_target_dataset(
    root: Path,
    *,
    classes: int = 10,
    clips_per_class: int = 16,
    seconds: float = 3.0,
    seed: int = 11,
) -> Path:
    """The target task in the official ESC-50 layout (5 folds, 3 s WAV clips): folds 1–3 train
    (10 clips a class), fold 4 validation, fold 5 test."""
    rng = np.random.default_rng(seed)
    world = draw_classes(classes, rng)
    rows = []
    for target in range(classes):
        for j in range(clips_per_class):
            fold = j % 5 + 1
            name = f"{fold}-{200000 + 1000 * target + j}-A-{target}.wav"
            write_audio(
                root / "audio" / name, render_clip(target, world, seconds, rng), SAMPLE_RATE
            )
            rows.append([name, fold, target, ESC50_CATEGORIES[target], False, 0, "A"])
    return write_esc50_meta(root, rows)


# ----------------------------------------------------------------------------- stages
def _east(*args: str) -> None:
    """Run an east command as a user would, streaming its output."""
    cmd = [sys.executable, "-m", "east", *args]
    console.print(f"[bold cyan]$ east {' '.join(args)}[/]")
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise EastError(f"demo step failed (exit {result.returncode}): east {' '.join(args)}")


def _write_config(
    path: Path,
    system: str,
    dataset_root: Path,
    cache: Path,
    options: dict,
    runs: Path,
    epochs: int,
    teacher_lr_run: Path,
    seed: int,
) -> Path:
    info = system_info(system)
    config: dict = {
        "name": f"{system}_s{seed}",
        "system": system,
        "seed": seed,
        "device": "auto",
        "output_dir": str(runs),
        "dataset": {"name": "esc50", "root": str(dataset_root), "options": options},
        # dropout 0.1 instead of the reference 0.5: the demo trains for ~200 steps, not 100k
        "student": {"name": "mobile_fcn", "kwargs": {"dropout": 0.1}},
        "teachers": [{"cache": str(cache), "rescale": "standardize"}] if info.uses_teachers else [],
        "loss": {"lambda": 0.6 if info.regularized else 0.0, "tau": 2.0, "kd_weight": 0.3},
        "optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-4},
        "scheduler": {"factor": 0.2, "patience": 4, "monitor": "val_metric"},
        # patience > the ~5 epochs BatchNorm statistics need on so few steps per epoch
        "early_stopping": {"patience": 10, "monitor": "val_metric"},
        "train": {
            "batch_size": 8,
            "max_epochs": epochs,
            "max_steps": 100000,
            "num_workers": 0,
            "log_every": 10,
        },
    }
    if info.needs_probe:
        config["teacher_lr_run"] = str(teacher_lr_run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_demo(out: Path, *, real: bool = False, epochs: int = 20, seed: int = 1223) -> Path:
    """Run the whole demo into ``out``; returns the report folder."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    if real:
        from east.settings import shared_dir

        dataset_root = shared_dir() / "data" / "esc50-fold4"
        if not (dataset_root / "meta" / "esc50.csv").is_file():
            raise EastError(f"make demo-real needs the ESC-50 fold-4 clips at {dataset_root}")
        teacher = "fcn-msd"
        options = {"split": "stratified", "seed": 0}
        console.rule("[bold]east demo (real): ESC-50 fold 4 with the pre-trained fcn-msd tagger")
    else:
        console.rule("[bold]east demo: a self-made teacher on synthetic sound events")
        console.print(
            "No pre-trained weights are used: this demo [bold]trains its own teacher[/] on a "
            "synthetic 24-class source task (24 clips each) and uses it as a bring-your-own TorchScript "
            "teacher. Run `make demo-real` for a real pre-trained teacher on real audio."
        )
        dataset_root = out / "data" / "esc50-synthetic"
        if not (dataset_root / "meta" / "esc50.csv").is_file():
            console.print("[1/5] writing the target dataset (ESC-50 layout, 10 classes × 16 clips)")
            make_target_dataset(dataset_root)
        teacher_file = out / "teacher" / "teacher.pt"
        if not teacher_file.is_file():
            console.print("[2/5] training the teacher on the source task (24 classes × 24 clips)")
            teacher_file, accuracy = train_teacher(out / "teacher")
            console.print(f"      teacher accuracy on held-out source clips: {accuracy:.3f}")
            (out / "teacher" / "source_accuracy.json").write_text(
                json.dumps({"accuracy": accuracy})
            )
        teacher = f"torchscript:{teacher_file}"
        options = {}

    cache_dir = out / "cache"
    console.print("[3/5] stage 1: east extract")
    _east(
        "extract",
        "--teacher",
        teacher,
        "--dataset",
        "esc50",
        "--root",
        str(dataset_root),
        "--cache-dir",
        str(cache_dir),
        "--batch-size",
        "16",
        "--num-workers",
        "1",
    )
    cache = cache_dir / "esc50" / ("fcn-msd.zarr" if real else "demo-teacher.zarr")
    _east("cache", "verify", str(cache))

    labels = ", ".join(system_info(s).label for s in SYSTEMS)
    console.print(f"[4/5] stage 2: east train ({labels})")
    runs = out / "runs"
    configs = out / "configs"
    teacher_lr_run = runs / f"teacher_lr_s{seed}"  # the probe's run (named by _write_config)
    for system in SYSTEMS:
        run_dir = runs / f"{system}_s{seed}"
        if RunDir(run_dir).finished:
            console.print(f"      {system}: finished earlier, kept")
            continue
        config = _write_config(
            configs / f"{system}.yaml",
            system,
            dataset_root,
            cache,
            options,
            runs,
            epochs,
            teacher_lr_run,
            seed,
        )
        _east("train", "--config", str(config), "--quiet")

    console.print("[5/5] east report")
    report = out / "report"
    _east("report", str(runs), "--out", str(report))
    console.print(
        f"[bold green]demo finished in {time.perf_counter() - started:.0f} s[/]: "
        f"report in {report} (index.html, tables, figures)"
    )
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m east.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--real", action="store_true", help="ESC-50 fold 4 + fcn-msd")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    try:
        run_demo(args.out, real=args.real, epochs=args.epochs)
    except EastError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
