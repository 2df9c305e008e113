"""The training loop: plain PyTorch, read it top to bottom.

``train(cfg)`` → a run directory::

    <output_dir>/<run name>/
      config.yaml         the resolved config (what `--resume` and `east eval` read back)
      run_info.json       manifest hash, classes, teacher dims, student rate, versions
      last.pt             written every epoch, atomically (tmp + rename): model, optimiser,
                          scheduler, RNG states, epoch, step, best metric, early-stop counter
      best.pt             the model with the best validation metric (mAP / accuracy)
      metrics.jsonl       one JSON line per epoch (train/val losses, val metrics, lr, seconds)
      tb/                 TensorBoard events
      test_results.json   the best model on the test split (written at the end)

Resume (``--resume RUN_DIR``) reloads ``last.pt`` and continues with the next epoch; data order,
mixup and dropout depend only on the seed, the epoch and the restored RNG states, so a resumed
run on the CPU ends with the same metrics as an uninterrupted one.

One writer: rank 0 holds the run directory's lock (``run.lock``, :class:`east.locking.WriterLock`)
from before the first file is written until the run ends, so a second ``east train`` of the same
run (or a ``--resume`` of it) is refused in one line naming the holder.

Before the first step :func:`check_run` checks everything the run will use (``east train
--check`` runs the same function): the device, the student, every cache's identity,
completeness and values (``east.cache_schema.validate``), splits and batch sizes. A loss that
becomes NaN/inf stops the run (exit 2) naming the epoch, step and clips; the last good
``last.pt`` is kept. A write that fails (disk full) stops it with the path and leaves every
file written before intact; ``--resume`` continues, and ``metrics.jsonl`` is trimmed to the
checkpoint's epochs so no epoch appears twice.

Multi-GPU: start the same entry point with ``torchrun --nproc_per_node N -m east train ...``;
each rank streams its own share of the cache blocks (equal counts), gradients are averaged by
DDP, rank 0 validates, logs and writes checkpoints and broadcasts the stop decision.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from east.config import RunConfig, check_resources, load_config
from east.errors import ConfigError, EastError
from east.train import metrics as metrics_mod
from east.train.data import (
    ClipStream,
    TeacherSource,
    average_windows,
    checked_batches,
    make_loader,
    subsample_rows,
)
from east.train.losses import TeacherBatch
from east.train.systems import LinearProbe, System, time_average

CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"
RUN_LOCK = "run.lock"


class WriteError(EastError):
    """A run file could not be written (disk full, read-only folder); earlier files are intact."""

    def __init__(self, path: Path, exc: BaseException) -> None:
        self.path = path
        cause = _os_error(exc)
        reason = (cause.strerror if cause is not None else None) or _first_line(exc)
        self.no_space = cause is not None and cause.errno == errno.ENOSPC
        super().__init__(f"cannot write {path} ({reason})")


class Diverged(EastError):
    """The loss (or the student's output) became NaN/inf."""


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc`` (torch.save raises a RuntimeError while cleaning up one)."""
    while exc is not None:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


# ------------------------------------------------------------------------------ small helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename: a kill never leaves half a file,
    and a failed write (disk full) leaves the previous file as it was (:class:`WriteError`)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(path, exc) from None


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(path, exc) from None


def append_line(path: Path, line: str) -> None:
    """One line appended in one write (a failed write is trimmed on resume)."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as exc:
        raise WriteError(path, exc) from None


def trim_metrics(path: Path, epochs: int) -> None:
    """Keep the metrics lines of the checkpoint's ``epochs`` (a line written before a crash
    or a failed checkpoint would otherwise appear twice after ``--resume``)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a torn last line
            continue
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(epoch, int) and epoch < epochs:
            kept.append(line)
    text = "".join(x + "\n" for x in kept)
    if text != path.read_text():
        atomic_write_text(path, text)


def load_checkpoint(path: Path, weights_only: bool = True) -> dict[str, Any]:
    """A checkpoint east wrote, or one ConfigError saying why it cannot be used."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before failing on them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=weights_only)
    except FileNotFoundError:
        raise ConfigError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # truncated zip, garbage, foreign pickle
        reason = "unpickling failed" if isinstance(exc, pickle.UnpicklingError) else exc
        raise ConfigError(
            f"{path}: unreadable checkpoint ({_first_line(reason)[:120]}); it is truncated or "
            "not a checkpoint written by east"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ConfigError(f"{path}: not a checkpoint written by east (no model weights in it)")
    return state


def load_weights(module: nn.Module, weights: dict[str, Any], path: Path, prefix: str = "") -> None:
    """``module.load_state_dict`` with a one-line error when the weights do not fit."""
    if prefix:
        weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(weights)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path}: its weights do not fit this run's {type(module).__name__} "
            f"({_first_line(exc)[:160]})"
        ) from None


class RunInfo(BaseModel):
    """What east reads back from ``run_info.json`` (more keys are kept, not checked)."""

    model_config = ConfigDict(extra="allow")
    task: Literal["multiclass", "multilabel"]
    num_classes: int = Field(gt=0)
    class_names: list[str]

    @model_validator(mode="after")
    def _names_fit(self) -> RunInfo:
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes}")
        return self


def read_run_info(path: Path) -> dict[str, Any]:
    """``run_info.json`` as a dict, validated; one ConfigError naming the file otherwise."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        RunInfo.model_validate(data)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err.get("loc", ()))
            reason = f"{where + ': ' if where else ''}{err.get('msg', 'invalid')}"
        else:
            reason = _first_line(exc)[:160]
        raise ConfigError(f"{path}: not a valid run_info.json ({reason})") from None
    return data


class Distributed:
    """torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK), or a single process."""

    def __init__(self, device: str) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        if self.enabled:
            import torch.distributed as dist

            backend = "nccl" if device.startswith("cuda") else "gloo"
            if not dist.is_initialized():
                dist.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.destroy_process_group()


# ------------------------------------------------------------------------------ building blocks


def load_dataset(cfg: RunConfig) -> Any:
    from east.datasets import load_manifest

    return load_manifest(cfg.dataset.name, cfg.dataset.root, **cfg.dataset.options)


def build_student(cfg: RunConfig, num_classes: int) -> nn.Module:
    """The student with the config's kwargs; SpecAugment widths go to its front-end."""
    import inspect

    from east.train.students import create_student, student_info

    kwargs = dict(cfg.student.kwargs)
    info = student_info(cfg.student.name)
    student_cls = inspect.signature(info.factory(1).__class__.__init__)
    if "frontend" in student_cls.parameters:
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
        raise ConfigError(f"student.kwargs: {_first_line(exc)}") from None


