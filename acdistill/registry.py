"""Name -> object registries (methods, models, attacks, datasets, formats) with one error message for unknown names.

One style for all of them: a thing registers itself where it is defined, with its registry's `register_<kind>`
(register_method, register_model, register_attack, register_dataset, register_format), and a package of such
things imports all its modules (`import_modules`), so that a new method or architecture is one new file."""

import importlib
import pkgutil
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Generic, TypeVar

from acdistill.errors import AcdistillError, unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> T for one kind of thing (methods, models, attacks, datasets, formats). `register(name)` returns a
    decorator that adds an item (RuntimeError for a name registered twice); `get(name)` returns it, or raises
    AcdistillError naming the close names and every choice; `names()` is sorted. Registries are read when used, so
    an item registered after import (a user's method file) is listed and found everywhere."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise RuntimeError(f"{self.kind} '{name}' registered twice")
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise AcdistillError(unknown_name(self.kind, name, self.names())) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_modules(package: str, path: Iterable[str], skip: Collection[str] = ()) -> None:
    """Import every module of `package` (its `__name__` and `__path__`) but those in `skip`, so that each registers
    what it defines."""
    for module in pkgutil.iter_modules(path):
        if module.name not in skip:
            importlib.import_module(f"{package}.{module.name}")
