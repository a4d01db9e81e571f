"""API of monitoring: checks (list, show, create, change, disable, run now, raw samples), notification routes and
response rules (list, show, create, change, disable), alerts (list, show, acknowledge, resolve, silence), silences,
the metrics summary, and alerts posted as Prometheus posts them to an Alertmanager (``POST /api/v2/alerts``)."""
import json
import re
from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action

from agents.api.common import (ApiViewSet, FilterSerializer, FiniteFloatField, JSONObjectField, OffsetDateTimeField,
                               WindowField, team_field)
from agents.api.errors import ServiceError, service_error, service_errors
from agents.api.fields import ChoiceField
from agents.api.schema import NamedChoiceField
from agents.core.teams import sees_all, teams_of
from agents.core.jsonable import iso, json_problem
from agents.exceptions import CheckSpecError, ExternalAlertsRefusedError, SilenceError, TeamError
from agents.models import (
    Alert,
    AlertState,
    Check,
    CheckStatus,
    CheckType,
    Metric,
    NotificationRoute,
    ResponseRule,
    Severity,
    Silence,
    Team,
    ThresholdDirection,
)
from agents.monitoring import alerts, rules, selectors, services

#: The metrics summary's window when the request names none.
DEFAULT_SUMMARY_WINDOW = timedelta(hours=1)


def _user(request) -> str:
    return request.user.get_username()


# --- definitions written over the API -------------------------------------------------------------------------

#: Where a definitions problem is: ``checks[0].name: ...``, ``check 'web'.interval_s: ...``, ``route 'x': ...``.
_DEFINITION_PROBLEM = re.compile(
    r"^(?:(?:checks|routes|responses)\[\d+\]|(?:check|route|response) '[^']*')(?:\.(?P<key>[\w.\[\]]+))?: "
    r"(?P<reason>.+)$",
    re.S,
)
#: A problem naming no key is about the field its words name.
_REASON_FIELDS = (("(params.", "params"), ("check type", "type"), ("handler", "handler"), ("warning (", "warning"),
                  ("escalat", "escalate_to"), ("action", "action"), ("workflow", "workflow"))


def definition_problem_fields(problems: list[str], *, parameters: str) -> dict[str, list[str]]:
    """A definitions validator's problems by the request field each is about: the key it names (``interval_s``),
    ``<parameters>.<name>`` for a probe's or handler's parameter, else the key its words name (``type``)."""
    fields: dict[str, list[str]] = {}
    for problem in problems:
        match = _DEFINITION_PROBLEM.match(problem)
        field, reason = (match["key"], match["reason"]) if match else (None, problem)
        if match and not field:
            if named := re.search(r"parameter '(\w+)'", reason):
                field = f"{parameters}.{named.group(1)}"
            elif named := re.match(r"unknown key '(\w+)'", reason):
                field = named.group(1)
            else:
                field = next((name for words, name in _REASON_FIELDS if words in reason), None)
        fields.setdefault(field or "non_field_errors", []).append(reason)
    return fields


def _team_problem_field(problem: str) -> str:
    """The request field a refusal of another team's row is about: the key its words name (``escalate_to``), else
    ``name`` (the definition itself belongs to another team). Quoted names are not read: a route may be called
    ``handler-log``."""
    words = re.sub(r"'[^']*'", "''", problem)
    return next((name for phrase, name in _REASON_FIELDS if phrase in words), "name")


def definition_schema(request, response):
    """Document a ``DefinitionViewSet``'s writes: the definition they take and what they answer. A change (PUT,
    PATCH) takes the definition without ``team`` (``change_refuse``) and with ``name`` optional (the path names it)."""
    change = definition_change_serializer(request)
    return extend_schema_view(
        create=extend_schema(request=request, responses={201: response}),
        update=extend_schema(request=change, responses=response),
        partial_update=extend_schema(request=change, responses=response),
    )


