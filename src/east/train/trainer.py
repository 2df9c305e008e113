"""``east train``: one run, read top to bottom (nanoGPT's ``train.py`` shape)::

    plan = check_run(cfg)                 # everything checked and built, nothing written
    run = open the run directory          # locked (run.lock) until the run ends
    loop = _Loop.build(...)               # model, optimiser, scheduler, monitors, streams
    while not loop.done():
        train one epoch                   # stop on a non-finite loss (Diverged)
        evaluate; keep the best; log; checkpoint   (rank 0)
        decide whether to stop            (broadcast to every rank)
    test the best model → test_results.json

The run directory and its files are :mod:`east.run_dir`'s contract. Resume (``--resume
RUN_DIR``) reloads ``last.pt`` and continues with the next epoch; data order, mixup and dropout
depend only on the seed, the epoch and the restored RNG states, so a resumed run on the CPU
ends with the same metrics as an uninterrupted one. A write that fails (disk full) stops the
run with the path and leaves every file written before intact; ``--resume`` continues, and
``metrics.jsonl`` is trimmed to the checkpoint's epochs so no epoch appears twice.

Multi-GPU: start the same entry point with ``torchrun --nproc_per_node N -m east train ...``;
each rank streams its own share of the cache blocks (equal counts), gradients are averaged by
DDP, rank 0 validates, logs and writes checkpoints and broadcasts the stop decision.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from east.config import RunConfig
from east.errors import ConfigError, EastError
from east.features import LogMelFrontend
from east.progress import ProgressBar
from east.run_dir import BestCheckpoint, RunDir, WriteError, first_line
from east.train import metrics as metrics_mod
from east.train.data import ClipStream, checked_batches, make_loader
from east.train.evaluation import evaluate
from east.train.losses import TeacherBatch
from east.train.monitor import Monitor
from east.train.optim import build_optimizer, build_plateau
from east.train.plan import RunPlan, check_run, make_stream, run_info
from east.train.runtime import (
    Distributed,
    Diverged,
    describe_clips,
    load_weights,
    note,
    rng_state,
    seed_everything,
    set_rng_state,
    teacher_batches,
)
from east.train.systems import Trainable

__all__ = [
    "LoopState",
    "logmel_mixup_batch",
    "mix_halves",
    "mixup_batch",
    "prepare_run_dir",
    "test_best",
    "train",
]


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


def _train(
    cfg: RunConfig, *, out_dir: Path | None, resume: Path | None, progress: bool, scope: _RunScope
) -> Path:
    if resume is not None:
        cfg = RunDir(resume).read_config()
    # seeded before check_run builds the student: its initial weights depend on the seed only
    seed_everything(cfg.seed + int(os.environ.get("RANK", "0")))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    plan = check_run(cfg, out_dir if resume is None else None, world_size)
    dist, device = _start(plan.device)
    run = _open_run_dir(cfg, out_dir, resume, dist, scope)
    if dist.main and plan.long_clips:
        note(
            f"note: {plan.long_clips} clips are longer than crop.max_seconds "
            f"({cfg.crop.max_seconds:g} s): training uses a window of them, evaluation "
            "averages the logits of their windows"
        )
    if dist.main and resume is None:
        run.write_config(cfg)
    if cfg.system_info.probe:  # a small probe: rank 0 trains it alone
        from east.train.probe import train_probe

        if dist.main:
            train_probe(cfg, plan, run, device)
    else:
        loop = _Loop.build(cfg, plan, run, device, dist, resume, progress)
        while not loop.done():
            stats = loop.train_one_epoch()
            if dist.main:
                loop.end_epoch(stats)  # evaluate, keep the best, log, checkpoint
            loop.sync()  # every rank takes rank 0's stop decision and learning rate
        loop.close()
    dist.barrier()
    dist.close()
    return run.path


class _RunScope(contextlib.ExitStack):
    """What a run holds until it ends (its lock), and its directory once known."""

    run_dir: Path | None = None


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


def _start(device_name: str) -> tuple[Distributed, torch.device]:
    """torchrun's process group (if any) and this rank's device."""
    dist = Distributed(device_name)
    if dist.enabled and device_name == "cuda":
        device_name = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(dist.local_rank)
    return dist, torch.device(device_name)


def _open_run_dir(
    cfg: RunConfig, out_dir: Path | None, resume: Path | None, dist: Distributed, scope: _RunScope
) -> RunDir:
    """Rank 0 makes and locks the run directory; every rank learns it, or the one-line reason
    rank 0 refused it."""
    problem: EastError | None = None
    run_dir = Path()
    if dist.main:
        try:
            run_dir = prepare_run_dir(cfg, out_dir, resume, scope)
        except EastError as exc:
            problem = exc
    run_text, refused = dist.broadcast((str(run_dir), str(problem or "")))
    if problem is not None:
        raise problem
    if refused:
        raise EastError(refused)
    scope.run_dir = Path(run_text)
    return RunDir(run_text)


def prepare_run_dir(
    cfg: RunConfig, out_dir: Path | None, resume: Path | None, locks: contextlib.ExitStack
) -> Path:
    """The run directory, locked for this process (``run.lock``) until ``locks`` closes.

    The existing-run check comes after the lock: a run that another ``east train`` finished
    meanwhile is seen, never overwritten."""
    from east.locking import WriterLock

    run_dir = resume if resume is not None else (out_dir or cfg.output_dir) / cfg.run_name()
    run = RunDir(run_dir)
    if resume is not None and not run_dir.is_dir():
        raise ConfigError(f"--resume {resume}: not a run directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{run_dir}: cannot create the run directory ({exc.strerror})") from None
    locks.enter_context(WriterLock(run.lock, f"run directory {run_dir}"))
    if resume is not None and not run.resumable:
        raise ConfigError(f"--resume {resume}: no {run.last.name} there")
    if resume is None and run.used:
        raise ConfigError(
            f"{run_dir}: a run already exists there; use --resume {run_dir} or another name"
        )
    return run_dir


# ------------------------------------------------------------------------------ the loop


@dataclass
class LoopState:
    """Where the loop is (``last.pt``'s ``state``, in the keys it has always had)."""

    epoch: int = 0
    step: int = 0
    best_epoch: int = -1
    keeper: Monitor = field(default_factory=lambda: Monitor("", "max"))  # best.pt's metric
    stopper: Monitor = field(default_factory=lambda: Monitor("val_loss", "min"))  # early stop

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "best": self.keeper.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.stopper.bad_epochs,
            "best_stop": self.stopper.best,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best_epoch = int(state["best_epoch"])
        self.keeper.best = float(state["best"])
        self.stopper.load_state_dict(
            {"best": state["best_stop"], "bad_epochs": state["bad_epochs"]}
        )


@dataclass
class EpochStats:
    """What one training epoch measured (means over its batches)."""

    losses: dict[str, float]
    seconds: float
    wait: float


@dataclass
class _Loop:
    """Everything one student run trains with; built once by :meth:`build`."""

    cfg: RunConfig
    plan: RunPlan
    run: RunDir
    device: torch.device
    dist: Distributed
    model: Trainable
    ddp_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    sched_monitor: Monitor
    state: LoopState
    train_stream: ClipStream
    val_loader: Any
    writer: Any
    bar: ProgressBar
    amp: bool
    stop: bool = False

    @classmethod
    def build(
        cls,
        cfg: RunConfig,
        plan: RunPlan,
        run: RunDir,
        device: torch.device,
        dist: Distributed,
        resume: Path | None,
        progress: bool,
    ) -> _Loop:
        assert plan.student is not None and plan.system is not None
        model = Trainable(plan.student, plan.system).to(device)
        if dist.main:
            run.write_info(run_info(cfg, plan, [int(s.dim) for s in plan.stores], plan.student))
        params = [p for p in model.parameters() if p.requires_grad]
        o = cfg.optimizer
        optimizer = build_optimizer(
            params, o.name, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum
        )
        metric_key = "val_" + metrics_mod.primary_metric_name(plan.manifest.multilabel)
        sched_monitor = Monitor.of(cfg.scheduler.monitor, metric_key)
        s = cfg.scheduler
        scheduler = build_plateau(optimizer, sched_monitor.mode, s.factor, s.patience)
        amp = cfg.train.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        es = cfg.early_stopping
        state = LoopState(
            keeper=Monitor(metric_key, "max"),
            stopper=Monitor.of(es.monitor, metric_key, es.patience),
        )
        if resume is not None:
            _resume(run, model, optimizer, scheduler, scaler, state)
        if dist.main:  # lines past the checkpoint (a crash, a failed write) would repeat
            run.trim_metrics(state.epoch)
        ddp_model = _wrap_ddp(model, dist, device)
        train_stream, val_loader = _streams(cfg, plan, dist, device)
        writer = None
        if dist.main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run.tensorboard))
        bar = ProgressBar(
            progress and dist.main,
            unit="steps",
            fields=("loss {task.fields[loss]:.4f}",),
            transient=True,
        )
        parts = (model, ddp_model, optimizer, scheduler, scaler, sched_monitor, state)
        loop = cls(cfg, plan, run, device, dist, *parts, train_stream, val_loader, writer, bar, amp)
        loop.stop = state.stopper.stop  # a finished run stays finished
        return loop

    def done(self) -> bool:
        epochs = self.cfg.train.max_epochs
        return (
            self.stop
            or (epochs is not None and self.state.epoch >= epochs)
            or self.state.step >= self.cfg.train.max_steps
        )

    def train_one_epoch(self) -> EpochStats:
        """Stream the epoch's batches through the model; stop at ``train.max_steps``."""
        cfg, state, device = self.cfg, self.state, self.device
        epoch = state.epoch
        self.train_stream.set_epoch(epoch)
        mix_rng = np.random.default_rng([cfg.seed, epoch, self.dist.rank, 11])  # mixup draws
        pin = device.type == "cuda"
        bs = cfg.train.batch_size
        loader = make_loader(self.train_stream, bs, cfg.train.num_workers, pin, drop_last=True)
        self.ddp_model.train()
        started = time.perf_counter()
        wait = 0.0
        sums: dict[str, float] = {}
        batches = 0
        self.bar.start(f"epoch {epoch}", max(len(self.train_stream) // bs, 1), loss=float("nan"))
        t_wait = time.perf_counter()
        for batch in checked_batches(loader):
            wait += time.perf_counter() - t_wait
            losses = self._step(batch, mix_rng)
            batches += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            if state.step >= cfg.train.max_steps:
                break
            t_wait = time.perf_counter()
        self.bar.stop()
        seconds = time.perf_counter() - started
        return EpochStats({k: v / max(batches, 1) for k, v in sums.items()}, seconds, wait)

    def _step(self, batch: dict[str, Any], mix_rng: np.random.Generator) -> dict[str, float]:
        """One optimiser step on one batch; its losses."""
        cfg, device, manifest = self.cfg, self.device, self.plan.manifest
        wave = batch["wave"].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True) if batch["mask"] is not None else None
        teachers = teacher_batches(batch, device)
        alpha = cfg.augment.mixup_alpha
        with torch.autocast(device.type, dtype=torch.float16, enabled=self.amp):
            if "pairs" in batch:  # augment.mixup_domain logmel: clips, then their partners
                student = self.model.student
                wave = pad_to_min_samples(wave, student.min_samples)
                spec, target, mask, teachers = logmel_mixup_batch(
                    student.frontend, wave, target, mask, teachers, alpha, mix_rng, manifest
                )
                _, losses = self.ddp_model(spec, target, mask, teachers, is_spectrogram=True)
            else:
                if alpha > 0:
                    wave, target, mask, teachers = mixup_batch(
                        wave, target, mask, teachers, alpha, mix_rng, manifest
                    )
                _, losses = self.ddp_model(wave, target, mask, teachers)
        if not self.dist.all_finite(losses["loss"]):
            raise Diverged(self._diverged(batch, losses))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        if cfg.train.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state.step += 1
        values = {k: float(v.detach()) for k, v in losses.items()}
        if self.writer is not None and self.state.step % cfg.train.log_every == 0:
            for k, v in values.items():
                self.writer.add_scalar(f"train/{k}", v, self.state.step)
        self.bar.advance(loss=values["loss"])
        return values

    def end_epoch(self, stats: EpochStats) -> None:
        """Rank 0: validate, step the scheduler, keep the best, log, checkpoint."""
        state, epoch = self.state, self.state.epoch
        where = f"epoch {epoch} validation"
        val = evaluate(
            self.model, self.val_loader, self.device, self.plan.manifest, amp=self.amp, where=where
        )
        self.scheduler.step(self.sched_monitor.value(val))
        improved = state.keeper.update(val)
        if improved:
            state.best_epoch = epoch
            record = BestCheckpoint(
                self.model.state_dict(), epoch, state.step, state.keeper.key, state.keeper.best
            )
            self.run.save_best(record)
        state.stopper.update(val)
        self._log(epoch, stats, val, improved)
        state.epoch = epoch + 1
        self.run.save_last(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "state": state.state_dict(),
                "rng": rng_state(),
            }
        )
        self.stop = state.stopper.stop

    def _log(self, epoch: int, stats: EpochStats, val: dict[str, float], improved: bool) -> None:
        """One metrics.jsonl line, TensorBoard scalars and a console line."""
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": self.state.step,
            **{f"train_{k}": v for k, v in stats.losses.items()},
            **val,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": round(stats.seconds, 3),
            "data_wait_fraction": round(stats.wait / stats.seconds, 4) if stats.seconds else 0.0,
        }
        self.run.append_metrics(record)
        assert self.writer is not None
        for k, v in record.items():
            if k not in ("epoch", "step") and isinstance(v, float):
                self.writer.add_scalar(k.replace("_", "/", 1), v, self.state.step)
        self.writer.flush()
        key = self.state.keeper.key
        self.bar.log(
            f"epoch {epoch}: loss {record.get('train_loss', float('nan')):.4f} "
            f"val_loss {val['val_loss']:.4f} {key} {val[key]:.4f}" + (" (best)" if improved else "")
        )

    def sync(self) -> None:
        """Every rank takes rank 0's stop decision and learning rate (other ranks count the
        epoch themselves)."""
        if not self.dist.main:
            self.state.epoch += 1
        self.stop, lr = self.dist.broadcast((self.stop, self.optimizer.param_groups[0]["lr"]))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def close(self) -> None:
        """The best model on the test split (rank 0)."""
        if self.writer is not None:
            self.writer.close()
        if self.dist.main:
            test_best(self.cfg, self.plan, self.run, self.model, self.device, self.amp)

    def _diverged(self, batch: dict[str, Any], losses: dict[str, torch.Tensor]) -> str:
        state = self.state
        parts = ", ".join(f"{k} {float(v.detach()):g}" for k, v in losses.items())
        kept = (
            f"{self.run.last} (after epoch {state.epoch - 1}) is kept"
            if self.run.last.is_file() and state.epoch > 0
            else "no checkpoint was written yet"
        )
        return (
            f"epoch {state.epoch} step {state.step + 1}: the training loss is not finite ({parts}) "
            f"{describe_clips(self.plan.manifest, batch)}; stopped, {kept}; check those clips or "
            f"lower optimizer.lr (now {self.cfg.optimizer.lr:g})"
        )


