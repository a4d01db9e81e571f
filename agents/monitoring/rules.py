"""Pure rules of monitoring: a check's status from its value, matchers for routes, silences and responses,
alert fingerprints, and the definitions file (checks, routes, silences, response rules).

Pure: no Django. Probe parameters and notifier configs are checked by the functions passed in.
"""
import fnmatch
import hashlib
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from agents.core.definitions import is_name, name_problem

STATUSES = ("ok", "warning", "critical")
SEVERITIES = ("info", "warning", "critical")
DIRECTIONS = ("above", "below")
MATCHER_KEYS = ("check", "tags", "severity")

CHECK_KEYS = {
    "name", "type", "params", "interval_s", "timeout_s", "warning", "critical", "direction", "max_attempts",
    "severity", "keep_firing_for_s", "tags", "enabled", "description",
}
#: Most consecutive failed attempts a check may wait for before it alerts.
MAX_ATTEMPTS = 10_000
#: The longest duration a definition may give (a check's interval, a silence, a response's rate window): ten years.
#: Longer ones would not fit a date when added to now.
MAX_DURATION_S = 3650 * 86400
#: The range of a PostgreSQL ``integer`` column, which holds a route's order, its escalate_after and a response's
#: max_runs: a whole number beyond it cannot be stored.
INTEGER_MIN, INTEGER_MAX = -2**31, 2**31 - 1
ROUTE_KEYS = {"name", "order", "match", "handler", "config", "repeat_interval_s", "escalate_after", "escalate_to",
              "enabled", "watchdog"}
#: The config key a route's ``watchdog`` option is stored under, beside (not in) its handler's config.
WATCHDOG_KEY = "watchdog"
#: The shortest interval between a route's heartbeats.
MIN_HEARTBEAT_S = 1.0
SILENCE_KEYS = {"match", "starts_at", "ends_at", "duration_s", "comment"}
RESPONSE_KEYS = {"name", "match", "action", "workflow", "params", "max_runs", "per_s", "enabled"}
SECTIONS = {"checks", "routes", "silences", "responses"}


def status_evaluate(*, value: float | None, ok: bool, warning: float | None, critical: float | None,
                    direction: str = "above") -> str:
    """Return 'ok', 'warning' or 'critical': a failed probe is critical; thresholds are inclusive."""
    if not ok or value is None:
        return "critical"

    def crossed(threshold: float | None) -> bool:
        if threshold is None:
            return False
        return value >= threshold if direction == "above" else value <= threshold

    if crossed(critical):
        return "critical"
    if crossed(warning):
        return "warning"
    return "ok"


def fingerprint(check: str, target: str) -> str:
    """Identify one problem: the check and what it probed."""
    return hashlib.sha256(f"{check}\x00{target}".encode()).hexdigest()[:32]


def matchers_validate(matchers: Any, where: str) -> list[str]:
    """Return the problems with a matcher mapping: ``check`` (glob or list), ``tags`` (list), ``severity``."""
    if matchers is None:
        return []
    if not isinstance(matchers, dict):
        return [f"{where}: must be a mapping of {', '.join(MATCHER_KEYS)}"]
    errors = [
        f"{where}: unknown key {key!r} (allowed: {', '.join(MATCHER_KEYS)})" for key in matchers if key not in MATCHER_KEYS
    ]
    for key in ("check", "tags", "severity"):
        value = matchers.get(key)
        if value is None:
            continue
        values = [value] if isinstance(value, str) and key != "tags" else value
        if not isinstance(values, list) or not values or not all(isinstance(item, str) and item for item in values):
            errors.append(f"{where}.{key}: must be a non-empty list of strings" + ("" if key == "tags" else " or a string"))
        elif key == "severity" and (unknown := [item for item in values if item not in SEVERITIES]):
            errors.append(f"{where}.severity: unknown {', '.join(unknown)} (known: {', '.join(SEVERITIES)})")
    return errors


def matchers_match(matchers: dict | None, *, check: str, tags: list[str], severity: str) -> bool:
    """Whether an alert of ``check`` with ``tags`` and ``severity`` matches; every given matcher must hold."""
    matchers = matchers or {}
    names = matchers.get("check")
    if names is not None:
        names = [names] if isinstance(names, str) else names
        if not any(fnmatch.fnmatchcase(check, pattern) for pattern in names):
            return False
    wanted_tags = matchers.get("tags")
    if wanted_tags and not set(wanted_tags) <= set(tags or []):
        return False
    severities = matchers.get("severity")
    if severities is not None:
        severities = [severities] if isinstance(severities, str) else severities
        if severity not in severities:
            return False
    return True


