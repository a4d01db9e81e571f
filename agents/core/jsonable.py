"""Values as JSON output holds them: times as ISO 8601 text, and whether a value can be stored as JSON at all."""
import json
import math
import re
from datetime import datetime
from typing import Any, Iterator

#: Characters PostgreSQL cannot store in text (NUL) or UTF-8 cannot encode (lone surrogates).
UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
#: Deepest nesting a JSON value from outside (an API request, an event's payload) may have.
MAX_JSON_DEPTH = 32


def iso(value: datetime | None) -> str | None:
    """A time as ISO 8601 text; None stays None."""
    return value.isoformat() if value else None


def json_nodes(value: Any) -> Iterator[tuple[Any, int, bool]]:
    """Every value in ``value`` (parsed JSON, nested however deep), itself first, as ``(item, depth, is_key)``: the
    depth is 0 for ``value`` and one more inside each dict or list; a dict's keys come as soon as the dict has (at
    its children's depth), before its values. Lazy, so a caller may stop at the first problem or after a count."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        yield item, depth, False
        if isinstance(item, dict):
            for key in item:
                yield key, depth + 1, True
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def holds_unstorable_text(value: Any) -> bool:
    """Whether a key or text anywhere in ``value`` (parsed JSON, nested however deep) holds a NUL character or a
    lone surrogate."""
    return any(isinstance(item, str) and UNSTORABLE.search(item) for item, _, _ in json_nodes(value))


def storable(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, text, numbers) as PostgreSQL can store it: every NUL character and lone
    surrogate in its keys and texts replaced by U+FFFD, NaN and infinity by null (as JavaScript's JSON.stringify
    does). For what describes outside data or an outside answer (a profile's top values, a server's body, a plugin's
    output), which the data file or the server keeps as it was."""
    if isinstance(value, str):
        return UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {storable(key): storable(child) for key, child in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(child) for child in value]
    return value


def storable_json(value: Any) -> str:
    """``json.dumps(value)`` as PostgreSQL can store it (see ``storable``); values without such text or numbers
    (nearly all) are encoded once and never walked. ``TypeError`` or ``ValueError`` for what JSON cannot hold at all
    (a set, a circular list, an integer beyond Python's 4,300 digits of text)."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)  # a lone surrogate stays itself, not \\udxxx
    except ValueError as error:
        if "ircular" in str(error):  # "Circular reference detected": walking it would never end
            raise
        return json.dumps(storable(value), ensure_ascii=False)  # NaN or infinity
    if "\\u0000" in text or UNSTORABLE.search(text):
        text = json.dumps(storable(value), ensure_ascii=False)
    return text


def storable_answer(value: Any) -> Any:
    """What an action answered, as a JSON column can store it: ``storable``, or ``{"repr": ...}`` when JSON cannot
    hold it at all (a set, a circular list)."""
    try:
        return json.loads(storable_json(value))
    except (TypeError, ValueError, RecursionError):
        try:
            return {"repr": repr(value)[:2000]}
        except RecursionError:
            return {"repr": f"a {type(value).__name__} nested too deeply to show"}


def json_problem(value: Any) -> str | None:
    """Why ``value`` (parsed JSON) cannot be stored as JSON in PostgreSQL (NUL, lone surrogates, a number beyond a
    double such as ``1e999``, which a JSON reader makes infinity, too deep), or None."""
    for item, depth, _ in json_nodes(value):
        if depth > MAX_JSON_DEPTH:
            return f"nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, str):
            if UNSTORABLE.search(item):
                return "text may not contain NUL characters or unpaired surrogates"
        elif isinstance(item, float) and not math.isfinite(item):
            return "a number beyond a double's range (such as 1e999), NaN or infinity cannot be stored"
    return None
