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
from east.extract.teachers.base import Teacher, TeacherInfo, frozen


class TeacherFactory(Protocol):
    def __call__(self, weights: str | Path | None, device: str) -> Teacher: ...


_REGISTRY: dict[str, tuple[TeacherInfo, TeacherFactory]] = {}
# user models as teachers (custom.py; HEAR modules: hear.py); kept here so that no family
# module is imported for them
_CUSTOM_PREFIXES = ("torchscript:", "export:", "py:", "hear:")


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
    if name.startswith(_CUSTOM_PREFIXES):
        from east.extract.teachers.custom import custom_teacher_info

        return custom_teacher_info(name)
    _load_families()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise EastError(f"unknown teacher {name!r}; known teachers: {known}")
    return _REGISTRY[name][0]


def create_teacher(name: str, weights: str | Path | None = None, device: str = "cpu") -> Teacher:
    """Build teacher ``name`` in eval mode on ``device`` with frozen weights.

    ``torchscript:PATH``, ``export:PATH`` and ``py:module:factory`` build a user model as a
    teacher (:mod:`east.extract.teachers.custom`); ``hear:MODULE`` a HEAR 2021 module
    (:mod:`east.extract.teachers.hear`).
    """
    if name.startswith(_CUSTOM_PREFIXES):
        from east.extract.teachers.custom import create_custom_teacher

        return create_custom_teacher(name, weights=weights, device=device)
    teacher_info(name)  # one-line error for unknown names
    # east's families build (and freeze) through base.build_teacher; a factory registered from
    # outside may not, so the registry freezes whatever it returns
    return frozen(_REGISTRY[name][1](weights, device))


def _load_families() -> None:
    # Importing the family modules registers their teachers.
    from east.extract import teachers  # noqa: F401
