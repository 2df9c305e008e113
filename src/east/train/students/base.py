"""The student contract: a network that owns its front-end and returns logits plus its stage
feature maps (N, T, C) with their frame times."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from east.features import stride_frame_times


class StudentOutput(NamedTuple):
    """``logits`` (N, K) before any sigmoid/softmax; ``features[i]`` (N, T_i, C_i) — tap ``i``
    averaged over frequency; ``frame_times[i]`` (T_i, 2) start/end seconds (float64, CPU)."""

    logits: Tensor
    features: list[Tensor]
    frame_times: list[Tensor]


class Student(nn.Module):
    """Base class. Subclasses set ``frontend``, ``feature_dims``, ``tap_strides`` (total time
    stride of each tap in spectrogram frames), ``head_modules`` (the classification head the
    papers leave out of their parameter counts) and implement :meth:`forward_maps`."""

    name: str = "student"
    #: channels of the spectrogram the backbone expects (1 for log-mel, 6 for harmonic)
    spectrogram_channels: int = 1
    #: frequency bins of the spectrogram the backbone expects
    spectrogram_bins: int = 128

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.num_classes = num_classes
        self.frontend: nn.Module = nn.Identity()
        self.feature_dims: list[int] = []
        self.tap_strides: list[int] = []
        self.fixed_min_frames: int | None = None  # when the coarsest tap stride is not it

    @property
    def sample_rate(self) -> int:
        return int(self.frontend.sample_rate)  # type: ignore[attr-defined]

    @property
    def hop_seconds(self) -> float:
        return float(self.frontend.hop_seconds)  # type: ignore[attr-defined]

    @property
    def min_frames(self) -> int:
        """Spectrogram frames of the shortest input: one frame of the coarsest tap (pooling
        students), unless the student sets ``fixed_min_frames``."""
        if self.fixed_min_frames is not None:
            return self.fixed_min_frames
        return max(self.tap_strides, default=1)

    @property
    def min_samples(self) -> int:
        """Samples of the shortest waveform; shorter clips are padded with silence."""
        return round(self.min_frames * self.hop_seconds * self.sample_rate)

    def head_modules(self) -> Sequence[nn.Module]:
        raise NotImplementedError

    def forward_maps(self, spec: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Spectrogram ``(N, [H,] F, T)`` → logits and tap maps ``(N, C, F', T')``."""
        raise NotImplementedError

    def forward(self, x: Tensor, *, is_spectrogram: bool = False) -> StudentOutput:
        """``x``: waveforms ``(N, L)`` at :attr:`sample_rate`, or — with
        ``is_spectrogram=True`` — the output of :attr:`frontend` (front-end bypassed)."""
        if is_spectrogram:
            spec = x
            if spec.shape[-1] < self.min_frames:  # pad with the quietest value present
                spec = F.pad(spec, (0, self.min_frames - spec.shape[-1]), value=float(spec.min()))
        else:
            if x.shape[-1] < self.min_samples:  # shorter than one output frame: add silence
                x = F.pad(x, (0, self.min_samples - x.shape[-1]))
            spec = self.frontend(x)
        logits, maps = self.forward_maps(spec)
        features = [m.mean(dim=2).transpose(1, 2) for m in maps]
        times = [
            stride_frame_times(f.shape[1], stride, self.hop_seconds)
            for f, stride in zip(features, self.tap_strides, strict=True)
        ]
        return StudentOutput(logits, features, times)

    def num_parameters(self, backbone_only: bool = True) -> int:
        """Trainable parameters; ``backbone_only`` leaves out the classification head (the
        papers' Table 2 convention, so counts do not depend on the number of classes)."""
        total = sum(p.numel() for p in self.parameters() if p.requires_grad)
        if not backbone_only:
            return total
        head = sum(p.numel() for m in self.head_modules() for p in m.parameters())
        return total - head

    def example_spectrogram(self, batch_size: int, num_frames: int) -> Tensor:
        """Random backbone input of the Table 2 protocol shape (bins × frames)."""
        shape = [batch_size, self.spectrogram_bins, num_frames]
        if self.spectrogram_channels != 1:
            shape.insert(1, self.spectrogram_channels)
        return torch.randn(*shape)


StudentFactory = Callable[..., Student]


class StudentInfo(NamedTuple):
    """Registry entry: the factory ``(num_classes, **kw) -> Student``, a one-line
    description, the paper's backbone parameter count (millions) and its source;
    ``log_mel``: the student has a :class:`east.features.LogMelFrontend` that its factory
    configures with ``frontend={...}`` (SpecAugment widths go there)."""

    name: str
    factory: StudentFactory
    description: str
    paper_params_m: float
    paper: str
    log_mel: bool = True


STUDENTS: dict[str, StudentInfo] = {}


def register_student(
    name: str, description: str, paper_params_m: float, paper: str, log_mel: bool = True
) -> Callable[[StudentFactory], StudentFactory]:
    """Decorator adding a student factory to the registry under ``name``."""

    def wrap(factory: StudentFactory) -> StudentFactory:
        if name in STUDENTS:
            raise ValueError(f"student {name!r} registered twice")
        STUDENTS[name] = StudentInfo(name, factory, description, paper_params_m, paper, log_mel)
        return factory

    return wrap