def definition_change_serializer(serializer: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """``serializer`` as a change's body: no ``team`` (a row stays in its team) and ``name`` optional (the path names
    the row; the body may repeat the name, not change it)."""
    change = type(serializer.__name__.removesuffix("Serializer") + "ChangeSerializer", (serializer,),
                  {"team": None, "__module__": serializer.__module__,
                   "__doc__": f"{serializer.__doc__} A change keeps its team, and its name is the path's."})
    name = serializers.CharField(max_length=100, required=False, help_text="The name in the path, if given.")
    change._declared_fields = {key: name if key == "name" else field for key, field in change._declared_fields.items()}
    return change


class DefinitionViewSet(ApiViewSet):
    """Definitions written over the API as one item of a definitions file's ``section``: the same keys, the same
    validation and the same service as loading the file (``monitoring load``), so every write is audited and a bad
    field is a 400 naming it with nothing stored. ``definition_of`` shows a stored row as that item."""

    section = ""
    #: The key holding the parameters a probe or handler validates (``params``, ``config``).
    parameters = "params"
    lookup_field = "name"

    def definition_of(self, row) -> dict:
        """The row as an item of a definitions file."""
        raise NotImplementedError

    def row_json(self, row) -> dict:
        """The row as the view shows it."""
        return {"id": row.pk, "team": row.team.name, **self.definition_of(row)}

    def retrieve(self, request, name: str):
        """One, by name."""
        return self.show(self.row_json(self.get_object()))

    def body(self) -> dict:
        """The request body: a JSON object holding a definition (and, on create, optionally its ``team``)."""
        given = self.request.data
        if not isinstance(given, dict):
            raise serializers.ValidationError(
                {"non_field_errors": [f"must be a JSON object: a {self.noun} as written in a definitions file"]})
        if problem := json_problem(given):
            raise serializers.ValidationError({"non_field_errors": [problem]})
        return dict(given)

    def definition_save(self, definition: dict, *, team: Team | None):
        """Load ``definition`` as a one-item definitions file; return the stored row (400 naming each bad field)."""
        with service_errors():
            try:
                services.definitions_load(text=json.dumps({self.section: [definition]}), source="api",
                                          created_by=_user(self.request), team=team)
            except CheckSpecError as error:
                raise serializers.ValidationError(
                    definition_problem_fields(error.errors, parameters=self.parameters)) from None
            except TeamError as error:  # another team's row it names (a route's escalate_to), found on saving
                raise service_error(error, fields={TeamError: _team_problem_field(str(error))}) from None
        return self.get_queryset().get(name=definition["name"])

    def create(self, request):
        """Create one from a definition; 400 naming each field at fault, or the name when it is taken."""
        definition = self.body()
        team_name = definition.pop("team", None)
        if team_name is not None and not isinstance(team_name, str):
            raise serializers.ValidationError({"team": ["must be the name of one of your teams"]})
        name = definition.get("name")
        if isinstance(name, str) and self.queryset.model.objects.filter(name=name).exists():
            raise serializers.ValidationError(
                {"name": [f"a {self.noun} named {name!r} exists already; change it with PUT or PATCH"]})
        row = self.definition_save(definition, team=self.team_given(team_name))
        return self.show(self.row_json(row), status=status.HTTP_201_CREATED)

    def update(self, request, name: str):
        """Replace the definition: keys left out take their defaults, as in a file."""
        return self._change(self.get_object(), self.body(), replace=True)

    def partial_update(self, request, name: str):
        """Change the keys given; the others keep their values."""
        return self._change(self.get_object(), self.body(), replace=False)

    def change_refuse(self, row, given: dict) -> None:
        """400 for a change no definition may make: a new name or team."""
        if given.get("name", row.name) != row.name:
            raise serializers.ValidationError(
                {"name": [f"a {self.noun} is known by its name and cannot be renamed; create a new one"]})
        if "team" in given:
            raise serializers.ValidationError({"team": [f"a {self.noun} stays in the team it was created in"]})

    def _change(self, row, given: dict, *, replace: bool):
        self.change_refuse(row, given)
        definition = {**({} if replace else self.definition_of(row)), **given, "name": row.name}
        return self.show(self.row_json(self.definition_save(definition, team=row.team)))

    def enabled_set(self, enabled: bool):
        """Enable or disable the named row through the same path as a change."""
        return self._change(self.get_object(), {"enabled": enabled}, replace=False)


    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def disable(self, request, name: str):
        """Disable it: a check stops running, a route or response rule stops matching (audited)."""
        return self.enabled_set(False)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def enable(self, request, name: str):
        """Enable it again (audited)."""
        return self.enabled_set(True)


# --- checks -----------------------------------------------------------------------------------------------


class AlertRefSerializer(serializers.Serializer):
    """A check's open alert."""

    id = serializers.IntegerField()
    state = ChoiceField(choices=AlertState.choices)


class CheckSerializer(serializers.Serializer):
    """A check: its definition and the state its latest run left."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    team = serializers.CharField(help_text="The team that owns it.")
    type = ChoiceField(choices=CheckType.choices)
    params = JSONObjectField()
    interval_s = FiniteFloatField()
    timeout_s = FiniteFloatField(help_text="Seconds a scheduled run may wait in the queue before it is dropped.")
    warning = FiniteFloatField(allow_null=True)
    critical = FiniteFloatField(allow_null=True)
    direction = ChoiceField(choices=ThresholdDirection.choices)
    max_attempts = serializers.IntegerField()
    severity = ChoiceField(choices=Severity.choices)
    keep_firing_for_s = FiniteFloatField()
    tags = serializers.ListField(child=serializers.CharField())
    enabled = serializers.BooleanField()
    description = serializers.CharField(allow_blank=True)
    status = ChoiceField(choices=CheckStatus.choices, help_text="Of the latest run.")
    last_value = FiniteFloatField(allow_null=True)
    unit = serializers.CharField(allow_blank=True)
    message = serializers.CharField(allow_blank=True)
    last_run_at = serializers.DateTimeField(allow_null=True)
    next_run_at = serializers.DateTimeField(allow_null=True)
    consecutive_failures = serializers.IntegerField()
    alert = AlertRefSerializer(allow_null=True)


class CheckFilterSerializer(FilterSerializer):
    """Filters of the check list."""

    status = ChoiceField(choices=CheckStatus.choices, required=False)
    type = ChoiceField(choices=CheckType.choices, required=False)
    enabled = serializers.BooleanField(required=False, allow_null=True, default=None)


class CheckOutcomeSerializer(serializers.Serializer):
    """What one run of a check found and did."""

    check = serializers.CharField()
    status = ChoiceField(choices=CheckStatus.choices)
    value = FiniteFloatField(allow_null=True)
    unit = serializers.CharField(allow_blank=True)
    message = serializers.CharField(allow_blank=True)
    duration_ms = FiniteFloatField()
    scheduled_for = serializers.DateTimeField()
    lateness_s = FiniteFloatField()
    recorded = serializers.BooleanField()
    alert_id = serializers.IntegerField(allow_null=True)
    alert_state = ChoiceField(choices=AlertState.choices, allow_null=True)


def _open_alerts(checks: list[Check]) -> dict[int, Alert]:
    rows = Alert.objects.filter(health_check__in=checks).exclude(state=AlertState.RESOLVED).order_by("pk")
    return {alert.health_check_id: alert for alert in rows.only("pk", "state", "health_check_id")}


class CheckDefinitionSerializer(serializers.Serializer):
    """A check as written in a definitions file (``checks:``), validated as the file is."""

    name = serializers.CharField(max_length=100)
    type = NamedChoiceField(choices=[value for value in CheckType.values if value != CheckType.EXTERNAL],
                            enum_name="CheckDefinitionTypeEnum")
    params = JSONObjectField(required=False, help_text="The check type's parameters (url, host and port, path, ...).")
    interval_s = serializers.FloatField(required=False, min_value=1, max_value=rules.MAX_DURATION_S,
                                        help_text="Default 60.")
    timeout_s = serializers.FloatField(required=False, min_value=0.1, max_value=rules.MAX_DURATION_S,
                                       help_text="Default 30.")
    warning = serializers.FloatField(required=False, allow_null=True)
    critical = serializers.FloatField(required=False, allow_null=True)
    direction = ChoiceField(choices=ThresholdDirection.choices, required=False)
    max_attempts = serializers.IntegerField(required=False, min_value=1)
    severity = ChoiceField(choices=Severity.choices, required=False)
    keep_firing_for_s = serializers.FloatField(required=False, min_value=0, max_value=rules.MAX_DURATION_S)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    enabled = serializers.BooleanField(required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    team = serializers.CharField(required=False, help_text="On create: one of your teams (default: your only one).")


#: The most samples one request returns, and how many when it names no limit.
MAX_SAMPLES, DEFAULT_SAMPLES = 10_000, 1000
#: How far back samples are read when the request names no ``since``.
DEFAULT_SAMPLES_WINDOW = timedelta(hours=1)


class SamplesQuerySerializer(serializers.Serializer):
    """Which raw samples of a check to read."""

    since = OffsetDateTimeField(required=False, help_text="From this time on (inclusive; with its offset or Z); "
                                                         "default: 1 h ago.")
    until = OffsetDateTimeField(required=False, help_text="Before this time (exclusive; with its offset or Z); "
                                                         "default: now.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_SAMPLES, default=DEFAULT_SAMPLES,
                                     help_text=f"At most this many samples (1-{MAX_SAMPLES}).")
    metric = serializers.CharField(required=False, max_length=100, help_text="Only this metric (http.latency_ms).")

    def validate(self, data):
        data.setdefault("until", timezone.now())
        if "since" not in data:
            try:
                data["since"] = data["until"] - DEFAULT_SAMPLES_WINDOW
            except OverflowError:  # until in the first hour of year 1: no default since before it
                raise serializers.ValidationError({"until": ["must be at least an hour after 0001-01-01T00:00:00Z, "
                                                             "or give since"]}) from None
        if data["since"] >= data["until"]:
            raise serializers.ValidationError({"until": ["must be after since"]})
        return data


class SampleSerializer(serializers.Serializer):
    """One metric sample (or, after downsampling, an hour's average of `sample_count` samples)."""

    id = serializers.IntegerField()
    metric = serializers.CharField()
    value = FiniteFloatField()
    unit = serializers.CharField(allow_blank=True)
    tags = JSONObjectField()
    recorded_at = serializers.DateTimeField()
    sample_count = serializers.IntegerField()
    minimum = FiniteFloatField(allow_null=True)
    maximum = FiniteFloatField(allow_null=True)


class SamplesSerializer(serializers.Serializer):
    """A check's raw samples in a window, oldest first."""

    check = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    limit = serializers.IntegerField()
    truncated = serializers.BooleanField(help_text="More samples lie in the window: ask again from the last one's "
                                                   "recorded_at.")
    samples = SampleSerializer(many=True)


def _sample_json(metric: Metric) -> dict:
    return {"id": metric.pk, "metric": metric.name, "value": metric.value, "unit": metric.unit, "tags": metric.tags,
            "recorded_at": iso(metric.recorded_at), "sample_count": metric.sample_count, "minimum": metric.minimum,
            "maximum": metric.maximum}


@definition_schema(CheckDefinitionSerializer, CheckSerializer)
class CheckViewSet(DefinitionViewSet):
    """Health checks run on a schedule by monitoring agents."""

    queryset = Check.objects.select_related("team__group")
    serializer_class = CheckSerializer
    filter_serializer_class = CheckFilterSerializer
    filter_lookups = {"status": "last_status", "type": "check_type", "enabled": "enabled", "name": "name__icontains"}
    noun = "check"
    section = "checks"
    perms = {"list": "view_check", "retrieve": "view_check", "run": "change_check", "create": "add_check",
             "update": "change_check", "partial_update": "change_check", "disable": "change_check",
             "enable": "change_check", "samples": "view_metric"}

    def definition_of(self, check: Check) -> dict:
        return {
            "name": check.name, "type": check.check_type, "params": check.params, "interval_s": check.interval_s,
            "timeout_s": check.timeout_s, "warning": check.warning, "critical": check.critical,
            "direction": check.direction, "max_attempts": check.max_attempts, "severity": check.severity,
            "keep_firing_for_s": check.keep_firing_for_s, "tags": check.tags, "enabled": check.enabled,
            "description": check.description,
        }

    def row_json(self, check: Check) -> dict:
        return selectors.check_json(check, open_alert=_open_alerts([check]).get(check.pk))

    def _change(self, check: Check, given: dict, *, replace: bool):
        """A probed check changes as a definition; an external one (no definition describes it) only its
        ``enabled``, and any other key is refused naming it and why."""
        if check.check_type != CheckType.EXTERNAL:
            return super()._change(check, given, replace=replace)
        self.change_refuse(check, given)
        if problems := rules.external_check_change_problems(given, check.name):
            raise serializers.ValidationError(definition_problem_fields(problems, parameters=self.parameters))
        return self._enabled_save(check, given.get("enabled", True if replace else check.enabled))

    def enabled_set(self, enabled: bool):
        """Enable or disable the named check, of any type (an external one too)."""
        return self._enabled_save(self.get_object(), enabled)

    def _enabled_save(self, check: Check, enabled: bool):
        with service_errors():
            services.check_enabled_set(name=check.name, enabled=enabled, source="api")
        return self.show(self.row_json(self.get_queryset().get(pk=check.pk)))

    @extend_schema(parameters=[SamplesQuerySerializer], responses=SamplesSerializer)
    @action(detail=True, methods=["get"])
    def samples(self, request, name: str):
        """The check's raw metric samples from `since` (inclusive) to `until` (exclusive), ordered by time then
        id, at most `limit`; `truncated` says more remain."""
        check = self.get_object()
        query = SamplesQuerySerializer(data=dict(request.query_params.items()))
        query.is_valid(raise_exception=True)
        given = query.validated_data
        rows = Metric.objects.filter(health_check=check, recorded_at__gte=given["since"],
                                     recorded_at__lt=given["until"])
        if given.get("metric"):
            rows = rows.filter(name=given["metric"])
        samples = list(rows.order_by("recorded_at", "pk")[:given["limit"] + 1])
        return self.show({"check": check.name, "since": iso(given["since"]), "until": iso(given["until"]),
                          "limit": given["limit"], "truncated": len(samples) > given["limit"],
                          "samples": [_sample_json(sample) for sample in samples[:given["limit"]]]},
                         serializer_class=SamplesSerializer)

    @extend_schema(parameters=[CheckFilterSerializer])
    def list(self, request):
        """Checks by name with their state and open alert; filter by `status`, `type`, `enabled` and `name`."""
        page = self.paginate_queryset(self.filtered(self.get_queryset().order_by("name")))
        open_alerts = _open_alerts(page)
        rows = [selectors.check_json(check, open_alert=open_alerts.get(check.pk)) for check in page]
        return self.get_paginated_response(self.get_serializer(rows, many=True).data)

    @extend_schema(request=None, responses=CheckOutcomeSerializer)
    @action(detail=True, methods=["post"])
    def run(self, request, name: str):
        """Run the check now, through the same code as a scheduled run (disabled checks too): its result is
        recorded and its alert opened, updated or resolved."""
        with service_errors():
            outcome = services.check_run_now(name=self.get_object().name)
        return self.show(outcome.as_json(), serializer_class=CheckOutcomeSerializer)


# --- alerts and silences ----------------------------------------------------------------------------------


class AlertSerializer(serializers.Serializer):
    """An alert: one check's problem on one target."""

    id = serializers.IntegerField()
    check = serializers.CharField()
    fingerprint = serializers.CharField()
    target = serializers.CharField(allow_blank=True)
    state = ChoiceField(choices=AlertState.choices)
    severity = ChoiceField(choices=Severity.choices)
    summary = serializers.CharField(allow_blank=True)
    started_at = serializers.DateTimeField()
    fired_at = serializers.DateTimeField(allow_null=True)
    last_seen_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)
    resolved_by = serializers.CharField(allow_blank=True)
    count = serializers.IntegerField(help_text="Failing runs seen while open.")
    last_value = FiniteFloatField(allow_null=True)
    acknowledged_by = serializers.CharField(allow_blank=True)
    ack_note = serializers.CharField(allow_blank=True)
    ack_expires_at = serializers.DateTimeField(allow_null=True)
    route = serializers.CharField(allow_blank=True)
    escalation_level = serializers.IntegerField()
    silenced = serializers.BooleanField(help_text="An active silence covers it: it notifies nobody meanwhile.")
    silenced_by = serializers.DictField(allow_null=True, help_text="The silence covering it: id, ends_at, comment.")


class NotificationSerializer(serializers.Serializer):
    """One notification of an alert, with every delivery attempt."""

    event = serializers.CharField()
    sequence = serializers.IntegerField()
    route = serializers.CharField(allow_blank=True)
    handler = serializers.CharField(allow_blank=True)
    status = serializers.CharField()
    attempts = serializers.ListField(child=JSONObjectField())
    error = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class AlertDetailSerializer(AlertSerializer):
    """An alert with its notification log."""

    notifications = NotificationSerializer(many=True)


class AlertFilterSerializer(serializers.Serializer):
    """Filters of the alert list."""

    state = ChoiceField(choices=AlertState.choices, required=False)
    severity = ChoiceField(choices=Severity.choices, required=False)
    check = serializers.CharField(required=False, max_length=100, help_text="The check's exact name.")


class AcknowledgeSerializer(serializers.Serializer):
    """An acknowledgement."""

    note = serializers.CharField(required=False, default="", allow_blank=True, max_length=2000)
    expires = WindowField(required=False, allow_null=True, default=None,
                          help_text="When the acknowledgement lapses and reminders resume, e.g. 30m, 2h; "
                                    "default: when the alert resolves.")


class SilenceSerializer(serializers.Serializer):
    """A silence: alerts matching its matchers notify nobody from `starts_at` to `ends_at` (they still exist)."""

    id = serializers.IntegerField()
    matchers = JSONObjectField()
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    comment = serializers.CharField(allow_blank=True)
    created_by = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    active = serializers.BooleanField()


class AlertSilenceSerializer(serializers.Serializer):
    """How long to silence an alert's check."""

    duration = WindowField(help_text="e.g. 30m, 2h, 1d.")
    comment = serializers.CharField(required=False, default="", allow_blank=True, max_length=2000)


class MatchersSerializer(serializers.Serializer):
    """What a silence matches; every matcher given must hold."""

    check = serializers.ListField(child=serializers.CharField(max_length=200), required=False,
                                  help_text="Check names or globs (web-*).")
    tags = serializers.ListField(child=serializers.CharField(max_length=100), required=False,
                                 help_text="Tags the check must all have.")
    severity = serializers.ListField(child=ChoiceField(choices=Severity.choices), required=False)


class SilenceCreateSerializer(serializers.Serializer):
    """A silence to create: its matchers, and either `duration` (from now, or from `starts_at`) or `ends_at`."""

    matchers = MatchersSerializer()
    starts_at = OffsetDateTimeField(required=False, help_text="With its offset or Z; default: now.")
    duration = WindowField(required=False)
    ends_at = OffsetDateTimeField(required=False, help_text="With its offset or Z.")
    comment = serializers.CharField(required=False, default="", allow_blank=True, max_length=2000)
    team = team_field()

    def validate(self, data):
        if ("duration" in data) == ("ends_at" in data):
            raise serializers.ValidationError({"duration": ["give either duration or ends_at"]})
        data.setdefault("starts_at", timezone.now())
        if "duration" in data:
            try:
                data["ends_at"] = data["starts_at"] + data.pop("duration")
            except OverflowError:
                raise serializers.ValidationError({"duration": ["ends after the last date there is"]}) from None
        return data


class SilenceUpdateSerializer(serializers.Serializer):
    """What to change in a silence that has not ended; what is not given keeps its value. `duration` counts from
    now."""

    matchers = MatchersSerializer(required=False)
    duration = WindowField(required=False, help_text="Ends this long from now, e.g. 2h.")
    ends_at = OffsetDateTimeField(required=False, help_text="With its offset or Z.")
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000)

    def validate(self, data):
        if "duration" in data and "ends_at" in data:
            raise serializers.ValidationError({"duration": ["give either duration or ends_at"]})
        if not data:
            raise serializers.ValidationError({"non_field_errors": ["give matchers, duration, ends_at or comment"]})
        if "duration" in data:
            try:
                data["ends_at"] = timezone.now() + data.pop("duration")
            except OverflowError:
                raise serializers.ValidationError({"duration": ["ends after the last date there is"]}) from None
        return data


