"""What every stage-2 job shares: seeding and RNG state, the device check, torchrun's
environment, the one-line errors of a run and the batch → device conversion."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from east.errors import ConfigError, EastError
from east.run_dir import first_line
from east.train.losses import TeacherBatch

__all__ = [
    "Distributed",
    "Diverged",
    "check_device",
    "describe_clips",
    "load_weights",
    "note",
    "rng_state",
    "seed_everything",
    "set_rng_state",
    "teacher_batches",
]


class Diverged(EastError):
    """The loss (or the student's output) became NaN/inf."""


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


def check_device(requested: str) -> str:
    """The device name a run uses; a one-line ConfigError when it is not usable here."""
    from east.settings import best_device

    name = best_device(requested)
    try:
        torch.empty(1, device=torch.device(name))
    except Exception as exc:  # unknown type, no CUDA build, no such ordinal
        raise ConfigError(
            f"device: {requested!r} is not available here ({first_line(exc)[:120]}); "
            "use auto or cpu"
        ) from None
    return name


def load_weights(module: nn.Module, weights: dict[str, Any], path: Path, prefix: str = "") -> None:
    """``module.load_state_dict`` with a one-line error when the weights do not fit."""
    if prefix:
        weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(weights)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path}: its weights do not fit this run's {type(module).__name__} "
            f"({first_line(exc)[:160]})"
        ) from None


def describe_clips(manifest: Any, batch: dict[str, Any] | torch.Tensor) -> str:
    """'on clips A, B (rows 3, 9)': the clips of a batch, for an error line."""
    rows = batch["rows"] if isinstance(batch, dict) else batch
    rows = sorted({int(r) for r in rows})
    ids = [str(manifest.clip_ids[r]) for r in rows[:5]]
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"on clips {', '.join(ids)}{more} (rows {', '.join(map(str, rows[:5]))}{more})"


def note(text: str) -> None:
    """A note on stderr (never wrapped)."""
    from east.cli.common import err_console  # rich console: only when there is a note

    err_console.print(text, highlight=False, soft_wrap=True)


def teacher_batches(batch: dict[str, Any], device: torch.device) -> list[TeacherBatch]:
    return [
        TeacherBatch(
            embeddings=t["embeddings"].to(device, non_blocking=True),
            num_frames=t["num_frames"].to(device, non_blocking=True),
            frame_times=t["frame_times"],
        )
        for t in batch["teachers"]
    ]


class Distributed:
    """torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK), or a single process."""

    def __init__(self, device: str) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        if self.enabled and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        if not self.enabled:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank (all ranks stop together)."""
        bad = torch.tensor(0.0 if bool(torch.isfinite(loss.detach())) else 1.0, device=loss.device)
        if self.enabled:
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        return float(bad) == 0.0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.enabled:
            torch.distributed.destroy_process_group()
