"""FEEL temporal values (pure): dates, times, date and times and the two kinds of duration.

A FEEL ``date`` is a ``datetime.date``, a ``date and time`` a ``datetime.datetime`` and a ``time`` a
``datetime.time`` (each with no zone, a fixed offset or an IANA zone). Durations are the two FEEL kinds:
``DayTimeDuration`` (signed seconds, a ``Decimal``) and ``YearMonthDuration`` (signed whole months). Anything that
does not parse or has no meaning (a date minus a time) gives ``None``, FEEL's null. Years are 1..9999.
"""
import calendar
import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2}|@[A-Za-z_][\w/+-]*)?")
_DURATION = re.compile(r"(-)?P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")
_UTC = dt.timezone.utc
_DAY_SECONDS = 86_400
WEEKDAYS = tuple(calendar.day_name)
MONTHS = tuple(calendar.month_name)[1:]


@dataclass(frozen=True)
class DayTimeDuration:
    """FEEL ``days and time duration``: a signed number of seconds (fractions allowed)."""

    seconds: Decimal

    def __str__(self) -> str:
        total = abs(self.seconds)
        days, rest = divmod(total, _DAY_SECONDS)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        text = "-P" if self.seconds < 0 else "P"
        text += f"{int(days)}D" if days else ""
        clock = "".join(f"{int(part)}{unit}" for part, unit in ((hours, "H"), (minutes, "M")) if part)
        clock += f"{_plain(seconds)}S" if seconds else ""
        if clock or not days:
            text += "T" + (clock or "0S")
        return text


@dataclass(frozen=True)
class YearMonthDuration:
    """FEEL ``years and months duration``: a signed whole number of months."""

    months: int

    def __str__(self) -> str:
        years, months = divmod(abs(self.months), 12)
        text = ("-P" if self.months < 0 else "P") + (f"{years}Y" if years else "")
        return text + (f"{months}M" if months or not years else "")


def _plain(number: Decimal) -> str:
    return format(number.normalize(), "f")


def is_date(value: Any) -> bool:
    """Whether ``value`` is a FEEL date (a ``date`` that is not a ``datetime``)."""
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


def is_temporal(value: Any) -> bool:
    """Whether ``value`` is a FEEL date, time, date and time or duration."""
    return isinstance(value, (dt.date, dt.time, DayTimeDuration, YearMonthDuration))


# --- parsing -----------------------------------------------------------------


def _zone(text: str | None) -> dt.tzinfo | None:
    if not text:
        return None
    if text == "Z":
        return _UTC
    if text.startswith("@"):
        try:
            return zoneinfo.ZoneInfo(text[1:])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder ("Europe"), a long name
            raise ValueError(f"unknown time zone {text[1:]!r}") from None
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 18 or minutes > 59:
        raise ValueError(f"offset {text} out of range")
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def _time_parts(found: re.Match) -> dt.time:
    hour, minute, second = int(found.group(1)), int(found.group(2)), int(found.group(3))
    micro = int((found.group(4) or ".0")[1:7].ljust(6, "0"))
    return dt.time(hour, minute, second, micro, tzinfo=_zone(found.group(5)))


def parse_date(text: str) -> dt.date | None:
    """``"2024-01-31"`` as a date, else None."""
    found = _DATE.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        return None
    try:
        return dt.date(*(int(part) for part in found.groups()))
    except ValueError:
        return None


def parse_time(text: str) -> dt.time | None:
    """``"10:30:00"``, ``"10:30:00.5+02:00"``, ``"10:30:00Z"``, ``"10:30:00@Europe/Paris"`` as a time, else None."""
    found = _TIME.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        return None
    try:
        return _time_parts(found)
    except ValueError:
        return None


