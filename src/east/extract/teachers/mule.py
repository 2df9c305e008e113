"""MULE teacher: SF-NFNet-F0 (McCallum et al., ISMIR 2022) re-implemented in plain PyTorch.

Upstream, MULE (``sxmp-mule``, SiriusXM/Pandora) is a Keras model that needs tensorflow 2.13
and numpy < 2. This module re-implements the network and MULE's own feature pipeline so
that the official weights, converted once with ``east teachers convert mule --from DIR``
(see :mod:`east.extract.teachers.mule_convert`), run without TensorFlow. ``make mule-parity``
checks the result against the upstream package; the measured difference is in
``docs/teachers.md``.

Front-end (``supporting_data/configs/mule_embedding_timeline.yml``):

* 16 kHz mono; power STFT with ``n_fft=2048``, a 400-sample periodic Hann window (25 ms)
  centred in the FFT frame, hop 160 (10 ms), ``center=True`` with reflect padding, so mel
  frame ``f`` is centred on ``f * 10 ms`` and a clip of ``L`` samples has
  ``N = 1 + L // 160`` frames;
* 96 HTK mel bands, 0–8000 Hz, every filter scaled to unit L2 norm (librosa ``norm=2.0``);
* ``log10(10000 * mel + 1)``.

Slices (upstream ``SliceExtractor``, ``hop=200``, ``look_backward=look_forward=150``): one
slice of 300 frames (3 s) is centred on every multiple of 200 frames (2 s) *strictly inside*
the clip, ``c = 200, 400, …, < N``; so there are ``T = ceil(N / 200) - 1`` slices and
slice ``k`` (0-based) nominally spans ``[2k + 0.5, 2k + 3.5)`` s — upstream never centres a
slice on 0 s. A centre closer than 150 frames to the end is moved back so the slice ends at
the clip's last frame (upstream behaviour): the *last* slice of a clip may therefore start up
to 1.5 s before its nominal ``frame_times`` row. Each slice is standardised on its own (zero
mean, unit standard deviation over all 96 × 300 values, the deviation floored at 0.01).

Clips shorter than 300 frames (2.99 s; upstream returns nothing or a truncated slice for
them) are zero-padded at the end to 47 840 samples (exactly 300 frames) and give one slice
spanning the padded clip.

Network: SF-NFNet-F0 — a slow path (stem ``[16, 32, 64, 128]`` channels, stride 2 × 8 in
frequency × time) and a fast path (``[2, 4, 8, 16]``, stride 2 × 2) into four NFNet-F0
stages of ``(1, 2, 6, 3)`` bottleneck blocks each (slow widths ``256/512/1536/1536`` with
group width 128, fast ``32/64/192/192`` with group width 16), fast-to-slow fusion before
every stage, scaled weight-standardised convolutions, squeeze-excite, SkipInit gains,
``alpha = 0.2``. Stochastic depth is the identity at inference. The embedding is the
scaled-GELU of the concatenated global average of both paths: ``1536 + 192 = 1728``.
TensorFlow's asymmetric ``"same"`` padding and its average pooling (padding excluded from the
mean) are reproduced exactly.
"""

from __future__ import annotations

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
    frame_times,
)
from east.extract.teachers.registry import register_teacher

__all__ = [
    "CONVERTED_FILENAME",
    "EMBEDDING_DIM",
    "F_MAX",
    "F_MIN",
    "HOP_LENGTH",
    "INFO",
    "MIN_SAMPLES",
    "N_FFT",
    "N_MELS",
    "OFFICIAL_WEIGHTS",
    "SAMPLE_RATE",
    "STAGE_DEPTHS",
    "MuleFrontEnd",
    "MuleTeacher",
    "NFBlock",
    "SFNFNetF0",
    "WSConv2d",
    "converted_path",
    "load_converted",
    "mel_filterbank",
    "mule",
    "num_slices",
    "slice_starts",
    "standardise_slices",
]

SAMPLE_RATE = 16_000
N_FFT = 2048
WIN_LENGTH = 400
HOP_LENGTH = 160
N_MELS = 96
F_MIN = 0.0
F_MAX = 8000.0
SLICE_FRAMES = 300  # 3 s of 10 ms frames
SLICE_HOP = 200  # 2 s
SLICE_HALF = SLICE_FRAMES // 2
MIN_SAMPLES = (SLICE_FRAMES - 1) * HOP_LENGTH  # shortest clip with one full slice: 2.99 s
EMBEDDING_DIM = 1728
WINDOW_S = SLICE_FRAMES * HOP_LENGTH / SAMPLE_RATE  # 3.0
HOP_S = SLICE_HOP * HOP_LENGTH / SAMPLE_RATE  # 2.0
FIRST_CENTRE_S = SLICE_HOP * HOP_LENGTH / SAMPLE_RATE  # upstream's first slice is centred on 2 s

