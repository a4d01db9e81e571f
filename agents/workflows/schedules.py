"""Cron schedules of workflows: parsing (Celery's crontab, the parser celery-beat runs them with), the time slots a
schedule has between two instants in its time zone, and the celery-beat entries that fire them.

A slot is a wall-clock time the cron expression matches in the schedule's time zone. A wall-clock time that does
not exist (the hour skipped when clocks go forward) is taken at the offset before the change, and one that exists
twice (the hour repeated when clocks go back) at its first occurrence, so every matching wall-clock time is one
slot, never none and never two. Day of month and day of week both restrict, as in Celery's crontab (not cron's
"either")."""
import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab
from django.db import connection, transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask

#: The fields of a five-field cron expression, in order.
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
#: Widest window one slot computation looks at (a backfill range, a catch-up since the last run).
MAX_SLOT_WINDOW = timedelta(days=3660)
#: Most slots one backfill starts.
MAX_BACKFILL_SLOTS = 10_000


def cron_fields(cron: str) -> dict[str, str]:
    """The five fields of ``cron`` by name (``ValueError`` when it has not five)."""
    parts = cron.split()
    if len(parts) != len(CRON_FIELDS):
        raise ValueError(f"{cron!r} has {len(parts)} fields; give five: minute hour day-of-month month day-of-week")
    return dict(zip(CRON_FIELDS, parts, strict=True))


def _crontab(cron: str) -> crontab:
    return crontab(**cron_fields(cron))


def cron_problems(cron: str, timezone: str) -> list[str]:
    """What is wrong with a schedule's cron expression and time zone, each naming the field."""
    problems = []
    try:
        _crontab(cron)
    except ValueError as error:
        problems.append(f"cron: {str(error).strip() or 'invalid'} (e.g. '0 2 * * *': minute hour day-of-month month "
                        f"day-of-week)")
    fields = cron.split()
    for field, value in zip(CRON_FIELDS, fields, strict=True) if len(fields) == len(CRON_FIELDS) else ():
        width = CrontabSchedule._meta.get_field(field).max_length  # its column in celery-beat's table
        if len(value) > width:
            problems.append(f"cron: the {field} field is {len(value)} characters, at most {width} (celery-beat "
                            f"stores no more; write ranges such as 1-5 instead of long lists)")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of the database ("Europe"), a long name
        problems.append(f"timezone: unknown time zone {timezone!r} (an IANA name such as 'Europe/Paris' or 'UTC')")
    return problems


def schedule_slots(cron: str, timezone: str, *, after: datetime, until: datetime, limit: int = 100_000,
                   newest: bool = False, inclusive: bool = False) -> list[datetime]:
    """The slots of ``cron`` in ``timezone`` with ``after < slot <= until`` (``after <= slot`` with ``inclusive``),
    oldest first, as aware UTC times: at most ``limit``, the oldest ones (the newest ones with ``newest``). A range
    at the very start of year 1 or the end of 9999 has the slots the calendar holds."""
    if until - after > MAX_SLOT_WINDOW:
        raise ValueError(f"a window of at most {MAX_SLOT_WINDOW.days} days, not {(until - after).days}")
    entry, zone = _crontab(cron), ZoneInfo(timezone)
    times = [(hour, minute) for hour in sorted(entry.hour) for minute in sorted(entry.minute)]
    first = _local_day(after, zone, -1)  # a nonexistent wall time maps an hour back
    last = _local_day(until, zone, 1)
    days = (last - first).days + 1
    order = range(days - 1, -1, -1) if newest else range(days)
    slots: set[datetime] = set()
    for offset in order:
        day = first + timedelta(days=offset)
        # Celery numbers weekdays from Sunday (0); Python from Monday (0).
        if not (day.month in entry.month_of_year and day.day in entry.day_of_month
                and (day.weekday() + 1) % 7 in entry.day_of_week):
            continue
        for hour, minute in reversed(times) if newest else times:
            try:
                instant = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).astimezone(UTC)
            except OverflowError:  # a wall time of year 1 or 9999 that UTC puts outside the calendar
                continue
            if (after <= instant if inclusive else after < instant) and instant <= until:
                slots.add(instant)
        if len(slots) >= limit + 2:  # a day or two more: wall times an hour apart may cross a day when mapped
            break
    ordered = sorted(slots)
    return ordered[-limit:] if newest else ordered[:limit]


#: An instant between the ends of the calendar: a wall time past an end lies on that end's side of it.
_CALENDAR_MIDDLE = datetime(5000, 1, 1, tzinfo=UTC)


