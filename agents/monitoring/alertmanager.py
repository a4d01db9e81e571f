"""Alertmanager's formats, read and written: an alert's labels, the fingerprint of a label set, the webhook body
(version 4) and the postable alerts of ``/api/v2/alerts`` sent out, and the alerts Prometheus posts validated.

Pure: no Django. A notification payload (``alerts.alert_payload``) goes in, plain JSON comes out.
"""
import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.core.jsonable import UNSTORABLE
from agents.core.times import utc_in_calendar

#: Alertmanager's "no end yet": a firing alert's ``endsAt``.
ZERO_TIME = "0001-01-01T00:00:00Z"
#: The webhook body version Alertmanager sends (and receivers expect).
WEBHOOK_VERSION = "4"
#: Labels that say which check and target an alert is of; every other label becomes a tag ``name=value``.
CHECK_LABELS = ("alertname", "instance")
#: Most alerts one post may carry.
MAX_ALERTS = 1000
#: An alert's name, which names its check: a Prometheus alert name (a metric name: letters, digits, '_' and ':', not
#: first a digit) or a check's name (letters, digits, '.', '_' and '-', first a letter or digit), of at most the 100
#: characters a check's name holds. The check's name then holds ':' too: it is read from URLs (``/api/checks/<name>/``,
#: any character but '/'), label values of /metrics and silences' check matchers (globs) as any other.
ALERT_NAME = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_.:-]{0,99}\Z")
ALERT_NAME_RULE = ("must be 1-100 letters, digits, '_', ':', '.' or '-', not first '.' or '-' (a Prometheus alert "
                   "name, or a check's name)")
