"""``east predict``: labels with probabilities for audio files from a finished run."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from east.train.evaluation import load_run
from east.train.runtime import check_device

__all__ = ["predict_files"]


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
