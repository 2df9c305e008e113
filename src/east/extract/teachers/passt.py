"""PaSST teacher: the AudioSet-trained Patchout faSt Spectrogram Transformer (Koutini et al. 2022).

Architecture and front-end follow the official ``hear21passt`` package (``passt_s_swa_p16_128_ap476``
with ``AugmentMelSTFT`` in eval mode), re-implemented in plain torch because ``hear21passt``
imports ``timm`` and ``torchaudio`` at import time:

* front-end (32 kHz): pre-emphasis ``y[n] = x[n+1] − 0.97·x[n]``, STFT (n_fft 1024, symmetric
  Hann window of 800, hop 320, centred with reflect padding), power spectrum, 128 Kaldi mel bands
  from 0 to 15 kHz (computed here, :func:`kaldi_mel_banks`), ``log(x + 1e-5)``, ``(x + 4.5) / 5``;
* ViT-B (12 blocks, 768-d, 12 heads) on 16×16 patches with stride 10, separate frequency and
  time positional embeddings, CLS and distillation tokens;
* embedding: the mean of the final CLS and distillation tokens (768-d), as ``hear21passt``'s
  ``embed_only`` mode.

Framing (``passt``, the default): as ``hear21passt``'s ``get_timestamp_embeddings`` with
``timestamp_window=960, timestamp_hop=960`` (the call the EAsT authors used): each clip is
reflect-padded by half a window (15360 samples) on both sides, then cut into 0.96 s windows with a
0.96 s hop (30720 samples): ``T = 1 + ⌊L / 30720⌋`` (11 for 10 s), frame ``k`` centred at
``0.96·k`` s and covering ``[0.96·k − 0.48, 0.96·k + 0.48)`` s (the first starts at −0.48 s). Each
clip is padded at its own length, as if embedded alone (the official call pads a whole batch to
one length). Where the official call fails (a clip of at most 15360 samples, 0.48 s, which torch's
reflect padding refuses) the reflection repeats, as numpy's ``reflect`` mode does.

``passt-uncentred`` keeps east's earlier framing: frame ``k`` covers ``[0.96·k, 0.96·k + 0.96)``
s, only full windows (``T = 1 + ⌊(L − 30720) / 30720⌋``, 10 for 10 s), a clip shorter than one
window zero-padded to one (``T = 1``).

Either way each window gets its own spectrogram (30719 samples after pre-emphasis → 96 STFT
frames → 12×9 patches) as ``hear21passt`` does. The model was trained on 10 s inputs; a window
is not padded to that: only the first 9 time positional embeddings are used (the official model
crops them the same way). Samples past a clip's length in a batch never matter.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    "FRAMINGS",
    "HOP_SAMPLES",
    "PAD_SAMPLES",
    "PASST_INFO",
    "PASST_UNCENTRED_INFO",
    "PASST_WEIGHTS",
    "SAMPLE_RATE",
    "WINDOW_SAMPLES",
    "PaSSTNet",
    "PaSSTTeacher",
    "PasstMelFrontEnd",
    "kaldi_mel_banks",
    "passt",
    "passt_uncentred",
    "reflect_pad",
]

SAMPLE_RATE = 32000
WINDOW_SAMPLES = 30720  # 0.96 s
HOP_SAMPLES = 30720
PAD_SAMPLES = WINDOW_SAMPLES // 2  # hear21passt: pad = window_size // 2, both sides
FRAMINGS = ("official", "uncentred")

PASST_WEIGHTS = WeightFile(
    filename="passt-s-f128-p16-s10-ap.476-swa.pt",
    url=(
        "https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/"
        "passt-s-f128-p16-s10-ap.476-swa.pt"
    ),
    # Not published by the release itself; the same digest and size are pinned independently
    # by several public projects that load this asset (see docs/teachers.md).
    sha256="302903fa8c4aee817b11dc982da0b29aaf8d11a3e722420476d0a12c9db70c2c",
    size=344_665_734,
)

PASST_INFO = TeacherInfo(
    name="passt",
    family="passt",
    sample_rate=SAMPLE_RATE,
    embedding_dim=768,
    window_s=WINDOW_SAMPLES / SAMPLE_RATE,
    hop_s=HOP_SAMPLES / SAMPLE_RATE,
    description=(
        "PaSST-S AudioSet (SWA, mAP .476); mean of CLS and distillation tokens per 0.96 s "
        "window, centred as hear21passt's timestamp embeddings"
    ),
    licence="Apache-2.0 (kkoutini/PaSST code and weights)",
    weights=(PASST_WEIGHTS,),
    framing="official",
)
PASST_UNCENTRED_INFO = dataclasses.replace(
    PASST_INFO,
    name="passt-uncentred",
    description="PaSST-S as passt, full 0.96 s windows from 0 s (east's earlier framing)",
    framing="uncentred",
)


# --------------------------------------------------------------------------- front-end


def _kaldi_mel(freq: Tensor) -> Tensor:
    # Kaldi's formula literally (log of 1 + f/700, not log1p): the float32 rounding then
    # matches Kaldi and torchaudio, which compute their banks in single precision.
    return 1127.0 * torch.log(1.0 + freq / 700.0)


def kaldi_mel_banks(
    num_bins: int, n_fft: int, sample_rate: int, low_freq: float, high_freq: float
) -> Tensor:
    """Kaldi's triangular mel filter bank (``MelBanks`` without VTLN warping).

    Returns ``(num_bins, n_fft // 2 + 1)`` float32 weights on the power spectrum. Kaldi only
    covers the ``n_fft // 2`` bins below Nyquist, so the Nyquist column is zero (as in
    ``hear21passt``, which pads it). Bin edges are evenly spaced on Kaldi's mel scale
    ``1127 ln(1 + f / 700)``; a non-positive ``high_freq`` counts back from Nyquist.
    """
    nyquist = sample_rate / 2
    if high_freq <= 0:
        high_freq += nyquist
    if not 0 <= low_freq < high_freq <= nyquist:
        raise ValueError(
            f"need 0 <= low_freq < high_freq <= {nyquist}, got {low_freq}, {high_freq}"
        )
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_freq / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins, dtype=torch.float32)[:, None]
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    fft_mel = _kaldi_mel((sample_rate / n_fft) * torch.arange(n_fft // 2, dtype=torch.float32))
    rising = (fft_mel - left) / (center - left)
    falling = (right - fft_mel) / (right - center)
    banks = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return F.pad(banks, (0, 1))


class PasstMelFrontEnd(nn.Module):
    """``hear21passt``'s ``AugmentMelSTFT`` in eval mode (no augmentation): waveform → log-mel.

    ``(N, L)`` float waveforms at 32 kHz → ``(N, 128, 1 + (L − 1) // 320)`` normalised log-mel.
    Runs in float32 even under autocast (the log of small mel energies needs it).
    """

    def __init__(
        self,
        n_mels: int = 128,
        sample_rate: int = SAMPLE_RATE,
        n_fft: int = 1024,
        win_length: int = 800,
        hop_length: int = 320,
        fmin: float = 0.0,
        fmax: float = 15000.0,  # hear21passt: sr / 2 − fmax_aug_range / 2 with range 2000
        preemphasis: float = 0.97,
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.preemphasis = preemphasis
        # Buffers are derived, not learned: not part of the checkpoint (non-persistent).
        self.register_buffer(
            "window", torch.hann_window(win_length, periodic=False), persistent=False
        )
        self.register_buffer(
            "mel_basis",
            kaldi_mel_banks(n_mels, n_fft, sample_rate, fmin, fmax),
            persistent=False,
        )

    def forward(self, waveforms: Tensor) -> Tensor:
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            x = waveforms.float()
            x = x[:, 1:] - self.preemphasis * x[:, :-1]
            spec = torch.stft(
                x,
                self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=self.window,
                center=True,
                pad_mode="reflect",
                normalized=False,
                return_complex=True,
            )
            power = torch.view_as_real(spec).pow(2).sum(-1)
            mel = torch.matmul(self.mel_basis, power)
            return (torch.log(mel + 1e-5) + 4.5) / 5.0


# --------------------------------------------------------------------------- transformer


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, stride: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        # Default scale is head_dim ** -0.5, as in the official ViT.
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PaSSTNet(nn.Module):
    """PaSST-S (``passt_s_swa_p16_128_ap476``), inference only (patchout is a training device).

    The state dict has exactly the key names and shapes of the official checkpoint. ``forward``
    maps a ``(N, 1, 128, frames)`` log-mel to the ``(N, 768)`` embedding; :meth:`logits` gives
    the 527 AudioSet logits the official ``forward`` returns (head on the embedding).
    """

    def __init__(
        self,
        n_mels: int = 128,
        input_frames: int = 998,  # 10 s: the length of the time positional embedding
        patch: int = 16,
        stride: int = 10,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_classes: int = 527,
    ) -> None:
        super().__init__()
        # The official grid is input // stride (not the conv output count); the pos-embed
        # shapes must follow it to load the checkpoint.
        freq_grid, time_grid = n_mels // stride, input_frames // stride
        self.patch_embed = _PatchEmbed(patch, stride, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, dim))  # for the two tokens
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, dim, freq_grid, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, dim, 1, time_grid))
        self.blocks = nn.Sequential(*[_Block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
        self.head_dist = nn.Linear(dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official ViT initialisation (truncated normal, std 0.02)."""
        for param in (
            self.cls_token,
            self.dist_token,
            self.new_pos_embed,
            self.freq_new_pos_embed,
            self.time_new_pos_embed,
        ):
            nn.init.trunc_normal_(param, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, spec: Tensor) -> Tensor:
        x = self.patch_embed(spec)  # (N, D, F, T)
        time_patches = x.shape[-1]
        if time_patches > self.time_new_pos_embed.shape[-1]:
            raise ValueError(
                f"input of {time_patches} time patches is longer than the model's "
                f"{self.time_new_pos_embed.shape[-1]}"
            )
        x = x + self.time_new_pos_embed[..., :time_patches] + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)  # frequency-major token order, as the official model
        batch = x.shape[0]
        cls = (self.cls_token + self.new_pos_embed[:, :1]).expand(batch, -1, -1)
        dist = (self.dist_token + self.new_pos_embed[:, 1:]).expand(batch, -1, -1)
        x = self.norm(self.blocks(torch.cat((cls, dist, x), dim=1)))
        return (x[:, 0] + x[:, 1]) / 2

    def logits(self, spec: Tensor) -> Tensor:
        return self.head(self.forward(spec))


