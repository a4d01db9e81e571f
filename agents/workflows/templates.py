"""Templated step inputs and conditions: ``"${ steps.fetch.result.url }"`` in a step's params, and ``when:``.

What is inside ``${ }`` (and a ``when``) is an expression of the project's safe language (``agents.expressions``),
never a template engine that could run code. It reads ``params.NAME`` (the run's params) and
``steps.ID.result...`` (the result of an upstream step). A value that is one whole ``${ ... }`` keeps the type
of what it reads (a number, a list, a mapping); inside longer text it is formatted (JSON for lists and mappings,
nothing for a missing value). Pure: no Django, no database.
"""
import functools
import json
import re
from typing import Any

from agents.exceptions import ExpressionError
from agents.expressions.compiler import CompiledExpression, compile_expression

#: ``${ expression }``: the expression may not contain "}".
TEMPLATE = re.compile(r"\$\{([^}]*)\}")
#: Marks the text of a ``${`` that is never closed (``templates_in``).
UNCLOSED = "\x00unclosed:"
#: What a step's expressions may read.
ROOTS = ("params", "steps")


def templates_in(value: Any, where: str) -> list[tuple[str, str]]:
    """(where, expression text) of every ``${ ... }`` in ``value`` (text, lists and mappings of it); a ``${``
    left open is given as the text after it, marked with ``UNCLOSED`` in front."""
    if isinstance(value, str):
        found = [(where, match.group(1)) for match in TEMPLATE.finditer(value)]
        rest = TEMPLATE.sub("", value)
        if "${" in rest:
            found.append((where, UNCLOSED + rest[rest.index("${") + 2:]))
        return found
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in templates_in(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in templates_in(item, f"{where}[{index}]")]
    return []


def is_templated(value: Any) -> bool:
    """Whether ``value`` holds a ``${ ... }`` anywhere."""
    return bool(templates_in(value, ""))


@functools.lru_cache(maxsize=4096)
def _compiled(text: str, where: str) -> CompiledExpression:
    return compile_expression(text.strip(), where=where)


def syntax_problems(text: str, where: str) -> list[str]:
    """The syntax problems of one expression (what it reads is not looked at)."""
    if text.startswith(UNCLOSED):
        return [f"{where}: '${{' without its closing '}}': {text[len(UNCLOSED):][:60]!r}"]
    try:
        _compiled(text, where)
    except ExpressionError as error:
        return [str(error)]
    return []


def expression_problems(text: str, where: str, *, params: set[str], item: bool = False) -> tuple[list[str], set[str]]:
    """The problems of one expression (syntax with its column, what it reads) and the steps it reads; ``item``: it
    may read ``item`` and ``index`` too (the params of a mapped step)."""
    if problems := syntax_problems(text, where):
        return problems, set()
    compiled = _compiled(text, where)
    problems, steps = [], set()
    for path in compiled.fields:
        root, _, rest = path.partition(".")
        parts = rest.split(".") if rest else []
        if root == "params":
            if parts and parts[0] not in params:
                problems.append(f"{where}: reads params.{parts[0]}, which is not a parameter of the workflow "
                                f"(declared: {', '.join(sorted(params)) or 'none'})")
        elif root == "steps" and len(parts) >= 2 and parts[1] == "result":
            steps.add(parts[0])
        elif root == "steps":
            problems.append(f"{where}: reads {path}; a step's value is read as steps.ID.result (or a part of it)")
        elif root in ("item", "index") and item:
            continue
        else:
            problems.append(f"{where}: reads {path!r}; an expression reads params.NAME or steps.ID.result"
                            + (" (item and index only in the params of a step with map)" if root in ("item", "index")
                               else ""))
    return problems, steps


def render(value: Any, context: dict) -> Any:
    """``value`` with every ``${ ... }`` replaced by its value in ``context`` (``{params, steps}``);
    ``ExpressionError`` naming the expression when one cannot be evaluated."""
    if isinstance(value, str):
        whole = TEMPLATE.fullmatch(value.strip()) if value.strip().startswith("${") else None
        if whole:
            return _compiled(whole.group(1), "template").evaluate(context)
        return TEMPLATE.sub(lambda match: _text(_compiled(match.group(1), "template").evaluate(context)), value)
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value


def value_of(text: str, context: dict, where: str = "expression"):
    """The value of one expression (a step's ``cache.key``) in ``context``."""
    return _compiled(text, where).evaluate(context)


def condition_holds(text: str, context: dict) -> bool:
    """Whether a step's ``when`` is true in ``context``."""
    return bool(_compiled(text, "when").evaluate(context))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list, bool)):
        return json.dumps(value)
    return str(value)
