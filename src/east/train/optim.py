"""The optimiser and the plateau scheduler of a run, from their config values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch

__all__ = ["build_optimizer", "build_plateau"]


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: Literal["adam", "sgd"],
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
) -> torch.optim.Optimizer:
    """Adam (``momentum`` unused) or SGD."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def build_plateau(
    optimizer: torch.optim.Optimizer, mode: Literal["min", "max"], factor: float, patience: int
) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """ReduceLROnPlateau in the direction of the quantity it watches (a :class:`Monitor`'s)."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=factor, patience=patience
    )
