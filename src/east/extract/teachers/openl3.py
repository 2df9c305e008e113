"""OpenL3 teacher: the music / mel128 / 512-d audio embedding (Cramer et al. 2019).

``openl3`` itself is TensorFlow and downloads its weights while installing, so the weights come
from ``torchopenl3``, a PyTorch port of the same Keras models; this module re-implements that
port's ``PytorchOpenl3`` network (same state-dict keys and shapes) in plain torch:

* front-end as kapre 0.1.4 computes it in the original model: the 1 s window (48000 samples) is
  zero-padded "same"-style (982 samples each side), a DFT as a strided convolution with the
  periodic-Hann-windowed cosine/sine kernels (n_fft 2048, hop 242 → 199 frames), power
  spectrum, a 128-band HTK mel filter bank (0–24 kHz, area-normalised), square root (magnitude
  mel), ``10·log10(max(x, 1e-10))``, minus the window's maximum, floored at −80 dB;
* VGG-like CNN: batch norm on the input, 4 blocks of two 3×3 convolutions (batch norm, ReLU;
  64, 128, 256, 512 channels) with 2×2 max pooling after the first three, a last 3×3 conv
  (``audio_embedding_layer``) and a (16, 24) max pool to 512 values.

The DFT kernels and the mel filter bank are buffers of the state dict: the weight file carries
the arrays the Keras model was trained with, and loading it overwrites the ones computed here.

Framing (``openl3``, the default): as ``openl3.get_audio_embedding(audio, sr, hop_size=0.96)``
with its default ``center=True`` (the call the EAsT authors used; ``torchopenl3`` frames the same
way): half a window of zeros (24000 samples) before the clip, zeros after it up to the end of
the last window that starts inside the padded clip, 1 s windows with a 0.96 s hop (46080
samples): ``T = 1 + ⌈(L + 24000 − 48000) / 46080⌉`` (11 for 10 s; 1 when ``L ≤ 24000``). Frame
``k`` is centred at ``0.96·k`` s and covers ``[0.96·k − 0.5, 0.96·k + 0.5)`` s (the first starts
at −0.5 s); the last partial window is kept, zero-padded.

``openl3-uncentred`` keeps east's earlier framing: frame ``k`` covers ``[0.96·k, 0.96·k + 1)``
s, only full windows (``T = 1 + ⌊(L − 48000) / 46080⌋``, 10 for 10 s), a clip shorter than 1 s
zero-padded to one window. Samples past a clip's length in a batch never matter (each clip is
framed as if alone).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from east.errors import WeightsError
from east.extract.teachers.base import (
    Teacher,
    TeacherInfo,
    TeacherOutput,
    WeightFile,
    build_teacher,
    cut_windows,
    frame_times,
)
from east.extract.teachers.registry import register_teacher

__all__ = [
    "CENTRE_PAD",
    "FRAMINGS",
    "HOP_SAMPLES",
    "N_FFT",
    "OPENL3_GIT_BLOB_SHA1",
    "OPENL3_INFO",
    "OPENL3_UNCENTRED_INFO",
    "OPENL3_WEIGHTS",
    "SAMPLE_RATE",
    "STFT_HOP",
    "WINDOW_SAMPLES",
    "KapreMelSpectrogram",
    "OpenL3Net",
    "OpenL3Teacher",
    "dft_kernels",
    "git_blob_sha1",
    "htk_mel_banks",
    "official_frame_count",
    "openl3",
    "openl3_uncentred",
    "resolve_openl3_weights",
]

SAMPLE_RATE = 48000
WINDOW_SAMPLES = 48000  # 1 s
HOP_SAMPLES = 46080  # 0.96 s, as in the paper
CENTRE_PAD = WINDOW_SAMPLES // 2  # openl3 center=True: int(frame_len / 2) zeros at the start
FRAMINGS = ("official", "uncentred")
N_FFT = 2048
STFT_HOP = 242

# torchopenl3 downloads ``.../torchopenl3-models/raw/master/<file>``; the URL below pins the
# commit. The repository publishes no sha256; the file content is pinned by its git blob id
# (sha1 of ``b"blob <size>\0" + content``) read from the repository tree at that commit.
OPENL3_COMMIT = "a5df8fd155993e1601590b19649e882a68f80186"
OPENL3_GIT_BLOB_SHA1 = "d77ec1cde7dc0098f02277dd70040451eead8e64"
OPENL3_WEIGHTS = WeightFile(
    filename="torchopenl3_mel128_music_512.pth.tar",
    url=(
        f"https://github.com/torchopenl3/torchopenl3-models/raw/{OPENL3_COMMIT}/"
        "torchopenl3_mel128_music_512.pth.tar"
    ),
    sha256="",  # not published: verified by git blob id, sha256 recorded when loaded
    note=f"no published sha256; verified by its git blob id {OPENL3_GIT_BLOB_SHA1}",
    git_blob_sha1=OPENL3_GIT_BLOB_SHA1,
)

OPENL3_INFO = TeacherInfo(
    name="openl3",
    family="openl3",
    sample_rate=SAMPLE_RATE,
    embedding_dim=512,
    window_s=WINDOW_SAMPLES / SAMPLE_RATE,
    hop_s=HOP_SAMPLES / SAMPLE_RATE,
    description="OpenL3 music/mel128/512 (torchopenl3 port of the Keras weights), 1 s windows",
    licence="MIT (openl3 models); Apache-2.0 (torchopenl3 port)",
    weights=(OPENL3_WEIGHTS,),
    framing="official",
)
OPENL3_UNCENTRED_INFO = dataclasses.replace(
    OPENL3_INFO,
    name="openl3-uncentred",
    description="OpenL3 as openl3, full 1 s windows from 0 s (east's earlier framing)",
    framing="uncentred",
)


# --------------------------------------------------------------------------- front-end


def dft_kernels(n_fft: int = N_FFT) -> tuple[Tensor, Tensor]:
    """kapre's windowed DFT kernels ``(n_fft // 2 + 1, 1, n_fft)``: real (cos) and imag (−sin)."""
    time = np.arange(n_fft)
    freqs = np.arange(n_fft // 2 + 1) * 2 * np.pi / n_fft
    window = (0.5 - 0.5 * np.cos(2 * np.pi * time / n_fft)).astype(np.float32)  # periodic Hann
    phase = freqs[:, None] * time[None, :]
    real = (np.cos(phase) * window).astype(np.float32)
    imag = (-np.sin(phase) * window).astype(np.float32)
    return torch.from_numpy(real)[:, None], torch.from_numpy(imag)[:, None]


def htk_mel_banks(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> Tensor:
    """HTK-scale triangular mel filters, area-normalised (``(n_mels, n_fft // 2 + 1)``).

    The filters the original Keras model stored (kapre called ``librosa.filters.mel`` with
    ``htk=True, norm=1``, which meant area normalisation — 2 / band width — in librosa < 0.8).
    """
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)

    def hz_to_mel(hz: float) -> float:
        return 2595.0 * math.log10(1.0 + hz / 700.0)

    mel_edges = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    hz_edges = 700.0 * (10.0 ** (mel_edges / 2595.0) - 1.0)
    widths = np.diff(hz_edges)
    offsets = hz_edges[:, None] - fft_freqs[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


class KapreMelSpectrogram(nn.Module):
    """kapre 0.1.4 ``Melspectrogram`` (as ported by torchopenl3): ``(N, L)`` → ``(N, 128, frames)`` dB.

    Buffer names match ``torchopenl3``'s ``CustomMelSTFT`` so the weight file loads into them.
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_fft: int = N_FFT,
        hop: int = STFT_HOP,
        n_mels: int = 128,
        input_samples: int = WINDOW_SAMPLES,
    ) -> None:
        super().__init__()
        self.hop = hop
        real, imag = dft_kernels(n_fft)
        self.register_buffer("dft_real_kernels", real)
        self.register_buffer("dft_imag_kernels", imag)
        self.register_buffer(
            "mel_basis", htk_mel_banks(sample_rate, n_fft, n_mels, 0.0, sample_rate // 2)
        )
        # Keras "same" padding for a strided conv over an input of input_samples.
        remainder = input_samples % hop
        total_pad = max(n_fft - (hop if remainder == 0 else remainder), 0)
        self.pad = (total_pad // 2, total_pad - total_pad // 2)

    def forward(self, waveforms: Tensor) -> Tensor:
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            x = F.pad(waveforms.float()[:, None], self.pad)
            real = F.conv1d(x, self.dft_real_kernels, stride=self.hop)
            imag = F.conv1d(x, self.dft_imag_kernels, stride=self.hop)
            power = real.pow(2) + imag.pow(2)  # (N, freq, frames)
            magnitude = torch.sqrt(torch.matmul(self.mel_basis, power))
            log10 = torch.tensor(math.log(10.0), dtype=torch.float32)
            decibel = 10.0 * torch.log(torch.clamp(magnitude, min=1e-10)) / log10
            decibel = decibel - decibel.amax(dim=(1, 2), keepdim=True)
            return torch.clamp(decibel, min=-80.0)


# --------------------------------------------------------------------------- network


class OpenL3Net(nn.Module):
    """``torchopenl3``'s ``PytorchOpenl3`` for mel128 / 512: ``(N, 48000)`` → ``(N, 512)``.

    Layer names follow the Keras model (``conv2d_1`` … ``batch_normalization_8``,
    ``audio_embedding_layer``) exactly as the weight file stores them.
    """

    channels = (64, 64, 128, 128, 256, 256, 512)

    def __init__(self) -> None:
        super().__init__()
        self.speclayer = KapreMelSpectrogram()
        self.batch_normalization_1 = nn.BatchNorm2d(1, eps=1e-3)
        in_channels = 1
        for index, out_channels in enumerate(self.channels, start=1):
            setattr(self, f"conv2d_{index}", nn.Conv2d(in_channels, out_channels, 3))
            setattr(
                self, f"batch_normalization_{index + 1}", nn.BatchNorm2d(out_channels, eps=1e-3)
            )
            in_channels = out_channels
        self.audio_embedding_layer = nn.Conv2d(512, 512, 3)

    def forward(self, waveforms: Tensor) -> Tensor:
        x = self.batch_normalization_1(self.speclayer(waveforms)[:, None])
        for index in range(1, len(self.channels) + 1):
            conv = getattr(self, f"conv2d_{index}")
            norm = getattr(self, f"batch_normalization_{index + 1}")
            x = F.relu(norm(conv(F.pad(x, (1, 1, 1, 1)))))
            if index in (2, 4, 6):  # pool after each pair of convolutions but the last
                x = F.max_pool2d(x, 2)
        x = self.audio_embedding_layer(F.pad(x, (1, 1, 1, 1)))  # (N, 512, 16, 24)
        x = F.max_pool2d(x, kernel_size=(16, 24))
        return x.flatten(1)


# --------------------------------------------------------------------------- teacher


def official_frame_count(lengths: Tensor) -> Tensor:
    """Windows per clip of openl3's ``center=True`` framing (``_pad_audio``'s arithmetic)."""
    padded = lengths.to(torch.int64) + CENTRE_PAD
    extra = torch.clamp(padded - WINDOW_SAMPLES, min=0)
    return 1 + torch.div(extra + HOP_SAMPLES - 1, HOP_SAMPLES, rounding_mode="floor")


class OpenL3Teacher(Teacher):
    """OpenL3 music/mel128/512 embeddings per 1 s window, 0.96 s hop (see module docstring)."""

    info = OPENL3_INFO

    def __init__(
        self, net: OpenL3Net | None = None, chunk_windows: int = 64, framing: str = "official"
    ) -> None:
        super().__init__()
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, not {framing!r}")
        self.info = OPENL3_INFO if framing == "official" else OPENL3_UNCENTRED_INFO
        self.net = net if net is not None else OpenL3Net()
        self.chunk_windows = chunk_windows  # windows per forward pass: bounds peak memory

    @property
    def centred(self) -> bool:
        return self.info.framing == "official"

    def embed(self, waveforms: Tensor, lengths: Tensor) -> TeacherOutput:
        if waveforms.ndim != 2:
            raise ValueError(f"expected waveforms of shape (B, L), got {tuple(waveforms.shape)}")
        device = self.device
        waveforms, lengths = waveforms.to(device), lengths.to(device=device, dtype=torch.int64)
        offset = 0
        if self.centred:
            # zeros before the clip and after its end; cut_windows then sees a padded clip
            # whose full windows are exactly openl3's
            inside = torch.arange(waveforms.shape[1], device=device) < lengths[:, None]
            waveforms = F.pad(torch.where(inside, waveforms, 0.0), (CENTRE_PAD, 0))
            lengths = WINDOW_SAMPLES + (official_frame_count(lengths) - 1) * HOP_SAMPLES
            offset = CENTRE_PAD
        windows, valid, frames = cut_windows(waveforms, lengths, WINDOW_SAMPLES, HOP_SAMPLES)
        outputs = [self.net(chunk).float() for chunk in windows.split(self.chunk_windows)]
        embeddings = torch.zeros(
            (*valid.shape, self.embedding_dim), dtype=torch.float32, device=device
        )
        embeddings[valid] = torch.cat(outputs)
        times = frame_times(valid.shape[1], self.info.window_s, self.info.hop_s)
        return TeacherOutput(
            embeddings=embeddings,
            num_frames=frames.cpu(),
            frame_times=times - offset / SAMPLE_RATE,
        )


def git_blob_sha1(path: str | Path) -> str:
    """Git's object id of a file's content: ``sha1(b"blob <size>\\0" + content)``."""
    path = Path(path)
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def resolve_openl3_weights(override: str | Path | None) -> Path:
    """The weight file to load: ``override`` as given, else the pinned file, verified."""
    from east.extract.weights import missing_message, resolve_weights, weights_path

    if override is not None:
        return resolve_weights(OPENL3_WEIGHTS, override)
    path = weights_path(OPENL3_WEIGHTS)
    if not path.is_file():
        raise WeightsError(missing_message(OPENL3_WEIGHTS, "openl3"))
    actual = git_blob_sha1(path)
    if actual != OPENL3_GIT_BLOB_SHA1:
        raise WeightsError(
            f"{path} is not the pinned {OPENL3_WEIGHTS.filename} (git blob {actual}, expected "
            f"{OPENL3_GIT_BLOB_SHA1}); delete it and download it again from {OPENL3_WEIGHTS.url}"
        )
    return path


def _build(weights: str | Path | None, device: str, framing: str) -> Teacher:
    # no published sha256: the provenance digest is recorded from the file
    return build_teacher(
        weights,
        device,
        net=OpenL3Net,
        teacher=lambda net, _: OpenL3Teacher(net, framing=framing),  # type: ignore[arg-type]
        files=lambda w: (resolve_openl3_weights(w),),
        meta_init=False,
    )


@register_teacher(OPENL3_INFO)
def openl3(weights: str | Path | None, device: str) -> Teacher:
    """OpenL3, centred windows as ``openl3``; ``weights`` is ``None`` (pinned file), a
    checkpoint path or ``"random"``."""
    return _build(weights, device, "official")


@register_teacher(OPENL3_UNCENTRED_INFO)
def openl3_uncentred(weights: str | Path | None, device: str) -> Teacher:
    """OpenL3 with east's earlier uncentred full windows (same weights as :func:`openl3`)."""
    return _build(weights, device, "uncentred")
