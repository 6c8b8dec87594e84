"""Registries of named extensions: autopeft's own, and those of installed packages.

Each kind of extension (adapters, strategies, objectives, optimizers, tasks) has one
:class:`Registry`. autopeft's modules fill it with decorators (``@register_optimizer("mobo")``);
other packages declare entry points in the group ``autopeft.<kind>``, as pytest's plugins
and Optuna's integrations do::

    [project.entry-points."autopeft.optimizers"]
    my_bo = "my_package.optim:MyOptimizer"

Installing a package is all a user does: an entry point is loaded when its name is first
looked up (listing names loads nothing). A name taken twice is an error naming both sources.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from autopeft.errors import AutopeftError, PluginError

T = TypeVar("T")


def _defined_at(obj: Any) -> str:
    """Where an object was defined, as a registry names it in a conflict."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


class Registry(Generic[T]):
    """Name -> extension of one kind.

    Args:
        kind: the plural noun, also the entry-point group suffix (``optimizers``).
        check: raises ``TypeError`` for an object that is not an extension of this kind.
        error: the error class for an unknown name, raised with ``key=key``.
        lazy: autopeft's own names and the modules that register them by decorator, imported
            when the name is first looked up (importing them up front would load torch or
            BoTorch for every ``--help`` and every input check).
    """

    def __init__(self, kind: str, *, check: Callable[[Any], None], error: type[AutopeftError],
                 key: str, lazy: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.group = f"autopeft.{kind}"
        self._check, self._error, self._key = check, error, key
        self._lazy = dict(lazy or {})
        self._items: dict[str, T] = {}
        self._sources: dict[str, str] = {}
        self._points: dict[str, list[EntryPoint]] | None = None  # by name, loaded one name at a time

    def register(self, name: str, item: T, source: str | None = None) -> T:
        """Add ``item`` under ``name``; the same object again is a no-op (a plugin module that
        registers itself by decorator and by entry point)."""
        source = source or _defined_at(item)
        try:
            self._check(item)
        except TypeError as err:
            raise PluginError(f"{self.group} '{name}' from {source} is not usable: {err}") from None
        if name in self._items and self._items[name] is not item:
            raise PluginError(f"{self.group} '{name}' is registered twice: by {self._sources[name]} "
                              f"and by {source}")
        self._items[name] = item
        self._sources.setdefault(name, source)
        return item

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@registry.decorator(name)``: register the decorated object."""
        return lambda item: self.register(name, item)

    def get(self, name: str, **where: Any) -> T:
        """The extension ``name``; an unknown name raises the registry's error, placed by
        ``where`` (``source=``, ``line=``) and naming the choices. Only the entry points of
        that name are loaded, each checked against what already holds the name."""
        if name in self._lazy:
            importlib.import_module(self._lazy.pop(name))
        for point in self._entry_points().pop(name, []):
            self.register(name, _load(point), _describe(point))
        if name not in self._items:
            raise self._error(f"unknown {self.kind[:-1]} '{name}'; choose one of {self.names()}",
                              key=where.pop("key", self._key), **where)
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy or name in self._entry_points()

    def names(self) -> list[str]:
        return sorted({*self._items, *self._lazy, *self._entry_points()})

    def items(self) -> Iterator[tuple[str, T]]:
        """Every extension, entry points loaded."""
        return iter([(name, self.get(name)) for name in self.names()])

    def _entry_points(self) -> dict[str, list[EntryPoint]]:
        if self._points is None:
            self._points = {}
            for point in entry_points(group=self.group):
                self._points.setdefault(point.name, []).append(point)
        return self._points


def _describe(point: EntryPoint) -> str:
    dist = getattr(point, "dist", None)
    return f"{dist.name if dist else 'an installed package'} ({point.value})"


def _load(point: EntryPoint) -> Any:
    try:
        return point.load()
    except Exception as err:  # a third party's import may raise anything
        raise PluginError(f"entry point '{point.name}' of group {point.group} failed to load "
                          f"({type(err).__name__}: {err})", source=_describe(point)) from None


def subclass_of(base: type) -> Callable[[Any], None]:
    """A registry check: the object must be a subclass of ``base``."""

    def check(item: Any) -> None:
        if not (isinstance(item, type) and issubclass(item, base)):
            raise TypeError(f"expected a subclass of {base.__module__}.{base.__qualname__}, got {item!r}")

    return check


def instance_of(cls: type) -> Callable[[Any], None]:
    """A registry check: the object must be an instance of ``cls``."""

    def check(item: Any) -> None:
        if not isinstance(item, cls):
            raise TypeError(f"expected a {cls.__module__}.{cls.__qualname__}, got {item!r}")

    return check
