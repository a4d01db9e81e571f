"""Events from outside: the event types a team declares (a name such as ``order.received`` and the JSON schema of its
payload), and publishing an event of one, idempotently, through the kernel's outbox, so the team's triggers fire on
it as they do on built-in events.

A type is declared by a trigger on it or by an event types file; built-in types (and their namespaces,
``workflow.*``, ``alert.*``, ...) are published only by agentsite. A schema's ``pattern`` is matched with RE2 (linear
time): a payload cannot make a pattern backtrack without end, and ``patternProperties``, which jsonschema matches
with Python's backtracking ``re``, is refused.
"""
from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.core.audit import audit_record
from agents.core.definitions import DefinitionTextError, definition_items, fields_changed
from agents.core.events import event_publish
from agents.core.jsonable import UNSTORABLE, json_problem
from agents.core.lazy import lazy
from agents.core.teams import owned_get_or_create
from agents.exceptions import EventPublishError, EventTypeError, IdempotencyKeyReusedError
from agents.expressions.compiler import regex_compile
from agents.models import Event, EventType, EventTypeDeclaration, Team
from agents.models.orchestration import EVENT_TYPE_NAME_MAX_LENGTH, EVENT_TYPE_NAME_PATTERN, SYSTEM_EVENT_NAMESPACES

jsonschema = lazy("jsonschema")
referencing = lazy("referencing")
referencing_exceptions = lazy("referencing.exceptions")
referencing_jsonschema = lazy("referencing.jsonschema")

EVENT_TYPE_KEYS = {"name", "schema", "description"}
NAME_RULE = "an event type of your own is lowercase words (letters, digits, '_') joined by dots, such as order.received"
#: The longest idempotency key (characters).
MAX_IDEMPOTENCY_KEY = 200
#: Most payload problems reported for one publish (a large payload may break a schema in thousands of places).
MAX_PAYLOAD_PROBLEMS = 10
#: Characters of one problem's reason (jsonschema's messages quote the offending value).
MAX_REASON_CHARS = 200
#: Keywords whose value maps names (not keywords) to subschemas.
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "dependentSchemas"})
#: Keywords whose value is data, not a subschema.
_SCHEMA_DATA = frozenset({"enum", "const", "examples", "default", "required"})
_NAME = re.compile(EVENT_TYPE_NAME_PATTERN)


# ------------------------------------------------------------------------------------ names


def event_type_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be an event type of the users' own, or None when it can."""
    if not isinstance(name, str) or not name:
        return NAME_RULE
    if len(name) > EVENT_TYPE_NAME_MAX_LENGTH:
        return f"longer than {EVENT_TYPE_NAME_MAX_LENGTH} characters"
    if name in EventType.values:
        return "it is a built-in event type, published only by agentsite"
    namespace = name.split(".", 1)[0]
    if namespace in SYSTEM_EVENT_NAMESPACES:
        own = ", ".join(value for value in EventType.values if value.startswith(f"{namespace}."))
        return f"{namespace}.* names are agentsite's own ({own}); choose another first word"
    if not _NAME.fullmatch(name):
        return NAME_RULE
    return None


# ------------------------------------------------------------------------------------ schemas


def _pattern_keyword(validator, pattern: str, instance: Any, schema: dict):
    """JSON schema's ``pattern``, matched by RE2 rather than Python's backtracking ``re``."""
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.lru_cache(maxsize=256)
def _regex(pattern: str):
    return regex_compile(pattern)


@functools.lru_cache(maxsize=16)
def _safe_validator(base: type) -> type:
    return jsonschema.validators.extend(base, {"pattern": _pattern_keyword})


def _validator_class(schema: dict) -> type | None:
    """The validator of the draft ``$schema`` names (2020-12 when none), with RE2 patterns; None for an unknown one."""
    meta = schema.get("$schema")
    if meta is None:
        return _safe_validator(jsonschema.Draft202012Validator)
    base = jsonschema.validators.validator_for(schema, default=None) if isinstance(meta, str) else None
    return None if base is None else _safe_validator(base)


