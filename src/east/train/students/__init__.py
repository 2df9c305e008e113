"""Student networks (helper F): ``create_student(name, num_classes, **kw)``,
``list_students()``, :class:`StudentOutput`.

Every student takes waveforms ``(N, L)`` at ``student.sample_rate`` (its own device-side
front-end, ``student.frontend``) and returns logits plus its stage feature maps ``(N, T, C)``
with frame times; ``student.feature_dims`` lists ``C`` per tap, the last tap is the "final" one.
"""

from __future__ import annotations

from east.errors import ConfigError
from east.train.students import cp_resnet, harmonic_cnn, mobile_fcn, short_chunk_cnn  # noqa: F401
from east.train.students.base import STUDENTS, Student, StudentInfo, StudentOutput

__all__ = [
    "STUDENTS",
    "Student",
    "StudentInfo",
    "StudentOutput",
    "create_student",
    "list_students",
    "student_info",
]


def list_students() -> list[str]:
    """Registered student names, sorted."""
    return sorted(STUDENTS)


def student_info(name: str) -> StudentInfo:
    """Registry entry of ``name``; :class:`ConfigError` naming the known students if unknown."""
    try:
        return STUDENTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown student {name!r}; choose one of {', '.join(list_students())}"
        ) from None


def create_student(name: str, num_classes: int, **kwargs: object) -> Student:
    """Build student ``name`` with a ``num_classes``-way head; ``kwargs`` go to its factory
    (e.g. ``rho``/``base_channels`` for ``cp_resnet``, ``frontend`` overrides)."""
    return student_info(name).factory(num_classes, **kwargs)
