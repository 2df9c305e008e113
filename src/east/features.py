"""Device-side front-ends: batched log-mel spectrograms from waveforms, SpecAugment-style
masking and mixup.

Everything here runs on the training device inside the student (``student.frontend``), so the
data loader only moves raw waveforms. No torchaudio: the STFT is ``torch.stft`` and the mel
filter banks are built here, in three flavours:

* ``"kaldi"`` — triangles that are linear on the mel axis (``1127·ln(1 + f/700)``), no
  Nyquist bin weight; what the EAsT reference code uses for CP-ResNet / Mobile FCN
  (``torchaudio.compliance.kaldi.get_mel_banks``).
* ``"htk"`` — triangles linear in Hz between HTK-mel spaced edges, unnormalised; equal to
  ``librosa.filters.mel(htk=True, norm=None)`` and to torchaudio's ``MelSpectrogram`` default,
  which the sota-music-tagging students (paper 2) use.
* ``"slaney"`` — librosa's default (Slaney mel scale, area normalisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

MelScale = Literal["kaldi", "htk", "slaney"]

__all__ = [
    "FRONTENDS",
    "FrontendConfig",
    "LogMelFrontend",
    "apply_mixup",
    "frontend_for",
    "mask_along_axis",
    "mel_filterbank",
    "mixup",
    "sample_mixup",
    "spec_augment",
    "stride_frame_times",
]


# --------------------------------------------------------------------------- mel scales
def _hz_to_mel(f: np.ndarray, scale: MelScale) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if scale in ("kaldi", "htk"):
        # 1127·ln(1 + f/700) == 2595·log10(1 + f/700): the same HTK scale.
        return 1127.0 * np.log1p(f / 700.0)
    # Slaney: linear below 1 kHz, logarithmic above.
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(
        f >= min_log_hz,
        min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep,
        f / f_sp,
    )


def _mel_to_hz(m: np.ndarray, scale: MelScale) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if scale in ("kaldi", "htk"):
        return 700.0 * np.expm1(m / 1127.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: MelScale = "htk",
    norm: Literal["slaney"] | None = None,
) -> np.ndarray:
    """Mel filter bank of shape ``(n_mels, n_fft // 2 + 1)`` (float64) applied to a power STFT.

    ``scale="htk", norm=None`` reproduces ``librosa.filters.mel(htk=True, norm=None)``;
    ``scale="slaney", norm="slaney"`` is librosa's default; ``scale="kaldi"`` is Kaldi's
    mel-linear triangles with a zero weight on the Nyquist bin.
    """
    f_max = sample_rate / 2 if f_max is None else float(f_max)
    if not 0 <= f_min < f_max <= sample_rate / 2 + 1e-6:
        raise ValueError(f"need 0 <= f_min < f_max <= sr/2, got {f_min}, {f_max}")
    n_bins = n_fft // 2 + 1
    fft_freqs = np.arange(n_bins, dtype=np.float64) * sample_rate / n_fft
    mel_edges = np.linspace(_hz_to_mel(f_min, scale), _hz_to_mel(f_max, scale), n_mels + 2)
    if scale == "kaldi":
        # Triangles are linear in mel; Kaldi uses n_fft/2 bins (no Nyquist).
        bin_mels = _hz_to_mel(fft_freqs, "kaldi")
        left, center, right = mel_edges[:-2, None], mel_edges[1:-1, None], mel_edges[2:, None]
        up = (bin_mels[None, :] - left) / (center - left)
        down = (right - bin_mels[None, :]) / (right - center)
        weights = np.maximum(0.0, np.minimum(up, down))
        weights[:, -1] = 0.0
    else:
        hz_edges = _mel_to_hz(mel_edges, scale)
        widths = np.diff(hz_edges)
        ramps = hz_edges[:, None] - fft_freqs[None, :]
        lower = -ramps[:-2] / widths[:-1, None]
        upper = ramps[2:] / widths[1:, None]
        weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        hz_edges = _mel_to_hz(mel_edges, scale)
        weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    elif norm is not None:
        raise ValueError(f"unknown mel norm {norm!r}")
    return weights


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class FrontendConfig:
    """Everything that defines a student's log-mel input.

    ``log="log"`` is ``ln(mel + log_eps)`` (EAsT reference); ``log="db"`` is
    ``10·log10(max(mel, amin))`` (torchaudio ``AmplitudeToDB`` as used by paper 2's students).
    """

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    f_min: float
    f_max: float
    mel_scale: MelScale = "htk"
    mel_norm: Literal["slaney"] | None = None
    periodic_window: bool = True
    preemphasis: float | None = None
    log: Literal["log", "db"] = "db"
    log_eps: float = 1e-5
    amin: float = 1e-10
    normalize_mean: float = 0.0
    normalize_std: float = 1.0
    # training-only augmentation (0 = off)
    fmin_aug_range: float = 0.0
    fmax_aug_range: float = 0.0
    freq_mask: int = 0
    time_mask: int = 0

    @property
    def hop_seconds(self) -> float:
        return self.hop_length / self.sample_rate


# DESIGN §5. CP-ResNet / Mobile FCN follow the EAsT reference featurizer (pre-emphasis 0.97,
# Hann window 800 zero-padded to 1024, non-periodic, kaldi mel banks, ln(x + 1e-5),
# (x + 3.7) / 3.1). The OpenMIC config also jitters the mel range and applies SpecAugment.
FRONTENDS: dict[str, FrontendConfig] = {
    "cp_resnet": FrontendConfig(
        sample_rate=32000,
        n_fft=1024,
        win_length=800,
        hop_length=320,
        n_mels=128,
        f_min=0.0,
        f_max=16000.0,
        mel_scale="kaldi",
        periodic_window=False,
        preemphasis=0.97,
        log="log",
        normalize_mean=-3.7,
        normalize_std=3.1,
        fmin_aug_range=20.0,
        fmax_aug_range=2000.0,
        freq_mask=48,
        time_mask=192,
    ),
    "mobile_fcn": FrontendConfig(
        sample_rate=16000,
        n_fft=1024,
        win_length=800,
        hop_length=320,
        n_mels=96,
        f_min=0.0,
        f_max=8000.0,
        mel_scale="kaldi",
        periodic_window=False,
        preemphasis=0.97,
        log="log",
        normalize_mean=-3.7,
        normalize_std=3.1,
    ),
    # sota-music-tagging-models: torchaudio MelSpectrogram(16 kHz, n_fft 512, hop 256,
    # 0–8 kHz, 128 mel, HTK scale, no norm) + AmplitudeToDB; the model's BatchNorm2d(1)
    # does the normalisation.
    "short_chunk_cnn": FrontendConfig(
        sample_rate=16000,
        n_fft=512,
        win_length=512,
        hop_length=256,
        n_mels=128,
        f_min=0.0,
        f_max=8000.0,
        mel_scale="htk",
        periodic_window=True,
        log="db",
    ),
}


def frontend_for(name: str, **overrides: object) -> LogMelFrontend:
    """The log-mel front-end of student ``name`` with optional field overrides."""
    try:
        config = FRONTENDS[name]
    except KeyError:
        raise ValueError(f"no front-end preset {name!r}; known: {sorted(FRONTENDS)}") from None
    return LogMelFrontend(replace(config, **overrides))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- STFT helpers
def num_stft_frames(num_samples: int, hop_length: int) -> int:
    """Frames of a centred ``torch.stft`` over ``num_samples`` samples."""
    return 1 + num_samples // hop_length


def stride_frame_times(num_frames: int, stride: int, hop_seconds: float) -> Tensor:
    """``(num_frames, 2)`` start/end seconds of frames that each pool ``stride`` input frames.

    Spectrogram frame ``t`` is attributed to ``[t·hop, (t+1)·hop)``; a feature-map frame ``j``
    after a total time stride ``S`` covers input frames ``jS … (j+1)S − 1``.
    """
    step = stride * hop_seconds
    starts = torch.arange(num_frames, dtype=torch.float64) * step
    return torch.stack([starts, starts + step], dim=1)


class LogMelFrontend(nn.Module):
    """Waveforms ``(N, L)`` → normalised log-mel spectrograms ``(N, n_mels, T)``.

    In training mode the mel range jitter and SpecAugment masks of the config are applied
    (masks are drawn per example, in the log domain before normalisation, as the reference
    featurizer does); in eval mode the output is deterministic.
    """

    def __init__(self, config: FrontendConfig) -> None:
        super().__init__()
        self.config = config
        self.sample_rate = config.sample_rate
        window = torch.hann_window(
            config.win_length, periodic=config.periodic_window, dtype=torch.float64
        )
        self.register_buffer("window", window, persistent=False)
        bank = mel_filterbank(
            config.sample_rate,
            config.n_fft,
            config.n_mels,
            config.f_min,
            config.f_max,
            config.mel_scale,
            config.mel_norm,
        )
        # float64 so double-precision input gets an exact bank; cast to the input dtype in use
        self.register_buffer("mel_bank", torch.from_numpy(bank), persistent=False)
        self.conv_stft = False  # see use_conv_stft
        self.jitter_per_clip = False  # training: one mel-range draw per clip, not per batch

    def use_conv_stft(self) -> LogMelFrontend:
        """Export mode for ONNX, which has no complex tensors: the power STFT becomes a strided
        conv1d with windowed DFT kernels (the numbers of ``torch.stft(center=True, reflect)`` up
        to float error). Returns ``self``; a front-end stays in this mode."""
        cfg = self.config
        n_fft, win_length = int(cfg.n_fft), int(cfg.win_length)
        window = self.window.detach().to(torch.float64)
        left = (n_fft - win_length) // 2
        full = torch.zeros(n_fft, dtype=torch.float64)
        full[left : left + window.numel()] = window
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
        n = torch.arange(n_fft, dtype=torch.float64)[None, :]
        angle = 2 * math.pi * k * n / n_fft
        kernels = torch.cat([torch.cos(angle) * full, -torch.sin(angle) * full])[:, None, :]
        self.register_buffer("_dft_kernels", kernels.float(), persistent=False)
        self.conv_stft = True
        return self

    @property
    def hop_seconds(self) -> float:
        return self.config.hop_seconds

    def num_frames(self, num_samples: int) -> int:
        """Spectrogram frames produced for a waveform of ``num_samples`` samples."""
        if self.config.preemphasis is not None:
            num_samples -= 1  # the pre-emphasis filter is a 'valid' 2-tap convolution
        return num_stft_frames(num_samples, self.config.hop_length)

    def frame_times(self, num_samples: int) -> Tensor:
        """``(T, 2)`` start/end seconds of the spectrogram frames of ``num_samples`` samples."""
        return stride_frame_times(self.num_frames(num_samples), 1, self.hop_seconds)

    def power_spectrogram(self, waveform: Tensor) -> Tensor:
        """``(N, L)`` → power STFT ``(N, n_fft // 2 + 1, T)`` (after pre-emphasis)."""
        cfg = self.config
        x = waveform
        if cfg.preemphasis is not None:
            x = x[:, 1:] - cfg.preemphasis * x[:, :-1]
        if self.conv_stft:
            n_fft, bins = cfg.n_fft, cfg.n_fft // 2 + 1
            x = torch.nn.functional.pad(x[:, None, :], (n_fft // 2, n_fft // 2), mode="reflect")
            spec = torch.nn.functional.conv1d(x, self._dft_kernels, stride=cfg.hop_length)
            return spec[:, :bins].square() + spec[:, bins:].square()
        spec = torch.stft(
            x,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            window=self.window.to(x.dtype),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        return spec.real.square() + spec.imag.square()

    def _training_bank(self, dtype: torch.dtype, device: torch.device, n: int) -> Tensor:
        # Mel-range jitter (reference: fmin + U{0..19} Hz, fmax − U{0..1999} Hz): one draw per
        # batch, ``(n_mels, bins)``, or with ``jitter_per_clip`` one per clip, ``(n, n_mels,
        # bins)`` — the reference featurizes (and so jitters) every clip on its own.
        cfg = self.config
        banks = []
        for _ in range(n if self.jitter_per_clip else 1):
            f_min = cfg.f_min + (
                int(torch.randint(0, int(cfg.fmin_aug_range), ())) if cfg.fmin_aug_range > 0 else 0
            )
            f_max = cfg.f_max - (
                int(torch.randint(0, int(cfg.fmax_aug_range), ())) if cfg.fmax_aug_range > 0 else 0
            )
            banks.append(
                mel_filterbank(
                    cfg.sample_rate,
                    cfg.n_fft,
                    cfg.n_mels,
                    f_min,
                    f_max,
                    cfg.mel_scale,
                    cfg.mel_norm,
                )
            )
        bank = np.stack(banks) if self.jitter_per_clip else banks[0]
        return torch.from_numpy(bank).to(device=device, dtype=dtype)

    def forward(self, waveform: Tensor) -> Tensor:
        cfg = self.config
        if waveform.dim() != 2:
            raise ValueError(f"expected waveforms (N, L), got shape {tuple(waveform.shape)}")
        with torch.no_grad():  # no parameters here; keeps the STFT out of autograd
            power = self.power_spectrogram(waveform)
            jitter = self.training and (cfg.fmin_aug_range > 0 or cfg.fmax_aug_range > 0)
            bank = (
                self._training_bank(power.dtype, power.device, power.shape[0])
                if jitter
                else self.mel_bank.to(power.dtype)
            )
            mel = torch.matmul(bank, power)
            if cfg.log == "log":
                mel = torch.log(mel + cfg.log_eps)
            else:
                mel = 10.0 * torch.log10(torch.clamp(mel, min=cfg.amin))
            if self.training and (cfg.freq_mask > 0 or cfg.time_mask > 0):
                mel = spec_augment(mel, cfg.freq_mask, cfg.time_mask)
            return (mel - cfg.normalize_mean) / cfg.normalize_std


# --------------------------------------------------------------------------- SpecAugment
def mask_along_axis(
    spec: Tensor,
    max_width: int,
    axis: int,
    value: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One mask per example along ``axis`` (−2 frequency, −1 time) of ``(N, ..., F, T)``.

    Width ~ U[0, max_width), start ~ U[0, size − width) — torchaudio's ``iid_masks`` rule.
    Returns a new tensor.
    """
    if max_width <= 0:
        return spec
    size = spec.shape[axis]
    n = spec.shape[0]
    gen_device = generator.device if generator is not None else spec.device
    width = torch.rand(n, generator=generator, device=gen_device).to(spec.device) * min(
        max_width, size
    )
    start = torch.rand(n, generator=generator, device=gen_device).to(spec.device) * (size - width)
    width, start = width.floor(), start.floor()
    positions = torch.arange(size, device=spec.device, dtype=width.dtype)
    masked = (positions[None, :] >= start[:, None]) & (
        positions[None, :] < (start + width)[:, None]
    )
    shape = [n] + [1] * (spec.dim() - 1)
    shape[axis] = size
    return spec.masked_fill(masked.view(shape), value)


def spec_augment(
    spec: Tensor,
    freq_mask: int,
    time_mask: int,
    value: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One frequency mask (width < ``freq_mask``) and one time mask (< ``time_mask``) per
    example of a ``(N, ..., F, T)`` spectrogram."""
    spec = mask_along_axis(spec, freq_mask, -2, value, generator)
    return mask_along_axis(spec, time_mask, -1, value, generator)


# --------------------------------------------------------------------------- mixup
def sample_mixup(
    batch_size: int,
    alpha: float,
    rng: np.random.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Per-example coefficients ``lam ~ Beta(α, α)`` folded to ``max(lam, 1 − lam)`` (each
    example stays the dominant one, as in the reference) and a random partner permutation.

    Draws from ``rng`` when given, else from torch's global generator (``torch.manual_seed``).
    """
    if alpha <= 0:
        raise ValueError("mixup alpha must be > 0")
    if rng is not None:
        lam = torch.from_numpy(rng.beta(alpha, alpha, size=batch_size))
        perm = torch.from_numpy(rng.permutation(batch_size))
    else:
        beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
        lam = beta.sample((batch_size,)).double()
        perm = torch.randperm(batch_size)
    lam = torch.maximum(lam, 1 - lam)
    return lam.to(device), perm.to(device)


def apply_mixup(tensors: Sequence[Tensor | None], lam: Tensor, perm: Tensor) -> tuple:
    """Mix every tensor with its partner ``x[perm]`` using one coefficient per example.

    float → ``lam·x + (1 − lam)·x[perm]`` (waveforms, spectrograms, soft labels, embeddings);
    bool → ``x | x[perm]`` (label masks: known in either clip, as the reference);
    integer → ``min(x, x[perm])`` (valid-frame counts: valid where both are). ``None`` passes.
    """
    out = []
    for x in tensors:
        if x is None:
            out.append(None)
            continue
        partner = x[perm.to(x.device)]
        if x.dtype == torch.bool:
            out.append(x | partner)
        elif not torch.is_floating_point(x):
            out.append(torch.minimum(x, partner))
        else:
            w = lam.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
            out.append(w * x + (1 - w) * partner)
    return tuple(out)


def mixup(
    *tensors: Tensor | None,
    alpha: float,
    rng: np.random.Generator | None = None,
) -> tuple:
    """Mix any number of batch-first tensors (waveforms or spectrograms, labels, masks,
    teacher embeddings) with one shared coefficient and partner per example.

    Returns the mixed tensors in the same order."""
    first = next(t for t in tensors if t is not None)
    lam, perm = sample_mixup(first.shape[0], alpha, rng, first.device)
    return apply_mixup(tensors, lam, perm)
