"""Parameter schemas: the JSON type, bounds and default of each named parameter, and the messages that say
what does not fit. Used by actions, check types, notifiers and agent tasks alike. Pure: no Django."""
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: JSON types a parameter may declare, and the Python types that satisfy each.
PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "any": (object,),
}


@dataclass(frozen=True)
class Param:
    """One parameter: JSON type, whether required, default, and bounds."""

    type: str = "any"
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None

    def check(self, value: Any) -> str | None:
        """Return why ``value`` does not fit this parameter, or None when it does (``FROM_EVENT`` fits any)."""
        if value is FROM_EVENT:
            return None
        if self.type != "any":
            allowed = PARAM_TYPES[self.type]
            if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
                return f"must be {_article(self.type)} {self.type}, got {json_type(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if self.minimum is not None and isinstance(value, (int, float)) and value < self.minimum:
            return f"must be at least {self.minimum}, got {value}"
        if self.maximum is not None and isinstance(value, (int, float)) and value > self.maximum:
            return f"must be at most {self.maximum}, got {value}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        return None


class _FromEvent:
    """A value known only later: a trigger's parameter given as a '$.' path, filled in from the event as it fires,
    or a step's parameter given as a template, rendered when the run gets there. It fits every parameter when the
    definition is loaded (its name is checked; its value then)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<from the event>"


FROM_EVENT = _FromEvent()

#: A schema: each parameter's name and what it must be.
Schema = dict[str, Param]


def schema_validate(schema: Schema, params: dict) -> list[str]:
    """Return the problems with ``params`` for ``schema`` (empty when they fit), each naming its parameter."""
    problems = []
    for name in params:
        if name not in schema:
            known = ", ".join(sorted(schema)) or "none"
            problems.append(f"unknown parameter {name!r} (known: {known})")
    for name, param in schema.items():
        if name not in params:
            if param.required:
                problems.append(f"missing required parameter {name!r}")
            continue
        reason = param.check(params[name])
        if reason:
            problems.append(f"parameter {name!r} {reason}")
    return problems


def params_undeclared(declared: Iterable[str], params: dict, *, of: str) -> list[str]:
    """A problem for each name in ``params`` that ``declared`` lacks (a run parameter the workflow or pipeline ``of``
    does not declare), naming it, ``of`` and what is declared; empty when every one is declared."""
    declared = sorted(declared)
    known = ", ".join(declared) or "none"
    return [f"unknown run parameter {name!r} for {of} (declared: {known})"
            for name in sorted(set(params) - set(declared))]


def schema_defaults(schema: Schema, params: dict) -> dict:
    """Return ``params`` with every unset optional parameter at its default."""
    return {**{n: p.default for n, p in schema.items() if not p.required}, **params}


def json_type(value: Any) -> str:
    """The JSON type name of ``value`` ("string", "integer", ..., "null"), for messages."""
    for name, types in PARAM_TYPES.items():
        if name != "any" and isinstance(value, types) and not (isinstance(value, bool) and name != "boolean"):
            return name
    return "null" if value is None else type(value).__name__


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
