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
        for secret in sorted(_REVEALED, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {key: secrets_redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [secrets_redacted(item) for item in value]
    return value


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
