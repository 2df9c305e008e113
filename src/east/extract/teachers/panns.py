"""PANNs Cnn14 teachers (Kong et al., TASLP 2020) with the official AudioSet checkpoint.

The network is re-implemented here; ``panns_inference`` is only used by the parity tests and
must never be imported by product code (its import runs ``wget`` and writes ``~/panns_data``).
:class:`Cnn14` has exactly the state dict of the official checkpoint
``Cnn14_mAP=0.431.pth`` (key ``"model"``), including the torchlibrosa front-end stored as
weights: ``spectrogram_extractor.stft.conv_real/conv_imag`` (the Hann-windowed DFT as two
``Conv1d``) and ``logmel_extractor.melW`` (librosa's Slaney mel filters). The forward pass
uses those stored weights, so a loaded checkpoint runs exactly the official front-end.

Front-end (32 kHz mono): 1024-sample frames every 320 samples (10 ms), ``center=True`` with
reflect padding, so a clip of ``L`` samples has ``S = 1 + L // 320`` STFT frames; power
spectrum; 64 mel bands from 50 to 14 000 Hz; ``10 log10(max(mel, 1e-10))``. Then ``bn0`` per
mel band and six conv blocks (5 average-pools of 2 × 2 in time and frequency).

Two teachers share the network:

* ``panns`` — the clip-level 2048-d ``embedding`` of the official model: the feature map of
  the last block averaged over frequency, max + mean over time, ``relu(fc1(.))``. One frame
  per clip (``T = 1``) spanning ``[0, longest clip of the batch]``.
* ``panns-frames`` — the 2048-d features *before* that temporal pooling (last block averaged
  over frequency): one frame per 32 STFT frames, i.e. every 0.32 s, ``T = S // 32``. Frame
  ``t`` is nominally ``[0.32 t, 0.32 t + 0.32)`` s (its STFT frames are centred at
  ``0.32 t … 0.32 t + 0.31`` s; the receptive field of the convolutions is wider). 1 s / 10 s
  / 29.1 s clips give 3 / 31 / 90 frames.

**The last partial frame is dropped**: average pooling floors, so STFT frames that do not
fill a group of 32 are discarded — in both teachers, exactly as the official model does.
Clips shorter than 32 STFT frames (9 920 samples = 0.31 s, where the official model fails)
are zero-padded to that length. Clips of different lengths in one batch are run in groups of
equal length, so every clip's embedding equals the official one for that clip alone (zero
padding would change the max/mean pooling).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from east.extract.teachers.base import (
    Teacher,
    TeacherInfo,
    TeacherOutput,
    WeightFile,
    build_teacher,
    frame_times,
)
from east.extract.teachers.registry import register_teacher

__all__ = [
    "AMIN",
    "CNN14_WEIGHTS",
    "EMBEDDING_DIM",
    "FRAMES_INFO",
    "F_MAX",
    "F_MIN",
    "HOP",
    "INFO",
    "MIN_SAMPLES",
    "N_FFT",
    "N_MELS",
    "SAMPLE_RATE",
    "Cnn14",
    "ConvBlock",
    "LogmelFilterBank",
    "PannsTeacher",
    "Spectrogram",
    "num_output_frames",
    "panns",
    "panns_frames",
]

SAMPLE_RATE = 32_000
N_FFT = 1024
HOP = 320
N_MELS = 64
F_MIN = 50.0
F_MAX = 14_000.0
AMIN = 1e-10
CLASSES = 527
EMBEDDING_DIM = 2048
TIME_REDUCTION = 32  # five 2x average pools in time
MIN_SAMPLES = (TIME_REDUCTION - 1) * HOP  # 9 920: the shortest clip with one output frame
FRAME_SECONDS = TIME_REDUCTION * HOP / SAMPLE_RATE  # 0.32

CNN14_WEIGHTS = WeightFile(
    filename="Cnn14_mAP=0.431.pth",
    url="https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth?download=1",
    # Zenodo publishes the md5; the sha256 and size are pinned with the same values by several
    # independent public projects that load this file (see docs/teachers.md).
    sha256="0dc499e40e9761ef5ea061ffc77697697f277f6a960894903df3ada000e34b31",
    size=327_428_481,
    md5="541141fa2ee191a88f24a3219fff024e",
)

_DESCRIPTION = "PANNs Cnn14 (AudioSet, mAP .431)"
_LICENCE = "CC BY 4.0 (Zenodo record 3987831 weights); code MIT (audioset_tagging_cnn)"

INFO = TeacherInfo(
    name="panns",
    family="panns",
    sample_rate=SAMPLE_RATE,
    embedding_dim=EMBEDDING_DIM,
    window_s=None,
    hop_s=None,
    description=_DESCRIPTION + ", clip-level 2048-d embedding (T = 1)",
    licence=_LICENCE,
    weights=(CNN14_WEIGHTS,),
)
FRAMES_INFO = TeacherInfo(
    name="panns-frames",
    family="panns",
    sample_rate=SAMPLE_RATE,
    embedding_dim=EMBEDDING_DIM,
    window_s=FRAME_SECONDS,
    hop_s=FRAME_SECONDS,
    description=_DESCRIPTION + ", 2048-d last-block features every 0.32 s (before pooling)",
    licence=_LICENCE,
    weights=(CNN14_WEIGHTS,),
)


# --------------------------------------------------------------------------- front-end


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    # Slaney's scale (librosa's default): linear below 1 kHz, logarithmic above.
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


def slaney_mel_filters(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = F_MIN,
    fmax: float = F_MAX,
) -> np.ndarray:
    """``(n_fft // 2 + 1, n_mels)`` float32 Slaney mel filters with Slaney (area) norm.

    What ``librosa.filters.mel`` (defaults ``htk=False, norm="slaney"``) returns, transposed:
    the values torchlibrosa stores as ``logmel_extractor.melW``.
    """
    fft_freqs = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    mel_edges = np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2)
    edges_hz = _mel_to_hz_slaney(mel_edges)
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.T.astype(np.float32)


def windowed_dft(n_fft: int = N_FFT) -> tuple[Tensor, Tensor]:
    """``(n_fft // 2 + 1, 1, n_fft)`` real and imaginary Hann-windowed DFT kernels.

    The values torchlibrosa stores as ``conv_real`` / ``conv_imag``: row ``k`` is
    ``hann(n) · exp(-2πi k n / n_fft)`` with a periodic Hann window.
    """
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    angle = 2 * np.pi * k * n / n_fft
    real = torch.from_numpy((np.cos(angle) * window).astype(np.float32))
    imag = torch.from_numpy((-np.sin(angle) * window).astype(np.float32))
    return real[:, None, :], imag[:, None, :]


class _STFT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        bins = N_FFT // 2 + 1
        self.conv_real = nn.Conv1d(1, bins, N_FFT, stride=HOP, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, N_FFT, stride=HOP, bias=False)
        real, imag = windowed_dft()
        with torch.no_grad():
            self.conv_real.weight.copy_(real)
            self.conv_imag.weight.copy_(imag)


class Spectrogram(nn.Module):
    """``(B, L)`` → ``(B, 1, S, 513)`` power spectrogram, torchlibrosa's layout and keys."""

    def __init__(self) -> None:
        super().__init__()
        self.stft = _STFT()

    def forward(self, waveforms: Tensor) -> Tensor:
        x = F.pad(waveforms[:, None, :], (N_FFT // 2, N_FFT // 2), mode="reflect")
        real = self.stft.conv_real(x)  # (B, 513, S)
        imag = self.stft.conv_imag(x)
        return (real**2 + imag**2).transpose(1, 2)[:, None]


class LogmelFilterBank(nn.Module):
    """Power spectrogram → ``10 log10(max(mel, 1e-10))`` (``ref = 1``, no ``top_db``)."""

    def __init__(self) -> None:
        super().__init__()
        self.melW = nn.Parameter(torch.from_numpy(slaney_mel_filters()))

    def forward(self, power: Tensor) -> Tensor:
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=AMIN))


class ConvBlock(nn.Module):
    """Two 3 × 3 conv + BN + ReLU, then 2 × 2 (or 1 × 1) average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor, pool: int) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool) if pool > 1 else x


class Cnn14(nn.Module):
    """Cnn14 for inference; state dict identical to the official checkpoint's ``"model"``."""

    def __init__(self) -> None:
        super().__init__()
        self.spectrogram_extractor = Spectrogram()
        self.logmel_extractor = LogmelFilterBank()
        self.bn0 = nn.BatchNorm2d(N_MELS)
        widths = (1, 64, 128, 256, 512, 1024, 2048)
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(2048, EMBEDDING_DIM)
        self.fc_audioset = nn.Linear(2048, CLASSES)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation (Xavier-uniform convs/linears, zero bias, unit BN)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def log_mel(self, waveforms: Tensor) -> Tensor:
        """``(B, L)`` → ``(B, 1, S, 64)`` log-mel, always in float32 (fp16 power overflows)."""
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            power = self.spectrogram_extractor(waveforms.float())
            return self.logmel_extractor(power)

    def frame_features(self, waveforms: Tensor) -> Tensor:
        """``(B, L)`` → ``(B, S // 32, 2048)``: last block averaged over frequency."""
        x = self.log_mel(waveforms)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalise per mel band
        for i in range(1, 6):
            x = getattr(self, f"conv_block{i}")(x, pool=2)
        x = self.conv_block6(x, pool=1)
        return x.mean(dim=3).transpose(1, 2)

    def clip_embedding(self, frames: Tensor) -> Tensor:
        """``(B, T, 2048)`` frame features → ``(B, 2048)`` official clip ``embedding``."""
        pooled = frames.amax(dim=1) + frames.mean(dim=1)
        return F.relu(self.fc1(pooled))

    def forward(self, waveforms: Tensor) -> Tensor:
        return self.clip_embedding(self.frame_features(waveforms))

    def logits(self, waveforms: Tensor) -> Tensor:
        """527 AudioSet logits (the official ``clipwise_output`` is their sigmoid)."""
        return self.fc_audioset(self.forward(waveforms))


# --------------------------------------------------------------------------- teachers


def num_output_frames(lengths: Tensor) -> Tensor:
    """Frames of ``panns-frames`` per clip of ``lengths`` samples (≥ 1 for any clip)."""
    lengths = torch.clamp(lengths.to(torch.int64), min=MIN_SAMPLES)
    return torch.div(1 + torch.div(lengths, HOP, rounding_mode="floor"), TIME_REDUCTION,
                     rounding_mode="floor")  # fmt: skip


class PannsTeacher(Teacher):
    """Cnn14 clip-level embedding (``frame_level=False``) or its 0.32 s frame features."""

    def __init__(self, frame_level: bool = False, net: Cnn14 | None = None) -> None:
        super().__init__()
        self.frame_level = frame_level
        self.info = FRAMES_INFO if frame_level else INFO
        self.net = net if net is not None else Cnn14()  # a net may be shared by both teachers

    @torch.inference_mode()
    def embed(self, waveforms: Tensor, lengths: Tensor) -> TeacherOutput:
        if waveforms.ndim != 2:
            raise ValueError(f"expected waveforms of shape (B, L), got {tuple(waveforms.shape)}")
        device = self.device
        waveforms = waveforms.to(device)
        lengths = lengths.to(torch.int64).cpu()
        padded = torch.clamp(lengths, min=MIN_SAMPLES)
        if waveforms.shape[1] < int(padded.max()):
            waveforms = F.pad(waveforms, (0, int(padded.max()) - waveforms.shape[1]))
        frames = num_output_frames(lengths) if self.frame_level else torch.ones_like(lengths)
        total = int(frames.max())
        embeddings = torch.zeros((len(lengths), total, EMBEDDING_DIM), device=device)
        # Equal lengths run together: no clip is ever padded beyond its own length.
        for length in torch.unique(padded).tolist():
            rows = torch.nonzero(padded == length).flatten()
            clips = waveforms[rows.to(device), :length].float()
            real = lengths[rows].to(device)[:, None]
            inside = torch.arange(length, device=device) < real
            clips = torch.where(inside, clips, torch.zeros((), device=device))
            features = self.net.frame_features(clips)
            if self.frame_level:
                embeddings[rows.to(device), : features.shape[1]] = features.float()
            else:
                embeddings[rows.to(device), 0] = self.net.clip_embedding(features).float()
        if self.frame_level:
            times = frame_times(total, FRAME_SECONDS, FRAME_SECONDS)
        else:
            times = torch.tensor([[0.0, float(lengths.max()) / SAMPLE_RATE]], dtype=torch.float64)
        return TeacherOutput(embeddings=embeddings, num_frames=frames, frame_times=times)


def _build(weights: str | Path | None, device: str, frame_level: bool) -> Teacher:
    from east.extract.weights import resolve_weights

    name = FRAMES_INFO.name if frame_level else INFO.name
    return build_teacher(
        weights,
        device,
        net=Cnn14,
        teacher=lambda net, _: PannsTeacher(frame_level=frame_level, net=net),  # type: ignore[arg-type]
        files=lambda w: (resolve_weights(CNN14_WEIGHTS, w, teacher=name),),
        unwrap=("model",),  # the official file is {"model": state_dict, ...}
    )


@register_teacher(INFO)
def panns(weights: str | Path | None, device: str) -> Teacher:
    """Cnn14 clip-level embedding. ``weights``: ``None`` (pinned official file), a checkpoint
    path, or ``"random"`` (seeded official initialisation; the STFT and mel weights are the
    exact DFT and mel filters either way)."""
    return _build(weights, device, frame_level=False)


@register_teacher(FRAMES_INFO)
def panns_frames(weights: str | Path | None, device: str) -> Teacher:
    """Cnn14 frame features every 0.32 s; ``weights`` as for :func:`panns`."""
    return _build(weights, device, frame_level=True)
