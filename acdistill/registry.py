"""Name -> object registries (methods, attacks, datasets, models) with one error message for unknown names."""

from collections.abc import Callable, Iterator
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