# Scaled activations keep unit variance through the net (Brock et al. 2021); the constants
# are the ones upstream (and DeepMind's NFNet reference) use.
GELU_GAIN = 1.7015043497085571
ALPHA = 0.2
STAGE_DEPTHS = (1, 2, 6, 3)
SLOW_WIDTHS = (256, 512, 1536, 1536)
FAST_WIDTHS = (32, 64, 192, 192)
SLOW_GROUP_WIDTH = 128
FAST_GROUP_WIDTH = 16
# Fast-to-slow fusion before each stage: a (1 × 7, stride 4 in time) conv to the first widths
# (upstream's ``input_channels``: 32 before stage 1 although the fast stem gives 16), then a
# 1 × 1 conv to the second widths, concatenated onto the slow path.
FUSION_TEMPORAL_WIDTHS = (32, 32, 64, 192)
FUSION_WIDTHS = (128, 256, 512, 3072)
SLOW_STEM = (
    (16, (3, 1), (2, 8)),
    (32, (3, 1), (1, 1)),
    (64, (3, 1), (1, 1)),
    (128, (3, 3), (2, 2)),
)
FAST_STEM = ((2, (3, 3), (2, 2)), (4, (3, 3), (1, 1)), (8, (3, 3), (1, 1)), (16, (3, 3), (2, 2)))

CONVERTED_FILENAME = "mule/mule_sfnfnet_f0.pt"
OFFICIAL_REPO = "https://github.com/PandoraMedia/music-audio-representations"
OFFICIAL_WEIGHTS = WeightFile(
    filename="mule/model.keras",
    # The Git LFS object behind supporting_data/model/model.keras (sha256 and size from the
    # LFS pointer in the repository, commit f90a472).
    url="https://media.githubusercontent.com/media/PandoraMedia/music-audio-representations/"
    "main/supporting_data/model/model.keras",
    sha256="1da111d619bac0d422e41f153cbfb903f7ec3c5d3b2768f5d68f04452ed18180",
    size=251_054_764,
    note=(
        "a Git LFS file of the official repository, CC BY-NC 4.0, that must be converted: "
        f"`git clone {OFFICIAL_REPO}` with git-lfs (`git lfs pull`), then run "
        "`east teachers convert mule --from music-audio-representations`"
    ),
)

INFO = TeacherInfo(
    name="mule",
    family="mule",
    sample_rate=SAMPLE_RATE,
    embedding_dim=EMBEDDING_DIM,
    window_s=WINDOW_S,
    hop_s=HOP_S,
    description="MULE SF-NFNet-F0 (McCallum et al. 2022), 3 s log-mel slices every 2 s",
    licence="CC BY-NC 4.0 (weights)",
    weights=(OFFICIAL_WEIGHTS,),
)


# --------------------------------------------------------------------------- front-end


