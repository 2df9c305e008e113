"""The registry of systems: every system of the two papers, by name, with its facts.

A system is a recipe for stage 2, not a network: which L_reg terms a student is trained with
(``east.train.systems`` turns a record into the loss family's terms), whether it reads teacher
embeddings, whether it takes soft targets from a Teacher_LR probe, and its name in the papers.
This module imports nothing heavy: the config, the planner and the report read it at start-up.

``register_system`` adds one record, the same way ``register_student`` and ``register_teacher``
add theirs; the order of registration is the papers' order (tables list systems in it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from east.errors import ConfigError

__all__ = [
    "SYSTEMS",
    "SystemInfo",
    "is_probe",
    "list_systems",
    "register_system",
    "system_info",
]


@dataclass(frozen=True)
class SystemInfo:
    """One system.

    ``measure``: the feature-distance term of L_reg (``dcor``, ``cos_diff``, ``fitnet``) or None;
    ``stages``: the student taps it regularises unless ``loss.stages`` says otherwise;
    ``compress``: embedding compression (the ``+ Linear`` variants: a compact teacher trained
    with the student); ``kd``: soft targets from a Teacher_LR run — ``"only"`` (L_reg is KD),
    ``"share"`` (``loss.kd_weight``·KD + the rest for ``measure``) or None; ``probe``: the system
    is the Teacher_LR linear probe itself (no student); ``label``: the papers' name.
    """

    name: str
    label: str
    measure: Literal["dcor", "cos_diff", "fitnet"] | None = None
    stages: Literal["final", "all"] = "final"
    compress: bool = False
    kd: Literal["only", "share"] | None = None
    probe: bool = False

    @property
    def needs_probe(self) -> bool:
        """Takes soft targets from a finished teacher_lr run (``teacher_lr_run``)."""
        return self.kd is not None

    @property
    def uses_teachers(self) -> bool:
        """Reads teacher embeddings (kd too: the probe turns them into soft targets)."""
        return self.probe or self.measure is not None or self.kd is not None

    @property
    def regularized(self) -> bool:
        """Has an L_reg term, so ``loss.lambda`` must be > 0."""
        return self.measure is not None or self.kd is not None

    @property
    def trains_student(self) -> bool:
        return not self.probe


SYSTEMS: dict[str, SystemInfo] = {}


def register_system(name: str, label: str, **facts: object) -> SystemInfo:
    """Add system ``name`` (the papers' ``label``, the facts of :class:`SystemInfo`)."""
    if name in SYSTEMS:
        raise ValueError(f"system {name!r} registered twice")
    info = SystemInfo(name, label, **facts)  # type: ignore[arg-type]
    SYSTEMS[name] = info
    return info


def list_systems(where: Callable[[SystemInfo], bool] | None = None) -> tuple[str, ...]:
    """Registered system names in the papers' order (those ``where`` accepts)."""
    return tuple(n for n, info in SYSTEMS.items() if where is None or where(info))


def is_probe(name: str) -> bool:
    """Whether ``name`` is a registered probe system (Teacher_LR: a run without a student)."""
    info = SYSTEMS.get(name)
    return info is not None and info.probe


def system_info(name: str) -> SystemInfo:
    """Registry entry of ``name``; :class:`ConfigError` naming the known systems if unknown."""
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ConfigError(f"unknown system {name!r}; choose one of {', '.join(SYSTEMS)}") from None


# paper 1 (Ding & Lerch 2023)
register_system("baseline", "Baseline")
register_system("teacher_lr", "Teacher_LR", probe=True)
register_system("kd", "KD", kd="only")
register_system("east_cos_diff", "EAsT_Cos-Diff", measure="cos_diff")
register_system("east_final", "EAsT_Final", measure="dcor")
register_system("east_all", "EAsT_All", measure="dcor", stages="all")
register_system("east_kd", "EAsT_KD", measure="dcor", kd="share")
# paper 2 (Ding & Lerch 2024)
register_system("east_fitnet", "EAsT_FitNet", measure="fitnet")
register_system("east_fitnet_linear", "EAsT_FitNet + Linear", measure="fitnet", compress=True)
register_system("east_dc", "EAsT_DC", measure="dcor")
register_system("east_dc_linear", "EAsT_DC + Linear", measure="dcor", compress=True)
