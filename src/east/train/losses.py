"""The EAsT loss family: time alignment, distance measures, KD, FitNet, prediction losses and
their weighted combination ``L = (1 − λ)·L_pred + λ·L_reg``.

Shapes: student feature maps ``(N, T_s, C)``, teacher embeddings ``(N, T_t, D)`` (a clip-level
teacher is ``T_t = 1`` or ``(N, D)``), frame times ``(T, 2)`` start/end seconds. Distance
measures work per time frame *over the batch* (block stochastic approximation, paper 1 §3.4),
so the batch is the sample set of the statistic.

Composition (:class:`DistillationLoss`): a list of :class:`RegularizerSpec` — one term each,
``measure`` ∈ {``dcor``, ``cos_diff``, ``fitnet``, ``kd``}, the teacher it reads, stage weights
(``"final"``, ``"all"`` or explicit), a term weight (the 0.3/0.7 of EAsT_KD, or an ensemble
weight per teacher) and ``compress`` for paper 2's embedding compression.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from east.errors import ConfigError

__all__ = [
    "MEASURES",
    "DistillationLoss",
    "FitNetHead",
    "LossTerms",
    "RegularizerSpec",
    "TeacherBatch",
    "align",
    "cosine_distance_difference_loss",
    "distance_correlation",
    "distance_correlation_loss",
    "fitnet_loss",
    "kd_loss",
    "prediction_loss",
    "stage_weights",
]

AlignMode = Literal["repeat", "linear"]
Measure = Literal["dcor", "cos_diff", "fitnet", "kd"]

#: inside the square root of pairwise distances (finite gradient at identical samples)
DIST_EPS = 1e-12
#: inside the square root of the dCor denominator (finite for a constant batch)
DCOR_EPS = 1e-9


# --------------------------------------------------------------------------- alignment
def _as_times(times: Tensor | np.ndarray | None) -> np.ndarray | None:
    if times is None:
        return None
    arr = times.detach().cpu().numpy() if isinstance(times, Tensor) else np.asarray(times)
    arr = arr.astype(np.float64)
    if arr.ndim == 3:  # per-clip (N, T, 2) from a cache read: rows share the frame grid
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"frame times must be (T, 2), got shape {arr.shape}")
    return arr


def _hop(times: np.ndarray) -> float:
    """Frame step in seconds (frame length for a single frame)."""
    if len(times) > 1:
        return float(times[1, 0] - times[0, 0])
    return float(times[0, 1] - times[0, 0])


def align(
    student: Tensor,
    s_times: Tensor | np.ndarray,
    teacher: Tensor,
    t_times: Tensor | np.ndarray | None,
    t_valid: Tensor | None = None,
    mode: AlignMode = "repeat",
    clip_frames: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Bring a student map and a teacher sequence to common frames → ``(s, t)`` with equal
    ``(N, T)``.

    * clip-level teacher (one frame, or ``(N, D)``): broadcast over the student's frames, or,
      with ``clip_frames``, repeated that many times and both truncated to the shorter (the
      reference's ``teacher_expand``: 60 of CP-ResNet's 62 frames for PANNs on OpenMIC);
    * ``t_valid`` (N,) valid teacher frames per clip: frames past the shortest clip's valid
      count are dropped first (padding never enters the loss);
    * ``"repeat"`` (reference): the coarser sequence is repeated ``round(coarse hop / fine
      hop)`` times per frame, then both are truncated to the shorter length;
    * ``"linear"``: the teacher is linearly interpolated at the student frame centres; student
      frames whose centre lies past the end of the valid teacher frames are dropped.
    """
    if teacher.dim() == 2:
        teacher = teacher.unsqueeze(1)
    if student.dim() != 3 or teacher.dim() != 3 or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"need student (N, T, C) and teacher (N, T, D), got {tuple(student.shape)} and "
            f"{tuple(teacher.shape)}"
        )
    t_frames = teacher.shape[1]
    if t_valid is not None:
        t_frames = max(1, min(t_frames, int(torch.as_tensor(t_valid).min())))
        teacher = teacher[:, :t_frames]
    if t_frames == 1:
        if clip_frames is not None:
            student = student[:, : min(student.shape[1], clip_frames)]
        return student, teacher.expand(-1, student.shape[1], -1)
    s_arr, t_arr = _as_times(s_times), _as_times(t_times)
    if t_arr is None:
        raise ValueError("frame-level teacher embeddings need their frame times")
    assert s_arr is not None
    if len(s_arr) != student.shape[1]:
        raise ValueError(f"{len(s_arr)} student frame times for {student.shape[1]} frames")
    t_arr = t_arr[:t_frames]
    if mode == "repeat":
        s_hop, t_hop = _hop(s_arr), _hop(t_arr)
        if t_hop >= s_hop:
            teacher = teacher.repeat_interleave(max(1, round(t_hop / s_hop)), dim=1)
        else:
            student = student.repeat_interleave(max(1, round(s_hop / t_hop)), dim=1)
        length = min(student.shape[1], teacher.shape[1])
        return student[:, :length], teacher[:, :length]
    if mode == "linear":
        s_centres = s_arr.mean(axis=1)
        t_centres = t_arr.mean(axis=1)
        keep = max(1, int(np.sum(s_centres < t_arr[-1, 1])))
        pos = np.interp(s_centres[:keep], t_centres, np.arange(len(t_centres), dtype=np.float64))
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, len(t_centres) - 1)
        w = torch.as_tensor(pos - lo, dtype=teacher.dtype, device=teacher.device)[None, :, None]
        lo_t = torch.as_tensor(lo, device=teacher.device)
        hi_t = torch.as_tensor(hi, device=teacher.device)
        t_aligned = teacher[:, lo_t] * (1 - w) + teacher[:, hi_t] * w
        return student[:, :keep], t_aligned
    raise ValueError(f"unknown alignment mode {mode!r}; use 'repeat' or 'linear'")