def _keywords(schema: dict, where: str):
    """(where, keyword, value, scope) for every keyword of ``schema`` and of each schema inside it; ``scope`` is the
    schemas from ``schema`` down to the one holding the keyword."""
    pending = [(schema, where, ())]
    while pending:
        node, at, scope = pending.pop()
        if isinstance(node, list):
            pending.extend((item, f"{at}[{index}]", scope) for index, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        scope = (*scope, node)
        for key, value in node.items():
            yield at, key, value, scope
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                pending.extend((child, f"{at}.{key}.{name}", scope) for name, child in value.items())
            elif key not in _SCHEMA_DATA:
                pending.append((value, f"{at}.{key}", scope))


def _reference_problem(validator: type, scope: tuple[dict, ...], reference: str) -> str | None:
    """Why ``reference`` (``#/$defs/x``, ``#name``), met in the innermost schema of ``scope``, does not resolve inside
    the outermost one, or None when it does.

    It is resolved as jsonschema resolves it when a payload is checked (a JSON pointer with ``~0``/``~1`` and
    percent escapes, an ``$anchor``, relative to the nearest ``$id``), but in a registry holding this schema alone,
    so nothing is fetched and nothing outside it is found."""
    specification = referencing_jsonschema.specification_with(validator.ID_OF(validator.META_SCHEMA))
    resolver = referencing.Registry().resolver_with_root(specification.create_resource(scope[0]))
    for schema in scope[1:]:
        try:
            resolver = resolver.in_subresource(specification.create_resource(schema))
        except (AttributeError, TypeError):
            pass  # an $id that is not text: not a schema but data under an unknown keyword, which sets no base
    try:
        target = resolver.lookup(reference).contents
    except (referencing_exceptions.Unresolvable, ValueError):  # ValueError: a pointer into a list by a non-number
        return f"{reference!r} does not resolve inside the schema"
    if not isinstance(target, (dict, bool)):
        return f"{reference!r} points to {_reason(repr(target))}, which is not a schema"
    return None


def _schema_problems(schema: Any, where: str = "schema") -> list[str]:
    """Every problem with a payload's JSON schema: not a schema of the draft it names, a reference outside itself or
    one that does not resolve inside it, a pattern RE2 cannot run, ``patternProperties``, a type other than object at
    the top."""
    if not isinstance(schema, dict):
        return [f"{where}: must be a JSON schema (a mapping such as {{type: object, required: [id]}})"]
    validator = _validator_class(schema)
    if validator is None:
        return [f"{where}.$schema: {schema['$schema']!r} is not a JSON schema draft jsonschema knows (leave it out "
                "for draft 2020-12)"]
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        return [f"{where}{_path(error.absolute_path)}: {_reason(error.message)}"]
    errors = []
    top = schema.get("type", "object")
    if top != "object" and not (isinstance(top, list) and "object" in top):
        errors.append(f"{where}.type: a payload is a JSON object, so the schema's type must be object")
    for at, key, value, scope in _keywords(schema, where):
        if key == "patternProperties":
            errors.append(f"{at}.patternProperties: not supported (its patterns would run on Python's backtracking "
                          "matcher); use propertyNames: {pattern: ...}")
        elif key == "pattern" and isinstance(value, str):
            try:
                _regex(value)
            except ValueError as error:
                errors.append(f"{at}.pattern: {error}")
        elif key in ("$ref", "$dynamicRef") and isinstance(value, str) and not value.startswith("#"):
            errors.append(f"{at}.{key}: {value!r} is outside the schema; only references inside it (#/$defs/...) "
                          "are allowed")
        elif key in ("$ref", "$dynamicRef") and isinstance(value, str) and (
                problem := _reference_problem(validator, scope, value)):
            errors.append(f"{at}.{key}: {problem}")
    if not errors and (failure := _schema_errors(validator(schema), {})[1]):
        errors.append(f"{where}: {failure}")
    return errors


def _schema_errors(validator, payload: dict) -> tuple[list[jsonschema.ValidationError], str | None]:
    """The first ``MAX_PAYLOAD_PROBLEMS`` ways ``payload`` breaks the schema, or what stops the schema from judging it
    at all (a reference that resolves to nothing, a schema that refers to itself without end)."""
    try:
        return list(itertools.islice(validator.iter_errors(payload), MAX_PAYLOAD_PROBLEMS)), None
    except referencing_exceptions.Unresolvable as error:
        return [], f"a reference cannot be resolved: {_reason(str(error))}"
    except RecursionError:
        return [], "it refers to itself without end"


def _path(parts) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


def _reason(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 1] + "…"


def _payload_problems(schema: dict, payload: dict) -> list[str]:
    """Where and why ``payload`` does not match ``schema`` (``payload.amount: -1 is less than the minimum of 0``),
    at most ``MAX_PAYLOAD_PROBLEMS``; a missing property is named as the field (``payload.id: is required``)."""
    errors, failure = _schema_errors(_validator_class(schema)(schema), payload)
    if failure:
        return [f"type: the declared schema cannot be used: {failure}"]
    problems: list[str] = []
    for error in errors:
        where = "payload" + _path(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            problems += [f"{where}.{name}: is required" for name in error.validator_value
                         if isinstance(name, str) and name not in error.instance]
        else:
            problems.append(f"{where}: {_reason(error.message)}")
    return list(dict.fromkeys(problems))


# ------------------------------------------------------------------------------------ declarations


def event_type_validate(item: Any, where: str) -> list[str]:
    """Every problem with one event type declaration (``{name, schema, description}``), naming the key."""
    if not isinstance(item, dict):
        return [f"{where}: must be a mapping"]
    errors = [f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(EVENT_TYPE_KEYS))})"
              for key in item if key not in EVENT_TYPE_KEYS]
    name = item.get("name")
    if problem := event_type_name_problem(name):
        errors.append(f"{where}.name: {name!r} cannot be declared: {problem}")
    else:
        where = f"event type {name!r}"
    errors += _schema_problems(item.get("schema", {}), f"{where}.schema")
    if not isinstance(item.get("description", ""), str):
        errors.append(f"{where}.description: must be text")
    return errors


