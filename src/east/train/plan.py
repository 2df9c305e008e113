"""Before the first step: :func:`check_run` checks and builds everything a run will use (what
``east train --check`` runs), as a :class:`RunPlan`; the run then only trains."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import east
from east.config import RunConfig, check_resources
from east.errors import ConfigError
from east.run_dir import RunDir, first_line, load_checkpoint
from east.train.data import ClipStream, TeacherSource, normalisation, subsample_rows
from east.train.runtime import check_device, load_weights
from east.train.systems import LinearProbe, System

__all__ = [
    "RunPlan",
    "Splits",
    "build_student",
    "check_run",
    "load_dataset",
    "load_probe",
    "make_stream",
    "run_info",
]


@dataclass(frozen=True)
class Splits:
    """The rows a run trains, validates and tests on: the dataset's splits without the clips
    that failed extraction in any teacher cache or the audio cache (the stores' failures
    tables; ``east cache info`` lists them), the training rows subsampled by
    ``dataset.train_fraction``."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    failed: int  # clips left out because a store has no embeddings (or audio) for them

    @classmethod
    def of(cls, cfg: RunConfig, manifest: Any, stores: list[Any]) -> Splits:
        failed = np.zeros(len(manifest), dtype=bool)
        for store in stores:
            failed |= ~store.done

        def rows(split: str) -> np.ndarray:
            picked = manifest.indices(split)
            return picked[~failed[picked]]

        labels = None if manifest.multilabel else manifest.targets
        train = subsample_rows(
            rows("train"), cfg.dataset.train_fraction, cfg.dataset.fraction_seed, labels
        )
        return cls(train, rows("valid"), rows("test"), int(failed.sum()))


@dataclass
class RunPlan:
    """What :func:`check_run` checked and built (on the CPU): the run then only trains."""

    device: str
    manifest: Any
    stores: list[Any]
    norms: list[tuple[Any, Any]]
    splits: Splits
    student: nn.Module | None  # None for teacher_lr
    system: System | None
    long_clips: int  # clips longer than crop.max_seconds (from the caches' sample counts)


def check_run(cfg: RunConfig, out_dir: Path | None = None, world_size: int = 1) -> RunPlan:
    """Everything the run will use, checked before anything is written (what ``east train
    --check`` runs): device, dataset, student and system, caches, splits, output folder."""
    device = check_device(cfg.device)
    manifest = load_dataset(cfg)
    student = build_student(cfg, manifest.num_classes) if cfg.system_info.trains_student else None
    rate = int(student.sample_rate) if student is not None else None
    stores = check_resources(cfg, manifest, sample_rate=rate)
    audio = []
    if cfg.dataset.audio_cache is not None:  # checked by check_resources: its failed clips
        from east.cache_schema import open_audio_store

        audio = [open_audio_store(cfg.dataset.audio_cache)]
    splits = Splits.of(cfg, manifest, [*stores, *audio])
    _check_splits(cfg, manifest, splits, world_size)
    system = _build_system(cfg, manifest, stores, student) if student is not None else None
    _check_output_dir(out_dir or cfg.output_dir)
    norms = _teacher_norms(cfg, stores, splits.train)
    long_clips = _long_clips(cfg, stores)
    return RunPlan(device, manifest, stores, norms, splits, student, system, long_clips)


def load_dataset(cfg: RunConfig) -> Any:
    from east.datasets import load_manifest

    return load_manifest(cfg.dataset.name, cfg.dataset.root, **cfg.dataset.options)


def build_student(cfg: RunConfig, num_classes: int) -> nn.Module:
    """The student with the config's kwargs; SpecAugment widths go to its front-end."""
    from east.train.students import create_student, student_info

    kwargs = dict(cfg.student.kwargs)
    info = student_info(cfg.student.name)
    _draw_as_before(info)
    if info.log_mel:
        # the config's augment section is the one source of the SpecAugment widths
        frontend = dict(kwargs.pop("frontend", {}) or {})
        frontend["freq_mask"] = cfg.augment.freq_mask
        frontend["time_mask"] = cfg.augment.time_mask
        kwargs["frontend"] = frontend
    elif cfg.augment.freq_mask or cfg.augment.time_mask:
        raise ConfigError(f"augment: student {cfg.student.name} has no log-mel front-end to mask")
    try:
        return create_student(cfg.student.name, num_classes, **kwargs)
    except (TypeError, ValueError) as exc:  # an unknown keyword or an impossible value
        raise ConfigError(f"student.kwargs: {first_line(exc)}") from None


def _draw_as_before(info: Any) -> None:
    """Advance the seeded RNG the way every run so far has: by the initial weights of a
    1-class student of the same kind (once built to read its signature, a fact now in the
    registry). torch cannot skip its generator ahead without drawing, so this builds and drops
    one; remove the call when the seeds' results may change."""
    info.factory(1)