def parse_date_time(text: str) -> dt.datetime | None:
    """``"2024-01-31T10:30:00Z"`` (or a date alone, at midnight) as a date and time, else None."""
    if not isinstance(text, str):
        return None
    day_text, _, time_text = text.partition("T")
    day = parse_date(day_text)
    if day is None:
        return None
    if not time_text:
        return None if "T" in text else dt.datetime.combine(day, dt.time())
    clock = parse_time(time_text)
    return None if clock is None else dt.datetime.combine(day, clock)


def parse_duration(text: str) -> DayTimeDuration | YearMonthDuration | None:
    """ISO 8601 ``"P1DT2H"`` (days and time) or ``"P1Y2M"`` (years and months) as a duration, else None."""
    found = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if found is None or text.endswith(("P", "T")):
        return None
    sign, years, months, days, hours, minutes, seconds = found.groups()
    factor = -1 if sign else 1
    if (years or months) and not (days or hours or minutes or seconds):
        return YearMonthDuration(factor * (int(years or 0) * 12 + int(months or 0)))
    if years or months:
        return None
    total = (Decimal(days or 0) * _DAY_SECONDS + Decimal(hours or 0) * 3600 + Decimal(minutes or 0) * 60
             + Decimal(seconds or 0))
    return DayTimeDuration(factor * total)


def parse_literal(text: str) -> Any:
    """An ``@"..."`` literal: a date and time, date, time or duration by its form, else None."""
    if not isinstance(text, str):
        return None
    if text.lstrip("-").startswith("P"):
        return parse_duration(text)
    if "T" in text.partition("@")[0]:  # a zone's name may hold a T too (@Etc/GMT)
        return parse_date_time(text)
    return parse_date(text) if _DATE.fullmatch(text) else parse_time(text)


# --- text -------------------------------------------------------------------


def _zone_text(zone: dt.tzinfo | None, offset: dt.timedelta | None) -> str:
    if zone is None:
        return ""
    if isinstance(zone, zoneinfo.ZoneInfo):
        return "@" + zone.key
    if not offset:
        return "Z"
    minutes = int(offset.total_seconds()) // 60
    return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _clock_text(value: dt.time | dt.datetime) -> str:
    text = f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text


def temporal_text(value: Any) -> str | None:
    """FEEL's ``string()`` of a temporal value (ISO 8601), else None."""
    if isinstance(value, (DayTimeDuration, YearMonthDuration)):
        return str(value)
    if isinstance(value, dt.datetime):
        return f"{value.date().isoformat()}T{_clock_text(value)}{_zone_text(value.tzinfo, value.utcoffset())}"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return _clock_text(value) + _zone_text(value.tzinfo, value.utcoffset())
    return None


# --- components ---------------------------------------------------------------


def _offset(value: dt.time | dt.datetime) -> DayTimeDuration | None:
    offset = value.utcoffset()
    return None if offset is None else DayTimeDuration(Decimal(int(offset.total_seconds())))


def _duration_parts(seconds: Decimal) -> dict[str, Decimal]:
    sign = -1 if seconds < 0 else 1
    days, rest = divmod(abs(seconds), _DAY_SECONDS)
    hours, rest = divmod(rest, 3600)
    minutes, rest = divmod(rest, 60)
    return {"days": sign * days, "hours": sign * hours, "minutes": sign * minutes, "seconds": sign * rest}