class SilenceFilterSerializer(serializers.Serializer):
    """Filters of the silence list."""

    active = serializers.BooleanField(required=False, allow_null=True, default=None,
                                      help_text="Only silences in force now (true) or not (false).")


def _silence_json(silence: Silence) -> dict:
    now = timezone.now()
    return {
        "id": silence.pk, "matchers": silence.matchers, "starts_at": iso(silence.starts_at),
        "ends_at": iso(silence.ends_at), "comment": silence.comment, "created_by": silence.created_by,
        "created_at": iso(silence.created_at), "active": silence.starts_at <= now < silence.ends_at,
    }


class AlertViewSet(ApiViewSet):
    """Alerts raised by failing checks: acknowledge, resolve by hand, silence their check."""

    queryset = Alert.objects.select_related("health_check")
    serializer_class = AlertSerializer
    request_serializers = {"ack": AcknowledgeSerializer, "silence": AlertSilenceSerializer}
    filter_serializer_class = AlertFilterSerializer
    filter_lookups = {"state": "state", "severity": "severity", "check": "health_check__name"}
    lookup_value_regex = "[0-9]+"
    noun = "alert"
    perms = {"list": "view_alert", "retrieve": "view_alert", "ack": "change_alert", "resolve": "change_alert",
             "silence": "add_silence"}

    @extend_schema(parameters=[AlertFilterSerializer])
    def list(self, request):
        """Alerts, newest first; filter by `state`, `severity` and `check`."""
        page = self.paginate_queryset(self.filtered(self.get_queryset().order_by("-started_at", "-pk")))
        silences = alerts.alerts_silences(page)
        rows = [selectors.alert_json(alert, silence=silences.get(alert.pk)) for alert in page]
        return self.get_paginated_response(self.serializer_class(rows, many=True).data)

    @extend_schema(responses=AlertDetailSerializer)
    def retrieve(self, request, pk: str):
        """One alert with its notification log."""
        return self._detail(self.get_object())

    @extend_schema(request=AcknowledgeSerializer, responses=AlertDetailSerializer)
    @action(detail=True, methods=["post"])
    def ack(self, request, pk: str):
        """Acknowledge a firing alert: reminders stop until it resolves or `expires` passes (409 unless firing)."""
        alert = self.get_object()
        given = self.given()
        expires = given["expires"]
        with service_errors():
            alert = alerts.alert_acknowledge(alert_id=alert.pk, user=_user(request), note=given["note"],
                                             expires_in_s=expires.total_seconds() if expires else None)
        return self._detail(alert)

    @extend_schema(request=None, responses=AlertDetailSerializer)
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk: str):
        """Resolve an open alert by hand; a resolved notice follows if it had fired (409 if already resolved)."""
        with service_errors():
            alert = alerts.alert_resolve(alert_id=self.get_object().pk, user=_user(request))
        return self._detail(alert)

    @extend_schema(request=AlertSilenceSerializer, responses={201: SilenceSerializer})
    @action(detail=True, methods=["post"])
    def silence(self, request, pk: str):
        """Silence the alert's check from now for `duration`: its alerts notify nobody meanwhile."""
        alert = self.get_object()
        given = self.given()
        with service_errors({SilenceError: "duration"}):
            silence = alerts.silence_create(
                matchers={"check": [alert.health_check.name]}, ends_at=timezone.now() + given["duration"],
                comment=given["comment"], created_by=_user(request), team=alert.health_check.team,
            )
        return self.show(_silence_json(silence), status=status.HTTP_201_CREATED, serializer_class=SilenceSerializer)

    def _detail(self, alert: Alert):
        alert = self.get_queryset().get(pk=alert.pk)
        silence = alerts.alerts_silences([alert]).get(alert.pk)
        return self.show({**selectors.alert_json(alert, silence=silence),
                          "notifications": selectors.notifications_json(alert)},
                         serializer_class=AlertDetailSerializer)


