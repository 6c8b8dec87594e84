"""Constraints written in a search-space file: boolean expressions over parameter values.

``constraints: ["serial_k < 10 or parallel_k < 10", "trainable_percent <= 0.5"]``

An expression sees every parameter by name (per-layer parameters as lists, ``None`` where
inactive), the derived quantities ``trainable_params`` and ``trainable_percent`` (the
adapter's exact count, when its builder can count without building the model), and a few
pure functions. Expressions are checked against a whitelist of syntax before anything runs:
a space file is data, and evaluating arbitrary Python from it would make it code.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from autopeft.errors import SpaceError

DERIVED = frozenset({"trainable_params", "trainable_percent"})
FUNCTIONS = {"sum": sum, "len": len, "any": any, "all": all, "min": min, "max": max, "abs": abs}
_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
            ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
            ast.Is, ast.IsNot, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod,
            ast.Pow, ast.Name, ast.Load, ast.Constant, ast.Call, ast.Subscript, ast.Slice, ast.List,
            ast.Tuple, ast.GeneratorExp, ast.comprehension, ast.Store, ast.IfExp)


@dataclass(frozen=True)
class Expression:
    """A compiled constraint; ``names`` are the parameters and derived quantities it reads."""

    text: str
    names: frozenset[str]
    line: int | None
    code: Any

    def holds(self, scope: dict[str, Any]) -> bool:
        try:
            return bool(eval(self.code, {"__builtins__": {}, **FUNCTIONS}, scope))  # noqa: S307
        except (TypeError, ValueError, ZeroDivisionError, NameError):
            # e.g. None (an inactive value) compared with a number, max() of nothing: the
            # configuration cannot be judged to satisfy it
            return False

    def __reduce__(self) -> tuple:
        # Code objects do not pickle; spaces travel to Ray workers and into searcher checkpoints.
        return (_recompile, (self.text, self.names, self.line))

    def describe(self) -> str:
        return f"'{self.text}'" + (f" (line {self.line})" if self.line else "")

    @property
    def uses_derived(self) -> bool:
        return bool(self.names & DERIVED)


def compile_expression(text: Any, parameters: set[str], source: str | None, line: int | None) -> Expression:
    """Parse and check one constraint; SpaceError names the file and line."""
    def fail(message: str) -> SpaceError:
        return SpaceError(message, source=source, key="constraints", line=line)

    if not isinstance(text, str) or not text.strip():
        raise fail("a constraint must be a non-empty expression string")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise fail(f"cannot parse '{text}': {err.msg}") from None
    bound = {n.id for node in ast.walk(tree) if isinstance(node, ast.comprehension)
             for n in ast.walk(node.target) if isinstance(n, ast.Name)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise fail(f"'{text}' uses {type(node).__name__}, which constraints do not allow")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
            raise fail(f"'{text}' calls something other than {sorted(FUNCTIONS)}")
        if isinstance(node, ast.Name) and node.id not in FUNCTIONS and node.id not in bound:
            if node.id not in parameters and node.id not in DERIVED:
                raise fail(f"'{text}' names '{node.id}', which is neither a parameter "
                           f"({sorted(parameters)}) nor one of {sorted(DERIVED)}")
            names.add(node.id)
    return Expression(text.strip(), frozenset(names), line, compile(tree, "<constraint>", "eval"))


def _recompile(text: str, names: frozenset[str], line: int | None) -> Expression:
    tree = ast.parse(text, mode="eval")
    return Expression(text, names, line, compile(tree, "<constraint>", "eval"))
