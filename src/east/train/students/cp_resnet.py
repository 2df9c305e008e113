"""CP-ResNet (Koutini et al.): a ResNet whose receptive field is bounded by the parameter ρ.

Paper 1 uses ρ = 7 with 128 base channels on OpenMIC (5.52 M backbone parameters). Layout as
in the EAsT reference: a 5×5/stride-2 input conv, then three stages of four basic blocks
(128, 256, 512 channels); stage 1 max-pools (2×2) after blocks 1, 2 and 4. For ρ = 7 the
kernel sizes are stage 1: (3,1) (3,3) (3,3) (3,3), stage 2: (3,1) (1,3) (1,3) (1,3), stage 3
all 1×1 — ρ below 7 shrinks early kernels to 1, above 7 grows late ones to 3.
Taps: the outputs of stages 1/2/3 (all at the same time resolution, stride 16 frames =
0.16 s at 32 kHz / hop 320, so T = 62 for 10 s).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from east.features import frontend_for
from east.train.students.base import Student, register_student


class BasicBlock(nn.Module):
    """conv(k1) → BN → ReLU → conv(k2) → BN, plus (1×1 conv + BN) shortcut when the width
    changes; ReLU after the sum. Padding k // 3 keeps 3×3 and 1×1 maps the same size."""

    def __init__(self, in_channels: int, out_channels: int, k1: int, k2: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, k1, padding=k1 // 3, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, k2, padding=k2 // 3, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


def stage_kernels(rho: int) -> list[tuple[list[int], list[int]]]:
    """(k1s, k2s) of the three stages for receptive-field parameter ρ."""
    extra = rho - 7

    def shrink(threshold: int) -> int:  # 3 unless ρ is small enough to shrink to 1
        return 3 - 2 * int(-extra > threshold)

    def grow(threshold: int) -> int:  # 1 unless ρ is large enough to grow to 3
        return 1 + 2 * int(extra > threshold)

    return [
        ([3, shrink(6), shrink(4), shrink(2)], [1, shrink(5), shrink(3), shrink(1)]),
        ([shrink(0), grow(1), grow(3), grow(5)], [1, shrink(5), shrink(3), shrink(1)]),
        ([grow(7), grow(9), grow(11), grow(13)], [grow(8), grow(10), grow(12), grow(14)]),
    ]


class CPResNet(Student):
    name = "cp_resnet"

    def __init__(
        self,
        num_classes: int,
        rho: int = 7,
        base_channels: int = 128,
        frontend: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(num_classes)
        self.frontend = frontend_for("cp_resnet", **dict(frontend or {}))
        self.spectrogram_bins = self.frontend.config.n_mels
        self.rho = rho
        widths = [base_channels, base_channels * 2, base_channels * 4]
        self.input_conv = nn.Sequential(
            nn.Conv2d(1, base_channels, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(base_channels),
            nn.ReLU(inplace=True),
        )
        pools = [{1, 2, 4}, set(), set()]
        stages = []
        in_ch = base_channels
        for width, (k1s, k2s), pool_after in zip(widths, stage_kernels(rho), pools, strict=True):
            layers: list[nn.Module] = []
            for index, (k1, k2) in enumerate(zip(k1s, k2s, strict=True), start=1):
                layers.append(BasicBlock(in_ch, width, k1, k2))
                in_ch = width
                if index in pool_after:
                    layers.append(nn.MaxPool2d(2))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(widths[-1], num_classes)
        self.feature_dims = widths
        self.tap_strides = [16, 16, 16]  # input conv 2 × three 2× pools
        self._init_weights()

    def _init_weights(self) -> None:
        # He (fan-in) init, then Fixup-style rescaling: the first conv of every block scaled by
        # L^-1/2 and the second zeroed, so each block starts as its shortcut; the 1x1 shortcut
        # convs get He fan-out std sqrt(2 / C_out) (0.088 / 0.063), all as the reference's
        # initialize_weights_fixup (models/basemodels/cp_resnet.py).
        blocks = [m for m in self.modules() if isinstance(m, BasicBlock)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        for block in blocks:
            k = block.conv1.kernel_size
            fan_out = k[0] * k[1] * block.conv1.out_channels
            nn.init.normal_(block.conv1.weight, 0.0, len(blocks) ** -0.5 * math.sqrt(2.0 / fan_out))
            nn.init.zeros_(block.conv2.weight)
            if isinstance(block.shortcut, nn.Sequential):
                conv = block.shortcut[0]
                fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
                nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))

    def head_modules(self) -> Sequence[nn.Module]:
        return [self.head]

    def forward_maps(self, spec: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.input_conv(spec.unsqueeze(1))
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        logits = self.head(x.mean(dim=(2, 3)))
        return logits, maps


@register_student(
    "cp_resnet",
    "CP-ResNet ρ=7, 128 base channels (paper 1, OpenMIC), 32 kHz log-mel",
    paper_params_m=5.52,
    paper="paper 1, Table 2",
)
def create_cp_resnet(num_classes: int, **kwargs: object) -> CPResNet:
    return CPResNet(num_classes, **kwargs)  # type: ignore[arg-type]