class SilenceViewSet(ApiViewSet):
    """Silences: alerts they match notify nobody while they are in force."""

    queryset = Silence.objects.all()
    serializer_class = SilenceSerializer
    request_serializers = {"create": SilenceCreateSerializer, "partial_update": SilenceUpdateSerializer}
    filter_serializer_class = SilenceFilterSerializer
    lookup_value_regex = "[0-9]+"
    noun = "silence"
    perms = {"list": "view_silence", "retrieve": "view_silence", "create": "add_silence", "end": "change_silence",
             "partial_update": "change_silence"}

    @extend_schema(parameters=[SilenceFilterSerializer])
    def list(self, request):
        """Silences, latest ending first; filter by `active`."""
        filters = self.filters()
        silences = self.get_queryset().order_by("-ends_at", "-pk")
        if "active" in filters:
            now = timezone.now()
            in_force = silences.filter(starts_at__lte=now, ends_at__gt=now)
            silences = in_force if filters["active"] else silences.exclude(pk__in=in_force.values("pk"))
        return self.page(silences, _silence_json)

    def retrieve(self, request, pk: str):
        """One silence."""
        return self.show(_silence_json(self.get_object()))

    @extend_schema(request=SilenceCreateSerializer, responses={201: SilenceSerializer})
    def create(self, request):
        """Create a silence."""
        given = self.given()
        team = self.team_given(given.get("team"))
        with service_errors({SilenceError: "matchers"}, prefixed=("matchers", "ends_at")):
            silence = alerts.silence_create(
                matchers={key: value for key, value in given["matchers"].items() if value},
                starts_at=given["starts_at"], ends_at=given["ends_at"], comment=given["comment"],
                created_by=_user(request), team=team,
            )
        return self.show(_silence_json(silence), status=status.HTTP_201_CREATED)

    @extend_schema(request=SilenceUpdateSerializer, responses=SilenceSerializer)
    def partial_update(self, request, pk: str):
        """Change a silence that has not ended (409 if it has): its matchers, its end (`duration` from now, or
        `ends_at`; to end it now, `POST .../end/`) or its comment."""
        given = self.given()
        with service_errors({SilenceError: "matchers"}, prefixed=("matchers", "ends_at")):
            silence = alerts.silence_update(
                silence_id=self.get_object().pk, ends_at=given.get("ends_at"), comment=given.get("comment"),
                matchers=None if "matchers" not in given else {
                    key: value for key, value in given["matchers"].items() if value},
                user=_user(request))
        return self.show(_silence_json(silence))

    @extend_schema(request=None, responses=SilenceSerializer)
    @action(detail=True, methods=["post"])
    def end(self, request, pk: str):
        """End the silence now, before its time (409 if it has already ended); what it matched notifies again."""
        with service_errors():
            silence = alerts.silence_end(silence_id=self.get_object().pk, user=_user(request))
        return self.show(_silence_json(silence))


