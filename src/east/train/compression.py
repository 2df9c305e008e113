"""Embedding compression (paper 2, Ding & Lerch 2024, §2.1).

A trainable linear *teacher transformation* maps the teacher embedding to the student's
feature dimension (the compact embedding); a linear *teacher head* on the (time-averaged)
compact embedding predicts the target labels and gives ``L_teacher``. ``L_teacher`` updates
only the transformation and the head (the teacher embedding is cached data, the student never
sees this loss); the distance loss compares the student feature with the **detached** compact
embedding, so it updates only the student — no student projection is needed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from east.train.losses import prediction_loss

__all__ = ["CompressionOutput", "EmbeddingCompressor"]


class CompressionOutput(NamedTuple):
    """``compact`` (N, T, C) detached compact embedding; ``teacher_loss`` scalar;
    ``logits`` (N, K) of the teacher head."""

    compact: Tensor
    teacher_loss: Tensor
    logits: Tensor


class EmbeddingCompressor(nn.Module):
    """Linear teacher transformation (D → C) plus a linear teacher head (C → K)."""

    def __init__(
        self, teacher_dim: int, student_dim: int, num_classes: int, multilabel: bool = True
    ) -> None:
        super().__init__()
        self.transform = nn.Linear(teacher_dim, student_dim)
        self.head = nn.Linear(student_dim, num_classes)
        self.multilabel = multilabel

    def forward(
        self,
        embeddings: Tensor,
        targets: Tensor,
        label_mask: Tensor | None = None,
        num_frames: Tensor | None = None,
    ) -> CompressionOutput:
        """``embeddings`` (N, T, D) or (N, D); ``num_frames`` (N,) valid frames per clip (the
        head sees the mean over valid frames only)."""
        emb = embeddings.detach()
        if emb.dim() == 2:
            emb = emb.unsqueeze(1)
        compact = self.transform(emb)  # (N, T, C)
        if num_frames is None:
            pooled = compact.mean(dim=1)
        else:
            frames = torch.arange(compact.shape[1], device=compact.device)
            valid = frames[None, :] < num_frames.to(compact.device).clamp(min=1)[:, None]
            weights = valid.to(compact.dtype).unsqueeze(-1)
            pooled = (compact * weights).sum(dim=1) / weights.sum(dim=1)
        logits = self.head(pooled)
        loss = prediction_loss(logits, targets, label_mask, self.multilabel)
        return CompressionOutput(compact.detach(), loss, logits)