def event_types_load(*, text: str, source: str = "event types", team: Team | None = None) -> dict[str, int]:
    """Declare or update the event types in a YAML/JSON text (a list, or ``{event_types: [...]}``), all or nothing.

    New types belong to ``team`` (default: the default team); one declared by another team is refused."""
    try:
        items, errors = definition_items(text, source=source, key="event_types", noun="event types",
                                         validate=event_type_validate)
    except DefinitionTextError as error:
        raise EventTypeError([str(error)]) from None
    if errors:
        raise EventTypeError(errors)
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    with transaction.atomic():
        for item in items:
            fields = {"schema": item.get("schema", {}), "description": item.get("description", ""), "source": source}
            declaration, created = owned_get_or_create(EventTypeDeclaration, name=item["name"], team=team,
                                                       what="event type", **fields)
            if created:
                counts["created"] += 1
            elif fields_changed(declaration, fields):
                EventTypeDeclaration.objects.filter(pk=declaration.pk).update(**fields, updated_at=timezone.now())
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
        audit_record("event_types.load", "event_type", "", f"loaded {len(items)} event types from {source}",
                     source=source, event_types=[item["name"] for item in items], counts=counts)
    return counts


def event_type_owner_problem(name: Any, team: Team) -> str | None:
    """Why ``team`` cannot use event type ``name`` (another team declared it), or None."""
    if not isinstance(name, str) or not EventTypeDeclaration.objects.filter(name=name).exclude(team=team).exists():
        return None
    return f"event type {name!r} belongs to another team"


def event_type_declare(*, name: str, team: Team, source: str) -> EventTypeDeclaration:
    """Declare ``name`` for ``team`` (a trigger on it does) unless it is declared; its schema is left as it is.
    ``TeamError`` when another team declared it."""
    declaration, _ = owned_get_or_create(EventTypeDeclaration, name=name, team=team, what="event type",
                                         source=source)
    return declaration


# ------------------------------------------------------------------------------------ publishing