# --- notification routes and response rules ----------------------------------------------------------------


class RouteSerializer(serializers.Serializer):
    """A notification route as written in a definitions file (``routes:``), with its id and team."""

    id = serializers.IntegerField(read_only=True)
    team = serializers.CharField(required=False, help_text="On create: one of your teams (default: your only one).")
    name = serializers.CharField(max_length=100)
    order = serializers.IntegerField(required=False, min_value=rules.INTEGER_MIN, max_value=rules.INTEGER_MAX,
                                     help_text="Routes are tried in this order (default 100).")
    match = JSONObjectField(required=False, allow_null=True, help_text="Matchers: check, tags, severity.")
    handler = serializers.CharField(help_text="log, email, webhook, alertmanager, ...")
    config = JSONObjectField(required=False, help_text="The handler's parameters (url, to, ...).")
    repeat_interval_s = serializers.FloatField(required=False, allow_null=True, min_value=1)
    escalate_after = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                              max_value=rules.INTEGER_MAX)
    escalate_to = serializers.CharField(required=False, allow_null=True, help_text="Another route's name.")
    enabled = serializers.BooleanField(required=False)
    watchdog = JSONObjectField(required=False, help_text="An always-firing heartbeat: {interval_s}.")


class ResponseRuleSerializer(serializers.Serializer):
    """A response rule as written in a definitions file (``responses:``), with its id and team."""

    id = serializers.IntegerField(read_only=True)
    team = serializers.CharField(required=False, help_text="On create: one of your teams (default: your only one).")
    name = serializers.CharField(max_length=100)
    match = JSONObjectField(required=False, allow_null=True, help_text="Matchers: check, tags, severity.")
    action = serializers.CharField(required=False, allow_null=True, help_text="A registered action; or workflow.")
    workflow = serializers.CharField(required=False, allow_null=True, help_text="A workflow to start; or action.")
    params = JSONObjectField(required=False)
    max_runs = serializers.IntegerField(required=False, min_value=1, max_value=rules.INTEGER_MAX)
    per_s = serializers.FloatField(required=False, min_value=1, max_value=rules.MAX_DURATION_S)
    enabled = serializers.BooleanField(required=False)


