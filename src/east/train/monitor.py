"""One watched validation quantity: the scheduler, early stopping and the best checkpoint all
decide "did it improve" through a :class:`Monitor`, so the direction of ``val_loss`` (lower is
better) and of a metric (higher is better) is written once."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Monitor"]

Mode = Literal["min", "max"]


@dataclass
class Monitor:
    """``key`` of the validation record watched in ``mode`` ("min": lower is better);
    ``patience`` epochs without a strict improvement make :attr:`stop` true."""

    key: str
    mode: Mode
    patience: int | None = None
    best: float = field(init=False)
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf

    @classmethod
    def of(cls, monitor: str, metric_key: str, patience: int | None = None) -> Monitor:
        """The config's ``monitor`` value (``val_loss`` or ``val_metric``) for a run whose
        primary metric is ``metric_key`` (e.g. ``val_mAP``)."""
        if monitor == "val_loss":
            return cls("val_loss", "min", patience)
        return cls(metric_key, "max", patience)

    def value(self, record: dict[str, float]) -> float:
        return record[self.key]

    def improves(self, value: float) -> bool:
        return value < self.best if self.mode == "min" else value > self.best

    def update(self, record: dict[str, float]) -> bool:
        """Whether ``record`` improves on the best so far (then it is the best)."""
        value = self.value(record)
        if self.improves(value):
            self.best, self.bad_epochs = value, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])
