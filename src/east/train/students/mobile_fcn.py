"""Mobile FCN (paper 1, MagnaTagATune): Choi et al.'s fully convolutional tagger with the 3×3
convolutions after layer 2 replaced by depthwise 3×3 + pointwise 1×1 (MobileNet-style).

Eight layers, each conv → BN → ReLU → max-pool: (1→64, pool 2×4), (64→128, pool 2×3), then
depthwise-separable (128→128, 2×2), (128→128, 3×2 for 96 mel / 4×2 for 128), (128→128, 4×2),
(128→256, –), (256→256, –), (256→256, –); dropout 0.5 before layers 5 and 7 and the head.
Taps after layers 4, 6, 8 (128/256/256 ch; time strides 48, 96, 96 frames = 0.96/1.92/1.92 s).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from east.features import frontend_for
from east.train.students.base import Student, register_student


def _conv_block(c_in: int, c_out: int, pool: tuple[int, int] | int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(pool),
    )


def _separable_block(c_in: int, c_out: int, pool: tuple[int, int] | int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(pool),
    )


class MobileFCN(Student):
    name = "mobile_fcn"

    def __init__(
        self,
        num_classes: int,
        n_mels: int = 96,
        dropout: float = 0.5,
        frontend: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(num_classes)
        overrides = {"n_mels": n_mels, **dict(frontend or {})}
        self.frontend = frontend_for("mobile_fcn", **overrides)
        n_mels = self.frontend.config.n_mels
        self.spectrogram_bins = n_mels
        # frequency pooling must bring n_mels down to 1: 2·2·2·(3|4)·4 = 96 | 128
        pool4 = (4, 2) if n_mels == 128 else (3, 2)
        self.layers = nn.ModuleList(
            [
                _conv_block(1, 64, (2, 4)),
                _conv_block(64, 128, (2, 3)),
                _separable_block(128, 128, (2, 2)),
                _separable_block(128, 128, pool4),
                _separable_block(128, 128, (4, 2)),
                _separable_block(128, 256, 1),
                _separable_block(256, 256, 1),
                _separable_block(256, 256, 1),
            ]
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(256, num_classes)
        self.feature_dims = [128, 256, 256]
        self.tap_strides = [48, 96, 96]

    def head_modules(self) -> Sequence[nn.Module]:
        return [self.head]

    def forward_maps(self, spec: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = spec.unsqueeze(1)
        maps = []
        for index, layer in enumerate(self.layers, start=1):
            if index in (5, 7):
                x = self.dropout(x)
            x = layer(x)
            if index in (4, 6, 8):
                maps.append(x)
        logits = self.head(self.dropout(x).mean(dim=(2, 3)))
        return logits, maps


@register_student(
    "mobile_fcn",
    "Mobile FCN, depthwise-separable (paper 1, MagnaTagATune), 16 kHz 96-mel",
    paper_params_m=0.34,
    paper="paper 1, Table 2",
)
def create_mobile_fcn(num_classes: int, **kwargs: object) -> MobileFCN:
    return MobileFCN(num_classes, **kwargs)  # type: ignore[arg-type]