# --------------------------------------------------------------------------- distances
def _per_frame(x: Tensor) -> Tensor:
    """(N, C) → (1, N, C); (N, T, C) → (T, N, C)."""
    if x.dim() == 2:
        return x.unsqueeze(0)
    if x.dim() == 3:
        return x.transpose(0, 1)
    raise ValueError(f"expected (N, C) or (N, T, C), got shape {tuple(x.shape)}")


def _centred_distances(x: Tensor) -> Tensor:
    """Double-centred pairwise Euclidean distances ``(T, N, N)`` of ``(T, N, C)``."""
    diff = x.unsqueeze(-2) - x.unsqueeze(-3)
    a = torch.sqrt(diff.square().sum(dim=-1) + DIST_EPS)
    return (
        a
        - a.mean(dim=-1, keepdim=True)
        - a.mean(dim=-2, keepdim=True)
        + a.mean(dim=(-2, -1), keepdim=True)
    )


def distance_correlation(x: Tensor, y: Tensor) -> Tensor:
    """Squared sample distance correlation R²ₙ (biased V-statistic) per frame, ``(T,)``.

    ``r = mean(A∘B) / sqrt(mean(A∘A)·mean(B∘B) + 1e-9)`` — paper 1 eq. (6) and the reference
    code; this is R² (what ``dcor.distance_correlation_sqr`` returns), not R. Feature
    dimensions of ``x`` and ``y`` may differ; the batch is the sample.
    """
    xs, ys = _per_frame(x), _per_frame(y)
    if xs.shape[:2] != ys.shape[:2]:
        raise ValueError(f"frames/batch differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    a, b = _centred_distances(xs), _centred_distances(ys)
    v_xy = (a * b).mean(dim=(-2, -1))
    v_xx = (a * a).mean(dim=(-2, -1))
    v_yy = (b * b).mean(dim=(-2, -1))
    return v_xy / torch.sqrt(v_xx * v_yy + DCOR_EPS)


def distance_correlation_loss(s: Tensor, t: Tensor) -> Tensor:
    """Mean over frames of ``1 − R²ₙ(s, t)``; 0 when ``t`` is an orthogonal map / scaling of
    ``s``, 1 for independent (or constant) batches."""
    return (1.0 - distance_correlation(s, t)).mean()


def cosine_distance_difference_loss(s: Tensor, t: Tensor) -> Tensor:
    """Mean over frames and all ordered pairs (i, j) of ``|cos(s_i, s_j) − cos(t_i, t_j)|``
    (= the difference of cosine distances; the diagonal is included as in the reference)."""
    ss, ts = F.normalize(_per_frame(s), dim=-1), F.normalize(_per_frame(t), dim=-1)
    if ss.shape[:2] != ts.shape[:2]:
        raise ValueError(f"frames/batch differ: {tuple(s.shape)} vs {tuple(t.shape)}")
    gram_s = ss @ ss.transpose(-1, -2)
    gram_t = ts @ ts.transpose(-1, -2)
    return (gram_s - gram_t).abs().mean()


def fitnet_loss(s: Tensor, t: Tensor) -> Tensor:
    """Mean squared error between equally shaped features (FitNet hint loss)."""
    if s.shape != t.shape:
        raise ValueError(f"FitNet needs equal shapes, got {tuple(s.shape)} and {tuple(t.shape)}")
    return F.mse_loss(s, t)


class FitNetHead(nn.Module):
    """FitNet regressor: a learned linear projection of the student feature to the teacher
    dimension, then MSE against the teacher embedding."""

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(student_dim, teacher_dim)

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        return fitnet_loss(self.proj(s), t)


# --------------------------------------------------------------------------- label losses
def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(device=values.device, dtype=torch.bool).expand_as(values)
    picked = values[mask]  # indexing: masked entries get exactly zero gradient
    if picked.numel() == 0:
        return values.sum() * 0.0
    return picked.mean()


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    tau: float = 2.0,
    mask: Tensor | None = None,
    multilabel: bool = True,
) -> Tensor:
    """Knowledge distillation from soft targets, ×τ².

    multi-label: per-class binary KL(p_t ‖ p_s) with ``p = sigmoid(z/τ)``, averaged over the
    entries where ``mask`` (N, K) is true (unknown OpenMIC labels are left out);
    single-label: ``KL(softmax(z_t/τ) ‖ softmax(z_s/τ))`` summed over classes, averaged over
    examples where ``mask`` (N,) is true. The teacher side is detached.
    """
    zs = student_logits / tau
    zt = teacher_logits.detach() / tau
    if multilabel:
        pt = torch.sigmoid(zt)
        # p_t·log(p_t/p_s) + (1−p_t)·log((1−p_t)/(1−p_s)) in log-sigmoid form (stable)
        kl = pt * (F.logsigmoid(zt) - F.logsigmoid(zs)) + (1 - pt) * (
            F.logsigmoid(-zt) - F.logsigmoid(-zs)
        )
        return _masked_mean(kl, mask) * tau**2
    log_ps = F.log_softmax(zs, dim=-1)
    log_pt = F.log_softmax(zt, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)
    return _masked_mean(kl, mask) * tau**2