@definition_schema(RouteSerializer, RouteSerializer)
class RouteViewSet(DefinitionViewSet):
    """Notification routes: where alerts are told, the first enabled route (by order) whose matchers match."""

    queryset = NotificationRoute.objects.select_related("team__group", "escalate_to")
    serializer_class = RouteSerializer
    filter_serializer_class = FilterSerializer
    filter_lookups = {"name": "name__icontains"}
    noun = "route"
    section = "routes"
    parameters = "config"
    perms = {"list": "view_notificationroute", "retrieve": "view_notificationroute",
             "create": "add_notificationroute", "update": "change_notificationroute",
             "partial_update": "change_notificationroute", "disable": "change_notificationroute",
             "enable": "change_notificationroute"}

    def definition_of(self, route: NotificationRoute) -> dict:
        config, watchdog = rules.route_config_split(route.config)
        return {
            "name": route.name, "order": route.order, "match": route.matchers, "handler": route.handler,
            "config": config, "repeat_interval_s": route.repeat_interval_s,
            "escalate_after": route.escalate_after,
            "escalate_to": route.escalate_to.name if route.escalate_to else None, "enabled": route.enabled,
            **({"watchdog": watchdog} if watchdog else {}),
        }

    @extend_schema(parameters=[FilterSerializer])
    def list(self, request):
        """Routes in the order they are tried; filter by `name`."""
        return self.page(self.filtered(self.get_queryset().order_by("order", "name")), self.row_json)


