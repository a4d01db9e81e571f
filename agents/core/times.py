"""Times given with an offset, as UTC, within the calendar Python can hold. Pure: no Django."""
from datetime import UTC, datetime


def utc_in_calendar(value: datetime, *, shown: str | None = None) -> datetime:
    """An aware ``value`` as UTC; ``ValueError`` naming it (as ``shown``, else its ISO text) when it has no offset or
    when UTC puts it before year 1 or after 9999 (``0001-01-01T00:00:00+14:00``, ``9999-12-31T23:59:59-14:00``),
    which PostgreSQL stores but no read of the row can turn back into Python."""
    shown = value.isoformat() if shown is None else shown
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{shown} has no offset; give one or Z (e.g. 2026-11-01T00:00:00Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        side = "before year 1" if value.year == 1 else "after year 9999"
        raise ValueError(f"{shown} is {side} in UTC; give a time within the years 1-9999") from None