class Trainable(nn.Module):
    """Student + the system's trainable extras, as one module (one optimiser, one DDP wrap)."""

    def __init__(self, student: nn.Module, system: System) -> None:
        super().__init__()
        self.student = student
        self.system = system

    def forward(
        self, wave: torch.Tensor, target: torch.Tensor, mask: Any, teachers: list[TeacherBatch]
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        output = self.student(wave)  # under autocast on CUDA (fp16 convolutions)
        # the losses in float32: dCor's sqrt(d² + 1e-12) and KD's logs are not fp16-safe
        with torch.autocast(wave.device.type, enabled=False):
            output = type(output)(
                output.logits.float(), [f.float() for f in output.features], output.frame_times
            )
            return output, self.system(output, target, mask, teachers)


def teacher_batches(batch: dict[str, Any], device: torch.device) -> list[TeacherBatch]:
    return [
        TeacherBatch(
            embeddings=t["embeddings"].to(device, non_blocking=True),
            num_frames=t["num_frames"].to(device, non_blocking=True),
            frame_times=t["frame_times"],
        )
        for t in batch["teachers"]
    ]


def load_probe(run_dir: Path, device: torch.device) -> LinearProbe:
    """The Teacher_LR probe of a finished teacher_lr run (frozen)."""
    path = Path(run_dir) / CHECKPOINT_BEST
    state = load_checkpoint(path)
    weight = state["model"].get("proj.weight")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ConfigError(f"teacher_lr_run: {path} holds no Teacher_LR probe")
    probe = LinearProbe(int(weight.shape[1]), int(weight.shape[0]))
    load_weights(probe, state["model"], path)
    return probe.to(device).eval()


def make_stream(
    cfg: RunConfig,
    manifest: Any,
    rows: np.ndarray,
    sample_rate: int,
    *,
    training: bool,
    norms: list[tuple[Any, Any]],
    rank: int = 0,
    world_size: int = 1,
) -> ClipStream:
    teachers = [
        TeacherSource(t.cache, shift=shift, scale=scale)
        for t, (shift, scale) in zip(cfg.teachers, norms, strict=True)
    ]
    return ClipStream(
        manifest,
        rows,
        teachers,
        sample_rate,
        crop=cfg.crop,
        training=training,
        shuffle=training,
        seed=cfg.seed,
        buffer_size=cfg.train.shuffle_buffer,
        audio_store=cfg.dataset.audio_cache,
        rank=rank,
        world_size=world_size if training else 1,
    )


def teacher_norms(cfg: RunConfig, manifest: Any, stores: list[Any]) -> list[tuple[Any, Any]]:
    """(shift, scale) of every teacher (``teachers[i].rescale``), from the training clips."""
    from east.train.data import normalisation

    rows = train_rows(cfg, manifest)
    return [normalisation(s, t.rescale, rows) for s, t in zip(stores, cfg.teachers, strict=True)]


def split_rows(manifest: Any, split: str) -> np.ndarray:
    """Rows of a split, without the clips that failed extraction in any teacher cache
    (recorded in the store's failures table; `east cache info` lists them)."""
    rows = manifest.indices(split)
    failed = manifest.extra.get("_failed_extraction")
    return rows if failed is None else rows[~failed[rows]]


def mark_failed_clips(manifest: Any, stores: list[Any]) -> int:
    """Remember which clips have no embeddings (failed extraction); returns their count."""
    failed = np.zeros(len(manifest), dtype=bool)
    for store in stores:
        failed |= ~store.done
    manifest.extra["_failed_extraction"] = failed
    return int(failed.sum())


def train_rows(cfg: RunConfig, manifest: Any) -> np.ndarray:
    rows = split_rows(manifest, "train")
    labels = None if manifest.multilabel else manifest.targets
    return subsample_rows(rows, cfg.dataset.train_fraction, cfg.dataset.fraction_seed, labels)


# ------------------------------------------------------------------------------ checks


def check_device(requested: str) -> str:
    """The device name a run uses; a one-line ConfigError when it is not usable here."""
    from east.settings import best_device

    name = best_device(requested)
    try:
        torch.empty(1, device=torch.device(name))
    except Exception as exc:  # unknown type, no CUDA build, no such ordinal
        raise ConfigError(
            f"device: {requested!r} is not available here ({_first_line(exc)[:120]}); "
            "use auto or cpu"
        ) from None
    return name


@dataclass
class RunPlan:
    """What :func:`check_run` checked and built (on the CPU): the run then only trains."""

    device: str
    manifest: Any
    stores: list[Any]
    norms: list[tuple[Any, Any]]
    student: nn.Module | None  # None for teacher_lr
    system: System | None
    long_clips: int  # clips longer than crop.max_seconds (from the caches' sample counts)


def check_run(cfg: RunConfig, out_dir: Path | None = None, world_size: int = 1) -> RunPlan:
    """Everything the run will use, checked before anything is written (what ``east train
    --check`` runs): device, dataset, student and system, caches, splits, output folder."""
    device = check_device(cfg.device)
    manifest = load_dataset(cfg)
    student = build_student(cfg, manifest.num_classes) if cfg.system != "teacher_lr" else None
    rate = int(student.sample_rate) if student is not None else None
    stores = check_resources(cfg, manifest, sample_rate=rate)
    audio = None
    if cfg.dataset.audio_cache is not None:  # checked by check_resources: its failed clips
        from east.cache_schema import open_audio_store

        audio = open_audio_store(cfg.dataset.audio_cache)
    mark_failed_clips(manifest, [*stores, *([audio] if audio is not None else [])])
    _check_splits(cfg, manifest, world_size)
    system = None
    if student is not None:
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
        system = System(cfg, taps, dims, manifest.num_classes, manifest.multilabel, probe)
    _check_output_dir(out_dir or cfg.output_dir)
    norms = teacher_norms(cfg, manifest, stores)
    return RunPlan(device, manifest, stores, norms, student, system, _long_clips(cfg, stores))


def _check_splits(cfg: RunConfig, manifest: Any, world_size: int) -> None:
    for split in ("valid", "test"):
        if len(split_rows(manifest, split)) == 0:
            raise ConfigError(
                f"dataset: {manifest.name} at {manifest.root} has no usable '{split}' clips "
                "(dataset.options decide the split)"
            )
    share = len(train_rows(cfg, manifest)) // max(world_size, 1)
    if cfg.system != "teacher_lr" and share < cfg.train.batch_size:
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


# ------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def evaluate(
    model: Trainable,
    loader: Any,
    device: torch.device,
    manifest: Any,
    amp: bool = False,
    with_loss: bool = True,
    where: str = "evaluation",
) -> dict[str, float]:
    """Mean validation loss (the system's total, no augmentation) and the task's metrics; the
    logits of a long clip's windows are averaged (``crop.max_seconds``)."""
    model.eval()
    metric = metrics_mod.create_metric(manifest.multilabel, manifest.num_classes)
    total, count = 0.0, 0
    logits_all, rows_all = [], []
    for batch in checked_batches(loader):
        wave = batch["wave"].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        mask = batch["mask"].to(device) if batch["mask"] is not None else None
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            if with_loss:
                output, losses = model(wave, target, mask, teacher_batches(batch, device))
                loss = float(losses["total"])
                if not math.isfinite(loss):
                    raise Diverged(
                        f"{where}: the loss is not finite ({loss}) {_clips(manifest, batch)}"
                    )
                total += loss * len(wave)
            else:
                output = model.student(wave)
        count += len(wave)
        logits_all.append(output.logits.float().cpu())
        rows_all.append(batch["rows"])
    logits, rows = average_windows(torch.cat(logits_all), torch.cat(rows_all))
    if not bool(torch.isfinite(logits).all()):
        bad = rows[~torch.isfinite(logits).all(dim=1)]
        raise Diverged(f"{where}: the student's outputs are not finite {_clips(manifest, bad)}")
    picked = rows.numpy()
    if manifest.multilabel:
        target = torch.from_numpy(manifest.targets[picked].astype(np.float32))
        mask = torch.from_numpy(manifest.known_mask()[picked].astype(bool))
    else:
        target, mask = torch.from_numpy(manifest.targets[picked].astype(np.int64)), None
    metric.update(logits, target, mask)
    out = {f"val_{k}": v for k, v in metric.compute().items()}
    if with_loss:
        out["val_loss"] = total / max(count, 1)
    return out


