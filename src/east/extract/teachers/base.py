"""The teacher interface every pre-trained model adapter implements.

A teacher is a frozen ``torch.nn.Module`` that turns a batch of mono waveforms at its own
sample rate into time-indexed embeddings:

``embed(waveforms (B, L) float32, lengths (B,) int64) -> TeacherOutput``

* ``embeddings``: ``(B, T, D)``, frames past ``num_frames[b]`` are padding (any value);
* ``num_frames``: ``(B,)`` int64 valid frames per clip (≥ 1 for any clip ≥ 1 sample);
* ``frame_times``: ``(T, 2)`` float64 start and end (seconds) of each frame — the same for
  every clip of the batch, since frames depend only on the window and hop. A clip-level
  teacher (PANNs) has ``T == 1`` and one frame spanning the clip (``end`` = longest clip).

Adapters document in their docstring how the last partial frame is handled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class WeightFile:
    """One pinned pre-trained weight file."""

    filename: str  # relative to the weights dir; may hold folders ("sota-music-taggers/msd/...")
    url: str
    sha256: str  # full hex digest, or a published prefix of >= 8 hex chars (torch-hub style)
    size: int | None = None  # bytes, when known
    note: str = ""  # e.g. how to obtain files that are not a plain download
    md5: str | None = None  # extra check where the source publishes an md5 (Zenodo)


@dataclass(frozen=True)
class TeacherInfo:
    """Static facts about a teacher, shown by ``east teachers list``."""

    name: str
    family: str
    sample_rate: int
    embedding_dim: int
    window_s: float | None  # None for clip-level teachers
    hop_s: float | None
    description: str = ""
    licence: str = ""
    weights: tuple[WeightFile, ...] = field(default_factory=tuple)

    @property
    def clip_level(self) -> bool:
        return self.window_s is None


@dataclass
class TeacherOutput:
    embeddings: Tensor  # (B, T, D)
    num_frames: Tensor  # (B,) int64
    frame_times: Tensor  # (T, 2) float64 seconds [start, end]


class Teacher(nn.Module):
    """Base class. Subclasses set :attr:`info` and implement :meth:`embed`.

    :attr:`weights_sha256` identifies the loaded weights (``"random"`` for explicitly random
    weights); extraction stamps it into the cache's provenance.
    """

    info: TeacherInfo
    weights_sha256: str = "random"

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def embedding_dim(self) -> int:
        return self.info.embedding_dim

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def embed(self, waveforms: Tensor, lengths: Tensor) -> TeacherOutput:
        raise NotImplementedError


def frame_times(num_frames: int, window_s: float, hop_s: float) -> Tensor:
    """``(T, 2)`` start/end seconds of ``num_frames`` frames with a fixed window and hop."""
    starts = torch.arange(num_frames, dtype=torch.float64) * hop_s
    return torch.stack([starts, starts + window_s], dim=1)
