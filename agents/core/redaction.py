"""Secret values kept out of stored text and logs: what a secret or environment reference resolved to in this
process is remembered, and taken out of errors, results and log lines before they are stored or written. (No
Django and no models here: the logging configuration loads the filter before the apps are ready.)"""
import logging
from typing import Any

#: Values of secrets (and environment references) this process read for use, newest last: taken out of any text
#: it stores or logs (``secrets_redacted``). Bounded; values shorter than ``_REDACT_MIN_CHARS`` are not tracked
#: (redacting "1" would mangle every number).
_REVEALED: dict[str, None] = {}
_REVEALED_MAX = 512
_REDACT_MIN_CHARS = 4
#: What a secret's value is replaced by.
REDACTED = "[redacted]"


def revealed(value: str) -> str:
    """Remember ``value`` (a secret just read for use) for redaction; return it."""
    if len(value) >= _REDACT_MIN_CHARS:
        _REVEALED.pop(value, None)
        _REVEALED[value] = None
        while len(_REVEALED) > _REVEALED_MAX:
            _REVEALED.pop(next(iter(_REVEALED)))
    return value


def secrets_redacted(value: Any) -> Any:
    """``value`` (text, or JSON-like lists and mappings of it) with every secret value this process has read for
    use replaced by ``[redacted]``: what a server echoed of a header (an error body, a result) is stored without
    it."""
    if not _REVEALED:
        return value
    if isinstance(value, str):
        return _replaced(value, sorted(_REVEALED, key=len, reverse=True), REDACTED)
    if isinstance(value, dict):
        return {key: secrets_redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [secrets_redacted(item) for item in value]
    return value


def replaced_in_place(value: Any, texts: set[str], by: str, numbers: set = frozenset()) -> Any:
    """``value`` (JSON-like lists and mappings, changed in place, or one text or number) with each of ``texts`` in
    its strings, the longest first, and each of ``numbers`` replaced by ``by``. Walked with a stack of its own: a
    value as deep as a context may be is not a recursion."""
    ordered = sorted(texts, key=len, reverse=True)  # the longest first: a part is not replaced before the whole

    def shown(leaf: Any) -> Any:
        if isinstance(leaf, str):
            return _replaced(leaf, ordered, by)
        return by if numbers and type(leaf) in (int, float) and leaf in numbers else leaf

    return leaves_in_place(value, shown)


def leaves_in_place(value: Any, shown: Any) -> Any:
    """``value`` (JSON-like lists and mappings, changed in place, or one leaf) with each leaf (text, number, bool,
    None) replaced by ``shown(leaf)``. Walked with a stack of its own: a value as deep as a context may be is not a
    recursion."""
    if not isinstance(value, (dict, list)):
        return shown(value)
    pending, seen = [value], set()
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for key, leaf in list(node.items() if isinstance(node, dict) else enumerate(node)):
            if isinstance(leaf, (dict, list)):
                pending.append(leaf)
            else:
                node[key] = shown(leaf)
    return value


def _replaced(text: str, ordered: list[str], by: str) -> str:
    for part in ordered:
        if part in text:
            text = text.replace(part, by)
    return text


class SecretRedactFilter(logging.Filter):
    """Takes the secret values this process has read out of every log line (message and traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _REVEALED:
            message = record.getMessage()
            redacted = secrets_redacted(message)
            if redacted != message:
                record.msg, record.args = redacted, None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = secrets_redacted(record.exc_text)
        return True