def _clips(manifest: Any, batch: dict[str, Any] | torch.Tensor) -> str:
    """'on clips A, B (rows 3, 9)': the clips of a batch, for an error line."""
    rows = batch["rows"] if isinstance(batch, dict) else batch
    rows = sorted({int(r) for r in rows})
    ids = [str(manifest.clip_ids[r]) for r in rows[:5]]
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"on clips {', '.join(ids)}{more} (rows {', '.join(map(str, rows[:5]))}{more})"


# ------------------------------------------------------------------------------ the run


def prepare_run_dir(
    cfg: RunConfig, out_dir: Path | None, resume: Path | None, locks: contextlib.ExitStack
) -> Path:
    """The run directory, locked for this process (``run.lock``) until ``locks`` closes.

    The existing-run check comes after the lock: a run that another ``east train`` finished
    meanwhile is seen, never overwritten."""
    from east.locking import WriterLock

    run_dir = resume if resume is not None else (out_dir or cfg.output_dir) / cfg.run_name()
    if resume is not None and not run_dir.is_dir():
        raise ConfigError(f"--resume {resume}: not a run directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{run_dir}: cannot create the run directory ({exc.strerror})") from None
    locks.enter_context(WriterLock(run_dir / RUN_LOCK, f"run directory {run_dir}"))
    if resume is not None and not (resume / CHECKPOINT_LAST).is_file():
        raise ConfigError(f"--resume {resume}: no {CHECKPOINT_LAST} there")
    if resume is None and (run_dir / CHECKPOINT_LAST).exists():
        raise ConfigError(
            f"{run_dir}: a run already exists there; use --resume {run_dir} or another name"
        )
    return run_dir


class _RunScope(contextlib.ExitStack):
    """What a run holds until it ends (its lock), and its directory once known."""

    run_dir: Path | None = None