def prediction_loss(
    logits: Tensor,
    targets: Tensor,
    mask: Tensor | None = None,
    multilabel: bool = True,
) -> Tensor:
    """L_pred. Multi-label: binary cross-entropy on logits, averaged over known labels
    (``mask`` (N, K)). Single-label: cross-entropy with class indices (N,) or soft/mixed
    targets (N, K), averaged over examples where ``mask`` (N,) is true."""
    if multilabel:
        bce = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
        return _masked_mean(bce, mask)
    if targets.dim() == 1:
        ce = F.cross_entropy(logits, targets.long(), reduction="none")
    else:
        ce = -(targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    return _masked_mean(ce, mask)


# --------------------------------------------------------------------------- composition
def stage_weights(stages: str | Sequence[float], num_taps: int) -> list[float]:
    """``"final"`` → only the last tap; ``"all"`` → equal weights; explicit weights are
    normalised to sum 1 (as the reference)."""
    if isinstance(stages, str):
        if stages == "final":
            return [0.0] * (num_taps - 1) + [1.0]
        if stages == "all":
            return [1.0 / num_taps] * num_taps
        raise ConfigError(f"stages must be 'final', 'all' or a list of weights, got {stages!r}")
    weights = [float(w) for w in stages]
    if len(weights) != num_taps or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"need {num_taps} non-negative stage weights, got {weights}")
    total = sum(weights)
    return [w / total for w in weights]


