"""Every system of the two papers (their records: :mod:`east.systems`) as a short composition of the loss family
(:class:`east.train.losses.DistillationLoss` and its :class:`RegularizerSpec` terms).

``L = (1 − λ)·L_pred + λ·L_reg`` (+ ``L_teacher`` of embedding compression, which reaches only
the compressor). ``L_pred``: masked BCE (multi-label) or cross-entropy (single-label).

| system               | L_reg (per teacher i, ensemble weight w_i normalised to sum 1)      |
|----------------------|----------------------------------------------------------------------|
| baseline             | none (λ = 0)                                                         |
| teacher_lr           | not a student: a linear probe on time-averaged embeddings (probe.py) |
| kd                   | KD(student logits, Teacher_LR logits, τ)                             |
| east_cos_diff        | Σ w_i · cosine-distance difference (final stage)                     |
| east_final, east_dc  | Σ w_i · distance correlation (final stage)                           |
| east_all             | Σ w_i · distance correlation (all stages, equal weights)             |
| east_kd              | kd_w·KD + (1 − kd_w)·Σ w_i · dCor(final), kd_w = 0.3                 |
| east_fitnet          | Σ w_i · MSE(Linear(student) → D_i, teacher)                          |
| east_fitnet_linear   | Σ w_i · MSE(student, detached compact teacher) + L_teacher           |
| east_dc_linear       | Σ w_i · dCor(student, detached compact teacher) + L_teacher          |

``loss.stages`` / ``loss.stage_weights`` override a system's default taps. Teacher and student
sequences are aligned from their stored frame times (``losses.align``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from east.config import RunConfig

__all__ = [
    "LinearProbe",
    "System",
    "Trainable",
    "regularizers",
    "teacher_key",
    "time_average",
]


def teacher_key(index: int) -> str:
    return f"t{index}"


def regularizers(cfg: RunConfig) -> list[Any]:
    """The L_reg terms of ``cfg.system`` (a list of ``losses.RegularizerSpec``)."""
    from east.train.losses import RegularizerSpec

    info = cfg.system_info
    stages: str | tuple[float, ...] = (
        tuple(cfg.loss.stage_weights)
        if cfg.loss.stage_weights is not None
        else (cfg.loss.stages or info.stages)
    )
    weights = [t.weight for t in cfg.teachers]
    total = sum(weights) or 1.0
    specs = []
    feature_share = 1.0
    if info.kd is not None:
        kd_weight = 1.0 if info.kd == "only" else cfg.loss.kd_weight
        specs.append(RegularizerSpec("kd", teacher_key(0), weight=kd_weight, tau=cfg.loss.tau))
        feature_share = 1.0 - kd_weight
    if info.measure is not None:
        for i, w in enumerate(weights):
            specs.append(
                RegularizerSpec(
                    info.measure,
                    teacher_key(i),
                    stages=stages,
                    weight=feature_share * w / total,
                    compress=info.compress,
                    align_mode=cfg.loss.align,
                    clip_frames=cfg.teachers[i].clip_frames,
                )
            )
    return specs


class LinearProbe(nn.Module):
    """Teacher_LR: one linear layer on the time-averaged (valid frames only) embedding."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(dim, num_classes)

    def forward(self, embeddings: Tensor, num_frames: Tensor | None = None) -> Tensor:
        return self.proj(time_average(embeddings, num_frames))


def time_average(embeddings: Tensor, num_frames: Tensor | None) -> Tensor:
    """Mean over the valid frames of ``(N, T, D)`` embeddings."""
    if num_frames is None:
        return embeddings.mean(dim=1)
    t = torch.arange(embeddings.shape[1], device=embeddings.device)
    valid = (t[None, :] < num_frames[:, None].to(embeddings.device)).to(embeddings.dtype)
    total = (embeddings * valid[..., None]).sum(dim=1)
    return total / valid.sum(dim=1, keepdim=True).clamp_min(1.0)


class System(nn.Module):
    """The loss of one system: the loss family's DistillationLoss (holding FitNet heads and
    compressors, which train with the student) plus the frozen Teacher_LR probe for KD.

    ``forward(output, targets, mask, teachers)`` → dict of scalars: ``loss`` (back-propagate),
    ``total`` (the (1 − λ)·pred + λ·reg value, the validation loss), ``pred``, ``reg``.
    """

    def __init__(
        self,
        cfg: RunConfig,
        feature_dims: list[int],
        teacher_dims: list[int],
        num_classes: int,
        multilabel: bool,
        probe: LinearProbe | None = None,
    ) -> None:
        super().__init__()
        from east.train.losses import DistillationLoss

        if cfg.system_info.needs_probe and probe is None:
            raise ValueError(f"system {cfg.system} needs the Teacher_LR probe")
        self.name = cfg.system
        self.loss = DistillationLoss(
            regularizers(cfg),
            cfg.loss.lam,
            feature_dims=feature_dims,
            teacher_dims={teacher_key(i): d for i, d in enumerate(teacher_dims)},
            num_classes=num_classes,
            multilabel=multilabel,
        )
        # the frozen probe is not a parameter of the run (kept outside state_dict)
        self._probe = [probe.requires_grad_(False).eval()] if probe is not None else []

    def forward(
        self, output: Any, targets: Tensor, mask: Tensor | None, teachers: list[Any]
    ) -> dict[str, Tensor]:
        named = {}
        for i, tb in enumerate(teachers):
            if i == 0 and self._probe:  # KD's soft targets, on a copy: the caller's batch stays
                with torch.no_grad():
                    logits = self._probe[0](tb.embeddings.float(), tb.num_frames)
                tb = dataclasses.replace(tb, logits=logits)
            named[teacher_key(i)] = tb
        terms = self.loss(output, targets, mask if mask is not None else None, named)
        out = {
            "loss": terms.loss,
            "total": terms.total.detach(),
            "pred": terms.pred.detach(),
            "reg": terms.reg.detach(),
        }
        for key, value in terms.parts.items():
            if key.startswith("teacher:"):
                out["teacher"] = out.get("teacher", value.new_zeros(())) + value
        return out


class Trainable(nn.Module):
    """Student + the system's trainable extras, as one module (one optimiser, one DDP wrap)."""

    def __init__(self, student: nn.Module, system: System) -> None:
        super().__init__()
        self.student = student
        self.system = system

    def forward(
        self,
        wave: Tensor,
        target: Tensor,
        mask: Any,
        teachers: list[Any],
        is_spectrogram: bool = False,
    ) -> tuple[Any, dict[str, Tensor]]:
        """``wave``: waveforms, or (``is_spectrogram``) front-end outputs mixed before it
        (the log-mel mixup)."""
        # under autocast on CUDA (fp16 convolutions)
        output = self.student(wave, is_spectrogram=is_spectrogram)
        # the losses in float32: dCor's sqrt(d² + 1e-12) and KD's logs are not fp16-safe
        with torch.autocast(wave.device.type, enabled=False):
            output = type(output)(
                output.logits.float(), [f.float() for f in output.features], output.frame_times
            )
            return output, self.system(output, target, mask, teachers)