def train(
    cfg: RunConfig,
    *,
    out_dir: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) one run; returns its directory. A failed write (disk full) becomes
    one line naming the path and how to continue."""
    scope = _RunScope()
    previous_hook = threading.excepthook
    threading.excepthook = _quiet_tensorboard_thread(previous_hook)
    try:
        with scope:
            return _train(cfg, out_dir=out_dir, resume=resume, progress=progress, scope=scope)
    except (WriteError, OSError) as exc:
        if isinstance(exc, WriteError):
            what, full = str(exc), exc.no_space
        else:  # metrics/TensorBoard files, or reading one
            what = f"cannot write {exc.filename or scope.run_dir} ({exc.strerror or exc})"
            full = exc.errno == errno.ENOSPC
        if scope.run_dir is None:
            raise EastError(what) from None
        raise EastError(
            f"{what}; {'free space, ' if full else ''}the files written before are intact: "
            f"continue with `east train --resume {scope.run_dir}`"
        ) from None
    finally:
        threading.excepthook = previous_hook


def _quiet_tensorboard_thread(previous: Any) -> Any:
    """TensorBoard's writer thread re-raises an I/O error in the main thread at the next write;
    its own copy would print a second (traceback) report."""

    def hook(args: Any) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(
            args.exc_value, OSError
        ):
            return
        previous(args)

    return hook


def _train(
    cfg: RunConfig,
    *,
    out_dir: Path | None,
    resume: Path | None,
    progress: bool,
    scope: _RunScope,
) -> Path:
    if resume is not None:
        cfg = load_config(Path(resume) / "config.yaml")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    # seeded before check_run builds the student: its initial weights depend on the seed only
    seed_everything(cfg.seed + int(os.environ.get("RANK", "0")))
    plan = check_run(cfg, out_dir if resume is None else None, world_size)
    device_name = plan.device
    dist = Distributed(device_name)
    if dist.enabled and device_name == "cuda":
        device_name = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(dist.local_rank)
    device = torch.device(device_name)

    manifest, stores, norms = plan.manifest, plan.stores, plan.norms
    problem: EastError | None = None
    run_dir = Path()
    if dist.main:
        try:
            run_dir = prepare_run_dir(cfg, out_dir, resume, scope)
        except EastError as exc:
            problem = exc
    # every rank learns the run directory, or the one-line reason rank 0 refused it
    run_text, refused = dist.broadcast((str(run_dir), str(problem or "")))
    if problem is not None:
        raise problem
    if refused:
        raise EastError(refused)
    run_dir = Path(run_text)
    scope.run_dir = run_dir
    if dist.main and plan.long_clips:
        _note(
            f"note: {plan.long_clips} clips are longer than crop.max_seconds "
            f"({cfg.crop.max_seconds:g} s): training uses a window of them, evaluation "
            "averages the logits of their windows"
        )
    teacher_dims = [int(s.dim) for s in stores]
    if dist.main and resume is None:
        import yaml

        atomic_write_text(
            run_dir / "config.yaml", yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False)
        )
    if cfg.system == "teacher_lr":  # a small probe: rank 0 trains it alone
        if dist.main:
            train_probe(cfg, manifest, run_dir, teacher_dims[0], device, norms[0])
        dist.barrier()
        dist.close()
        return run_dir

    student, system = plan.student, plan.system
    assert student is not None and system is not None
    model = Trainable(student, system).to(device)
    if dist.main:
        write_run_info(run_dir, cfg, manifest, teacher_dims, student)

    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer.name == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            params, lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(
            params,
            lr=cfg.optimizer.lr,
            momentum=cfg.optimizer.momentum,
            weight_decay=cfg.optimizer.weight_decay,
        )
    metric_name = "val_" + metrics_mod.primary_metric_name(manifest.multilabel)
    sched_mode = "min" if cfg.scheduler.monitor == "val_loss" else "max"
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=sched_mode, factor=cfg.scheduler.factor, patience=cfg.scheduler.patience
    )
    use_amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    state = {
        "epoch": 0,
        "step": 0,
        "best": -math.inf,
        "best_epoch": -1,
        "bad_epochs": 0,
        "best_stop": math.inf if cfg.early_stopping.monitor == "val_loss" else -math.inf,
    }
    if resume is not None:
        last = run_dir / CHECKPOINT_LAST
        ckpt = load_checkpoint(last, weights_only=False)
        load_weights(model, ckpt["model"], last)
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            state = dict(ckpt["state"])
            set_rng_state(ckpt["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"{last}: not a resumable checkpoint ({_first_line(exc)})") from None
    if dist.main:  # lines past the checkpoint (a crash, a failed write) would repeat
        trim_metrics(run_dir / "metrics.jsonl", int(state["epoch"]))

    ddp_model: nn.Module = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None
        )

    sample_rate = int(student.sample_rate)
    train_stream = make_stream(
        cfg,
        manifest,
        train_rows(cfg, manifest),
        sample_rate,
        training=True,
        norms=norms,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    val_stream = make_stream(
        cfg, manifest, split_rows(manifest, "valid"), sample_rate, training=False, norms=norms
    )
    pin = device.type == "cuda"
    eval_bs = cfg.train.eval_batch_size or cfg.train.batch_size
    val_loader = make_loader(val_stream, eval_bs, cfg.train.num_workers, pin, drop_last=False)

    writer = None
    if dist.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"))
    bar = _Progress(enabled=progress and dist.main)

    stop = state["bad_epochs"] >= cfg.early_stopping.patience  # a finished run stays finished
    while not stop:
        epoch = state["epoch"]
        if cfg.train.max_epochs is not None and epoch >= cfg.train.max_epochs:
            break
        if state["step"] >= cfg.train.max_steps:
            break
        train_stream.set_epoch(epoch)
        mix_rng = np.random.default_rng([cfg.seed, epoch, dist.rank, 11])  # mixup draws
        loader = make_loader(
            train_stream, cfg.train.batch_size, cfg.train.num_workers, pin, drop_last=True
        )
        ddp_model.train()
        started = time.perf_counter()
        wait = 0.0
        sums: dict[str, float] = {}
        batches = 0
        bar.start(f"epoch {epoch}", len(train_stream) // cfg.train.batch_size)
        t_wait = time.perf_counter()
        for batch in checked_batches(loader):
            wait += time.perf_counter() - t_wait
            wave = batch["wave"].to(device, non_blocking=True)
            target = batch["target"].to(device, non_blocking=True)
            mask = (
                batch["mask"].to(device, non_blocking=True) if batch["mask"] is not None else None
            )
            teachers = teacher_batches(batch, device)
            if cfg.augment.mixup_alpha > 0:
                wave, target, mask, teachers = _mixup(
                    wave,
                    target,
                    mask,
                    teachers,
                    cfg.augment.mixup_alpha,
                    mix_rng,
                    manifest.num_classes,
                    manifest.multilabel,
                )
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                _, losses = ddp_model(wave, target, mask, teachers)
            if not _all_finite(losses["loss"], dist):
                raise Diverged(_diverged(cfg, manifest, batch, losses, epoch, state, run_dir))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            if cfg.train.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            state["step"] += 1
            batches += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if writer is not None and state["step"] % cfg.train.log_every == 0:
                for k, v in losses.items():
                    writer.add_scalar(f"train/{k}", float(v.detach()), state["step"])
            bar.advance(float(losses["loss"].detach()))
            if state["step"] >= cfg.train.max_steps:
                break
            t_wait = time.perf_counter()
        bar.stop()
        seconds = time.perf_counter() - started

        # validation, scheduling, early stopping and checkpoints: rank 0 decides
        record: dict[str, Any] = {}
        if dist.main:
            val = evaluate(
                model, val_loader, device, manifest, amp=use_amp, where=f"epoch {epoch} validation"
            )
            monitor = val["val_loss"] if cfg.scheduler.monitor == "val_loss" else val[metric_name]
            scheduler.step(monitor)
            improved = val[metric_name] > state["best"]
            if improved:
                state["best"], state["best_epoch"] = val[metric_name], epoch
                atomic_save(
                    {
                        "model": model.state_dict(),
                        "epoch": epoch,
                        "step": state["step"],
                        metric_name: val[metric_name],
                    },
                    run_dir / CHECKPOINT_BEST,
                )
            stop_value = (
                val["val_loss"] if cfg.early_stopping.monitor == "val_loss" else val[metric_name]
            )
            better = (
                (stop_value < state["best_stop"])
                if cfg.early_stopping.monitor == "val_loss"
                else (stop_value > state["best_stop"])
            )
            if better:
                state["best_stop"], state["bad_epochs"] = stop_value, 0
            else:
                state["bad_epochs"] += 1
            record = {
                "epoch": epoch,
                "step": state["step"],
                **{f"train_{k}": v / max(batches, 1) for k, v in sums.items()},
                **val,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(seconds, 3),
                "data_wait_fraction": round(wait / seconds, 4) if seconds > 0 else 0.0,
            }
            append_line(run_dir / "metrics.jsonl", json.dumps(record))
            assert writer is not None
            for k, v in record.items():
                if k not in ("epoch", "step") and isinstance(v, float):
                    writer.add_scalar(k.replace("_", "/", 1), v, state["step"])
            writer.flush()
            bar.log(
                f"epoch {epoch}: loss {record.get('train_loss', float('nan')):.4f} "
                f"val_loss {val['val_loss']:.4f} {metric_name} {val[metric_name]:.4f}"
                + (" (best)" if improved else "")
            )
            state["epoch"] = epoch + 1
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "state": dict(state),
                    "rng": rng_state(),
                },
                run_dir / CHECKPOINT_LAST,
            )
            stop = state["bad_epochs"] >= cfg.early_stopping.patience
        else:
            state["epoch"] = epoch + 1
        # every rank takes the same decision and the same scheduler/learning rate
        stop, lr = dist.broadcast((stop, optimizer.param_groups[0]["lr"]))
        for group in optimizer.param_groups:
            group["lr"] = lr

    if writer is not None:
        writer.close()
    if dist.main:
        test_best(cfg, manifest, run_dir, model, device, use_amp, norms)
    dist.barrier()
    dist.close()
    return run_dir


def _all_finite(loss: torch.Tensor, dist: Distributed) -> bool:
    """Whether the loss is finite on every rank (all ranks stop together)."""
    bad = torch.tensor(0.0 if bool(torch.isfinite(loss.detach())) else 1.0, device=loss.device)
    if dist.enabled:
        import torch.distributed as tdist

        tdist.all_reduce(bad, op=tdist.ReduceOp.MAX)
    return float(bad) == 0.0


def _diverged(
    cfg: RunConfig,
    manifest: Any,
    batch: dict[str, Any],
    losses: dict[str, torch.Tensor],
    epoch: int,
    state: dict[str, Any],
    run_dir: Path,
) -> str:
    parts = ", ".join(f"{k} {float(v.detach()):g}" for k, v in losses.items())
    last = run_dir / CHECKPOINT_LAST
    kept = (
        f"{last} (after epoch {int(state['epoch']) - 1}) is kept"
        if last.is_file() and int(state["epoch"]) > 0
        else "no checkpoint was written yet"
    )
    return (
        f"epoch {epoch} step {int(state['step']) + 1}: the training loss is not finite ({parts}) "
        f"{_clips(manifest, batch)}; stopped, {kept}; check those clips or lower optimizer.lr "
        f"(now {cfg.optimizer.lr:g})"
    )


def _note(text: str) -> None:
    from east.cli.common import err_console

    err_console.print(text, highlight=False, soft_wrap=True)


def _mixup(
    wave: torch.Tensor,
    target: torch.Tensor,
    mask: Any,
    teachers: list[TeacherBatch],
    alpha: float,
    rng: np.random.Generator,
    num_classes: int,
    multilabel: bool,
) -> tuple[torch.Tensor, torch.Tensor, Any, list[TeacherBatch]]:
    """Mix waveforms, labels, masks and teacher embeddings with one coefficient per example."""
    from east.features import mixup

    if not multilabel:  # soft one-hot targets so they can be mixed
        target = torch.nn.functional.one_hot(target, num_classes).float()
    embs = [t.embeddings for t in teachers]
    counts = [t.num_frames for t in teachers]
    mixed = mixup(wave, target, mask, *embs, *counts, alpha=alpha, rng=rng)
    wave, target, mask = mixed[0], mixed[1], mixed[2]
    k = len(teachers)
    new_teachers = [
        TeacherBatch(
            embeddings=mixed[3 + i],
            frame_times=teachers[i].frame_times,
            num_frames=mixed[3 + k + i],
        )
        for i in range(k)
    ]
    return wave, target, mask, new_teachers


def write_run_info(
    run_dir: Path, cfg: RunConfig, manifest: Any, teacher_dims: list[int], student: Any
) -> None:
    import east

    info = {
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
        "train_clips": len(train_rows(cfg, manifest)),
    }
    atomic_write_text(run_dir / "run_info.json", json.dumps(info, indent=2))


def test_best(
    cfg: RunConfig,
    manifest: Any,
    run_dir: Path,
    model: Trainable,
    device: torch.device,
    amp: bool,
    norms: list[tuple[Any, Any]],
) -> dict[str, Any]:
    """Evaluate best.pt on the test split → test_results.json."""
    best = run_dir / CHECKPOINT_BEST
    if not best.is_file():
        raise Diverged(f"{run_dir}: no epoch gave a usable model (no {CHECKPOINT_BEST})")
    state = load_checkpoint(best)
    load_weights(model, state["model"], best)
    stream = make_stream(
        cfg,
        manifest,
        split_rows(manifest, "test"),
        int(model.student.sample_rate),
        training=False,
        norms=norms,
    )
    loader = make_loader(
        stream,
        cfg.train.eval_batch_size or cfg.train.batch_size,
        cfg.train.num_workers,
        device.type == "cuda",
        drop_last=False,
    )
    result = evaluate(model, loader, device, manifest, amp=amp, where="test")
    out = {
        "split": "test",
        "clips": len(split_rows(manifest, "test")),
        "best_epoch": int(state["epoch"]),
        **{k.replace("val_", "test_", 1): v for k, v in result.items()},
    }
    atomic_write_text(run_dir / "test_results.json", json.dumps(out, indent=2))
    return out


# ------------------------------------------------------------------------------ Teacher_LR


def averaged_embeddings(store: Any, rows: np.ndarray, norm: tuple[Any, Any]) -> np.ndarray:
    """(n, D) time-averaged (valid frames) normalised embeddings of ``rows``, chunk by chunk."""
    offset, scale = norm
    out = np.zeros((len(rows), int(store.dim)), dtype=np.float32)
    step = max(int(store.chunk_clips), 1)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    for a in range(0, len(rows), step):
        part = sorted_rows[a : a + step]
        batch = store.read(part)
        emb = (np.asarray(batch.embeddings, np.float32) - offset) / scale
        nf = np.asarray(batch.num_frames).astype(np.int64)
        with torch.no_grad():
            avg = time_average(torch.from_numpy(emb), torch.from_numpy(nf)).numpy()
        out[order[a : a + step]] = avg
    return out


def train_probe(
    cfg: RunConfig,
    manifest: Any,
    run_dir: Path,
    teacher_dim: int,
    device: torch.device,
    norm: tuple[Any, Any],
) -> Path:
    """Teacher_LR as the reference: a linear layer on time-averaged embeddings, SGD lr 0.1,
    ReduceLROnPlateau ×0.1 (patience 1) and early stopping (patience 3) on the validation loss,
    best checkpoint by the validation metric."""
    from east.cache_schema import open_store

    store = open_store(cfg.teachers[0].cache, mode="r")
    multilabel = manifest.multilabel
    splits = {
        "train": train_rows(cfg, manifest),
        "valid": split_rows(manifest, "valid"),
        "test": split_rows(manifest, "test"),
    }
    data = {}
    for name, rows in splits.items():
        x = torch.from_numpy(averaged_embeddings(store, rows, norm))
        y = torch.from_numpy(manifest.targets[rows].astype(np.float32 if multilabel else np.int64))
        m = torch.from_numpy(manifest.known_mask()[rows]) if multilabel else None
        data[name] = (x, y, m)

    probe = LinearProbe(teacher_dim, manifest.num_classes).to(device)
    write_run_info(run_dir, cfg, manifest, [teacher_dim], None)
    hp = cfg.teacher_lr
    optimizer = torch.optim.SGD(probe.parameters(), lr=hp.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=hp.factor, patience=hp.patience
    )
    from east.train.losses import prediction_loss

    metric_name = metrics_mod.primary_metric_name(multilabel)

    def run_eval(split: str) -> dict[str, float]:
        x, y, m = data[split]
        probe.eval()
        with torch.no_grad():
            logits = probe.proj(x.to(device))
            loss = float(
                prediction_loss(
                    logits, y.to(device), None if m is None else m.to(device), multilabel
                )
            )
        metric = metrics_mod.create_metric(multilabel, manifest.num_classes)
        metric.update(logits.cpu(), y, m)
        return {"loss": loss, **metric.compute()}

    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_loss, bad = -math.inf, math.inf, 0
    x_train, y_train, m_train = data["train"]
    with open(run_dir / "metrics.jsonl", "w") as log:
        for epoch in range(hp.max_epochs):
            probe.train()
            perm = torch.randperm(len(x_train), generator=gen)
            total = 0.0
            for a in range(0, len(perm), hp.batch_size):
                idx = perm[a : a + hp.batch_size]
                logits = probe.proj(x_train[idx].to(device))
                mask = None if m_train is None else m_train[idx].to(device)
                loss = prediction_loss(logits, y_train[idx].to(device), mask, multilabel)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.train.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(probe.parameters(), cfg.train.grad_clip)
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            val = run_eval("valid")
            scheduler.step(val["loss"])
            record = {
                "epoch": epoch,
                "train_loss": total / max(len(perm), 1),
                **{f"val_{k}": v for k, v in val.items()},
                "lr": optimizer.param_groups[0]["lr"],
            }
            log.write(json.dumps(record) + "\n")
            if val[metric_name] > best:
                best = val[metric_name]
                atomic_save(
                    {"model": probe.state_dict(), "epoch": epoch, f"val_{metric_name}": best},
                    run_dir / CHECKPOINT_BEST,
                )
            if val["loss"] < best_loss:
                best_loss, bad = val["loss"], 0
            else:
                bad += 1
                if bad >= hp.early_stopping:
                    break
    state = torch.load(run_dir / CHECKPOINT_BEST, map_location="cpu", weights_only=True)
    probe.load_state_dict(state["model"])
    test = run_eval("test")
    out = {
        "split": "test",
        "clips": len(splits["test"]),
        "best_epoch": int(state["epoch"]),
        **{f"test_{k}": v for k, v in test.items()},
    }
    atomic_write_text(run_dir / "test_results.json", json.dumps(out, indent=2))
    # a probe run is finished in one go; last.pt marks the run directory as used
    atomic_save(
        {"model": probe.state_dict(), "state": {"epoch": epoch + 1}}, run_dir / CHECKPOINT_LAST
    )
    return run_dir


# ------------------------------------------------------------------------------ progress bar


class _Progress:
    """A rich progress bar per epoch (disabled in tests / non-main ranks)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None

    def start(self, description: str, total: int) -> None:
        if not self.enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from east.cli.common import err_console

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=max(total, 1), loss=float("nan"))

    def advance(self, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, loss=loss)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def log(self, text: str) -> None:
        if self.enabled:
            from east.cli.common import err_console

            err_console.print(text, highlight=False)