def _hz_to_mel_htk(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz_htk(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank() -> np.ndarray:
    """``(96, 1025)`` HTK triangular filters, each scaled to unit L2 norm (librosa ``norm=2``)."""
    fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    mels = np.linspace(_hz_to_mel_htk(np.array(F_MIN)), _hz_to_mel_htk(np.array(F_MAX)), N_MELS + 2)
    edges = _mel_to_hz_htk(mels)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    norms = np.linalg.norm(weights, axis=1, keepdims=True)
    # librosa leaves an all-zero filter untouched; none is empty with these settings.
    weights = np.where(norms > 0, weights / np.where(norms > 0, norms, 1.0), weights)
    return weights.astype(np.float32)


class MuleFrontEnd(nn.Module):
    """Waveform (L,) at 16 kHz → ``log10(10000 · mel + 1)`` of shape ``(96, 1 + L // 160)``."""

    def __init__(self) -> None:
        super().__init__()
        # Not learned and fully determined by the config: kept out of the state dict.
        self.register_buffer("window", torch.hann_window(WIN_LENGTH, periodic=True), False)
        self.register_buffer("mel_fb", torch.from_numpy(mel_filterbank()), False)

    def forward(self, waveform: Tensor) -> Tensor:
        spec = torch.stft(
            waveform,
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=WIN_LENGTH,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()
        mel = self.mel_fb @ power
        return torch.log10(10000.0 * mel + 1.0)


def slice_starts(num_mel_frames: int) -> list[int]:
    """First mel frame of every 300-frame slice, as upstream ``SliceExtractor`` places them.

    Centres are the multiples of 200 strictly inside the clip, clamped to
    ``[150, num_mel_frames - 150]``; needs ``num_mel_frames >= 300``.
    """
    if num_mel_frames < SLICE_FRAMES:
        raise ValueError(f"need at least {SLICE_FRAMES} mel frames, got {num_mel_frames}")
    centres = range(SLICE_HOP, num_mel_frames, SLICE_HOP)
    return [min(max(c, SLICE_HALF), num_mel_frames - SLICE_HALF) - SLICE_HALF for c in centres]


def num_slices(num_samples: int) -> int:
    """Slices (embeddings) MULE yields for a clip of ``num_samples`` at 16 kHz (≥ 1 if > 0)."""
    frames = 1 + max(num_samples, MIN_SAMPLES) // HOP_LENGTH
    return math.ceil(frames / SLICE_HOP) - 1


def standardise_slices(slices: Tensor) -> Tensor:
    """Per-slice zero mean, unit (population) std over all values, std floored at 0.01."""
    centred = slices - slices.mean(dim=(-2, -1), keepdim=True)
    std = centred.square().mean(dim=(-2, -1), keepdim=True).sqrt()
    std = torch.nan_to_num(std, nan=1.0, posinf=1.0, neginf=1.0).clamp_min(0.01)
    return centred / std


# --------------------------------------------------------------------------- network


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``padding="same"``: output ``ceil(size / stride)``, extra pad at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    top, bottom = _same_padding(x.shape[-2], kernel[0], stride[0])
    left, right = _same_padding(x.shape[-1], kernel[1], stride[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom))
    return x


def scaled_gelu(x: Tensor) -> Tensor:
    return F.gelu(x) * GELU_GAIN


def avg_pool_same(x: Tensor, kernel: tuple[int, int]) -> Tensor:
    """TF ``AveragePooling2D(padding="same")`` with stride = kernel: padding not counted."""
    padded = _pad_same(x, kernel, kernel)
    if padded.shape == x.shape:
        return F.avg_pool2d(x, kernel, kernel)
    ones = _pad_same(torch.ones_like(x[:1, :1]), kernel, kernel)
    return F.avg_pool2d(padded, kernel, kernel) / F.avg_pool2d(ones, kernel, kernel)


class WSConv2d(nn.Module):
    """Scaled weight-standardised conv: ``gain · (w − mean) / sqrt(max(fan_in · var, 1e-4))``.

    Statistics are per output channel over its fan-in (``kh · kw · in / groups``), the
    variance is the population variance; padding is TensorFlow's ``"same"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int],
        stride: tuple[int, int] = (1, 1),
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride
        self.groups = groups
        fan_in = in_channels // groups * kernel[0] * kernel[1]
        # Upstream initialisation: VarianceScaling(1, fan_in, normal), zero bias, unit gain.
        self.weight = nn.Parameter(
            torch.randn(out_channels, in_channels // groups, *kernel) / math.sqrt(fan_in)
        )
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.gain = nn.Parameter(torch.ones(out_channels))

    def standardised_weight(self) -> Tensor:
        w = self.weight
        fan_in = w[0].numel()
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        scale = torch.rsqrt(torch.clamp(var * fan_in, min=1e-4)) * self.gain.view(-1, 1, 1, 1)
        return w * scale - mean * scale

    def forward(self, x: Tensor) -> Tensor:
        x = _pad_same(x, self.kernel, self.stride)
        return F.conv2d(x, self.standardised_weight(), self.bias, self.stride, 0, 1, self.groups)


class SqueezeExcite(nn.Module):
    """Global mean → dense(C/2, ReLU) → dense(C, sigmoid) → ×2 channel gates."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // 2)
        self.fc2 = nn.Linear(channels // 2, channels)

    def forward(self, x: Tensor) -> Tensor:
        gates = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * (2.0 * gates)[:, :, None, None]


class NFBlock(nn.Module):
    """NFNet-F0 bottleneck block as upstream builds it.

    Residual: ``1×1 (C/2) → [1×3 time, stride s in freq] → [3×1 freq] → 1×1 (C)`` (the two
    middle convs grouped with ``group_width`` channels per group), squeeze-excite, then the
    learned SkipInit gain and ``alpha``. A transition block (first of a stage) applies
    ``scaled_gelu(x) · beta`` before both paths and projects the shortcut with a 1×1 conv (after
    average pooling when it downsamples frequency); other blocks apply it to the residual only.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        group_width: int,
        freq_stride: int,
        beta: float,
        transition: bool,
    ) -> None:
        super().__init__()
        mid = out_channels // 2
        groups = mid // group_width
        self.beta = beta
        self.freq_stride = freq_stride
        self.transition = transition
        self.conv1 = WSConv2d(in_channels, mid, (1, 1))
        self.conv2 = WSConv2d(mid, mid, (1, 3), (freq_stride, 1), groups)
        self.conv3 = WSConv2d(mid, mid, (3, 1), (1, 1), groups)
        self.conv4 = WSConv2d(mid, out_channels, (1, 1))
        self.se = SqueezeExcite(out_channels)
        self.skip_gain = nn.Parameter(torch.zeros(()))  # SkipInit: upstream starts it at 0
        self.shortcut = WSConv2d(in_channels, out_channels, (1, 1)) if transition else None

    def forward(self, x: Tensor) -> Tensor:
        if self.transition:
            x = scaled_gelu(x) * self.beta
            out = x
        else:
            out = scaled_gelu(x) * self.beta
        out = scaled_gelu(self.conv1(out))
        out = scaled_gelu(self.conv2(out))
        out = scaled_gelu(self.conv3(out))
        out = self.se(self.conv4(out)) * self.skip_gain * ALPHA
        skip = x
        if self.freq_stride > 1:
            skip = avg_pool_same(skip, (self.freq_stride, 1))
        if self.shortcut is not None:
            skip = self.shortcut(skip)
        return skip + out


def _stem(in_channels: int, spec: tuple) -> nn.ModuleList:
    layers = []
    for channels, kernel, stride in spec:
        layers.append(WSConv2d(in_channels, channels, kernel, stride))
        in_channels = channels
    return nn.ModuleList(layers)


def _stage_betas(depth: int, input_expected_std: float) -> list[float]:
    # Upstream's expected-variance bookkeeping (its names say "var", the values are stds).
    betas = [1.0 / input_expected_std]
    expected = (input_expected_std**2 + ALPHA**2) ** 0.5
    for _ in range(1, depth):
        betas.append(1.0 / expected)
        expected = (expected**2 + ALPHA**2) ** 0.5
    return betas


class SFNFNetF0(nn.Module):
    """SF-NFNet-F0 trunk: ``(S, 1, 96, T)`` standardised log-mel slices → ``(S, 1728)``."""

    def __init__(self) -> None:
        super().__init__()
        self.slow_stem = _stem(1, SLOW_STEM)
        self.fast_stem = _stem(1, FAST_STEM)
        stage_input_std = [1.0] + [(1.0 + ALPHA**2) ** 0.5] * 3
        freq_strides = [1, 2, 2, 2]
        fast_in = FAST_STEM[-1][0]
        slow_in = SLOW_STEM[-1][0]
        self.fusions = nn.ModuleList()
        self.slow_stages = nn.ModuleList()
        self.fast_stages = nn.ModuleList()
        for depth, slow_w, fast_w, temporal_w, fuse_w, stride, std in zip(
            STAGE_DEPTHS,
            SLOW_WIDTHS,
            FAST_WIDTHS,
            FUSION_TEMPORAL_WIDTHS,
            FUSION_WIDTHS,
            freq_strides,
            stage_input_std,
            strict=True,
        ):
            self.fusions.append(
                nn.ModuleDict(
                    {
                        "temporal": WSConv2d(fast_in, temporal_w, (1, 7), (1, 4)),
                        "pointwise": WSConv2d(temporal_w, fuse_w, (1, 1)),
                    }
                )
            )
            slow_in += fuse_w
            betas = _stage_betas(depth, std)
            self.slow_stages.append(
                nn.ModuleList(
                    NFBlock(
                        slow_in if i == 0 else slow_w,
                        slow_w,
                        SLOW_GROUP_WIDTH,
                        stride if i == 0 else 1,
                        betas[i],
                        transition=i == 0,
                    )
                    for i in range(depth)
                )
            )
            self.fast_stages.append(
                nn.ModuleList(
                    NFBlock(
                        fast_in if i == 0 else fast_w,
                        fast_w,
                        FAST_GROUP_WIDTH,
                        stride if i == 0 else 1,
                        betas[i],
                        transition=i == 0,
                    )
                    for i in range(depth)
                )
            )
            slow_in, fast_in = slow_w, fast_w

    @staticmethod
    def _run_stem(stem: nn.ModuleList, x: Tensor) -> Tensor:
        for i, conv in enumerate(stem):
            x = conv(x)
            if i < len(stem) - 1:  # the last stem conv has no activation
                x = scaled_gelu(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        slow = self._run_stem(self.slow_stem, x)
        fast = self._run_stem(self.fast_stem, x)
        for fusion, slow_stage, fast_stage in zip(
            self.fusions, self.slow_stages, self.fast_stages, strict=True
        ):
            fused = fusion["pointwise"](fusion["temporal"](fast))
            slow = torch.cat([slow, fused], dim=1)
            for block in slow_stage:
                slow = block(slow)
            for block in fast_stage:
                fast = block(fast)
        pooled = torch.cat([slow.mean(dim=(2, 3)), fast.mean(dim=(2, 3))], dim=1)
        return scaled_gelu(pooled)


# --------------------------------------------------------------------------- teacher


class MuleTeacher(Teacher):
    """MULE embeddings of 3 s slices every 2 s (see the module docstring for slice times)."""

    info = INFO

    def __init__(self, slice_batch: int = 32, net: SFNFNetF0 | None = None) -> None:
        super().__init__()
        self.frontend = MuleFrontEnd()
        self.net = net if net is not None else SFNFNetF0()
        self.slice_batch = slice_batch  # slices per forward pass: bounds activation memory

    def num_output_frames(self, num_samples: int) -> int:
        """Embeddings :meth:`embed` gives a clip of ``num_samples`` — without running the net."""
        return num_slices(num_samples)

    def clip_slices(self, waveform: Tensor) -> Tensor:
        """``(T, 1, 96, 300)`` standardised slices of one clip (1-D waveform at 16 kHz)."""
        if waveform.shape[0] < MIN_SAMPLES:
            waveform = F.pad(waveform, (0, MIN_SAMPLES - waveform.shape[0]))
        mel = self.frontend(waveform)
        starts = slice_starts(mel.shape[1])
        slices = torch.stack([mel[:, s : s + SLICE_FRAMES] for s in starts])
        return standardise_slices(slices).unsqueeze(1)

    @torch.no_grad()
    def embed(self, waveforms: Tensor, lengths: Tensor) -> TeacherOutput:
        waveforms = waveforms.to(self.device, torch.float32)
        per_clip = [self.clip_slices(waveforms[b, :n]) for b, n in enumerate(lengths.tolist())]
        counts = [s.shape[0] for s in per_clip]
        slices = torch.cat(per_clip)
        outputs = torch.cat([self.net(chunk) for chunk in slices.split(self.slice_batch)])
        max_t = max(counts)
        embeddings = outputs.new_zeros(len(counts), max_t, EMBEDDING_DIM)
        for b, piece in enumerate(outputs.split(counts)):
            embeddings[b, : piece.shape[0]] = piece
        times = frame_times(max_t, WINDOW_S, HOP_S) + (FIRST_CENTRE_S - WINDOW_S / 2)
        return TeacherOutput(
            embeddings=embeddings,
            num_frames=torch.tensor(counts, dtype=torch.int64),
            frame_times=times,
        )


def load_converted(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """State dict and source sha256 of a file written by ``east teachers convert mule``."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"{path} is not a converted MULE state dict ({first[:200]})") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict):
        raise WeightsError(
            f"{path} is not a converted MULE state dict; make one with "
            "`east teachers convert mule --from DIR`"
        )
    return blob["state_dict"], str(blob.get("source_sha256", "unknown"))


def converted_path() -> Path:
    from east.settings import weights_dir

    return weights_dir() / CONVERTED_FILENAME


@register_teacher(INFO)
def mule(weights: str | Path | None, device: str) -> Teacher:
    """``None``: the converted official weights in the weights dir; a path; or ``"random"``."""
    # provenance names the official (source) weights, not the container they were converted to;
    # "random" draws from the caller's RNG (as it always has for MULE)
    return build_teacher(
        weights,
        device,
        net=SFNFNetF0,
        teacher=lambda net, _: MuleTeacher(net=net),  # type: ignore[arg-type]
        files=lambda w: (_converted_file(w),),
        load=lambda files: load_converted(files[0]),
        meta_init=False,
        seeded=False,
    )


def _converted_file(weights: str | Path | None) -> Path:
    """The converted file to load: ``weights`` as given, else the one in the weights dir."""
    if weights is None:
        path = converted_path()
        if not path.is_file():
            from east.extract.weights import weights_path

            downloaded = weights_path(OFFICIAL_WEIGHTS)
            how = (
                f"run `east teachers convert mule` to convert {downloaded}"
                if downloaded.is_file()
                else f"MULE's official weights are a Git LFS file: `git clone {OFFICIAL_REPO}`, "
                "run `git lfs pull` in it, then `east teachers convert mule --from "
                "music-audio-representations`"
            )
            raise WeightsError(
                f"converted MULE weights {path} not found: {how} (or pass --weights PATH to a "
                "converted file)"
            )
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist (given as --weights)")
    return path