# --------------------------------------------------------------------------- teacher


def reflect_pad(waveforms: Tensor, lengths: Tensor, pad: int) -> tuple[Tensor, Tensor]:
    """Each clip reflect-padded by ``pad`` samples on both sides at its own length.

    Returns ``(padded (B, L + 2·pad), padded lengths (B,))``; clip ``b`` occupies the first
    ``lengths[b] + 2·pad`` samples, the rest is padding. Reflection as ``F.pad(mode="reflect")``
    (the edge sample not repeated), repeated where ``pad`` ≥ a clip's length (numpy's
    ``reflect``); an empty clip pads with zeros. Only the ``2·pad`` new samples per clip are
    gathered, so memory stays ``O(B·pad)`` besides the output.
    """
    lengths = lengths.to(device=waveforms.device, dtype=torch.int64)
    n = lengths[:, None]
    offsets = torch.arange(pad, device=waveforms.device)
    before = (offsets - pad).expand(n.shape[0], -1)
    positions = torch.cat([before, n + offsets], dim=1)  # (B, 2·pad): where the pads go
    period = torch.clamp(2 * (n - 1), min=1)
    source = torch.remainder(positions, period)
    source = torch.minimum(source, period - source)  # fold back into [0, n − 1]
    values = torch.gather(waveforms, 1, source)
    values = torch.where(n > 0, values, torch.zeros((), dtype=values.dtype, device=values.device))
    padded = F.pad(waveforms, (pad, pad))
    return padded.scatter(1, positions + pad, values), lengths + 2 * pad


