"""The exception family of autopeft.

Every error a user can cause by their input derives from :class:`AutopeftError`; the CLI
prints its message as one line and exits with code 2. The message names the problem and
its place (file, key, line where known).
"""

from __future__ import annotations


class AutopeftError(Exception):
    """Base class: a problem with the user's input or environment, reported in one line."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None,
                 line: int | None = None) -> None:
        self.problem = message
        self.source = source
        self.key = key
        self.line = line
        super().__init__(self._format())

    def _format(self) -> str:
        place = []
        if self.source:
            place.append(f"{self.source}:{self.line}" if self.line else self.source)
        elif self.line:
            place.append(f"line {self.line}")
        if self.key:
            place.append(f"key '{self.key}'")
        return f"{', '.join(place)}: {self.problem}" if place else self.problem


class ConfigError(AutopeftError):
    """The search configuration (YAML file or CLI flags) is malformed or inconsistent."""


class SpaceError(ConfigError):
    """A search-space file or a configuration of it is invalid."""


class SpaceExhausted(SpaceError):
    """Every configuration of the space has been asked for: nothing new is left to propose."""


class DataError(AutopeftError):
    """The task's data cannot be loaded or is unusable (empty, missing column, ...)."""


class ModelError(AutopeftError):
    """The base model cannot be found or loaded."""


class ObjectiveError(AutopeftError):
    """An objective cannot be loaded or returned an unusable value."""


class PluginError(AutopeftError):
    """An installed plugin cannot be loaded, is of the wrong kind, or takes a name already taken."""


class TrialError(Exception):
    """A trial failed (exception, NaN loss); the search records it and goes on."""


class ClusterError(AutopeftError):
    """A Ray cluster that cannot run the search as given (a node that cannot see its files)."""
