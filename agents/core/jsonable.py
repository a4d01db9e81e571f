"""Values as JSON output holds them: times as ISO 8601 text, and whether a value can be stored as JSON at all."""
import json
from datetime import datetime
from typing import Any


def iso(value: datetime | None) -> str | None:
    """A time as ISO 8601 text; None stays None."""
    return value.isoformat() if value else None


def is_json(value: Any) -> bool:
    """Whether ``value`` can be stored as JSON (an action's result, say)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