@dataclass(frozen=True)
class RegularizerSpec:
    """One term of L_reg.

    ``measure``: ``dcor`` | ``cos_diff`` | ``fitnet`` | ``kd``; ``teacher``: key into the
    teachers mapping given to :class:`DistillationLoss`; ``stages``: ``"final"``, ``"all"`` or
    weights per student tap; ``weight``: factor of this term in L_reg; ``compress``: paper 2's
    embedding compression (feature measures only); ``align_mode``: ``repeat``|``linear``;
    ``clip_frames``: frames a clip-level teacher covers (see :func:`align`); ``tau``: KD
    temperature.
    """

    measure: Measure
    teacher: str = "teacher"
    stages: str | tuple[float, ...] = "final"
    weight: float = 1.0
    compress: bool = False
    align_mode: AlignMode = "repeat"
    tau: float = 2.0
    clip_frames: int | None = None

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ConfigError(f"unknown measure {self.measure!r}; choose from {sorted(MEASURES)}")
        if self.compress and self.measure == "kd":
            raise ConfigError("embedding compression applies to feature measures, not kd")
        if self.weight < 0:
            raise ConfigError("regularizer weight must be >= 0")
        if self.clip_frames is not None and self.clip_frames < 1:
            raise ConfigError("clip_frames must be >= 1")


#: measure name → loss on aligned (s, t); fitnet goes through a FitNetHead unless compressed
MEASURES: dict[str, object] = {
    "dcor": distance_correlation_loss,
    "cos_diff": cosine_distance_difference_loss,
    "fitnet": fitnet_loss,
    "kd": kd_loss,
}


@dataclass
class TeacherBatch:
    """What one teacher contributes to a batch: ``embeddings`` (N, T, D) or (N, D),
    ``frame_times`` (T, 2), ``num_frames`` (N,) valid frames, and ``logits`` (N, K) of its
    Teacher_LR head for KD. Fields a spec does not need may be None."""

    embeddings: Tensor | None = None
    frame_times: Tensor | np.ndarray | None = None
    num_frames: Tensor | None = None
    logits: Tensor | None = None


class LossTerms(NamedTuple):
    """``loss`` is what to backpropagate: ``total`` plus ``teacher`` (the compressors'
    L_teacher, which reaches only the compression modules; 0 without compression).
    ``total`` = (1 − λ)·pred + λ·reg is what to monitor. ``parts`` holds every term, detached,
    for logging."""

    loss: Tensor
    total: Tensor
    pred: Tensor
    reg: Tensor
    teacher: Tensor
    parts: dict[str, Tensor]


@dataclass
class _Term:
    spec: RegularizerSpec
    weights: list[float] = field(default_factory=list)


def _key(spec_index: int, stage: int) -> str:
    return f"{spec_index}_{stage}"


