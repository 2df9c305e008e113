"""Loss family against independent references (dcor, numpy formulas) and invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from east.errors import ConfigError
from east.features import stride_frame_times
from east.train.losses import (
    DistillationLoss,
    RegularizerSpec,
    TeacherBatch,
    align,
    cosine_distance_difference_loss,
    distance_correlation,
    distance_correlation_loss,
    kd_loss,
    prediction_loss,
    stage_weights,
)
from east.train.students import StudentOutput

dcor = pytest.importorskip("dcor")


pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------- dCor
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(3, 12),
    dx=st.integers(1, 9),
    dy=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_dcor_equals_dcor_package_biased(n, dx, dy, seed):
    rng = np.random.default_rng(seed)
    # unit-scale distances ×10: the 1e-12 under the square root (a 1e-6 diagonal) then moves
    # r by well under 1e-6 even for n = 3
    x = 10 * rng.standard_normal((n, dx))
    y = 10 * rng.standard_normal((n, dy)) + 0.5 * x[:, :1]
    ours = distance_correlation(torch.from_numpy(x), torch.from_numpy(y)).item()
    ref = dcor.distance_correlation_sqr(x, y)  # biased V-statistic by default
    assert ours == pytest.approx(ref, abs=1e-6)


def test_dcor_per_frame_matches_frame_by_frame():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 5, 4))
    y = rng.standard_normal((8, 5, 7))
    per_frame = distance_correlation(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    ref = [dcor.distance_correlation_sqr(x[:, t], y[:, t]) for t in range(5)]
    np.testing.assert_allclose(per_frame, ref, atol=1e-6)
    loss = distance_correlation_loss(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert loss == pytest.approx(1 - np.mean(ref), abs=1e-6)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.05, 20.0), extra=st.integers(0, 5))
def test_dcor_loss_zero_under_orthogonal_maps_scaling_and_shift(seed, scale, extra):
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((10, 3, 6))
    # semi-orthogonal map into a possibly larger space: distances are preserved
    q, _ = np.linalg.qr(rng.standard_normal((6 + extra, 6)))
    t = scale * s @ q.T + rng.standard_normal(6 + extra)
    loss = distance_correlation_loss(torch.from_numpy(s), torch.from_numpy(t)).item()
    assert abs(loss) < 1e-6
    loss_scaled_student = distance_correlation_loss(
        torch.from_numpy(s * 7.0), torch.from_numpy(t)
    ).item()
    assert abs(loss_scaled_student) < 1e-6


def test_dcor_constant_batch_finite_value_and_gradient():
    s = torch.ones(6, 4, 5, requires_grad=True)
    t = torch.randn(6, 4, 3)
    loss = distance_correlation_loss(s, t)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(1.0)
    assert torch.isfinite(s.grad).all()
    # also with duplicated rows in an otherwise varied batch
    x = torch.randn(6, 5)
    x = torch.cat([x, x[:2]]).requires_grad_(True)
    distance_correlation_loss(x, torch.randn(8, 3)).backward()
    assert torch.isfinite(x.grad).all()


def test_dcor_learns_something_independent_batches_are_far_from_zero():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(64, 8, generator=gen), torch.randn(64, 8, generator=gen)
    assert distance_correlation_loss(s, t).item() > 0.5


# --------------------------------------------------------------------------- cos-diff
def test_cosine_distance_difference_equals_numpy():
    rng = np.random.default_rng(2)
    s = rng.standard_normal((7, 3, 5))
    t = rng.standard_normal((7, 3, 9))
    total = 0.0
    for f in range(3):
        for i in range(7):
            for j in range(7):
                cs = s[i, f] @ s[j, f] / np.linalg.norm(s[i, f]) / np.linalg.norm(s[j, f])
                ct = t[i, f] @ t[j, f] / np.linalg.norm(t[i, f]) / np.linalg.norm(t[j, f])
                total += abs((1 - cs) - (1 - ct))
    expected = total / (3 * 7 * 7)
    ours = cosine_distance_difference_loss(torch.from_numpy(s), torch.from_numpy(t)).item()
    assert ours == pytest.approx(expected, abs=1e-12)
    # clip-level (N, C) input
    ours_2d = cosine_distance_difference_loss(torch.from_numpy(s[:, 0]), torch.from_numpy(t[:, 0]))
    assert torch.isfinite(ours_2d)


# --------------------------------------------------------------------------- KD / pred
def _np_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_multilabel_kd_equals_explicit_formula():
    rng = np.random.default_rng(3)
    zs, zt = rng.standard_normal((5, 4)) * 3, rng.standard_normal((5, 4)) * 3
    mask = rng.random((5, 4)) > 0.3
    tau = 2.0
    ps, pt = _np_sigmoid(zs / tau), _np_sigmoid(zt / tau)
    kl = pt * np.log(pt / ps) + (1 - pt) * np.log((1 - pt) / (1 - ps))
    expected = kl[mask].mean() * tau**2
    ours = kd_loss(torch.from_numpy(zs), torch.from_numpy(zt), tau, torch.from_numpy(mask)).item()
    assert ours == pytest.approx(expected, rel=1e-10)


def test_single_label_kd_equals_explicit_formula():
    rng = np.random.default_rng(4)
    zs, zt = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    tau = 3.0

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    ps, pt = softmax(zs / tau), softmax(zt / tau)
    expected = (pt * np.log(pt / ps)).sum(axis=1).mean() * tau**2
    ours = kd_loss(torch.from_numpy(zs), torch.from_numpy(zt), tau, multilabel=False).item()
    assert ours == pytest.approx(expected, rel=1e-10)


def _loss_and_grad(fn, logits):
    logits = logits.clone().requires_grad_(True)
    value = fn(logits)
    value.backward()
    return value.detach(), logits.grad


@pytest.mark.parametrize("which", ["kd", "bce"])
def test_masked_entries_contribute_nothing(which):
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 6, generator=gen)
    teacher = torch.randn(4, 6, generator=gen)
    targets = (torch.rand(4, 6, generator=gen) > 0.5).float()
    mask = torch.rand(4, 6, generator=gen) > 0.4

    def fn(z, teacher=teacher, targets=targets):
        if which == "kd":
            return kd_loss(z, teacher, 2.0, mask)
        return prediction_loss(z, targets, mask)

    base_value, base_grad = _loss_and_grad(fn, logits)
    # change student logits, teacher logits and labels only where the mask is false
    noise = torch.randn(4, 6, generator=gen) * 10
    logits2 = torch.where(mask, logits, logits + noise)
    teacher2 = torch.where(mask, teacher, teacher - noise)
    targets2 = torch.where(mask, targets, 1 - targets)
    value, grad = _loss_and_grad(lambda z: fn(z, teacher2, targets2), logits2)
    torch.testing.assert_close(value, base_value)
    torch.testing.assert_close(grad, base_grad)
    assert torch.all(grad[~mask] == 0)


def test_prediction_losses_equal_numpy():
    rng = np.random.default_rng(6)
    z = rng.standard_normal((5, 3))
    y = (rng.random((5, 3)) > 0.5).astype(float)
    mask = rng.random((5, 3)) > 0.2
    p = _np_sigmoid(z)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    ours = prediction_loss(torch.from_numpy(z), torch.from_numpy(y), torch.from_numpy(mask))
    assert ours.item() == pytest.approx(bce[mask].mean(), rel=1e-10)
    classes = np.array([0, 2, 1, 1, 0])
    log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    ce = -log_softmax[np.arange(5), classes].mean()
    ours_ce = prediction_loss(torch.from_numpy(z), torch.from_numpy(classes), multilabel=False)
    assert ours_ce.item() == pytest.approx(ce, rel=1e-10)
    one_hot = np.eye(3)[classes]
    ours_soft = prediction_loss(torch.from_numpy(z), torch.from_numpy(one_hot), multilabel=False)
    assert ours_soft.item() == pytest.approx(ce, rel=1e-10)


# --------------------------------------------------------------------------- alignment
def _times(n: int, hop: float) -> torch.Tensor:
    return stride_frame_times(n, 1, hop)


@pytest.mark.parametrize(("t_frames", "expected"), [(10, 60), (11, 62)])
def test_align_openmic_62_student_frames_with_vggish(t_frames, expected):
    student = torch.randn(3, 62, 4)
    teacher = torch.arange(t_frames, dtype=torch.float32).view(1, t_frames, 1).expand(3, -1, 2)
    s, t = align(student, _times(62, 0.16), teacher, _times(t_frames, 0.96))
    assert s.shape == (3, expected, 4) and t.shape == (3, expected, 2)
    torch.testing.assert_close(s, student[:, :expected])
    # teacher frame k covers student frames 6k … 6k+5
    assert torch.equal(t[0, :, 0], torch.arange(expected) // 6 * 1.0)


def test_align_mtat_repeats_the_coarser_student():
    student = torch.arange(15, dtype=torch.float32).view(1, 15, 1).expand(2, -1, 3)
    teacher = torch.randn(2, 30, 5)
    s, t = align(student, _times(15, 1.92), teacher, _times(30, 0.96))
    assert s.shape == (2, 30, 3) and t.shape == (2, 30, 5)
    assert torch.equal(s[0, :, 0], torch.arange(30) // 2 * 1.0)
    torch.testing.assert_close(t, teacher)


def test_align_clip_level_teacher_broadcasts():
    student = torch.randn(2, 62, 4)
    for teacher in (torch.randn(2, 2048), torch.randn(2, 1, 2048)):
        s, t = align(student, _times(62, 0.16), teacher, _times(1, 10.0))
        assert s.shape == (2, 62, 4) and t.shape == (2, 62, 2048)
        torch.testing.assert_close(t[:, 17], teacher.reshape(2, 2048))
    # a one-frame student (a 3.69 s chunk) is repeated over the ~4 teacher frames it spans
    one = torch.randn(2, 1, 4)
    frames = torch.randn(2, 4, 5)
    s, t = align(one, _times(1, 3.69), frames, _times(4, 0.96))
    assert s.shape == (2, 4, 4) and torch.equal(s, one.expand(-1, 4, -1))
    torch.testing.assert_close(t, frames)


def test_align_respects_valid_teacher_frames():
    student = torch.randn(2, 62, 4)
    teacher = torch.randn(2, 11, 3)
    s, t = align(student, _times(62, 0.16), teacher, _times(11, 0.96), torch.tensor([11, 9]))
    assert t.shape[1] == s.shape[1] == 54  # 9 valid frames × 6
    s, t = align(student, _times(62, 0.16), teacher, _times(11, 0.96), torch.tensor([1, 11]))
    assert t.shape[1] == 62 and torch.equal(t[:, 5], teacher[:, 0])


def test_align_linear_interpolates_at_student_centres():
    teacher_times = _times(10, 0.96)
    centres = teacher_times.mean(dim=1)
    teacher = (2.0 * centres + 1.0).float().view(1, 10, 1).expand(2, -1, 1)
    s_times = _times(62, 0.16)
    s, t = align(torch.randn(2, 62, 3), s_times, teacher, teacher_times, mode="linear")
    s_centres = s_times.mean(dim=1)[: t.shape[1]]
    inside = (s_centres >= centres[0]) & (s_centres <= centres[-1])
    torch.testing.assert_close(t[0, inside, 0], (2.0 * s_centres[inside] + 1.0).float())
    assert t.shape[1] == s.shape[1] == 60  # student centres past 9.6 s are dropped
    with pytest.raises(ValueError):
        align(torch.randn(2, 62, 3), s_times, teacher, teacher_times, mode="nearest")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- composition
def _output(n: int = 6, gen: torch.Generator | None = None) -> StudentOutput:
    feats = [torch.randn(n, 62, c, generator=gen, requires_grad=True) for c in (4, 5, 6)]
    return StudentOutput(
        torch.randn(n, 3, generator=gen, requires_grad=True), feats, [_times(62, 0.16)] * 3
    )


def test_stage_weights():
    assert stage_weights("final", 3) == [0.0, 0.0, 1.0]
    assert stage_weights("all", 3) == pytest.approx([1 / 3] * 3)
    assert stage_weights((1.0, 1.0, 2.0), 3) == [0.25, 0.25, 0.5]
    with pytest.raises(ConfigError):
        stage_weights("middle", 3)


def test_east_kd_combination_equals_manual_terms():
    gen = torch.Generator().manual_seed(7)
    out = _output(gen=gen)
    targets = (torch.rand(6, 3, generator=gen) > 0.5).float()
    mask = torch.rand(6, 3, generator=gen) > 0.2
    teacher = TeacherBatch(
        embeddings=torch.randn(6, 10, 8, generator=gen),
        frame_times=_times(10, 0.96),
        num_frames=torch.full((6,), 10),
        logits=torch.randn(6, 3, generator=gen),
    )
    specs = [
        RegularizerSpec("kd", "vggish", weight=0.3),
        RegularizerSpec("dcor", "vggish", stages="final", weight=0.7),
    ]
    loss_fn = DistillationLoss(specs, 0.8, feature_dims=[4, 5, 6])
    terms = loss_fn(out, targets, mask, {"vggish": teacher})
    pred = prediction_loss(out.logits, targets, mask)
    s, t = align(out.features[2], out.frame_times[2], teacher.embeddings, teacher.frame_times)
    reg = 0.3 * kd_loss(out.logits, teacher.logits, 2.0, mask) + 0.7 * distance_correlation_loss(
        s, t
    )
    torch.testing.assert_close(terms.total, 0.2 * pred + 0.8 * reg)
    torch.testing.assert_close(terms.loss, terms.total)
    assert set(terms.parts) >= {"pred", "reg", "total", "kd:vggish", "dcor:vggish:2"}


def test_all_stages_and_teacher_ensemble():
    gen = torch.Generator().manual_seed(8)
    out = _output(gen=gen)
    targets = torch.randint(0, 3, (6,), generator=gen)
    a = TeacherBatch(torch.randn(6, 10, 8, generator=gen), _times(10, 0.96))
    b = TeacherBatch(torch.randn(6, 2048, generator=gen))  # clip-level
    specs = [
        RegularizerSpec("dcor", "a", stages="all", weight=0.5),
        RegularizerSpec("cos_diff", "b", stages="final", weight=0.25),
    ]
    loss_fn = DistillationLoss(specs, 0.6, feature_dims=[4, 5, 6], multilabel=False)
    terms = loss_fn(out, targets, None, {"a": a, "b": b})
    expected_reg = 0.0
    for stage in range(3):
        s, t = align(out.features[stage], out.frame_times[stage], a.embeddings, a.frame_times)
        expected_reg += 0.5 / 3 * distance_correlation_loss(s, t)
    s, t = align(out.features[2], out.frame_times[2], b.embeddings, None)
    expected_reg += 0.25 * cosine_distance_difference_loss(s, t)
    torch.testing.assert_close(terms.reg, expected_reg)
    pred = prediction_loss(out.logits, targets, multilabel=False)
    torch.testing.assert_close(terms.total, 0.4 * pred + 0.6 * expected_reg)


def test_baseline_and_fitnet():
    gen = torch.Generator().manual_seed(9)
    out = _output(gen=gen)
    targets = (torch.rand(6, 3, generator=gen) > 0.5).float()
    baseline = DistillationLoss([], 0.0, feature_dims=[4, 5, 6])
    torch.testing.assert_close(baseline(out, targets).total, prediction_loss(out.logits, targets))
    teacher = TeacherBatch(torch.randn(6, 10, 8, generator=gen), _times(10, 0.96))
    fit = DistillationLoss(
        [RegularizerSpec("fitnet", "t")], 0.5, feature_dims=[4, 5, 6], teacher_dims={"t": 8}
    )
    assert sum(p.numel() for p in fit.parameters()) == 6 * 8 + 8  # projection 6 → 8
    terms = fit(out, targets, None, {"t": teacher})
    terms.loss.backward()
    assert all(p.grad is not None for p in fit.parameters())
    with pytest.raises(ConfigError):
        DistillationLoss([RegularizerSpec("fitnet", "t")], 0.5, feature_dims=[4, 5, 6])
    with pytest.raises(ConfigError):
        RegularizerSpec("l1")  # type: ignore[arg-type]
