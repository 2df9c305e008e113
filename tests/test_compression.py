"""Embedding compression: the teacher loss moves only the transformation and head, the
distance loss only the student."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from east.features import stride_frame_times
from east.train.compression import EmbeddingCompressor
from east.train.losses import DistillationLoss, RegularizerSpec, TeacherBatch
from east.train.students import StudentOutput

pytestmark = pytest.mark.usefixtures("single_thread")


class TinyStudent(nn.Module):
    """Two taps (N, T, 3) and (N, T, 5) from a (N, T, 2) input, plus logits."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.stage1 = nn.Linear(2, 3)
        self.stage2 = nn.Linear(3, 5)
        self.head = nn.Linear(5, num_classes)

    def forward(self, x: torch.Tensor) -> StudentOutput:
        h1 = torch.tanh(self.stage1(x))
        h2 = torch.tanh(self.stage2(h1))
        times = stride_frame_times(x.shape[1], 1, 0.96)
        return StudentOutput(self.head(h2.mean(dim=1)), [h1, h2], [times, times])


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: nn.Module) -> set[str]:
    return {k for k, v in module.named_parameters() if not torch.equal(before[k], v.detach())}


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    student = TinyStudent()
    loss_fn = DistillationLoss(
        [RegularizerSpec("dcor", "mule", compress=True)],
        0.7,
        feature_dims=[3, 5],
        teacher_dims={"mule": 16},
        num_classes=4,
    )
    x = torch.randn(8, 6, 2)
    targets = (torch.rand(8, 4) > 0.5).float()
    teacher = TeacherBatch(
        embeddings=torch.randn(8, 6, 16),
        frame_times=stride_frame_times(6, 1, 0.96),
        num_frames=torch.full((8,), 6),
    )
    return student, loss_fn, x, targets, teacher


def test_compressor_maps_to_student_dimension_and_detaches():
    comp = EmbeddingCompressor(16, 5, 4)
    out = comp(torch.randn(3, 7, 16), (torch.rand(3, 4) > 0.5).float())
    assert out.compact.shape == (3, 7, 5) and out.logits.shape == (3, 4)
    assert not out.compact.requires_grad and out.teacher_loss.requires_grad
    # valid frames: padded frames do not reach the head
    emb = torch.randn(2, 4, 16)
    padded = emb.clone()
    padded[0, 2:] = 100.0
    a = comp(emb, torch.zeros(2, 4), num_frames=torch.tensor([2, 4]))
    b = comp(padded, torch.zeros(2, 4), num_frames=torch.tensor([2, 4]))
    torch.testing.assert_close(a.logits, b.logits)


@pytest.mark.parametrize("which", ["teacher", "distance"])
def test_one_step_moves_only_its_own_parameters(which):
    student, loss_fn, x, targets, teacher = _setup()
    comp = loss_fn.compressors["0_1"]  # final tap (index 1) of spec 0
    assert comp.transform.out_features == 5  # student's final dimension, no student projection
    params = list(student.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.SGD(params, lr=0.5)
    before_student, before_comp = _snapshot(student), _snapshot(comp)
    terms = loss_fn(student(x), targets, None, {"mule": teacher})
    if which == "teacher":
        objective = terms.teacher
    else:
        objective = terms.reg
    opt.zero_grad()
    objective.backward()
    opt.step()
    changed_student, changed_comp = _changed(before_student, student), _changed(before_comp, comp)
    if which == "teacher":
        assert changed_student == set()
        assert changed_comp == {"transform.weight", "transform.bias", "head.weight", "head.bias"}
    else:
        assert changed_comp == set()
        # the distance reads the final tap only: stage 1 and 2 move, the classifier head not
        assert changed_student == {"stage1.weight", "stage1.bias", "stage2.weight", "stage2.bias"}


def test_full_loss_gradients_split_cleanly():
    student, loss_fn, x, targets, teacher = _setup(1)
    comp = loss_fn.compressors["0_1"]
    terms = loss_fn(student(x), targets, None, {"mule": teacher})
    teacher_loss = terms.teacher
    grads_teacher = torch.autograd.grad(teacher_loss, list(comp.parameters()), retain_graph=True)
    grads_full = torch.autograd.grad(terms.loss, list(comp.parameters()), retain_graph=True)
    for a, b in zip(grads_teacher, grads_full, strict=True):
        torch.testing.assert_close(a, b)
    grads_total = torch.autograd.grad(terms.total, list(student.parameters()), retain_graph=True)
    grads_full_s = torch.autograd.grad(terms.loss, list(student.parameters()))
    for a, b in zip(grads_total, grads_full_s, strict=True):
        torch.testing.assert_close(a, b)
    assert "teacher:dcor:mule:1" in terms.parts