class PaSSTTeacher(Teacher):
    """PaSST-S embeddings per 0.96 s window (see the module docstring for both framings)."""

    info = PASST_INFO

    def __init__(
        self, net: PaSSTNet | None = None, chunk_windows: int = 64, framing: str = "official"
    ) -> None:
        super().__init__()
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, not {framing!r}")
        self.info = PASST_INFO if framing == "official" else PASST_UNCENTRED_INFO
        self.mel = PasstMelFrontEnd()
        self.net = net if net is not None else PaSSTNet()
        self.chunk_windows = chunk_windows  # windows per forward pass: bounds peak memory

    @property
    def centred(self) -> bool:
        return self.info.framing == "official"

    def embed(self, waveforms: Tensor, lengths: Tensor) -> TeacherOutput:
        if waveforms.ndim != 2:
            raise ValueError(f"expected waveforms of shape (B, L), got {tuple(waveforms.shape)}")
        device = self.device
        waveforms, lengths = waveforms.to(device), lengths.to(device)
        # frames start half a window early when centred (a start before 0 s is the truth)
        offset = 0
        if self.centred:
            waveforms, lengths = reflect_pad(waveforms, lengths, PAD_SAMPLES)
            offset = PAD_SAMPLES
        windows, valid, frames = cut_windows(waveforms, lengths, WINDOW_SAMPLES, HOP_SAMPLES)
        outputs = [
            self.net(self.mel(chunk).unsqueeze(1)).float()
            for chunk in windows.split(self.chunk_windows)
        ]
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


def _build(weights: str | Path | None, device: str, framing: str) -> Teacher:
    from east.extract.weights import resolve_weights

    return build_teacher(
        weights,
        device,
        net=PaSSTNet,
        teacher=lambda net, _: PaSSTTeacher(net, framing=framing),  # type: ignore[arg-type]
        files=lambda w: (resolve_weights(PASST_INFO, w),),
    )


@register_teacher(PASST_INFO)
def passt(weights: str | Path | None, device: str) -> Teacher:
    """PaSST-S, centred windows as ``hear21passt``; ``weights`` is ``None`` (pinned official
    file), a checkpoint path or ``"random"``."""
    return _build(weights, device, "official")


@register_teacher(PASST_UNCENTRED_INFO)
def passt_uncentred(weights: str | Path | None, device: str) -> Teacher:
    """PaSST-S with east's earlier uncentred full windows (same weights as :func:`passt`)."""
    return _build(weights, device, "uncentred")
