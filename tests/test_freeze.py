"""east.extract.teachers.base.freeze_for_cpu: a frozen TorchScript graph or, when its trace
would not generalise, None (the caller keeps the eager module)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from east.extract.teachers.base import freeze_for_cpu


class ConvBody(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x)))).mean(dim=2)


class ShapeBaked(ConvBody):
    def forward(self, x: Tensor) -> Tensor:
        # int() makes the traced graph keep the example's width as a constant
        width = int(x.shape[-1])
        return super().forward(x)[..., : width // 4]


def _examples() -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 1, 16, 20, generator=g), torch.randn(3, 1, 16, 36, generator=g)]


def _with_stats(module: nn.Module) -> nn.Module:
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding them matters
        module.bn.running_mean.uniform_(-1, 1)
        module.bn.running_var.uniform_(0.5, 2)
        module.bn.weight.uniform_(0.5, 2)
    return module.eval()


def test_frozen_graph_matches_eager_on_other_shapes() -> None:
    module = _with_stats(ConvBody())
    frozen = freeze_for_cpu(module, _examples())
    assert frozen is not None
    x = torch.randn(5, 1, 16, 52)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), module(x), atol=1e-5, rtol=1e-5)


def test_a_trace_that_bakes_in_a_shape_is_refused() -> None:
    assert freeze_for_cpu(_with_stats(ShapeBaked()), _examples()) is None


def test_an_untraceable_module_is_refused() -> None:
    class Branchy(ConvBody):
        def forward(self, x: Tensor) -> Tensor:
            return super().forward(x) if x.shape[0] > 2 else x  # data-dependent structure

    assert freeze_for_cpu(_with_stats(Branchy()), _examples()) is None
