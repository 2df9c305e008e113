"""The Teacher_LR probe (``system: teacher_lr``), as the reference trains it: a linear layer on
the time-averaged (valid frames) embedding, SGD lr 0.1, ReduceLROnPlateau ×0.1 (patience 1)
and early stopping (patience 3) on the validation loss, best checkpoint by the validation
metric. The embeddings are averaged once, so an epoch is a few matrix products; rank 0
trains it alone, in one go (its ``last.pt`` marks the run directory as used, it is not
resumed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from east.config import RunConfig
from east.run_dir import BestCheckpoint, RunDir
from east.train import metrics as metrics_mod
from east.train.losses import prediction_loss
from east.train.monitor import Monitor
from east.train.optim import build_optimizer, build_plateau
from east.train.plan import RunPlan, run_info
from east.train.runtime import load_weights
from east.train.systems import LinearProbe, time_average

__all__ = ["averaged_embeddings", "train_probe"]

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # (x, y, mask)


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


def train_probe(cfg: RunConfig, plan: RunPlan, run: RunDir, device: torch.device) -> Path:
    """Train the probe on the plan's splits; writes the run's files, returns its directory."""
    manifest, hp = plan.manifest, cfg.teacher_lr
    data = _probe_data(cfg, plan)
    teacher_dim = int(plan.stores[0].dim)
    probe = LinearProbe(teacher_dim, manifest.num_classes).to(device)
    run.write_info(run_info(cfg, plan, [teacher_dim], None))
    optimizer = build_optimizer(probe.parameters(), "sgd", lr=hp.lr)
    metric_key = "val_" + metrics_mod.primary_metric_name(manifest.multilabel)
    stopper = Monitor("val_loss", "min", hp.early_stopping)
    scheduler = build_plateau(optimizer, stopper.mode, hp.factor, hp.patience)
    keeper = Monitor(metric_key, "max")  # best.pt: the best validation metric
    gen = torch.Generator().manual_seed(cfg.seed)
    run.write_metrics([])
    for epoch in range(hp.max_epochs):
        train_loss = _probe_epoch(cfg, probe, optimizer, data["train"], gen, device)
        val = _probe_eval(probe, data["valid"], manifest, device, "val")
        scheduler.step(stopper.value(val))
        lr = optimizer.param_groups[0]["lr"]
        run.append_metrics({"epoch": epoch, "train_loss": train_loss, **val, "lr": lr})
        if keeper.update(val):
            run.save_best(BestCheckpoint(probe.state_dict(), epoch, None, metric_key, keeper.best))
        stopper.update(val)
        if stopper.stop:
            break
    best = run.load_best()
    load_weights(probe, best["model"], run.best)
    test = _probe_eval(probe, data["test"], manifest, device, "test")
    clips = len(plan.splits.test)
    run.write_test_results(
        {"split": "test", "clips": clips, "best_epoch": int(best["epoch"]), **test}
    )
    # a probe run is finished in one go; last.pt marks the run directory as used
    run.save_last({"model": probe.state_dict(), "state": {"epoch": epoch + 1}})
    return run.path


def _probe_data(cfg: RunConfig, plan: RunPlan) -> dict[str, Split]:
    """(time-averaged embeddings, targets, mask) of every split."""
    from east.cache_schema import open_store

    store = open_store(cfg.teachers[0].cache, mode="r")
    manifest, multilabel = plan.manifest, plan.manifest.multilabel
    data = {}
    for name in ("train", "valid", "test"):
        rows = getattr(plan.splits, name)
        x = torch.from_numpy(averaged_embeddings(store, rows, plan.norms[0]))
        y = torch.from_numpy(manifest.targets[rows].astype(np.float32 if multilabel else np.int64))
        m = torch.from_numpy(manifest.known_mask()[rows]) if multilabel else None
        data[name] = (x, y, m)
    return data


def _probe_epoch(
    cfg: RunConfig,
    probe: LinearProbe,
    optimizer: torch.optim.Optimizer,
    data: Split,
    gen: torch.Generator,
    device: torch.device,
) -> float:
    """One epoch of mini-batch SGD; the mean training loss."""
    x, y, m = data
    multilabel = m is not None
    probe.train()
    perm = torch.randperm(len(x), generator=gen)
    total = 0.0
    for a in range(0, len(perm), cfg.teacher_lr.batch_size):
        idx = perm[a : a + cfg.teacher_lr.batch_size]
        logits = probe.proj(x[idx].to(device))
        mask = None if m is None else m[idx].to(device)
        loss = prediction_loss(logits, y[idx].to(device), mask, multilabel)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(probe.parameters(), cfg.train.grad_clip)
        optimizer.step()
        total += float(loss.detach()) * len(idx)
    return total / max(len(perm), 1)


def _probe_eval(
    probe: LinearProbe, data: Split, manifest: Any, device: torch.device, prefix: str
) -> dict[str, float]:
    """``{prefix}_loss`` and the task's metrics of one split."""
    x, y, m = data
    probe.eval()
    with torch.no_grad():
        logits = probe.proj(x.to(device))
        mask = None if m is None else m.to(device)
        loss = float(prediction_loss(logits, y.to(device), mask, manifest.multilabel))
    metric = metrics_mod.create_metric(manifest.multilabel, manifest.num_classes)
    metric.update(logits.cpu(), y, m)
    return {f"{prefix}_{k}": v for k, v in {"loss": loss, **metric.compute()}.items()}