def temporal_property(value: Any, name: str) -> Any:
    """A component of a temporal value (``.year``, ``.hour``, ``.time offset``, ``.days``...), else None."""
    if isinstance(value, YearMonthDuration):
        sign = -1 if value.months < 0 else 1
        parts = {"years": sign * (abs(value.months) // 12), "months": sign * (abs(value.months) % 12)}
        return Decimal(parts[name]) if name in parts else None
    if isinstance(value, DayTimeDuration):
        return _duration_parts(value.seconds).get(name)
    parts: dict[str, Any] = {}
    if isinstance(value, dt.date):
        parts.update(year=value.year, month=value.month, day=value.day, weekday=value.isoweekday())
    if isinstance(value, (dt.time, dt.datetime)):
        second = Decimal(value.second) + Decimal(value.microsecond) / 1_000_000
        parts.update(hour=value.hour, minute=value.minute, second=second)
        zone = value.tzinfo
        parts["time offset"] = _offset(value) if not isinstance(value, dt.time) or not isinstance(
            zone, zoneinfo.ZoneInfo) else None
        parts["timezone"] = zone.key if isinstance(zone, zoneinfo.ZoneInfo) else None
    found = parts.get(name)
    return Decimal(found) if isinstance(found, int) else found


# --- comparison ----------------------------------------------------------------


def _time_seconds(value: dt.time) -> Decimal:
    return (Decimal(value.hour * 3600 + value.minute * 60 + value.second)
            + Decimal(value.microsecond) / 1_000_000)


def _instant(value: dt.datetime) -> dt.datetime:
    return value.astimezone(_UTC) if value.tzinfo is not None else value


def _in_day(seconds: Decimal) -> Decimal:
    """``seconds`` wrapped into one day, 0 to 86,400 (a Decimal's ``%`` keeps the sign: -3600 % 86400 is -3600)."""
    seconds %= _DAY_SECONDS
    return seconds + _DAY_SECONDS if seconds < 0 else seconds


def _time_key(value: dt.time) -> tuple[bool, Decimal] | None:
    if value.tzinfo is None:
        return False, _time_seconds(value)
    offset = value.utcoffset()
    if offset is None:  # a zone without a date has no offset
        return None
    return True, _time_seconds(value) - Decimal(int(offset.total_seconds()))  # DMN's valuet: not wrapped into a day


def temporal_compare(left: Any, right: Any) -> int | None:
    """-1, 0 or 1 ordering two temporal values of the same kind; None if they cannot be compared."""
    if isinstance(left, DayTimeDuration) and isinstance(right, DayTimeDuration):
        a, b = left.seconds, right.seconds
    elif isinstance(left, YearMonthDuration) and isinstance(right, YearMonthDuration):
        a, b = left.months, right.months
    elif isinstance(left, dt.datetime) and isinstance(right, dt.datetime):
        if (left.tzinfo is None) != (right.tzinfo is None):
            return None
        a, b = _instant(left), _instant(right)
    elif is_date(left) and is_date(right):
        a, b = left, right
    elif isinstance(left, dt.time) and isinstance(right, dt.time):
        keys = _time_key(left), _time_key(right)
        if None in keys or keys[0][0] != keys[1][0]:
            return None
        a, b = keys[0][1], keys[1][1]
    else:
        return None
    return (a > b) - (a < b)


def temporal_equal(left: Any, right: Any) -> bool | None:
    """FEEL ``=`` of two temporal values (DMN 1.3's equality, as the DMN TCK reads it): a time, or a date and time,
    with a zone id (``@Europe/Paris``) equals only one with the same zone id and clock; one with an offset (``Z``,
    ``+01:00``) one with an offset and the same instant; one with neither one with neither. Of those three kinds,
    two of different kinds are not equal. Ordering (``temporal_compare``) is unchanged: null between a local value
    and a zoned one, and between times with a zone id; instants otherwise (so an offset and a zone id at one instant
    are <= and >= each other, yet not =, as the TCK has it)."""
    if isinstance(left, (dt.time, dt.datetime)) and type(left) is type(right):
        if _zone_kind(left.tzinfo) != _zone_kind(right.tzinfo):
            return False
        if _zone_kind(left.tzinfo) == "id":
            return _one_zone_id(left, right) and left.replace(tzinfo=None) == right.replace(tzinfo=None)
    compared = temporal_compare(left, right)
    return None if compared is None else compared == 0


def _zone_kind(zone: dt.tzinfo | None) -> str:
    return "local" if zone is None else "id" if isinstance(zone, zoneinfo.ZoneInfo) else "offset"


def _one_zone_id(left: dt.time | dt.datetime, right: dt.time | dt.datetime) -> bool:
    """Whether both have the same zone id (``@Europe/Paris``), not an offset."""
    return all(_zone_kind(value.tzinfo) == "id" for value in (left, right)) and left.tzinfo.key == right.tzinfo.key


def temporal_same(left: Any, right: Any) -> bool:
    """FEEL ``is()``: same kind, same clock (and date) and the same offset, as the DMN TCK reads it (0103): a zone id
    stands for its offset then (``@Etc/GMT`` is ``Z``), a time's zone for its offset on 1970-01-01, so that what
    ``is`` answers does not change with the day it is asked."""
    if type(left) is not type(right):
        return False
    if isinstance(left, (dt.time, dt.datetime)):
        return left.replace(tzinfo=None) == right.replace(tzinfo=None) and _offset_for_is(left) == _offset_for_is(right)
    return left == right


def _offset_for_is(value: dt.time | dt.datetime) -> dt.timedelta | None:
    if value.tzinfo is None or isinstance(value, dt.datetime):
        return value.utcoffset()
    return value.tzinfo.utcoffset(dt.datetime.combine(dt.date(1970, 1, 1), value.replace(tzinfo=None)))


# --- arithmetic -----------------------------------------------------------------


def _timedelta(seconds: Decimal) -> dt.timedelta:
    return dt.timedelta(microseconds=int(seconds * 1_000_000))


def _seconds(delta: dt.timedelta) -> Decimal:
    return Decimal(delta.days * _DAY_SECONDS + delta.seconds) + Decimal(delta.microseconds) / 1_000_000


def _add_months(value: dt.date, months: int) -> dt.date:
    index = value.year * 12 + value.month - 1 + months
    year, month = divmod(index, 12)
    day = min(value.day, calendar.monthrange(year, month + 1)[1])
    return value.replace(year=year, month=month + 1, day=day)


def _as_date_time(value: dt.date, like: dt.datetime) -> dt.datetime:
    return dt.datetime.combine(value, dt.time(), tzinfo=_UTC if like.tzinfo is not None else None)


def _shift(value: Any, duration: Any, sign: int) -> Any:
    """``value ± duration`` for a date, time or date and time."""
    if isinstance(duration, YearMonthDuration):
        return _add_months(value, sign * duration.months) if isinstance(value, dt.date) else None
    delta = _timedelta(sign * duration.seconds)
    if isinstance(value, dt.datetime):
        if isinstance(value.tzinfo, zoneinfo.ZoneInfo):
            return (value.astimezone(_UTC) + delta).astimezone(value.tzinfo)
        return value + delta
    if isinstance(value, dt.date):
        return (dt.datetime.combine(value, dt.time()) + delta).date()
    seconds = _in_day(_time_seconds(value) + sign * duration.seconds)
    return dt.time(int(seconds // 3600), int(seconds % 3600 // 60), int(seconds % 60),
                   int(seconds % 1 * 1_000_000), tzinfo=value.tzinfo)


def _difference(left: Any, right: Any) -> DayTimeDuration | None:
    """``left - right`` of two dates, times or date and times, as a days and time duration."""
    if isinstance(left, dt.time) and isinstance(right, dt.time):
        if _one_zone_id(left, right):
            return DayTimeDuration(_time_seconds(left) - _time_seconds(right))  # one zone: the clocks' difference
        keys = _time_key(left), _time_key(right)
        if None in keys or keys[0][0] != keys[1][0]:
            return None
        return DayTimeDuration(keys[0][1] - keys[1][1])
    if not (isinstance(left, dt.date) and isinstance(right, dt.date)):
        return None
    if is_date(left) and is_date(right):
        return DayTimeDuration(Decimal((left - right).days * _DAY_SECONDS))
    left = _as_date_time(left, right) if is_date(left) else left
    right = _as_date_time(right, left) if is_date(right) else right
    if (left.tzinfo is None) != (right.tzinfo is None):
        return None
    return DayTimeDuration(_seconds(_instant(left) - _instant(right)))


def _durations(left: Any, right: Any) -> bool:
    return isinstance(left, (DayTimeDuration, YearMonthDuration)) and type(left) is type(right)


def _magnitude(duration: Any) -> Decimal:
    return duration.seconds if isinstance(duration, DayTimeDuration) else Decimal(duration.months)


def _of_kind(like: Any, amount: Decimal) -> Any:
    """A duration of ``like``'s kind; years and months keep whole months (truncated)."""
    return DayTimeDuration(amount) if isinstance(like, DayTimeDuration) else YearMonthDuration(int(amount))


def temporal_arithmetic(operator: str, left: Any, right: Any) -> Any:
    """FEEL ``+ - * /`` where at least one side is temporal; None where FEEL gives null."""
    try:
        return _arithmetic(operator, left, right)
    except (ValueError, OverflowError, ArithmeticError):
        return None


def _arithmetic(operator: str, left: Any, right: Any) -> Any:
    duration_kinds = (DayTimeDuration, YearMonthDuration)
    if operator in ("+", "-") and _durations(left, right):
        sign = 1 if operator == "+" else -1
        return _of_kind(left, _magnitude(left) + sign * _magnitude(right))
    if operator in ("+", "-") and isinstance(right, duration_kinds) and isinstance(left, (dt.date, dt.time)):
        return _shift(left, right, 1 if operator == "+" else -1)
    if operator == "+" and isinstance(left, duration_kinds) and isinstance(right, (dt.date, dt.time)):
        return _shift(right, left, 1)
    if operator == "-":
        return _difference(left, right)
    if operator == "*" and isinstance(right, duration_kinds) and isinstance(left, Decimal):
        left, right = right, left
    if operator == "*" and isinstance(left, duration_kinds) and isinstance(right, Decimal):
        return _of_kind(left, _magnitude(left) * right)
    if operator == "/" and isinstance(left, duration_kinds) and isinstance(right, Decimal) and right != 0:
        return _of_kind(left, _magnitude(left) / right)
    if operator == "/" and _durations(left, right) and _magnitude(right) != 0:
        return _magnitude(left) / _magnitude(right)
    return None


def years_and_months(start: Any, end: Any) -> YearMonthDuration | None:
    """FEEL ``years and months duration(from, to)``: whole months from ``start`` to ``end`` (signed)."""
    if not (isinstance(start, dt.date) and isinstance(end, dt.date)):
        return None
    months = (end.year - start.year) * 12 + end.month - start.month
    start_rest = (start.day, start.hour, start.minute, start.second) if isinstance(start, dt.datetime) else (start.day,)
    end_rest = (end.day, end.hour, end.minute, end.second) if isinstance(end, dt.datetime) else (end.day,)
    if months > 0 and end_rest < start_rest[:len(end_rest)]:
        months -= 1
    elif months < 0 and end_rest > start_rest[:len(end_rest)]:
        months += 1
    return YearMonthDuration(months)


def date_and_time_of(day: Any, clock: Any) -> dt.datetime | None:
    """FEEL ``date and time(date, time)``."""
    if not isinstance(day, dt.date) or not isinstance(clock, dt.time):
        return None
    return dt.datetime.combine(day if is_date(day) else day.date(), clock)


def time_of(hour: Any, minute: Any, second: Any, offset: Any = None) -> dt.time | None:
    """FEEL ``time(hour, minute, second, offset?)``."""
    if not all(isinstance(part, Decimal) for part in (hour, minute, second)):
        return None
    if offset is not None and not isinstance(offset, DayTimeDuration):
        return None
    zone = None if offset is None else dt.timezone(_timedelta(offset.seconds))
    fraction = int(second % 1 * 1_000_000)
    return dt.time(int(hour), int(minute), int(second), fraction, tzinfo=zone)
