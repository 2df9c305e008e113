"""Harmonic CNN (Won et al. 2020, "Data-driven harmonic filters for audio representation
learning"; paper 2's HCNN student).

Front-end (:class:`HarmonicFrontend`, learnable): a power STFT (16 kHz, n_fft 512, hop 256,
periodic Hann) passed through triangular band-pass filters centred on MIDI-spaced
frequencies (C1 up to the note of sr / (2·H), two bands per semitone) and their harmonics
1…H (H = 6), with bandwidth ``(0.1079·f + 24.7) / Q`` where Q is learned; → dB → a
(H, bands, T) tensor normalised by ``BatchNorm2d(H)``. Backbone: conv(H→128) + six more blocks
(residual 3×3 blocks with max-pooling), global max pooling over time, dense → BN → ReLU →
dropout → dense. Trained on 5 s chunks. Taps after layers 5, 6, 7 (256 ch each; time strides
32/96/288 frames).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from east.features import num_stft_frames, stride_frame_times
from east.train.students.base import Student, register_student
from east.train.students.short_chunk_cnn import ClassifierHead, global_max_pool

__all__ = [
    "CHUNK_SAMPLES",
    "ConvBlock",
    "HarmonicCNN",
    "HarmonicFrontend",
    "ResPoolBlock",
    "create_harmonic_cnn",
    "harmonic_centres",
]

#: training chunk of the harmonic CNN (5 s at 16 kHz)
CHUNK_SAMPLES = 80000


def _hz_to_midi(hz: np.ndarray | float) -> np.ndarray:
    return 12.0 * (np.log2(hz) - math.log2(440.0)) + 69.0


def _midi_to_hz(midi: np.ndarray) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi) - 69.0) / 12.0)


def harmonic_centres(
    sample_rate: int, n_harmonic: int, semitone_scale: int
) -> tuple[np.ndarray, int]:
    """Centre frequencies (H·bands,) — harmonic-major — and the number of bands per harmonic.

    Bands are equally spaced in MIDI from C1 (24) to the note nearest to sr / (2·H), with
    ``semitone_scale`` bands per semitone (so the H-th harmonic stays below Nyquist).
    """
    low = 24  # C1
    high = int(np.round(_hz_to_midi(sample_rate / (2 * n_harmonic))))
    bands = (high - low) * semitone_scale
    midi = np.linspace(low, high, bands + 1)[:-1]
    f0 = _midi_to_hz(midi)
    return np.concatenate([f0 * (h + 1) for h in range(n_harmonic)]), bands


class HarmonicFrontend(nn.Module):
    """Waveforms ``(N, L)`` → harmonic spectrogram ``(N, H, bands, T)`` in dB (not normalised;
    the student's ``BatchNorm2d(H)`` does that). ``bw_q`` is the learnable quality factor."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        n_harmonic: int = 6,
        semitone_scale: int = 2,
        bw_q: float = 1.0,
        learn_bw: bool = True,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = n_fft // 2
        self.n_harmonic = n_harmonic
        centres, self.bands = harmonic_centres(sample_rate, n_harmonic, semitone_scale)
        self.register_buffer(
            "centres", torch.tensor(centres, dtype=torch.float32), persistent=False
        )
        self.register_buffer(
            "window", torch.hann_window(n_fft, dtype=torch.float64), persistent=False
        )
        fft_freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
        self.register_buffer("fft_freqs", fft_freqs, persistent=False)
        q = torch.tensor([float(bw_q)])
        if learn_bw:
            self.bw_q = nn.Parameter(q)
        else:
            self.register_buffer("bw_q", q)

    @property
    def hop_seconds(self) -> float:
        return self.hop_length / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        return num_stft_frames(num_samples, self.hop_length)

    def frame_times(self, num_samples: int) -> Tensor:
        return stride_frame_times(self.num_frames(num_samples), 1, self.hop_seconds)

    def filterbank(self) -> Tensor:
        """``(n_fft // 2 + 1, H·bands)`` triangles ``max(0, 1 − 2|f − f_c| / bw)``."""
        bw = (0.1079 * self.centres + 24.7) / self.bw_q
        distance = (self.fft_freqs[:, None] - self.centres[None, :]).abs()
        return torch.clamp(1.0 - 2.0 * distance / bw[None, :], min=0.0)

    def forward(self, waveform: Tensor) -> Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"expected waveforms (N, L), got shape {tuple(waveform.shape)}")
        with torch.no_grad():
            spec = torch.stft(
                waveform,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                window=self.window.to(waveform.dtype),
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )
            power = spec.real.square() + spec.imag.square()  # (N, bins, T)
        bank = self.filterbank().to(power.dtype)  # gradient flows into bw_q
        harmonic = torch.matmul(power.transpose(1, 2), bank).transpose(1, 2)
        n, _, t = harmonic.shape
        harmonic = harmonic.reshape(n, self.n_harmonic, self.bands, t)
        return 10.0 * torch.log10(torch.clamp(harmonic, min=1e-10))


class ConvBlock(nn.Module):
    """conv3×3 → BN → ReLU → max-pool."""

    def __init__(self, c_in: int, c_out: int, pool: int | tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)
        self.pool = nn.MaxPool2d(pool)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x))))


class ResPoolBlock(nn.Module):
    """Identity-shortcut residual block (two 3×3 conv + BN), ReLU, then max-pool."""

    def __init__(self, channels: int, pool: int | tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.pool = nn.MaxPool2d(pool)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.pool(torch.relu(x + y))


class HarmonicCNN(Student):
    name = "harmonic_cnn"

    def __init__(
        self,
        num_classes: int,
        n_channels: int = 128,
        n_harmonic: int = 6,
        semitone_scale: int = 2,
        learn_bw: bool = True,
    ) -> None:
        super().__init__(num_classes)
        self.frontend = HarmonicFrontend(
            n_harmonic=n_harmonic, semitone_scale=semitone_scale, learn_bw=learn_bw
        )
        self.spectrogram_channels = n_harmonic
        self.spectrogram_bins = self.frontend.bands
        self.input_bn = nn.BatchNorm2d(n_harmonic)
        c = n_channels
        self.layers = nn.ModuleList(
            [
                ConvBlock(n_harmonic, c, 2),
                ResPoolBlock(c, 2),
                ResPoolBlock(c, 2),
                ResPoolBlock(c, 2),
                ConvBlock(c, 2 * c, 2),
                ResPoolBlock(2 * c, (2, 3)),
                ResPoolBlock(2 * c, (2, 3)),
            ]
        )
        self.head = ClassifierHead(2 * c, num_classes)
        self.tap_layers = (5, 6, 7)
        self.feature_dims = [2 * c, 2 * c, 2 * c]
        self.tap_strides = [32, 96, 288]

    def head_modules(self) -> Sequence[nn.Module]:
        return [self.head]

    def forward_maps(self, spec: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.input_bn(spec)
        maps = []
        for index, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if index in self.tap_layers:
                maps.append(x)
        return self.head(global_max_pool(x)), maps


@register_student(
    "harmonic_cnn",
    "Harmonic CNN with learnable harmonic filters (paper 2), 16 kHz, 5 s chunks",
    paper_params_m=3.6,
    paper="paper 2, Table 2",
    log_mel=False,  # learnable harmonic filters, not a log-mel front-end
)
def create_harmonic_cnn(num_classes: int, **kwargs: object) -> HarmonicCNN:
    return HarmonicCNN(num_classes, **kwargs)  # type: ignore[arg-type]