@definition_schema(ResponseRuleSerializer, ResponseRuleSerializer)
class ResponseRuleViewSet(DefinitionViewSet):
    """Response rules: on an alert that fires hard and matches, run an action or start a workflow, rate-limited."""

    queryset = ResponseRule.objects.select_related("team__group")
    serializer_class = ResponseRuleSerializer
    filter_serializer_class = FilterSerializer
    filter_lookups = {"name": "name__icontains"}
    noun = "response rule"
    section = "responses"
    perms = {"list": "view_responserule", "retrieve": "view_responserule", "create": "add_responserule",
             "update": "change_responserule", "partial_update": "change_responserule",
             "disable": "change_responserule", "enable": "change_responserule"}

    def definition_of(self, rule: ResponseRule) -> dict:
        return {
            "name": rule.name, "match": rule.matchers, "action": rule.action or None,
            "workflow": rule.workflow or None, "params": rule.params, "max_runs": rule.max_runs,
            "per_s": rule.per_s, "enabled": rule.enabled,
        }

    @extend_schema(parameters=[FilterSerializer])
    def list(self, request):
        """Response rules by name; filter by `name`."""
        return self.page(self.filtered(self.get_queryset().order_by("name")), self.row_json)


# --- metrics ------------------------------------------------------------------------------------------------


class SummaryQuerySerializer(serializers.Serializer):
    """What to summarise."""

    window = WindowField(required=False, help_text="How far back: e.g. 15m, 1h, 7d (default 1h).")
    check = serializers.CharField(required=False, max_length=100, help_text="Only this check's metrics.")


