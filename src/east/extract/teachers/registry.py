"""Teacher registry: ``create_teacher("passt")`` like timm's ``create_model``.

Each family module registers its teachers at import with :func:`register_teacher`::

    @register_teacher(TeacherInfo(name="vggish", ...))
    def vggish(weights: str | Path | None, device: str) -> Teacher: ...

``weights`` is ``None`` (use the pinned official file from the weights directory, error if
missing), a path (local override) or the literal ``"random"`` (explicitly random weights,
stamped as such in the cache provenance).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from east.errors import EastError
from east.extract.teachers.base import Teacher, TeacherInfo


class TeacherFactory(Protocol):
    def __call__(self, weights: str | Path | None, device: str) -> Teacher: ...


_REGISTRY: dict[str, tuple[TeacherInfo, TeacherFactory]] = {}


def register_teacher(info: TeacherInfo) -> Callable[[TeacherFactory], TeacherFactory]:
    def decorator(factory: TeacherFactory) -> TeacherFactory:
        if info.name in _REGISTRY:
            raise ValueError(f"teacher {info.name!r} registered twice")
        _REGISTRY[info.name] = (info, factory)
        return factory

    return decorator


def list_teachers() -> list[TeacherInfo]:
    _load_families()
    return [info for info, _ in _REGISTRY.values()]


def teacher_info(name: str) -> TeacherInfo:
    _load_families()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise EastError(f"unknown teacher {name!r}; known teachers: {known}")
    return _REGISTRY[name][0]


def create_teacher(name: str, weights: str | Path | None = None, device: str = "cpu") -> Teacher:
    """Build teacher ``name`` in eval mode on ``device`` with frozen weights."""
    info = teacher_info(name)
    teacher = _REGISTRY[name][1](weights, device)
    teacher.eval().requires_grad_(False)
    return teacher


def _load_families() -> None:
    # Importing the family modules registers their teachers.
    from east.extract import teachers  # noqa: F401