# ------------------------------------------------------------------------------ using a run


def load_run(run_dir: Path, device: str = "cpu") -> tuple[RunConfig, dict[str, Any], nn.Module]:
    """(config, run_info, student with the best weights, in eval mode) of a finished run."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "run_info.json", CHECKPOINT_BEST):
        if not (run_dir / name).is_file():
            raise ConfigError(f"{run_dir}: not a run directory (no {name})")
    cfg = load_config(run_dir / "config.yaml")
    info = read_run_info(run_dir / "run_info.json")
    if cfg.system == "teacher_lr":
        raise ConfigError(f"{run_dir}: a teacher_lr run has no student (it probes embeddings)")
    student = build_student(cfg, int(info["num_classes"]))
    best = run_dir / CHECKPOINT_BEST
    load_weights(student, load_checkpoint(best)["model"], best, prefix="student.")
    return cfg, info, student.to(device).eval()


def read_label_map(path: Path) -> dict[str, str]:
    """A label map ``{run class: dataset class}`` from YAML/JSON (a mapping) or a two-column CSV."""
    import csv

    import yaml

    if not Path(path).is_file():
        raise ConfigError(f"--label-map {path}: file not found")
    text = Path(path).read_text()
    if str(path).endswith(".csv"):
        rows = [r for r in csv.reader(text.splitlines()) if r and not r[0].startswith("#")]
        if rows and rows[0][:2] == ["source", "target"]:
            rows = rows[1:]
        mapping = {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2}
    else:
        mapping = yaml.safe_load(text)
    if not isinstance(mapping, dict) or not mapping:
        raise ConfigError(f"--label-map {path}: expected a mapping run class -> dataset class")
    return {str(k): str(v) for k, v in mapping.items()}


def evaluate_run(
    run_dir: Path,
    *,
    dataset: str | None = None,
    root: Path | None = None,
    options: dict[str, Any] | None = None,
    label_map: Path | None = None,
    split: str = "test",
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Evaluate a run's best student on a split of its dataset, or of another dataset through
    a label map (paper 2's generalizability test: MTAT-trained students on the instrument
    labels shared with OpenMIC). Only audio is read; no teacher caches are needed."""
    from east.datasets import load_manifest

    dev = torch.device(check_device(device))
    cfg, info, student = load_run(run_dir, str(dev))
    if dataset is None:
        manifest = (
            load_dataset(cfg)
            if root is None
            else load_manifest(
                cfg.dataset.name, root, **(options if options is not None else cfg.dataset.options)
            )
        )
    else:
        manifest = load_manifest(
            dataset, root if root is not None else cfg.dataset.root, **(options or {})
        )
    run_classes = list(info["class_names"])
    if label_map is not None:
        mapping = read_label_map(label_map)
        unknown_src = sorted(set(mapping) - set(run_classes))
        unknown_dst = sorted(set(mapping.values()) - set(manifest.class_names))
        if unknown_src:
            raise ConfigError(f"--label-map {label_map}: not classes of the run: {unknown_src}")
        if unknown_dst:
            raise ConfigError(
                f"--label-map {label_map}: not classes of {manifest.name}: {unknown_dst}"
            )
        src_cols = [run_classes.index(k) for k in mapping]
        dst_cols = [manifest.class_names.index(v) for v in mapping.values()]
    else:
        if list(manifest.class_names) != run_classes:
            raise ConfigError(
                f"{manifest.name} has other classes than the run; give --label-map FILE"
            )
        src_cols = dst_cols = list(range(len(run_classes)))
    rows = manifest.indices(split) if split != "all" else np.arange(len(manifest))
    if len(rows) == 0:
        raise ConfigError(f"{manifest.name} has no '{split}' clips")
    stream = ClipStream(
        manifest, rows, [], int(student.sample_rate), crop=cfg.crop, training=False, chunk_clips=64
    )
    loader = make_loader(
        stream,
        batch_size or cfg.train.eval_batch_size or cfg.train.batch_size,
        num_workers,
        dev.type == "cuda",
        drop_last=False,
    )
    logits_all, rows_all = [], []
    with torch.no_grad():
        for batch in checked_batches(loader):
            out = student(batch["wave"].to(dev))
            logits_all.append(out.logits.float().cpu())
            rows_all.append(batch["rows"])
    # a long clip came as windows (crop.max_seconds): one averaged logit vector per clip
    averaged, picked = average_windows(torch.cat(logits_all), torch.cat(rows_all))
    if not bool(torch.isfinite(averaged).all()):
        bad = picked[~torch.isfinite(averaged).all(dim=1)]
        raise Diverged(f"eval: the student's outputs are not finite {_clips(manifest, bad)}")
    logits, order = averaged.numpy(), picked.numpy()
    mapped = label_map is not None
    if manifest.multilabel or mapped:
        targets = manifest.multi_hot()[order][:, dst_cols]
        mask = manifest.known_mask()[order][:, dst_cols]
        metric = metrics_mod.MultiLabelMetrics(len(dst_cols))
        metric.update(logits[:, src_cols], targets, mask)
        result = metric.compute()
        if not manifest.multilabel:  # single-label target: accuracy among the mapped classes
            known = np.isin(manifest.targets[order], dst_cols)
            if known.any():
                pred = np.asarray(dst_cols)[logits[known][:, src_cols].argmax(axis=1)]
                result["accuracy"] = float((pred == manifest.targets[order][known]).mean())
    else:
        metric = metrics_mod.AccuracyMetric(manifest.num_classes)
        metric.update(logits, manifest.targets[order])
        result = metric.compute()
    return {
        "run": str(run_dir),
        "dataset": manifest.name,
        "root": str(manifest.root),
        "split": split,
        "clips": len(rows),
        "classes": [run_classes[c] for c in src_cols],
        **result,
    }