_INDEX = re.compile(r"\[(\d+)\]")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_NOT_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_ALERT_KEYS = {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
_MAX_TEXT = 10_000


def labels_fingerprint(labels: dict[str, str]) -> str:
    """Identify one alert from outside: a hash of its labels sorted by name (as Alertmanager groups them)."""
    text = "\x00".join(f"{name}\x00{labels[name]}" for name in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def labels_tags(labels: dict[str, str]) -> list[str]:
    """The tags routes and silences match an alert from outside on: ``name=value`` for each label but the
    alert name and the instance (which name its check and target), sorted."""
    return sorted(f"{name}={value}" for name, value in labels.items() if name not in CHECK_LABELS)


def tags_labels(tags: list[str]) -> dict[str, str]:
    """A check's tags as labels: ``name=value`` gives ``name``, a bare tag gives ``tag: "true"``; characters a
    label name may not hold become ``_``."""
    labels = {}
    for tag in tags or []:
        name, _, value = str(tag).partition("=")
        name = _NOT_LABEL.sub("_", name) or "_"
        labels["_" + name if name[0].isdigit() else name] = value if "=" in str(tag) else "true"
    return labels


def alert_labels(payload: dict) -> dict[str, str]:
    """The labels of a notified alert: its own label set when it came from outside, else its tags, the target,
    the severity and ``alertname`` (the check's name)."""
    if payload.get("labels"):
        return dict(payload["labels"])
    labels = tags_labels(payload.get("tags") or [])
    labels.update(alertname=payload["check"], severity=payload["severity"])
    if payload.get("target"):
        labels["target"] = payload["target"]
    return labels


def alert_annotations(payload: dict) -> dict[str, str]:
    """The annotations of a notified alert: its own when it came from outside, else its summary and the check's
    description (when it has one)."""
    annotations = dict(payload.get("annotations") or {})
    annotations.setdefault("summary", payload.get("summary") or "")
    if payload.get("description"):
        annotations.setdefault("description", payload["description"])
    return annotations


def rfc3339(text: str | None) -> str:
    """An ISO 8601 time as Alertmanager writes it (UTC, ``Z``); none is ``ZERO_TIME``."""
    if not text:
        return ZERO_TIME
    return datetime.fromisoformat(text).astimezone(UTC).isoformat().replace("+00:00", "Z")


def alert_status(payload: dict) -> str:
    """'resolved' for the resolved notice, 'firing' for every other (firing, reminder, escalation)."""
    return "resolved" if payload.get("event") == "resolved" else "firing"


def postable_alert(payload: dict, *, generator_url: str) -> dict:
    """One alert as ``POST /api/v2/alerts`` takes it (and as each ``alerts[]`` item of a webhook body starts)."""
    resolved = alert_status(payload) == "resolved"
    return {
        "labels": alert_labels(payload),
        "annotations": alert_annotations(payload),
        "startsAt": rfc3339(payload.get("started_at")),
        "endsAt": rfc3339(payload.get("resolved_at")) if resolved else ZERO_TIME,
        "generatorURL": generator_url,
    }


def webhook_body(payload: dict, *, receiver: str, external_url: str, generator_url: str) -> dict:
    """Alertmanager's webhook body (version 4) for one notice: a group of the one alert, as Alertmanager renders a
    route grouping by all labels (``group_by: ['...']``), so ``groupKey`` and ``status`` are that alert's: a receiver
    keying on ``groupKey`` (PagerDuty's dedup key) opens and closes one incident per alert. An alert from outside is
    grouped by all its labels; a check's own by all but ``severity``, which may rise while it fires."""
    alert = postable_alert(payload, generator_url=generator_url)
    labels, status = alert["labels"], alert_status(payload)
    group_labels = dict(labels) if payload.get("labels") else {
        name: value for name, value in labels.items() if name != "severity"}
    return {
        "version": WEBHOOK_VERSION,
        "groupKey": group_key(group_labels),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": external_url,
        "alerts": [{"status": status, **alert, "fingerprint": payload.get("fingerprint", "")}],
    }


def group_key(group_labels: dict[str, str]) -> str:
    """The key of a group of the root route, as Alertmanager writes it: ``{}:{alertname="DiskFull", instance="h2"}``
    (labels sorted by name)."""
    return "{}:{" + ", ".join(f"{name}={_quoted(group_labels[name])}" for name in sorted(group_labels)) + "}"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ------------------------------------------------------------------------------------ reading what Prometheus posts


def postable_alerts_validate(document: Any, *, now: datetime,
                             resolve_timeout_s: float) -> tuple[list[str], list[dict]]:
    """Check a batch Prometheus posts to ``/api/v2/alerts``; return every problem (each naming the index and the
    field) and the valid alerts as ``{index, labels, annotations, starts_at, ends_at, generator_url}`` with aware
    datetimes: ``starts_at`` None where not given, ``ends_at`` ``now`` + ``resolve_timeout_s`` where not given (or
    Alertmanager's zero time), as Alertmanager sets it. As Alertmanager, an end before the start is refused; a start
    in the future before a later end is taken."""
    if not isinstance(document, list):
        return [f"the body must be a JSON list of alerts, got {type(document).__name__}"], []
    if len(document) > MAX_ALERTS:
        return [f"the body holds {len(document)} alerts; at most {MAX_ALERTS} may be posted at once"], []
    problems: list[str] = []
    alerts = []
    for index, item in enumerate(document):
        where, found = f"[{index}]", []
        if not isinstance(item, dict):
            problems.append(f"{where}: must be an object with labels, annotations, startsAt, endsAt, generatorURL")
            continue
        found += [f"{where}.{key}: unknown field (known: {', '.join(sorted(_ALERT_KEYS))})"
                  for key in item if key not in _ALERT_KEYS]
        labels = _string_map(item.get("labels"), f"{where}.labels", found, required=True)
        annotations = _string_map(item.get("annotations", {}), f"{where}.annotations", found, required=False)
        if labels is not None:
            name = labels.get("alertname")
            if name is None:
                found.append(f"{where}.labels.alertname: is required (it names the check)")
            elif isinstance(name, str) and not ALERT_NAME.match(name):  # not a string: _string_map named it
                found.append(f"{where}.labels.alertname: {name!r} {ALERT_NAME_RULE}")
            instance = labels.get("instance", "")
            if isinstance(instance, str) and len(instance) > 500:  # not a string: _string_map named it already
                found.append(f"{where}.labels.instance: must be at most 500 characters")
        starts_at = _time(item.get("startsAt"), f"{where}.startsAt", found)
        ends_at = _time(item.get("endsAt"), f"{where}.endsAt", found)
        if starts_at is not None and ends_at is not None and ends_at < starts_at:
            found.append(f"{where}.endsAt: {item['endsAt']!r} is before startsAt {item['startsAt']!r}: an alert "
                         "cannot end before it starts")
        elif ends_at is None and not found:
            ends_at = now + timedelta(seconds=resolve_timeout_s)
            if starts_at is not None and starts_at > ends_at:
                found.append(f"{where}.startsAt: {item['startsAt']!r} is after the alert's end, which is the post's "
                             f"time + the resolve timeout ({resolve_timeout_s:g} s) when no endsAt is given: give an "
                             "endsAt after it, or a start that has come")
        generator_url = item.get("generatorURL", "")
        if not isinstance(generator_url, str) or len(generator_url) > 2000:
            found.append(f"{where}.generatorURL: must be a string of at most 2000 characters")
        problems += found
        if not found:
            alerts.append({"index": index, "labels": labels, "annotations": annotations, "starts_at": starts_at,
                           "ends_at": ends_at, "generator_url": generator_url})
    return problems, alerts


def problem_index(problem: str) -> int:
    """The index of the alert a problem names (``[3].endsAt: ...``); -1 for one about the whole body."""
    found = _INDEX.match(problem)
    return int(found.group(1)) if found else -1


def _string_map(value: Any, where: str, problems: list[str], *, required: bool) -> dict[str, str] | None:
    if value is None and not required:
        return {}
    if not isinstance(value, dict) or (required and not value):
        problems.append(f"{where}: must be a non-empty object of names to strings" if required
                        else f"{where}: must be an object of names to strings")
        return None
    for name, text in value.items():
        if not _LABEL_NAME.match(name):
            problems.append(f"{where}.{name}: {name!r} is not a label name (letters, digits and _, not first a digit)")
        elif not isinstance(text, str) or len(text) > _MAX_TEXT or UNSTORABLE.search(text):
            problems.append(f"{where}.{name}: must be a string of at most {_MAX_TEXT} characters, without NUL "
                            "characters or unpaired surrogates")
    return value


def _time(value: Any, where: str, problems: list[str]) -> datetime | None:
    if value in (None, "", ZERO_TIME):
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        problems.append(f"{where}: {value!r} is not an RFC 3339 time such as 2024-05-01T10:00:00Z")
        return None
    if parsed.year == 1:  # Go's zero time, however it is written: not given
        return None
    try:  # 9999-12-31T23:59:59-14:00 would be stored as year 10000, and then no read of the alert would work
        return utc_in_calendar(parsed, shown=repr(value))
    except ValueError as error:
        problems.append(f"{where}: {error}")
        return None