def _number(value: Any, where: str, *, minimum: float | None = None, duration: bool = False,
            optional: bool = True) -> str | None:
    """The problem with a number, if any; a ``duration`` (seconds) may be at most ``MAX_DURATION_S``."""
    if value is None:
        return None if optional else f"{where}: is required"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{where}: must be a number, got {value!r}"
    if minimum is not None and value < minimum:
        return f"{where}: must be at least {minimum:g}, got {value!r}"
    if duration and value > MAX_DURATION_S:
        return f"{where}: must be at most {MAX_DURATION_S:,} s (ten years), got {value!r}"
    return None


def _whole(value: Any, where: str, *, minimum: int, maximum: int = INTEGER_MAX) -> str | None:
    """The problem with a whole number from ``minimum`` to ``maximum`` (a float, even 2.0, is not one), if any."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        return f"{where}: must be a whole number from {minimum:,} to {maximum:,}, got {_shown(value)}"
    return None


def _shown(value: Any) -> str:
    """``value`` as a problem quotes it: as JSON writes it (null, true), a very long number cut short."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _enabled_problem(item: dict, where: str) -> str | None:
    """The problem with a definition's ``enabled``, if any: left out it is true; given, it must be a boolean."""
    if not isinstance(item.get("enabled", True), bool):
        return f"{where}.enabled: must be true or false, got {_shown(item.get('enabled'))}"
    return None


def _unknown_keys(item: dict, allowed: set[str], where: str) -> list[str]:
    return [f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})" for key in item if key not in allowed]


def check_definition_validate(item: Any, where: str, *, probe_validate: Callable[[str, dict], list[str]]) -> list[str]:
    """Return every problem with one check definition, each naming ``where`` and the key."""
    if not isinstance(item, dict):
        return [f"{where}: must be a mapping"]
    errors = _unknown_keys(item, CHECK_KEYS, where)
    name = item.get("name")
    if not is_name(name):
        errors.append(f"{where}.name: {name_problem(name)}")
    else:
        where = f"check {name!r}"
    check_type = item.get("type")
    params = item.get("params", {})
    if not isinstance(params, dict):
        errors.append(f"{where}.params: must be a mapping")
    elif not isinstance(check_type, str):
        errors.append(f"{where}.type: is required")
    else:
        errors.extend(f"{where}: {problem}" for problem in probe_validate(check_type, params))
    for key, minimum in (("interval_s", 1), ("timeout_s", 0.1), ("keep_firing_for_s", 0)):
        if key in item and item[key] is None:  # left out, it has a default; given, it must be a number
            errors.append(f"{where}.{key}: must be a number, got null")
        elif problem := _number(item.get(key), f"{where}.{key}", minimum=minimum, duration=True):
            errors.append(problem)
    for key in ("warning", "critical"):
        if problem := _number(item.get(key), f"{where}.{key}"):
            errors.append(problem)
    attempts = item.get("max_attempts", 1)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= MAX_ATTEMPTS:
        errors.append(f"{where}.max_attempts: must be a whole number from 1 to {MAX_ATTEMPTS:,}, got {attempts!r}")
    if item.get("severity", "critical") not in SEVERITIES:
        errors.append(f"{where}.severity: must be one of {', '.join(SEVERITIES)}, got {item.get('severity')!r}")
    direction = item.get("direction", "above")
    if direction not in DIRECTIONS:
        errors.append(f"{where}.direction: must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    warning, critical = item.get("warning"), item.get("critical")
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (warning, critical)):
        if (direction == "above" and warning > critical) or (direction == "below" and warning < critical):
            errors.append(
                f"{where}: warning ({warning:g}) must come before critical ({critical:g}) for direction {direction!r}"
            )
    tags = item.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) and tag for tag in tags):
        errors.append(f"{where}.tags: must be a list of strings")
    if problem := _enabled_problem(item, where):
        errors.append(problem)
    if not isinstance(item.get("description", ""), str):
        errors.append(f"{where}.description: must be text, got {_shown(item.get('description'))}")
    return errors


#: What a change of an ``external`` check (made from alerts posted to ``/api/v2/alerts``) may give.
EXTERNAL_CHECK_KEYS = {"name", "enabled"}


def external_check_change_problems(given: dict, name: str) -> list[str]:
    """The problems with a change of the ``external`` check ``name``: it is never probed, so only ``enabled``
    applies to it (a definition's type, params, interval and thresholds do not)."""
    where = f"check {name!r}"
    problems = [f"{where}.{key}: cannot be changed: check {name!r} is external (its alerts are posted to "
                "/api/v2/alerts and it is never probed); only enabled can be changed"
                for key in given if key not in EXTERNAL_CHECK_KEYS]
    if problem := _enabled_problem(given, where):
        problems.append(problem)
    return problems