class MetricSummarySerializer(serializers.Serializer):
    """One metric of one check over the window."""

    metric = serializers.CharField()
    unit = serializers.CharField(allow_blank=True, allow_null=True)
    check = serializers.CharField(allow_null=True)
    count = serializers.IntegerField(help_text="Samples (downsampled rows count as their samples).")
    min = FiniteFloatField(allow_null=True)
    max = FiniteFloatField(allow_null=True)
    avg = FiniteFloatField(allow_null=True)
    p50 = FiniteFloatField(allow_null=True)
    p95 = FiniteFloatField(allow_null=True)
    last = FiniteFloatField(allow_null=True)


class MetricsSummarySerializer(serializers.Serializer):
    """Every metric over a window of time ending now."""

    window_s = FiniteFloatField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    metrics = MetricSummarySerializer(many=True)


class MetricsViewSet(ApiViewSet):
    """Metric samples the checks recorded."""

    serializer_class = MetricsSummarySerializer
    perms = {"summary": "view_metric"}
    pagination_class = None

    @extend_schema(parameters=[SummaryQuerySerializer])
    @action(detail=False, methods=["get"])
    def summary(self, request):
        """count, min, max, avg, p50, p95 and the last value per metric and check over `window`."""
        query = SummaryQuerySerializer(data=dict(request.query_params.items()))
        query.is_valid(raise_exception=True)
        window, until = query.validated_data.get("window") or DEFAULT_SUMMARY_WINDOW, timezone.now()
        user = request.user
        team_ids = None if sees_all(user) else list(teams_of(user).values_list("pk", flat=True))
        rows = selectors.metrics_summary(window=window, now=until, check=query.validated_data.get("check"),
                                         team_ids=team_ids)
        return self.show({"window_s": window.total_seconds(), "since": iso(until - window), "until": iso(until),
                          "metrics": rows})


# --- alerts from Prometheus ---------------------------------------------------------------------------------


class PostableAlertSerializer(serializers.Serializer):
    """One alert as Prometheus posts it to an Alertmanager."""

    labels = serializers.DictField(child=serializers.CharField(), help_text="alertname names the check; instance "
                                   "is the target; the others become tags name=value.")
    annotations = serializers.DictField(child=serializers.CharField(), required=False,
                                        help_text="summary (the alert's summary), description.")
    startsAt = serializers.DateTimeField(required=False)
    endsAt = serializers.DateTimeField(required=False, help_text="In the past: the alert is resolved. None: it ends "
                                       "AGENTS_MONITOR_RESOLVE_TIMEOUT_S (300) after the post unless posted again.")
    generatorURL = serializers.CharField(required=False)


class AlertsReceivedSerializer(serializers.Serializer):
    """What a post of alerts did."""

    fired = serializers.IntegerField(help_text="New label sets: their alerts fired.")
    updated = serializers.IntegerField(help_text="Alerts already firing, kept.")
    resolved = serializers.IntegerField(help_text="Alerts resolved (endsAt in the past).")
    unchanged = serializers.IntegerField(help_text="Resolved label sets with no open alert.")
    ignored = serializers.IntegerField(help_text="Label sets of a disabled check with no open alert: none raised.")


def _problem_fields(problems: list[str]) -> dict[str, list[str]]:
    """``[0].labels.alertname: is required`` as ``{"[0].labels.alertname": ["is required"]}``."""
    fields: dict[str, list[str]] = {}
    for problem in problems:
        where, separator, reason = problem.partition(": ")
        if not separator or not where.startswith("["):
            where, reason = "non_field_errors", problem
        fields.setdefault(where, []).append(reason)
    return fields


def _refused_message(error: ExternalAlertsRefusedError) -> str:
    """``invalid input: [1].labels.alertname: is required (and 1 more); 2 alerts stored (1 fired, 1 updated)``."""
    more = len(error.errors) - 1
    stored = sum(error.counts[what] for what in ("fired", "updated", "resolved"))  # not the ignored or unchanged
    done = ", ".join(f"{count} {what}" for what, count in error.counts.items() if count)
    return (f"invalid input: {error.errors[0]}" + (f" (and {more} more)" if more else "")
            + f"; {stored} alert{'' if stored == 1 else 's'} stored" + (f" ({done})" if done else ""))


class AlertmanagerViewSet(ApiViewSet):
    """Alertmanager's ``/api/v2/alerts``: point Prometheus' ``alerting.alertmanagers`` here."""

    serializer_class = AlertsReceivedSerializer
    perms = {"create": "add_alert"}
    pagination_class = None

    @extend_schema(request=PostableAlertSerializer(many=True), responses={200: AlertsReceivedSerializer},
                   parameters=[OpenApiParameter("team", str, description="The team a check made on first sight goes "
                                                "to: one of yours (default: your only team).")])
    def create(self, request):
        """Fire, keep or resolve one alert per label set (a check of type `external` per `alertname`, made on first
        sight in `?team=`, default yours); routes and silences apply. As Alertmanager, the valid alerts of a batch
        are stored and the bad ones answered 400 naming `[index].field`."""
        team = self.team_given(request.query_params.get("team"))
        with service_errors():
            try:
                counts = alerts.external_alerts_receive(document=request.data, team=team, user=_user(request))
            except ExternalAlertsRefusedError as error:  # the valid ones are stored: the message says how many
                raise ServiceError(status_code=400, code="invalid", message=_refused_message(error),
                                   fields=_problem_fields(error.errors)) from None
        return self.show(counts)
