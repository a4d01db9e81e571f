"""What every API view shares: the base view set (permissions per action, filters from the query string, pages)
and serializer fields for JSON values and windows of time."""
import math
from collections.abc import Mapping
from datetime import timedelta

from django.http import Http404
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers, viewsets
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.settings import api_settings

from agents.api.permissions import view_action
from agents.api.schema import documented_query_parameters, serializer_parameters
from agents.core.jsonable import UNSTORABLE, json_problem
from agents.core.teams import sees_all, team_for_new, team_scoped
from agents.exceptions import MonitoringError, TeamError
from agents.models import Team
from agents.monitoring.selectors import window_parse

#: The largest id PostgreSQL's bigint holds.
MAX_ID = 2**63 - 1
#: The longest window of time the API accepts (metrics summary, acknowledgement expiry, silences): ten years.
MAX_WINDOW = timedelta(days=3650)


class _StorableJSON:
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if problem := json_problem(value):
            raise serializers.ValidationError(problem)
        return value


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JSONObjectField(_StorableJSON, serializers.JSONField):
    """A JSON object (mapping) that PostgreSQL can store."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError(f"must be a JSON object, not {type(value).__name__}")
        return value


class JSONValueField(_StorableJSON, serializers.JSONField):
    """Any JSON value that PostgreSQL can store."""


class FiniteFloatField(serializers.FloatField):
    """A number in a response; one that is not finite (JSON has no NaN) is shown as null."""

    def to_representation(self, value):
        value = float(value)
        return value if math.isfinite(value) else None


@extend_schema_field({"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[smhdw]\s*$", "maxLength": 40,
                      "example": "1h"})
class WindowField(serializers.Field):
    """A length of time such as ``90s``, ``15m``, ``1h``, ``7d`` or ``2w``, as a timedelta (1 s to ten years)."""

    default_error_messages = {
        "invalid": "{text} is not a positive number followed by s, m, h, d or w (e.g. 1h)",
        "too_long": "must be at most ten years (3650d)",
        "too_short": "must be at least one second (1s)",
    }

    def to_internal_value(self, data) -> timedelta:
        if not isinstance(data, str) or len(data) > 40:
            self.fail("invalid", text=repr(data)[:50])
        try:
            window = window_parse(data)
        except MonitoringError as error:  # names the text and why: not a window, or longer than ten years
            raise serializers.ValidationError(str(error).removeprefix("window "), code="invalid") from None
        if window > MAX_WINDOW:
            self.fail("too_long")
        if window < timedelta(seconds=1):
            self.fail("too_short")
        return window

    def to_representation(self, value) -> str:
        return f"{value.total_seconds():g}s" if isinstance(value, timedelta) else str(value)


class OffsetDateTimeField(serializers.DateTimeField):
    """A time given with its offset or ``Z`` (``2026-11-01T00:00:00+01:00``): one without is refused rather than
    read in the server's time zone, as the commands refuse it."""

    def to_internal_value(self, value):
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:  # well formed, but no time (12:99): DRF's own reading refuses it as invalid
                parsed = None
            if parsed is not None and parsed.tzinfo is None:
                raise serializers.ValidationError("give a time with its offset or Z (2026-11-01T00:00:00Z)")
        return super().to_internal_value(value)


def team_field() -> serializers.CharField:
    """The ``team`` a request loads or creates into."""
    return serializers.CharField(
        required=False, max_length=150,
        help_text="The team it belongs to (one of yours). Default: your only team; for a superuser, the default team. "
                  "Loading over an existing definition keeps its team; one of another team is refused.",
    )