def external_check_retype_problem(name: str) -> str:
    """Why a definition cannot replace the ``external`` check ``name``: probing it would fire and resolve the alerts
    posted for it on its own."""
    return (f"check {name!r}.type: check {name!r} is external (its alerts are posted to /api/v2/alerts): a "
            "definition cannot make it a probed check; give the check another name")


def route_definition_validate(item: Any, where: str, *, route_names: set[str],
                              notifier_validate: Callable[[str, dict], list[str]]) -> list[str]:
    """Return every problem with one notification route."""
    if not isinstance(item, dict):
        return [f"{where}: must be a mapping"]
    errors = _unknown_keys(item, ROUTE_KEYS, where)
    name = item.get("name")
    if not is_name(name):
        errors.append(f"{where}.name: {name_problem(name)}")
    else:
        where = f"route {name!r}"
    errors.extend(matchers_validate(item.get("match"), f"{where}.match"))
    config = item.get("config", {})
    if not isinstance(config, dict):
        errors.append(f"{where}.config: must be a mapping")
    else:
        errors.extend(f"{where}: {problem}" for problem in notifier_validate(item.get("handler"), config))
    if problem := _number(item.get("repeat_interval_s"), f"{where}.repeat_interval_s", minimum=1):
        errors.append(problem)
    if problem := _whole(item.get("order", 100), f"{where}.order", minimum=INTEGER_MIN):
        errors.append(problem)
    if problem := _enabled_problem(item, where):
        errors.append(problem)
    escalate_after, escalate_to = item.get("escalate_after"), item.get("escalate_to")
    if escalate_after is not None and (problem := _whole(escalate_after, f"{where}.escalate_after", minimum=1)):
        errors.append(problem)
    if (escalate_after is None) != (escalate_to is None):
        errors.append(f"{where}: escalate_after and escalate_to go together")
    if escalate_to is not None:
        if not isinstance(escalate_to, str):
            errors.append(f"{where}.escalate_to: must be a route's name, got {type(escalate_to).__name__}")
        elif escalate_to == name:
            errors.append(f"{where}.escalate_to: a route cannot escalate to itself")
        elif escalate_to not in route_names:
            errors.append(f"{where}.escalate_to: no route named {escalate_to!r}")
        if item.get("repeat_interval_s") is None:
            errors.append(f"{where}: escalation needs repeat_interval_s (it counts unacknowledged reminders)")
    errors.extend(route_watchdog_problems(item.get("watchdog"), where))
    return errors


def route_watchdog_problems(value: Any, where: str) -> list[str]:
    """The problems with a route's ``watchdog`` option: ``{interval_s: seconds}`` (None: no heartbeat)."""
    if value is None:
        return []
    if not isinstance(value, dict) or set(value) != {"interval_s"}:
        return [f"{where}.watchdog: must be a mapping with just interval_s (seconds between heartbeats), got {value!r}"]
    interval_s = value["interval_s"]
    if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) or interval_s < MIN_HEARTBEAT_S:
        return [f"{where}.watchdog.interval_s: must be a number of seconds of at least {MIN_HEARTBEAT_S:g}, "
                f"got {interval_s!r}"]
    return []


def route_config_stored(config: dict, watchdog: Any) -> dict:
    """A route's stored config: its handler's ``config`` with the route's ``watchdog`` option beside it."""
    return {**config, **({WATCHDOG_KEY: watchdog} if watchdog else {})}


def route_config_split(stored: dict) -> tuple[dict, Any]:
    """A route's stored config as (its handler's config, its ``watchdog`` option or None)."""
    config = dict(stored)
    return config, config.pop(WATCHDOG_KEY, None)


def _silence_time(value: Any, where: str, parse_time: Callable[[str], datetime | None],
                  errors: list[str]) -> datetime | None:
    """A silence's time by ``parse_time`` (None when it is not one, ``ValueError`` when it is one that cannot be
    stored), or None with the problem added to ``errors``."""
    try:
        parsed = parse_time(value) if isinstance(value, str) else None
    except ValueError as error:
        errors.append(f"{where}: {error}")
        return None
    if parsed is None:
        errors.append(f"{where}: must be an ISO 8601 time with a zone, got {value!r}")
    return parsed