class ExportWrapper(nn.Module):
    """waveforms (N, L) → logits (N, K): the student without its feature taps."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.student(wave).logits


def export_run(
    run_dir: Path, fmt: str, out: Path | None = None, seconds: float | None = None
) -> tuple[Path, float]:
    """Write a standalone model (TorchScript or ONNX) and check that its outputs equal the
    run's student on a test input; returns (path, max |difference|)."""
    if fmt not in ("torchscript", "onnx"):
        raise ConfigError(f"--format {fmt}: use torchscript or onnx")
    if seconds is not None and not 0 < seconds <= 600:
        raise ConfigError(f"--seconds {seconds:g}: give a test input length in (0, 600] seconds")
    if out is not None:
        _check_out(Path(out))
    cfg, info, student = load_run(run_dir, "cpu")
    model = ExportWrapper(student).eval()
    sr = int(student.sample_rate)
    length = round((seconds or cfg.crop.seconds or 5.0) * sr)
    example = torch.randn(2, length, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        expected = model(example)
    run_dir = Path(run_dir)
    if fmt == "torchscript":
        path = out or run_dir / "model.ts"
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
        _write_model(path, lambda p: traced.save(str(p)))
        loaded = torch.jit.load(str(path))
        with torch.no_grad():
            got = loaded(example)
        diff = float((got - expected).abs().max())
    elif fmt == "onnx":
        path = out or run_dir / "model.onnx"
        _use_conv_stft(student)
        try:
            _write_model(
                path,
                lambda p: torch.onnx.export(
                    model,
                    (example,),
                    str(p),
                    input_names=["waveform"],
                    output_names=["logits"],
                    dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "logits": {0: "batch"}},
                    dynamo=False,
                    opset_version=17,
                ),
            )
        except WriteError:
            raise
        except Exception as exc:  # an op without an ONNX form
            raise ConfigError(f"onnx export of {cfg.student.name} failed: {exc}") from None
        diff = _onnx_difference(path, example, expected)
    else:
        raise ConfigError(f"--format {fmt}: use torchscript or onnx")
    meta = {
        "format": fmt,
        "sample_rate": sr,
        "class_names": info["class_names"],
        "task": info["task"],
        "input": "waveform (N, L) float32 mono at sample_rate",
        "max_abs_difference": diff,
    }
    atomic_write_text(Path(str(path) + ".json"), json.dumps(meta, indent=2))
    return Path(path), diff


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give the model's file name")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist (create it first)")


