"""Where a teacher comes from: one module per `teacher.source` (train, file, url, robustbench), each a
`TeacherSource` registered with `@register_source`; importing this package registers every module's source.

A new source is one new module here (or a registration anywhere that is imported): its own settings go in
`teacher.<name>`, validated by its `Params`; see docs/design.md."""

from acdistill.registry import import_modules
from acdistill.teachers.base import TEACHER_SOURCES, TeacherSource, register_source

import_modules(__name__, __path__, skip={"base"})

__all__ = ["TEACHER_SOURCES", "TeacherSource", "register_source"]
