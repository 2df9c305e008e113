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

Multi-GPU: start the same entry point with ``torchrun --nproc_per_node N -m east train ...``;
each rank streams its own share of the cache blocks (equal counts), gradients are averaged by
DDP, rank 0 validates, logs and writes checkpoints and broadcasts the stop decision.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from east.config import RunConfig, check_resources, load_config
from east.errors import ConfigError
from east.train import metrics as metrics_mod
from east.train.data import (
    ClipStream,
    TeacherSource,
    make_loader,
    subsample_rows,
)
from east.train.losses import TeacherBatch
from east.train.systems import LinearProbe, System, time_average

CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"


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
    """torch.save to a temporary file, fsync, then rename: a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
    except TypeError as exc:
        raise ConfigError(f"student.kwargs: {exc}") from None


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
    state = torch.load(run_dir / CHECKPOINT_BEST, map_location="cpu", weights_only=True)
    weight = state["model"]["proj.weight"]
    probe = LinearProbe(int(weight.shape[1]), int(weight.shape[0]))
    probe.load_state_dict(state["model"])
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


# ------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def evaluate(
    model: Trainable,
    loader: Any,
    device: torch.device,
    manifest: Any,
    amp: bool = False,
    with_loss: bool = True,
) -> dict[str, float]:
    """Mean validation loss (the system's total, no augmentation) and the task's metrics."""
    model.eval()
    metric = metrics_mod.create_metric(manifest.multilabel, manifest.num_classes)
    total, count = 0.0, 0
    for batch in loader:
        wave = batch["wave"].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        mask = batch["mask"].to(device) if batch["mask"] is not None else None
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            if with_loss:
                output, losses = model(wave, target, mask, teacher_batches(batch, device))
                total += float(losses["total"]) * len(wave)
            else:
                output = model.student(wave)
        count += len(wave)
        metric.update(output.logits.float(), batch["target"], batch["mask"])
    out = {f"val_{k}": v for k, v in metric.compute().items()}
    if with_loss:
        out["val_loss"] = total / max(count, 1)
    return out


# ------------------------------------------------------------------------------ the run


def prepare_run_dir(cfg: RunConfig, out_dir: Path | None, resume: Path | None) -> Path:
    if resume is not None:
        if not (resume / CHECKPOINT_LAST).is_file():
            raise ConfigError(f"--resume {resume}: no {CHECKPOINT_LAST} there")
        return resume
    run_dir = (out_dir or cfg.output_dir) / cfg.run_name()
    if (run_dir / CHECKPOINT_LAST).exists():
        raise ConfigError(
            f"{run_dir}: a run already exists there; use --resume {run_dir} or another name"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def train(
    cfg: RunConfig,
    *,
    out_dir: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) one run; returns its directory."""
    if resume is not None:
        cfg = load_config(Path(resume) / "config.yaml")
    from east.settings import best_device

    device_name = best_device(cfg.device)
    dist = Distributed(device_name)
    if dist.enabled and device_name == "cuda":
        device_name = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(dist.local_rank)
    device = torch.device(device_name)
    seed_everything(cfg.seed + dist.rank)

    manifest = load_dataset(cfg)
    stores = check_resources(cfg, manifest)
    mark_failed_clips(manifest, stores)
    norms = teacher_norms(cfg, manifest, stores)
    run_dir = prepare_run_dir(cfg, out_dir, resume) if dist.main else Path()
    run_dir = Path(dist.broadcast(str(run_dir)))
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

    student = build_student(cfg, manifest.num_classes)
    probe = load_probe(cfg.teacher_lr_run, device) if cfg.teacher_lr_run else None
    if probe is not None and teacher_dims and probe.dim != teacher_dims[0]:
        raise ConfigError(
            f"teacher_lr_run: its probe takes {probe.dim}-dim embeddings, "
            f"{cfg.teachers[0].cache} holds {teacher_dims[0]}"
        )
    system = System(
        cfg,
        list(student.feature_dims),
        teacher_dims,
        manifest.num_classes,
        manifest.multilabel,
        probe,
    )
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
        ckpt = torch.load(run_dir / CHECKPOINT_LAST, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        state = ckpt["state"]
        set_rng_state(ckpt["rng"])

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
        for batch in loader:
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
            val = evaluate(model, val_loader, device, manifest, amp=use_amp)
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
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
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
    state = torch.load(run_dir / CHECKPOINT_BEST, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
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
    result = evaluate(model, loader, device, manifest, amp=amp)
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
    info = json.loads((run_dir / "run_info.json").read_text())
    if cfg.system == "teacher_lr":
        raise ConfigError(f"{run_dir}: a teacher_lr run has no student (it probes embeddings)")
    student = build_student(cfg, int(info["num_classes"]))
    state = torch.load(run_dir / CHECKPOINT_BEST, map_location="cpu", weights_only=True)
    prefix = "student."
    student.load_state_dict(
        {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    )
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
    from east.settings import best_device

    dev = torch.device(best_device(device))
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
        for batch in loader:
            out = student(batch["wave"].to(dev))
            logits_all.append(out.logits.float().cpu())
            rows_all.append(batch["rows"])
    logits = torch.cat(logits_all).numpy()
    order = torch.cat(rows_all).numpy()
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
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
        with torch.no_grad():
            got = loaded(example)
        diff = float((got - expected).abs().max())
    elif fmt == "onnx":
        path = out or run_dir / "model.onnx"
        _use_conv_stft(student)
        try:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["waveform"],
                output_names=["logits"],
                dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "logits": {0: "batch"}},
                dynamo=False,
                opset_version=17,
            )
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
    """Labels with probabilities for audio files (sigmoid multi-label, softmax single-label)."""
    from east.audio import load_audio
    from east.settings import best_device

    dev = torch.device(best_device(device))
    _cfg, info, student = load_run(run_dir, str(dev))
    names = info["class_names"]
    out = []
    for f in files:
        wave = load_audio(f, sr=int(student.sample_rate))
        with torch.no_grad():
            logits = student(torch.from_numpy(wave)[None].to(dev)).logits.float().cpu()[0]
        probs = torch.sigmoid(logits) if info["task"] == "multilabel" else torch.softmax(logits, 0)
        order = torch.argsort(probs, descending=True)[: max(1, top_k)]
        out.append(
            {
                "file": str(f),
                "labels": [{"label": names[int(i)], "probability": float(probs[i])} for i in order],
            }
        )
    return out