def _local_day(moment: datetime, zone: ZoneInfo, shift: int) -> date:
    """The day ``shift`` days from ``moment``'s day in ``zone``, within the calendar (years 1-9999): a moment whose
    wall time in ``zone`` is before year 1 has the first day, one after 9999 the last, whichever end of the range it
    bounds, so the days between the two ends of a range are never more than the range spans (plus the shifts)."""
    try:
        day = moment.astimezone(zone).date()
    except OverflowError:  # the zone's wall time falls outside the calendar: past the end the moment is near
        return date.min if moment < _CALENDAR_MIDDLE else date.max
    try:
        return day + timedelta(days=shift)
    except OverflowError:
        return day


def slot_latest(cron: str, timezone: str, *, now: datetime) -> datetime | None:
    """The newest slot at or before ``now`` (within the last 366 days), or None."""
    slots = schedule_slots(cron, timezone, after=now - timedelta(days=366), until=now, limit=1, newest=True)
    return slots[-1] if slots else None


def fired_at_parse(value: str) -> datetime:
    """The moment beat fired a schedule's entry, from the ISO 8601 text its message carries (``fired_at``), as an
    aware time; ``ValueError`` saying what is wrong otherwise."""
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError(f"fired_at: {value!r} is not an ISO 8601 time with its offset (e.g. 2026-11-01T02:00:00Z)")
    return moment


# --- celery-beat entries ----------------------------------------------------------------------------------------

#: The task each schedule's beat entry sends (``workers.workflow``); beat adds the moment it fired as ``fired_at``
#: (``workers.beat``), so the task starts the slot the message was sent for however late it is delivered.
SCHEDULE_FIRE_TASK = "workers.workflow.schedule_fire"


#: Longest name a celery-beat entry may have (its column).
BEAT_ENTRY_NAME_MAX = PeriodicTask._meta.get_field("name").max_length
#: A fixed key for PostgreSQL's transaction-level advisory lock that orders the loads creating crontab rows.
CRONTAB_LOCK_KEY = 0x6167_656E_7473_6372  # "agentscr"


def beat_entry_name(workflow: str, schedule: str) -> str:
    """The name of a schedule's celery-beat entry (admin > Periodic tasks): ``workflow NAME schedule SCHEDULE``;
    where that is longer than the column holds, the schedule's name is cut and a hash of it appended, so the name
    stays unique and still starts with ``workflow NAME schedule ``."""
    prefix = f"workflow {workflow} schedule "
    if len(prefix) + len(schedule) <= BEAT_ENTRY_NAME_MAX:
        return prefix + schedule
    digest = hashlib.sha256(schedule.encode()).hexdigest()[:12]
    return f"{prefix}{schedule[:BEAT_ENTRY_NAME_MAX - len(prefix) - len(digest) - 1]}~{digest}"


def _crontab_for(cron: str, timezone: str, current_id: int | None) -> CrontabSchedule:
    """The crontab row for ``cron`` in ``timezone``, created when there is none. celery-beat's table has no unique
    constraint, so concurrent loads take an advisory lock (PostgreSQL) to create one row, and rows duplicated
    before are tolerated: the entry's current one if it matches, else the oldest."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # held until the transaction ends, so the row is seen by then
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CRONTAB_LOCK_KEY])
        matching = CrontabSchedule.objects.filter(timezone=ZoneInfo(timezone), **cron_fields(cron)).order_by("pk")
        found = matching.filter(pk=current_id).first() if current_id is not None else None
        return found or matching.first() or CrontabSchedule.objects.create(timezone=ZoneInfo(timezone),
                                                                           **cron_fields(cron))


def beat_entries_sync(*, workflow: str, schedules: tuple[dict, ...], enabled: bool) -> dict[str, int]:
    """Make the workflow's celery-beat entries match ``schedules``: one per schedule (created or updated, enabled as
    the workflow is), and none for a schedule no longer there. Returns counts."""
    counts = {"created": 0, "updated": 0, "deleted": 0}
    names = set()
    for schedule in schedules:
        name = beat_entry_name(workflow, schedule["name"])
        names.add(name)
        existing = PeriodicTask.objects.filter(name=name).first()
        cron = _crontab_for(schedule["cron"], schedule["timezone"], existing.crontab_id if existing else None)
        kwargs = {"workflow": workflow, "schedule": schedule["name"]}
        if existing is None:
            PeriodicTask.objects.create(name=name, task=SCHEDULE_FIRE_TASK, crontab=cron, enabled=enabled,
                                        kwargs=json.dumps(kwargs), description=f"{schedule['cron']} "
                                        f"({schedule['timezone']}) for workflow {workflow}")
            counts["created"] += 1
        elif existing.crontab_id != cron.pk or existing.enabled != enabled or json.loads(existing.kwargs) != kwargs:
            existing.crontab, existing.enabled, existing.kwargs = cron, enabled, json.dumps(kwargs)
            existing.interval = existing.solar = existing.clocked = None
            existing.save()
            counts["updated"] += 1
    stale = PeriodicTask.objects.filter(name__startswith=f"workflow {workflow} schedule ").exclude(name__in=names)
    counts["deleted"] = stale.delete()[0]
    return counts