class DistillationLoss(nn.Module):
    """``L = (1 − λ)·L_pred + λ·Σ_spec weight·Σ_stage w_stage·measure(student_stage, teacher)``.

    Holds the learnable parts (FitNet projections, embedding compressors), so its
    parameters must join the optimiser. ``teacher_dims`` (teacher → D) is needed for
    ``fitnet`` and ``compress`` specs; ``num_classes`` for ``compress``.
    """

    def __init__(
        self,
        specs: Sequence[RegularizerSpec],
        lam: float,
        *,
        feature_dims: Sequence[int],
        teacher_dims: Mapping[str, int] | None = None,
        num_classes: int | None = None,
        multilabel: bool = True,
    ) -> None:
        super().__init__()
        from east.train.compression import EmbeddingCompressor

        if not 0.0 <= lam <= 1.0:
            raise ConfigError(f"lambda must be in [0, 1], got {lam}")
        if specs and lam == 0.0:
            raise ConfigError("regularizers given with lambda = 0")
        self.lam = float(lam)
        self.multilabel = multilabel
        self.feature_dims = list(feature_dims)
        teacher_dims = dict(teacher_dims or {})
        self.terms = [
            _Term(spec, stage_weights(spec.stages, len(self.feature_dims))) for spec in specs
        ]
        self.fitnet_heads = nn.ModuleDict()
        self.compressors = nn.ModuleDict()
        for index, term in enumerate(self.terms):
            spec = term.spec
            if spec.measure == "kd":
                continue
            for stage, w in enumerate(term.weights):
                if w == 0:
                    continue
                student_dim = self.feature_dims[stage]
                if spec.compress:
                    if spec.teacher not in teacher_dims or num_classes is None:
                        raise ConfigError(
                            f"compression for teacher {spec.teacher!r} needs its dimension and "
                            "num_classes"
                        )
                    self.compressors[_key(index, stage)] = EmbeddingCompressor(
                        teacher_dims[spec.teacher], student_dim, num_classes, multilabel
                    )
                elif spec.measure == "fitnet":
                    if spec.teacher not in teacher_dims:
                        raise ConfigError(f"FitNet needs the dimension of teacher {spec.teacher!r}")
                    self.fitnet_heads[_key(index, stage)] = FitNetHead(
                        student_dim, teacher_dims[spec.teacher]
                    )

    @property
    def specs(self) -> list[RegularizerSpec]:
        return [term.spec for term in self.terms]

    def forward(
        self,
        output: object,
        targets: Tensor,
        label_mask: Tensor | None = None,
        teachers: Mapping[str, TeacherBatch] | None = None,
    ) -> LossTerms:
        """``output``: a :class:`~east.train.students.StudentOutput`; ``targets``/``label_mask``
        as for :func:`prediction_loss`; ``teachers``: name → :class:`TeacherBatch`."""
        logits: Tensor = output.logits  # type: ignore[attr-defined]
        features: list[Tensor] = output.features  # type: ignore[attr-defined]
        frame_times: list[Tensor] = output.frame_times  # type: ignore[attr-defined]
        teachers = teachers or {}
        pred = prediction_loss(logits, targets, label_mask, self.multilabel)
        parts: dict[str, Tensor] = {"pred": pred.detach()}
        reg = logits.new_zeros(())
        teacher_loss = logits.new_zeros(())
        for index, term in enumerate(self.terms):
            spec = term.spec
            if spec.teacher not in teachers:
                raise ConfigError(f"no batch for teacher {spec.teacher!r}")
            tb = teachers[spec.teacher]
            name = f"{spec.measure}:{spec.teacher}"
            if spec.measure == "kd":
                if tb.logits is None:
                    raise ConfigError(f"kd needs Teacher_LR logits of {spec.teacher!r}")
                mask = label_mask if self.multilabel else None
                value = kd_loss(logits, tb.logits, spec.tau, mask, self.multilabel)
                parts[name] = value.detach()
                reg = reg + spec.weight * value
                continue
            if tb.embeddings is None:
                raise ConfigError(f"{spec.measure} needs embeddings of teacher {spec.teacher!r}")
            for stage, w in enumerate(term.weights):
                if w == 0:
                    continue
                key = _key(index, stage)
                embeddings = tb.embeddings.to(features[stage].dtype)
                if key in self.compressors:
                    comp = self.compressors[key](embeddings, targets, label_mask, tb.num_frames)
                    embeddings = comp.compact  # detached: the distance never moves the map
                    teacher_loss = teacher_loss + comp.teacher_loss
                    parts[f"teacher:{name}:{stage}"] = comp.teacher_loss.detach()
                s, t = align(
                    features[stage],
                    frame_times[stage],
                    embeddings,
                    tb.frame_times,
                    tb.num_frames,
                    spec.align_mode,
                    spec.clip_frames,
                )
                if spec.measure == "fitnet" and key in self.fitnet_heads:
                    value = self.fitnet_heads[key](s, t)
                else:
                    value = MEASURES[spec.measure](s, t)  # type: ignore[operator]
                parts[f"{name}:{stage}"] = value.detach()
                reg = reg + spec.weight * w * value
        total = (1.0 - self.lam) * pred + self.lam * reg
        parts["reg"] = reg.detach()
        parts["total"] = total.detach()
        return LossTerms(total + teacher_loss, total, pred, reg, teacher_loss, parts)