def body_problems(serializer: serializers.Serializer, data) -> dict:
    """What ``serializer`` would read wrongly from ``data`` (the body it reads), each as ``{key: [reason]}``, nested
    ones under their field (``{"matchers": {"checks": [...]}}``; by index in a list): a key naming none of its writable
    fields (a typo must not be dropped, changing what the request means), and a JSON number or boolean where it reads
    text (DRF's ``CharField`` and its kinds would take ``5`` as "5" and ``1e999`` as "inf"). The keys and values
    inside a JSON field (``params``, ``payload``, ``context``) are free."""
    if not isinstance(data, Mapping):
        return {}  # the serializer itself says what the body should be
    fields = serializer.fields
    known = ", ".join(sorted(name for name, field in fields.items() if not field.read_only))
    found: dict = {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            found[key] = [f"unknown field (known: {known})" if known else "unknown field (this endpoint takes no body)"]
        elif field.read_only:
            found[key] = [f"read-only: the server sets it (known: {known})"]
        elif problems := _value_problems(field, value):
            found[key] = problems
    return found


def _value_problems(field: serializers.Field, value) -> dict | list:
    if isinstance(field, serializers.Serializer):
        return body_problems(field, value)
    if isinstance(field, serializers.CharField) and isinstance(value, (int, float)):  # a bool is an int
        return [f"must be text, got {'boolean' if isinstance(value, bool) else 'number'}"]
    if isinstance(field, (serializers.ListSerializer, serializers.ListField)) and isinstance(value, list):
        items = enumerate(value)
    elif isinstance(field, serializers.DictField) and isinstance(value, Mapping):
        items = value.items()
    else:
        return {}
    return {key: nested for key, item in items if (nested := _value_problems(field.child, item))}


def _uncovered(detail, covered):
    """A validation detail without the reasons for a value ``covered`` refuses already (``body_problems``: DRF's
    "Not a valid string." for ``true``, a length for a number turned into text)."""
    if isinstance(covered, list):
        return {}
    detail, covered = _by_index(detail), _by_index(covered)
    if not (isinstance(detail, Mapping) and isinstance(covered, Mapping)):
        return detail
    return {key: rest for key, value in detail.items() if (rest := _uncovered(value, covered.get(key, {})))}


def _details_merged(first, second):
    """Two validation details (DRF's nested ``{field: [reasons]}``) as one: a field's reasons from both, in order."""
    first, second = _by_index(first), _by_index(second)
    if isinstance(first, Mapping) and isinstance(second, Mapping):
        merged = dict(first)
        for key, value in second.items():
            merged[key] = _details_merged(merged[key], value) if key in merged else value
        return merged
    if isinstance(first, Mapping):
        return _details_merged(first, {"non_field_errors": second})
    if isinstance(second, Mapping):
        return _details_merged({"non_field_errors": first}, second)
    return [*first, *second]


def _by_index(detail):
    """A list serializer's detail (a list of each item's) as ``{index: detail}``; a list of reasons as it is."""
    if isinstance(detail, list) and any(isinstance(item, (Mapping, list)) for item in detail):
        return {index: item for index, item in enumerate(detail) if item}
    return detail


def lookup_ok(value: str, *, numeric: bool) -> bool:
    """Whether a value from the URL can name a row (a bigint id, or text PostgreSQL can compare)."""
    if numeric:
        return value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= MAX_ID
    return 0 < len(value) <= 255 and not UNSTORABLE.search(value)


#: The query parameters each view class's action reads, by (class, action, method): ``ApiViewSet.query_parameters``.
_query_parameters: dict[tuple, dict[str, bool]] = {}


class QueryCheckedMixin:
    """A view that reads its query string strictly: a ``format`` no renderer has is a 400 naming ``format`` (DRF
    answers 404, as if the endpoint were not there), and once the request is authenticated and allowed, a parameter
    the view does not read is a 400 naming it (``query_refused``)."""

    def perform_content_negotiation(self, request, force=False):
        try:
            return super().perform_content_negotiation(request, force=force)
        except Http404:  # DRF's answer to a format no renderer has: the endpoint is there, the parameter is wrong
            formats = ", ".join(dict.fromkeys(renderer.format for renderer in self.get_renderers()))
            raise exceptions.ValidationError({api_settings.URL_FORMAT_OVERRIDE: [f"must be one of {formats}"]}) \
                from None

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.query_refused()

    def query_parameters(self) -> dict[str, bool]:
        """The query parameters the view reads, each with whether it reads several values: ``format`` alone (DRF's
        choice of renderer, which browsers and the browsable API send)."""
        return dict.fromkeys([api_settings.URL_FORMAT_OVERRIDE] if api_settings.URL_FORMAT_OVERRIDE else [], False)

    def query_read(self) -> bool:
        """Whether the request reaches a handler that reads the query string: an unrouted method (405) and
        ``OPTIONS`` do not, and are not checked."""
        return self.request.method != "OPTIONS" and getattr(self, self.request.method.lower(), None) is not None

    def query_refused(self):
        """400 naming each query parameter the view does not read, listing those it does (a typo must not be
        ignored: a misspelt filter would list everything, a write would be done as if it were not there), and each
        given more than once where one value is read (the last would win unseen)."""
        if not self.query_read():
            return
        query, taken = self.request.query_params, self.query_parameters()
        known = f"known: {', '.join(sorted(taken))}" if taken else "this endpoint takes none"
        found: dict[str, list[str]] = {}
        for name, values in query.lists():
            if name not in taken:
                found[name] = [f"unknown query parameter ({known})"]
            elif len(values) > 1 and not taken[name]:
                found[name] = [f"given {len(values)} times; this endpoint reads one value"]
        if found:
            raise serializers.ValidationError(found)


class ApiViewSet(QueryCheckedMixin, viewsets.GenericViewSet):
    """A view set whose actions each need the model permission named in ``perms``.

    ``serializer_class`` shows what the view answers; ``request_serializers`` read each action's request body;
    ``filter_serializer_class`` validates the query string (``filters()``) and ``filter_lookups`` applies it
    (``filtered()``); ``page(rows, to_json)`` answers one page of ``rows``, each turned into JSON by ``to_json``.
    """

    perms: dict[str, str] = {}
    #: The serializer of each action's request body: reads it (``given()``) and is the browsable API's form. An extra
    #: action (``@action``) of a write method not named here takes no body (``body_refused``).
    request_serializers: dict[str, type[serializers.Serializer]] = {}
    filter_serializer_class: type[serializers.Serializer] | None = None
    #: Query parameter -> the queryset lookup it filters on (``filtered()``).
    filter_lookups: dict[str, str] = {}
    lookup_value_regex = "[^/]+"
    #: What the path names, in 404 messages: "no {noun} {value!r}".
    noun = "item"

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        lookup = self.lookup_url_kwarg or self.lookup_field
        if lookup in kwargs and not lookup_ok(str(kwargs[lookup]), numeric=self.lookup_value_regex == "[0-9]+"):
            raise exceptions.NotFound(f"no {self.noun} {kwargs[lookup]!r}")
        if self.takes_no_body():
            self.body_refused()

    def check_permissions(self, request):
        # Throttle first: a request refused 403 counts against its rate too (else refused users were never slowed).
        super().check_throttles(request)
        request._agents_throttled = True
        super().check_permissions(request)

    def check_throttles(self, request):
        if not getattr(request, "_agents_throttled", False):  # counted already, before the permissions
            super().check_throttles(request)

    def get_queryset(self):
        """The view's rows the user's teams own (all of them for a superuser); other teams' rows are not found."""
        return team_scoped(super().get_queryset(), self.request.user)

    def team_given(self, name: str | None) -> Team | None:
        """The team a load or create goes to (``team_field``); None lets a superuser's load keep a definition's team.
        400 naming ``team`` when it is not one of the user's, or when the user must name one."""
        if not name and sees_all(self.request.user):
            return None
        if name and UNSTORABLE.search(name):  # from the query string (POST /api/v2/alerts?team=): no field read it
            raise serializers.ValidationError({"team": ["may not contain NUL characters or unpaired surrogates"]})
        try:
            return team_for_new(self.request.user, name)
        except TeamError as error:
            raise serializers.ValidationError({"team": [str(error)]}) from None

    def visible(self, model, **lookup) -> bool:
        """Whether a row of ``model`` matching ``lookup`` exists among those the user's teams own."""
        return team_scoped(model.objects.filter(**lookup), self.request.user).exists()

    def get_object(self):
        value = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        found = self.get_queryset().filter(**{self.lookup_field: value}).first()
        if found is None:
            raise exceptions.NotFound(f"no {self.noun} {value!r}")
        self.check_object_permissions(self.request, found)
        return found

    def get_serializer_class(self):
        # OPTIONS describes each method's body: the request serializer of that method's action
        return self.request_serializers.get(view_action(self.request, self)) or self.serializer_class

    def given(self) -> dict:
        """The request body, validated by the action's request serializer (400 naming each field at fault, each key
        it does not know and each number or boolean given for text, nested ones too: ``body_problems``)."""
        serializer = self.get_serializer(data=self.request.data)
        valid = serializer.is_valid()
        problems = body_problems(serializer, self.request.data)
        if problems or not valid:
            raise serializers.ValidationError(_details_merged(problems, {} if valid else _uncovered(serializer.errors,
                                                                                                   problems)))
        return serializer.validated_data

    def takes_no_body(self) -> bool:
        """Whether the request is a write to an extra action (``@action``: cancel, resolve, enable, ...) that has no
        request serializer: it reads no body. The writes of a resource (create, update) read theirs."""
        handler = getattr(self, self.action or "", None)
        return (self.request.method not in SAFE_METHODS and self.action not in self.request_serializers
                and hasattr(handler, "mapping"))

    def body_refused(self):
        """400 for an action taking no body that was sent one: each key named as an unknown field, as ``given()``
        names them (the caller meant something the endpoint would ignore); a body that is not a JSON object as
        one reason. No body, an empty one and ``{}`` pass."""
        data = self.request.data
        if not isinstance(data, Mapping):
            raise serializers.ValidationError({"non_field_errors": ["this endpoint takes no body: send none, or {}"]})
        if unknown := body_problems(serializers.Serializer(), data):
            raise serializers.ValidationError(unknown)

    def query_parameters(self) -> dict[str, bool]:
        """The query parameters the action reads, each with whether it reads several values: ``format`` (DRF's choice
        of renderer, which browsers and the browsable API send), a list's filters (``filter_serializer_class``), and
        every parameter the schema documents for it (``documented_query_parameters``: pages, ``parameters=``)."""
        key = (type(self), self.action, self.request.method)
        taken = _query_parameters.get(key)
        if taken is None:  # the same for every request of the action: built from the schema once per process
            taken = super().query_parameters()
            if self.action == "list" and self.filter_serializer_class is not None:
                taken.update(serializer_parameters(self.filter_serializer_class))
            taken = _query_parameters[key] = {**taken, **documented_query_parameters(self)}
        return taken

    def query_read(self) -> bool:
        """Whether the request reaches an action: an unrouted method (405) and ``OPTIONS`` read no query string."""
        return bool(self.action) and getattr(self, self.action, None) is not None

    def filters(self) -> dict:
        """The validated query-string filters (400 naming the parameter when one is invalid)."""
        serializer = self.filter_serializer_class(data=dict(self.request.query_params.items()))
        serializer.is_valid(raise_exception=True)
        return {key: value for key, value in serializer.validated_data.items() if value not in (None, "")}

    def filtered(self, rows):
        """``rows`` narrowed by the filters of the query string named in ``filter_lookups``."""
        filters = self.filters()
        return rows.filter(**{lookup: filters[name] for name, lookup in self.filter_lookups.items() if name in filters})

    def page(self, rows, to_json) -> Response:
        """One page of ``rows`` as ``{count, next, previous, results}``."""
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(self.serializer_class([to_json(row) for row in page], many=True).data)

    def show(self, value: dict, *, status: int = 200, serializer_class=None, headers: dict | None = None) -> Response:
        """``value`` shown through ``serializer_class`` (the view's ``serializer_class`` by default)."""
        serializer = (serializer_class or self.serializer_class)(value)
        return Response(serializer.data, status=status, headers=headers)


class FilterSerializer(serializers.Serializer):
    """Base of the query-string filters: every field optional."""

    name = serializers.CharField(required=False, max_length=200, help_text="Only names containing this text.")