def outside_event_publish(*, event_type: str, payload: Any, teams: Iterable[Team] | None = None,
                          idempotency_key: str | None = None, source: str = "") -> tuple[Event, bool]:
    """Publish an event of a declared type from outside: its payload is checked against the type's schema, then it
    goes through the outbox as the type's team's event, so that team's triggers fire on it once the transaction
    commits.

    ``teams`` are the publisher's (a user's teams, or the one they named); a type none of them declared is refused as
    if undeclared. None: any (a command, a superuser). Returns the event and whether it is new: an
    ``idempotency_key`` already used for the type in the team returns the first event when the payload is the same,
    and nothing fires again (a unique constraint holds it under concurrent publishes); with another payload it is
    refused (``IdempotencyKeyReusedError``). ``EventPublishError`` lists every problem,
    each naming its field (``type``, ``payload.x``, ``idempotency_key``)."""
    problems, declaration = [], None
    if problem := event_type_name_problem(event_type):
        shown = repr(event_type) if isinstance(event_type, str) and len(event_type) <= 120 else "this type"
        problems.append(f"type: {shown} cannot be published: {problem}")
    else:
        declaration = EventTypeDeclaration.objects.filter(name=event_type).first()
        allowed = None if teams is None else {team.pk: team.name for team in teams}
        if declaration is None or (allowed is not None and declaration.team_id not in allowed):
            declaration = None
            whose = "" if allowed is None else (f" for team {next(iter(allowed.values()))!r}" if len(allowed) == 1
                                                else " for your teams")
            problems.append(f"type: no event type {event_type!r} is declared{whose}; declare it with a trigger on it "
                            "or in an event types file (`manage.py events types load FILE`)")
    if idempotency_key is None:
        idempotency_key = ""  # stored as no key
    elif not isinstance(idempotency_key, str) or len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        problems.append(f"idempotency_key: must be text of at most {MAX_IDEMPOTENCY_KEY} characters")
    elif not idempotency_key.strip():
        # A blank key would be taken as none, and a publish the sender meant to happen once could fire twice.
        problems.append("idempotency_key: may not be blank; leave it out to publish without one")
    elif UNSTORABLE.search(idempotency_key):
        problems.append("idempotency_key: may not contain NUL characters or unpaired surrogates")
    if not isinstance(payload, dict):
        problems.append(f"payload: must be a JSON object, not {type(payload).__name__}")
    elif problem := json_problem(payload):
        problems.append(f"payload: {problem}")
    elif declaration is not None:
        problems += _payload_problems(declaration.schema, payload)
    if problems:
        raise EventPublishError(problems)
    return _publish_once(declaration, payload, idempotency_key=idempotency_key, source=source)


def _publish_once(declaration: EventTypeDeclaration, payload: dict, *, idempotency_key: str,
                  source: str) -> tuple[Event, bool]:
    first = {"team_id": declaration.team_id, "event_type": declaration.name, "idempotency_key": idempotency_key}
    with transaction.atomic():
        if idempotency_key and (event := Event.objects.filter(**first).first()) is not None:
            return _same_request(event, payload), False
        try:
            with transaction.atomic():
                event = event_publish(declaration.name, payload, team_id=declaration.team_id,
                                      idempotency_key=idempotency_key, source=source)
                audit_record("event.publish", "event", event.pk, f"published {event.event_type} event #{event.pk}",
                             event_type=event.event_type, idempotency_key=idempotency_key, source=source)
        except IntegrityError:
            if not idempotency_key:
                raise
            # A concurrent publish with the key committed between the look-up and the insert: the constraint kept
            # one event, and its send was discarded with the savepoint.
            return _same_request(Event.objects.get(**first), payload), False
    return event, True


def _same_request(event: Event, payload: dict) -> Event:
    """``event``, published earlier with the idempotency key now sent again, when ``payload`` is its payload (as JSON
    values: key order and 1250 against 1250.0 do not matter); else ``IdempotencyKeyReusedError``."""
    if event.payload == payload:
        return event
    raise IdempotencyKeyReusedError([
        f"idempotency_key: already used for another request (event #{event.pk} of type {event.event_type!r}, with "
        "another payload); the same key publishes once: send the first request again to get its event, or use a new "
        "key for a new event"])
