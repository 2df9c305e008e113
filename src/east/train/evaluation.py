"""Evaluation: the validation/test pass of a run (:func:`evaluate`) and ``east eval``
(:func:`evaluate_run`: a finished run's best student on a split of its dataset, or of another
dataset through a label map). :func:`load_run` gives a finished run's student."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from east.config import RunConfig
from east.errors import ConfigError
from east.run_dir import BEST, CONFIG, RUN_INFO, RunDir
from east.train import metrics as metrics_mod
from east.train.data import ClipStream, average_windows, checked_batches, make_loader
from east.train.plan import build_student, load_dataset
from east.train.runtime import (
    Diverged,
    check_device,
    describe_clips,
    load_weights,
    teacher_batches,
)

__all__ = ["evaluate", "evaluate_run", "load_run", "read_label_map"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    manifest: Any,
    amp: bool = False,
    with_loss: bool = True,
    where: str = "evaluation",
) -> dict[str, float]:
    """Mean validation loss (the system's total, no augmentation) and the task's metrics of a
    :class:`~east.train.systems.Trainable`; the logits of a long clip's windows are averaged
    (``crop.max_seconds``)."""
    model.eval()
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
                        f"{where}: the loss is not finite ({loss}) {describe_clips(manifest, batch)}"
                    )
                total += loss * len(wave)
            else:
                output = model.student(wave)
        count += len(wave)
        logits_all.append(output.logits.float().cpu())
        rows_all.append(batch["rows"])
    logits, rows = _clip_logits(logits_all, rows_all, manifest, where)
    out = {f"val_{k}": v for k, v in _split_metrics(manifest, logits, rows.numpy()).items()}
    if with_loss:
        out["val_loss"] = total / max(count, 1)
    return out


def _clip_logits(
    logits: list[torch.Tensor], rows: list[torch.Tensor], manifest: Any, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One logit vector per clip (a long clip's windows averaged), checked finite."""
    averaged, picked = average_windows(torch.cat(logits), torch.cat(rows))
    if not bool(torch.isfinite(averaged).all()):
        bad = picked[~torch.isfinite(averaged).all(dim=1)]
        raise Diverged(
            f"{where}: the student's outputs are not finite {describe_clips(manifest, bad)}"
        )
    return averaged, picked


def _split_metrics(manifest: Any, logits: torch.Tensor, picked: np.ndarray) -> dict[str, float]:
    metric = metrics_mod.create_metric(manifest.multilabel, manifest.num_classes)
    if manifest.multilabel:
        target = torch.from_numpy(manifest.targets[picked].astype(np.float32))
        mask = torch.from_numpy(manifest.known_mask()[picked].astype(bool))
    else:
        target, mask = torch.from_numpy(manifest.targets[picked].astype(np.int64)), None
    metric.update(logits, target, mask)
    return metric.compute()


# ------------------------------------------------------------------------------ east eval


def load_run(run_dir: Path, device: str = "cpu") -> tuple[RunConfig, dict[str, Any], nn.Module]:
    """(config, run_info, student with the best weights, in eval mode) of a finished run."""
    run = RunDir(run_dir)
    run.require(CONFIG, RUN_INFO, BEST)
    cfg = run.read_config()
    info = run.read_info()
    if cfg.system_info.probe:
        raise ConfigError(f"{run.path}: a teacher_lr run has no student (it probes embeddings)")
    student = build_student(cfg, int(info["num_classes"]))
    load_weights(student, run.load_best()["model"], run.best, prefix="student.")
    return cfg, info, student.to(device).eval()


def _shipped_label_map(path: Path) -> Path:
    """A label map shipped with east by name (``--label-map mtat_to_openmic``), for users
    without a checkout; a one-line error when there is neither a file nor such a map."""
    from east.errors import EastError
    from east.resources import label_map

    if Path(path).parent != Path("."):
        raise ConfigError(f"--label-map {path}: file not found")
    try:
        return Path(str(label_map(str(path))))
    except EastError as exc:
        raise ConfigError(f"--label-map {path}: file not found, and {exc}") from None


def read_label_map(path: Path) -> dict[str, str]:
    """A label map ``{run class: dataset class}`` from YAML/JSON (a mapping) or a two-column CSV."""
    import yaml

    if not Path(path).is_file():
        path = _shipped_label_map(path)
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
    dev = torch.device(check_device(device))
    cfg, info, student = load_run(run_dir, str(dev))
    manifest = _eval_manifest(cfg, dataset, root, options)
    run_classes = list(info["class_names"])
    src_cols, dst_cols = _label_columns(run_classes, manifest, label_map)
    rows = manifest.indices(split) if split != "all" else np.arange(len(manifest))
    if len(rows) == 0:
        raise ConfigError(f"{manifest.name} has no '{split}' clips")
    stream = ClipStream(
        manifest, rows, [], int(student.sample_rate), crop=cfg.crop, training=False, chunk_clips=64
    )
    bs = batch_size or cfg.train.eval_batch_size or cfg.train.batch_size
    loader = make_loader(stream, bs, num_workers, dev.type == "cuda", drop_last=False)
    logits_all, rows_all = [], []
    with torch.no_grad():
        for batch in checked_batches(loader):
            logits_all.append(student(batch["wave"].to(dev)).logits.float().cpu())
            rows_all.append(batch["rows"])
    # a long clip came as windows (crop.max_seconds): one averaged logit vector per clip
    logits, order = _clip_logits(logits_all, rows_all, manifest, "eval")
    result = _mapped_metrics(
        manifest, logits.numpy(), order.numpy(), src_cols, dst_cols, label_map is not None
    )
    return {
        "run": str(run_dir),
        "dataset": manifest.name,
        "root": str(manifest.root),
        "split": split,
        "clips": len(rows),
        "classes": [run_classes[c] for c in src_cols],
        **result,
    }


def _eval_manifest(
    cfg: RunConfig, dataset: str | None, root: Path | None, options: dict[str, Any] | None
) -> Any:
    """The run's dataset (optionally at another root), or another dataset."""
    from east.datasets import load_manifest

    if dataset is not None:
        where = root if root is not None else cfg.dataset.root
        return load_manifest(dataset, where, **(options or {}))
    if root is None:
        return load_dataset(cfg)
    opts = options if options is not None else cfg.dataset.options
    return load_manifest(cfg.dataset.name, root, **opts)


def _label_columns(
    run_classes: list[str], manifest: Any, label_map: Path | None
) -> tuple[list[int], list[int]]:
    """(run columns, dataset columns) that are compared: all, or those of the label map."""
    if label_map is None:
        if list(manifest.class_names) != run_classes:
            raise ConfigError(
                f"{manifest.name} has other classes than the run; give --label-map FILE"
            )
        cols = list(range(len(run_classes)))
        return cols, cols
    mapping = read_label_map(label_map)
    unknown_src = sorted(set(mapping) - set(run_classes))
    unknown_dst = sorted(set(mapping.values()) - set(manifest.class_names))
    if unknown_src:
        raise ConfigError(f"--label-map {label_map}: not classes of the run: {unknown_src}")
    if unknown_dst:
        raise ConfigError(f"--label-map {label_map}: not classes of {manifest.name}: {unknown_dst}")
    src_cols = [run_classes.index(k) for k in mapping]
    dst_cols = [manifest.class_names.index(v) for v in mapping.values()]
    return src_cols, dst_cols


def _mapped_metrics(
    manifest: Any,
    logits: np.ndarray,
    order: np.ndarray,
    src_cols: list[int],
    dst_cols: list[int],
    mapped: bool,
) -> dict[str, float]:
    if not (manifest.multilabel or mapped):
        metric = metrics_mod.AccuracyMetric(manifest.num_classes)
        metric.update(logits, manifest.targets[order])
        return metric.compute()
    targets = manifest.multi_hot()[order][:, dst_cols]
    mask = manifest.known_mask()[order][:, dst_cols]
    ml = metrics_mod.MultiLabelMetrics(len(dst_cols))
    ml.update(logits[:, src_cols], targets, mask)
    result = ml.compute()
    if not manifest.multilabel:  # single-label target: accuracy among the mapped classes
        known = np.isin(manifest.targets[order], dst_cols)
        if known.any():
            pred = np.asarray(dst_cols)[logits[known][:, src_cols].argmax(axis=1)]
            result["accuracy"] = float((pred == manifest.targets[order][known]).mean())
    return result
