"""The star exports of the course-named modules, assembled as the course's modules assemble
theirs: each brings, besides its own names, everything of the modules it star-imports."""

from types import ModuleType
from typing import List


def star_names(*modules: ModuleType) -> List[str]:
    """The names `from m import *` brings for each module in turn, each name once."""
    names = []
    for module in modules:
        names += [name for name in module.__all__ if name not in names]
    return names