def _resume(
    run: RunDir, model: nn.Module, optimizer: Any, scheduler: Any, scaler: Any, state: LoopState
) -> None:
    """Model, optimiser, scheduler, scaler, loop state and RNG states from ``last.pt``."""
    ckpt = run.load_last()
    load_weights(model, ckpt["model"], run.last)
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        state.load_state_dict(dict(ckpt["state"]))
        set_rng_state(ckpt["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{run.last}: not a resumable checkpoint ({first_line(exc)})") from None


def _wrap_ddp(model: nn.Module, dist: Distributed, device: torch.device) -> nn.Module:
    if not dist.enabled:
        return model

    return DistributedDataParallel(
        model, device_ids=[dist.local_rank] if device.type == "cuda" else None
    )


def _streams(
    cfg: RunConfig, plan: RunPlan, dist: Distributed, device: torch.device
) -> tuple[ClipStream, Any]:
    """This rank's training stream and the validation loader."""
    train_stream = make_stream(
        cfg, plan, plan.splits.train, training=True, rank=dist.rank, world_size=dist.world_size
    )
    if cfg.augment.mixup_alpha > 0 and cfg.augment.mixup_domain == "logmel":
        frontend = plan.student.frontend if plan.student is not None else None
        if not isinstance(frontend, LogMelFrontend):
            raise ConfigError(
                f"augment.mixup_domain logmel: student {cfg.student.name} has no log-mel "
                "front-end; use mixup_domain waveform"
            )
        frontend.jitter_per_clip = True  # the reference featurizes every clip on its own
        train_stream.partners = True
    val_stream = make_stream(cfg, plan, plan.splits.valid, training=False)
    eval_bs = cfg.train.eval_batch_size or cfg.train.batch_size
    pin = device.type == "cuda"
    val_loader = make_loader(val_stream, eval_bs, cfg.train.num_workers, pin, drop_last=False)
    return train_stream, val_loader


def mixup_batch(
    wave: torch.Tensor,
    target: torch.Tensor,
    mask: Any,
    teachers: list[TeacherBatch],
    alpha: float,
    rng: np.random.Generator,
    manifest: Any,
) -> tuple[torch.Tensor, torch.Tensor, Any, list[TeacherBatch]]:
    """Mix waveforms, labels, masks and teacher embeddings with one coefficient per example."""
    from east.features import mixup

    if not manifest.multilabel:  # soft one-hot targets so they can be mixed
        target = torch.nn.functional.one_hot(target, manifest.num_classes).float()
    embs = [t.embeddings for t in teachers]
    counts = [t.num_frames for t in teachers]
    mixed = mixup(wave, target, mask, *embs, *counts, alpha=alpha, rng=rng)
    return mixed[0], mixed[1], mixed[2], _mixed_teachers(mixed[3:], teachers)


def logmel_mixup_batch(
    frontend: nn.Module,
    wave: torch.Tensor,
    target: torch.Tensor,
    mask: Any,
    teachers: list[TeacherBatch],
    alpha: float,
    rng: np.random.Generator,
    manifest: Any,
) -> tuple[torch.Tensor, torch.Tensor, Any, list[TeacherBatch]]:
    """The reference's mixup (``data/dataset.py``) on a batch of N clips followed by their N
    partners: each clip's normalised log-mel (masked and mel-jittered on its own by the
    training-mode front-end) is mixed with its partner's as ``λ·a + (1 − λ)·b``, with
    ``λ = max(β, 1 − β)``, ``β ~ Beta(α, α)`` per clip; labels and teacher embeddings take the
    same λ, label masks are OR-ed and teacher frame counts the smaller. Returns N of each."""
    n = wave.shape[0] // 2
    if n == 0 or wave.shape[0] != 2 * n:
        raise ValueError(f"expected clips then their partners, got {wave.shape[0]} waveforms")
    spec = frontend(wave)
    lam = torch.from_numpy(rng.beta(alpha, alpha, size=n)) if alpha > 0 else torch.ones(n)
    lam = torch.maximum(lam, 1 - lam).to(wave.device)
    if not manifest.multilabel:  # soft one-hot targets so they can be mixed
        target = torch.nn.functional.one_hot(target, manifest.num_classes).float()
    embs = [t.embeddings for t in teachers]
    counts = [t.num_frames for t in teachers]
    mixed = mix_halves([spec, target, mask, *embs, *counts], lam)
    return mixed[0], mixed[1], mixed[2], _mixed_teachers(mixed[3:], teachers)


def _mixed_teachers(mixed: list[Any], teachers: list[TeacherBatch]) -> list[TeacherBatch]:
    """The teacher batches from the mixed ``[*embeddings, *num_frames]`` (frame times kept)."""
    k = len(teachers)
    return [
        TeacherBatch(embeddings=mixed[i], frame_times=t.frame_times, num_frames=mixed[k + i])
        for i, t in enumerate(teachers)
    ]


def mix_halves(tensors: list[Any], lam: torch.Tensor) -> list[Any]:
    """Rows ``i < N`` of ``2N``-row tensors mixed with row ``N + i`` by :func:`apply_mixup`'s
    rules (float ``λ·a + (1 − λ)·b``, bool OR, integer min); ``None`` passes."""
    from east.features import apply_mixup

    n = lam.shape[0]
    partner = (torch.arange(2 * n) + n) % (2 * n)
    mixed = apply_mixup(tensors, torch.cat([lam, lam]), partner)
    return [None if x is None else x[:n] for x in mixed]


def pad_to_min_samples(wave: torch.Tensor, min_samples: int) -> torch.Tensor:
    """Silence after clips shorter than one student output frame (as ``Student.forward``)."""
    if wave.shape[-1] >= min_samples:
        return wave
    return torch.nn.functional.pad(wave, (0, min_samples - wave.shape[-1]))


def test_best(
    cfg: RunConfig, plan: RunPlan, run: RunDir, model: Trainable, device: torch.device, amp: bool
) -> dict[str, Any]:
    """Evaluate best.pt on the test split → test_results.json."""
    if not run.best.is_file():
        raise Diverged(f"{run.path}: no epoch gave a usable model (no {run.best.name})")
    state = run.load_best()
    load_weights(model, state["model"], run.best)
    stream = make_stream(cfg, plan, plan.splits.test, training=False)
    bs = cfg.train.eval_batch_size or cfg.train.batch_size
    loader = make_loader(stream, bs, cfg.train.num_workers, device.type == "cuda", drop_last=False)
    result = evaluate(model, loader, device, plan.manifest, amp=amp, where="test")
    out = {
        "split": "test",
        "clips": len(plan.splits.test),
        "best_epoch": int(state["epoch"]),
        **{k.replace("val_", "test_", 1): v for k, v in result.items()},
    }
    run.write_test_results(out)
    return out
