"""Teacher adapters, one module per family; importing this package registers them all."""

from east.extract.teachers import (  # noqa: F401  (imported for registration)
    mule,
    openl3,
    panns,
    passt,
    taggers,
    vggish,
)
from east.extract.teachers.base import Teacher, TeacherInfo, TeacherOutput, WeightFile
from east.extract.teachers.registry import (
    create_teacher,
    list_teachers,
    register_teacher,
    teacher_info,
)

__all__ = [
    "Teacher",
    "TeacherInfo",
    "TeacherOutput",
    "WeightFile",
    "create_teacher",
    "list_teachers",
    "register_teacher",
    "teacher_info",
]