def _write_model(path: Path, write: Any) -> None:
    """``write(tmp)`` then rename: a failed export leaves no half file at ``path``."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _use_conv_stft(student: nn.Module) -> None:
    """ONNX has no complex tensors: compute the front-end's power STFT as a strided conv1d with
    windowed DFT kernels (same numbers as torch.stft(center=True, reflect) up to float error)."""
    import types

    frontend = getattr(student, "frontend", None)
    cfg = getattr(frontend, "config", None)
    if cfg is None or not hasattr(frontend, "power_spectrogram"):
        raise ConfigError(
            f"onnx export: the {student.name} front-end has no ONNX form; use --format torchscript"
        )
    n_fft, hop, win_length = int(cfg.n_fft), int(cfg.hop_length), int(cfg.win_length)
    window = frontend.window.detach().to(torch.float64)
    left = (n_fft - win_length) // 2
    full = torch.zeros(n_fft, dtype=torch.float64)
    full[left : left + window.numel()] = window
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    n = torch.arange(n_fft, dtype=torch.float64)[None, :]
    angle = 2 * math.pi * k * n / n_fft
    kernels = torch.cat([torch.cos(angle) * full, -torch.sin(angle) * full])[:, None, :]
    frontend.register_buffer("_dft_kernels", kernels.float(), persistent=False)
    bins = n_fft // 2 + 1

    def power_spectrogram(self: nn.Module, waveform: torch.Tensor) -> torch.Tensor:
        x = waveform
        if cfg.preemphasis is not None:
            x = x[:, 1:] - cfg.preemphasis * x[:, :-1]
        x = torch.nn.functional.pad(x[:, None, :], (n_fft // 2, n_fft // 2), mode="reflect")
        spec = torch.nn.functional.conv1d(x, self._dft_kernels, stride=hop)
        return spec[:, :bins].square() + spec[:, bins:].square()

    frontend.power_spectrogram = types.MethodType(power_spectrogram, frontend)


def _onnx_difference(path: Path, example: torch.Tensor, expected: torch.Tensor) -> float:
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"waveform": example.numpy()})[0]
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        got = ReferenceEvaluator(str(path)).run(None, {"waveform": example.numpy()})[0]
    return float(np.abs(np.asarray(got) - expected.numpy()).max())


def predict_files(
    run_dir: Path, files: list[Path], top_k: int = 5, device: str = "auto"
) -> list[dict[str, Any]]:
    """Labels with probabilities for audio files (sigmoid multi-label, softmax single-label);
    a file longer than the run's ``crop.max_seconds`` is scored in windows whose logits are
    averaged, so memory stays bounded."""
    from east.audio import load_audio
    from east.errors import AudioError

    dev = torch.device(check_device(device))
    cfg, info, student = load_run(run_dir, str(dev))
    names = info["class_names"]
    limit = max(1, round(cfg.crop.max_seconds * int(student.sample_rate)))
    out = []
    for f in files:
        wave = load_audio(f, sr=int(student.sample_rate))
        logits = _windowed_logits(student, wave, limit, dev)
        if not bool(torch.isfinite(logits).all()):
            raise AudioError(f, "the student's output is not finite (absurd sample values?)")
        probs = torch.sigmoid(logits) if info["task"] == "multilabel" else torch.softmax(logits, 0)
        order = torch.argsort(probs, descending=True)[: max(1, top_k)]
        out.append(
            {
                "file": str(f),
                "labels": [{"label": names[int(i)], "probability": float(probs[i])} for i in order],
            }
        )
    return out


@torch.no_grad()
def _windowed_logits(
    student: nn.Module, wave: np.ndarray, limit: int, device: torch.device
) -> torch.Tensor:
    """(K,) logits of a clip: the mean over consecutive equal windows of at most ``limit``
    samples (the same windows as evaluation uses)."""
    pieces = max(1, math.ceil(len(wave) / limit))
    bounds = np.linspace(0, len(wave), pieces + 1).round().astype(int)
    total = None
    for a, b in itertools.pairwise(bounds):
        x = torch.from_numpy(np.ascontiguousarray(wave[a:b]))[None].to(device)
        logits = student(x).logits.float().cpu()[0]
        total = logits if total is None else total + logits
    assert total is not None
    return total / pieces
