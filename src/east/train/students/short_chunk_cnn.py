"""Short-chunk CNN with residual connections (Won et al. 2020, "Evaluation of CNN-based
automatic music tagging models"; paper 2's SC-CNN student).

Front-end: 16 kHz, n_fft 512 (hop 256), 128 HTK-mel bins 0–8 kHz, power → dB, then a
``BatchNorm2d(1)`` as input normalisation. Seven residual blocks with stride 2 (128, 128, 256,
256, 256, 256, 512 channels): conv3×3/s2 → BN → ReLU → conv3×3 → BN, plus a conv3×3/s2 + BN
projection shortcut, ReLU after the sum. 128 mel bins → 1 after seven halvings. Global max
pooling over time, then dense(512) → BN → ReLU → dropout 0.5 → dense(K).
Shortcuts are 1×1 projections by default: 9.09 M parameters with a 50-class head, the count
paper 2's Table 2 reports (9.1 M); ``shortcut_kernel=3`` gives the original implementation's
3×3 shortcuts (12.10 M; see docs/students.md).
Trained on 3.69 s chunks (59 049 samples). Taps after blocks 5, 6, 7 (256/256/512 ch; time
strides 32/64/128 frames).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from east.features import frontend_for
from east.train.students.base import Student, register_student

#: training chunk of paper 2 / sota-music-tagging-models (3.69 s at 16 kHz)
CHUNK_SAMPLES = 59049


class ResBlock2d(nn.Module):
    """Residual block with a strided projection shortcut (1×1 here by default, 3×3 in the
    original implementation); convs keep their biases, as in the original."""

    def __init__(
        self, c_in: int, c_out: int, stride: int | tuple[int, int] = 2, shortcut_kernel: int = 3
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(
                    c_in, c_out, shortcut_kernel, stride=stride, padding=shortcut_kernel // 2
                ),
                nn.BatchNorm2d(c_out),
            )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + self.shortcut(x))


class ClassifierHead(nn.Module):
    """dense → BN → ReLU → dropout → dense, on the max-pooled final map."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dense1 = nn.Linear(channels, channels)
        self.bn = nn.BatchNorm1d(channels)
        self.dropout = nn.Dropout(dropout)
        self.dense2 = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense2(self.dropout(torch.relu(self.bn(self.dense1(x)))))


def global_max_pool(x: Tensor) -> Tensor:
    """``(N, C, F, T)`` → ``(N, C)``: mean over frequency (1 bin for the intended inputs),
    max over time."""
    return x.mean(dim=2).amax(dim=-1)


class ShortChunkCNNRes(Student):
    name = "short_chunk_cnn"

    def __init__(
        self,
        num_classes: int,
        n_channels: int = 128,
        shortcut_kernel: int = 1,
        frontend: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(num_classes)
        if shortcut_kernel not in (1, 3):
            raise ValueError("shortcut_kernel must be 1 or 3")
        self.frontend = frontend_for("short_chunk_cnn", **dict(frontend or {}))
        self.spectrogram_bins = self.frontend.config.n_mels
        self.spec_bn = nn.BatchNorm2d(1)
        c = n_channels
        widths = [c, c, 2 * c, 2 * c, 2 * c, 2 * c, 4 * c]
        blocks = []
        c_in = 1
        for width in widths:
            blocks.append(ResBlock2d(c_in, width, stride=2, shortcut_kernel=shortcut_kernel))
            c_in = width
        self.blocks = nn.ModuleList(blocks)
        self.head = ClassifierHead(4 * c, num_classes)
        self.tap_layers = (5, 6, 7)
        self.feature_dims = [widths[i - 1] for i in self.tap_layers]
        self.tap_strides = [2**i for i in self.tap_layers]
        # strided 3x3 convolutions with padding 1 (no pooling): any input length works
        self.fixed_min_frames = 1

    def head_modules(self) -> Sequence[nn.Module]:
        return [self.head]

    def forward_maps(self, spec: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.spec_bn(spec.unsqueeze(1))
        maps = []
        for index, block in enumerate(self.blocks, start=1):
            x = block(x)
            if index in self.tap_layers:
                maps.append(x)
        return self.head(global_max_pool(x)), maps


@register_student(
    "short_chunk_cnn",
    "Short-chunk CNN + residual (paper 2), 16 kHz 128-mel dB, 3.69 s chunks",
    paper_params_m=9.1,
    paper="paper 2, Table 2",
)
def create_short_chunk_cnn(num_classes: int, **kwargs: object) -> ShortChunkCNNRes:
    return ShortChunkCNNRes(num_classes, **kwargs)  # type: ignore[arg-type]