def silence_definition_validate(item: Any, where: str, *, now: datetime,
                                parse_time: Callable[[str], datetime | None]) -> tuple[list[str], dict]:
    """Return the problems with one silence and its normalised form (match, starts_at, ends_at, comment).
    ``parse_time`` gives a time, None for text that is not one, or raises ``ValueError`` with the reason."""
    if not isinstance(item, dict):
        return [f"{where}: must be a mapping"], {}
    errors = _unknown_keys(item, SILENCE_KEYS, where)
    matchers = item.get("match")
    if not matchers:
        errors.append(f"{where}.match: is required (a silence matching everything would hide every alert)")
    errors.extend(matchers_validate(matchers, f"{where}.match"))
    starts_at = now
    if item.get("starts_at") is not None:
        starts_at = _silence_time(item["starts_at"], f"{where}.starts_at", parse_time, errors)
    ends_at = None
    if item.get("ends_at") is not None:
        ends_at = _silence_time(item["ends_at"], f"{where}.ends_at", parse_time, errors)
    elif item.get("duration_s") is not None:
        if problem := _number(item["duration_s"], f"{where}.duration_s", minimum=1, duration=True):
            errors.append(problem)
        elif starts_at is not None:
            try:
                ends_at = starts_at + timedelta(seconds=item["duration_s"])
            except OverflowError:  # a start near the end of the calendar
                errors.append(f"{where}.duration_s: ends after the last date there is (starts_at {item['starts_at']})")
    else:
        errors.append(f"{where}: give ends_at or duration_s")
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        errors.append(f"{where}: ends_at must be after starts_at")
    comment = item.get("comment", "")
    if not isinstance(comment, str):
        errors.append(f"{where}.comment: must be text")
    return errors, {"matchers": matchers, "starts_at": starts_at, "ends_at": ends_at, "comment": comment}


def silence_same(stored: dict, wanted: dict, item: dict) -> bool:
    """Whether a stored silence (its matchers, starts_at, ends_at and comment) is the one a definitions file's
    silence ``item`` (``wanted``: as ``silence_definition_validate`` made it) describes: the same matchers and
    comment, and the same window: the start and the end the item gives, else the same length (``duration_s``,
    counted from when it was made). Loading the file again then makes no second silence."""
    if stored["matchers"] != wanted["matchers"] or stored["comment"] != wanted["comment"]:
        return False
    if item.get("starts_at") is not None and stored["starts_at"] != wanted["starts_at"]:
        return False
    if item.get("ends_at") is not None:
        return stored["ends_at"] == wanted["ends_at"]
    return stored["ends_at"] - stored["starts_at"] == wanted["ends_at"] - wanted["starts_at"]


def response_definition_validate(item: Any, where: str, *, action_validate: Callable[[str, dict], list[str]],
                                 workflow_exists: Callable[[str], bool]) -> list[str]:
    """Return every problem with one response rule: exactly one of ``action`` and ``workflow``."""
    if not isinstance(item, dict):
        return [f"{where}: must be a mapping"]
    errors = _unknown_keys(item, RESPONSE_KEYS, where)
    name = item.get("name")
    if not is_name(name):
        errors.append(f"{where}.name: {name_problem(name)}")
    else:
        where = f"response {name!r}"
    errors.extend(matchers_validate(item.get("match"), f"{where}.match"))
    action, workflow, params = item.get("action"), item.get("workflow"), item.get("params", {})
    if not isinstance(params, dict):
        errors.append(f"{where}.params: must be a mapping")
        params = {}
    if (action is None) == (workflow is None):
        errors.append(f"{where}: give exactly one of action and workflow")
    elif action is not None:
        errors.extend(f"{where}: {problem}" for problem in action_validate(action, params))
    elif not isinstance(workflow, str) or not workflow_exists(workflow):
        errors.append(f"{where}.workflow: no workflow named {workflow!r}")
    if problem := _whole(item.get("max_runs", 1), f"{where}.max_runs", minimum=1):
        errors.append(problem)
    if "per_s" in item and item["per_s"] is None:  # left out, it has a default; given, it must be a number
        errors.append(f"{where}.per_s: must be a number, got null")
    elif problem := _number(item.get("per_s"), f"{where}.per_s", minimum=1, duration=True):
        errors.append(problem)
    if problem := _enabled_problem(item, where):
        errors.append(problem)
    return errors


def definitions_split(document: Any, source: str) -> tuple[list[str], dict[str, list]]:
    """Split a definitions document into its sections; a bare list is a list of checks."""
    if isinstance(document, list):
        return [], {"checks": document, "routes": [], "silences": [], "responses": []}
    if not isinstance(document, dict):
        return [f"{source}: must be a list of checks or a mapping of {', '.join(sorted(SECTIONS))}"], {}
    errors = [f"{source}: unknown section {key!r} (allowed: {', '.join(sorted(SECTIONS))})"
              for key in document if key not in SECTIONS]
    sections = {}
    for key in sorted(SECTIONS):
        value = document.get(key) or []
        if not isinstance(value, list):
            errors.append(f"{source}: {key} must be a list")
            value = []
        sections[key] = value
    for key in ("checks", "routes", "responses"):
        names = [item.get("name") for item in sections[key] if isinstance(item, dict)]
        duplicates = sorted({name for name in names if isinstance(name, str) and names.count(name) > 1})
        if duplicates:
            errors.append(f"{source}: {key} named more than once: {', '.join(duplicates)}")
    return errors, sections
