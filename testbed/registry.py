"""Typed registries of plug-ins (workloads, models) with "did you mean" errors.

Built-ins register when their package is imported; third parties register through the
entry-point group ``testbed.<kind>s`` (e.g. ``testbed.workloads``), which is loaded lazily the
first time a name is looked up, so the core never imports ``workloads`` directly.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, known: list[str]) -> str:
    """Return " Did you mean 'x'?" for the closest known name, or "" if none is close."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


class UnknownNameError(KeyError):
    """Raised by ``Registry.get`` for a name that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(sorted(known)) or '(none)'}."
                         + did_you_mean(name, known))

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """A mapping from explicit snake_case names to plug-ins of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._loaded_entry_points = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a second registration of a name is an error."""

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def _load_entry_points(self) -> None:
        if self._loaded_entry_points:
            return
        self._loaded_entry_points = True
        for ep in entry_points(group=f"testbed.{self.kind}s"):
            if ep.name not in self._items:
                ep.load()  # importing the module registers its plug-ins

    def get(self, name: str) -> T:
        """Return the plug-in registered as ``name``.

        Raises
        ------
        UnknownNameError
            Listing the known names and the closest match.
        """
        if name not in self._items:
            self._load_entry_points()
        if name not in self._items:
            raise UnknownNameError(self.kind, name, list(self._items))
        return self._items[name]

    def validate(self, name: str) -> str:
        """``name`` if it is registered; else ``ValueError`` listing the known names (for config validators)."""
        try:
            self.get(name)
        except UnknownNameError as exc:
            raise ValueError(str(exc)) from None
        return name

    def names(self) -> list[str]:
        """All registered names, entry points included."""
        self._load_entry_points()
        return sorted(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