def load_probe(run_dir: Path, device: torch.device) -> LinearProbe:
    """The Teacher_LR probe of a finished teacher_lr run (frozen)."""
    path = RunDir(run_dir).best
    state = load_checkpoint(path)
    weight = state["model"].get("proj.weight")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ConfigError(f"teacher_lr_run: {path} holds no Teacher_LR probe")
    probe = LinearProbe(int(weight.shape[1]), int(weight.shape[0]))
    load_weights(probe, state["model"], path)
    return probe.to(device).eval()


def make_stream(
    cfg: RunConfig,
    plan: RunPlan,
    rows: np.ndarray,
    *,
    training: bool,
    rank: int = 0,
    world_size: int = 1,
) -> ClipStream:
    """The clip stream of ``rows`` with the run's teachers, crop and shuffling."""
    assert plan.student is not None
    teachers = [
        TeacherSource(t.cache, shift=shift, scale=scale)
        for t, (shift, scale) in zip(cfg.teachers, plan.norms, strict=True)
    ]
    return ClipStream(
        plan.manifest,
        rows,
        teachers,
        int(plan.student.sample_rate),
        crop=cfg.crop,
        training=training,
        shuffle=training,
        seed=cfg.seed,
        buffer_size=cfg.train.shuffle_buffer,
        audio_store=cfg.dataset.audio_cache,
        rank=rank,
        world_size=world_size if training else 1,
    )


def _build_system(cfg: RunConfig, manifest: Any, stores: list[Any], student: nn.Module) -> System:
    taps = list(student.feature_dims)
    weights = cfg.loss.stage_weights
    if weights is not None and len(weights) != len(taps):
        raise ConfigError(
            f"loss.stage_weights: {len(weights)} weights for the {len(taps)} taps of "
            f"{cfg.student.name}; give {len(taps)}"
        )
    probe = load_probe(cfg.teacher_lr_run, torch.device("cpu")) if cfg.teacher_lr_run else None
    if probe is not None and stores and probe.dim != int(stores[0].dim):
        raise ConfigError(
            f"teacher_lr_run: its probe takes {probe.dim}-dim embeddings, "
            f"{cfg.teachers[0].cache} holds {stores[0].dim}"
        )
    dims = [int(s.dim) for s in stores]
    return System(cfg, taps, dims, manifest.num_classes, manifest.multilabel, probe)


def _teacher_norms(cfg: RunConfig, stores: list[Any], rows: np.ndarray) -> list[tuple[Any, Any]]:
    """(shift, scale) of every teacher (``teachers[i].rescale``), from the training clips."""
    return [normalisation(s, t.rescale, rows) for s, t in zip(stores, cfg.teachers, strict=True)]


def _check_splits(cfg: RunConfig, manifest: Any, splits: Splits, world_size: int) -> None:
    for split, rows in (("valid", splits.valid), ("test", splits.test)):
        if len(rows) == 0:
            raise ConfigError(
                f"dataset: {manifest.name} at {manifest.root} has no usable '{split}' clips "
                "(dataset.options decide the split)"
            )
    share = len(splits.train) // max(world_size, 1)
    if cfg.system_info.trains_student and share < cfg.train.batch_size:
        raise ConfigError(
            f"train.batch_size: {cfg.train.batch_size} is more than the {share} training clips "
            f"{'per rank ' if world_size > 1 else ''}(not one full batch); lower it"
        )


def _check_output_dir(folder: Path) -> None:
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output_dir: {folder}: cannot create the run there ({existing})")


def _long_clips(cfg: RunConfig, stores: list[Any]) -> int:
    if not stores:
        return 0
    store = stores[0]
    seconds = np.asarray(store.array("num_samples")[:]) / max(int(store.sample_rate), 1)
    return int((seconds[store.done] > cfg.crop.max_seconds).sum())


def run_info(
    cfg: RunConfig, plan: RunPlan, teacher_dims: list[int], student: Any
) -> dict[str, Any]:
    """The ``run_info.json`` record of a run (student ``None`` for Teacher_LR)."""
    manifest = plan.manifest
    return {
        "system": cfg.system,
        "dataset": manifest.name,
        "manifest_hash": manifest.hash,
        "labels_hash": manifest.labels_hash,
        "task": manifest.task,
        "num_classes": manifest.num_classes,
        "class_names": list(manifest.class_names),
        "teacher_dims": teacher_dims,
        "teacher_dim": teacher_dims[0] if teacher_dims else None,
        "student": cfg.student.name,
        "sample_rate": int(student.sample_rate) if student is not None else None,
        "east_version": east.__version__,
        "torch_version": torch.__version__,
        "split_counts": manifest.split_counts(),
        "train_clips": len(plan.splits.train),
    }
