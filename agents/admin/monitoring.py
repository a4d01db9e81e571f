"""Admin for monitoring agents: checks with their state and a chart of recent values, alerts with their actions
and notification log, silences, notification routes, response rules, incident responses and metric samples."""
import json
import re
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from agents.admin.common import (
    StorableJSONField,
    SafeFilterMixin,
    DefinitionForm,
    ReadOnlyMixin,
    ServiceActionsMixin,
    TeamScopedMixin,
    json_block,
    status_badge,
    trace_link,
    value_text,
)
from agents.admin.workflows import format_duration
from agents.models import (
    OPEN_ALERT_STATES,
    Alert,
    Check,
    CheckType,
    IncidentResponse,
    Metric,
    Notification,
    NotificationRoute,
    ResponseRule,
    Silence,
)
from agents.monitoring import alerts, probes, rules, selectors, services
from agents.monitoring.notifiers import NOTIFIER_TYPES, notifier_validate

#: How far back the charts on a check's page reach.
CHART_WINDOW = timedelta(hours=6)
#: Size of one metric chart, in SVG pixels: whole width and height, the label column, padding around the line.
CHART_WIDTH, CHART_HEIGHT, CHART_LABEL_WIDTH, CHART_PAD, CHART_AXIS_HEIGHT = 560, 130, 90, 8, 16
#: The windows a check's page offers for its charts, by the ``window`` query parameter.
CHART_WINDOWS = {"1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(hours=24),
                 "7d": timedelta(days=7)}
#: How long the "Silence matching checks" action silences for.
SILENCE_FOR = timedelta(hours=1)

#: The workflow badge colour (``wf-<status>`` CSS class) each monitoring state is drawn in.
CHECK_STATUS_COLOURS = {"ok": "succeeded", "warning": "cancelled", "critical": "failed", "unknown": "pending"}
ALERT_STATE_COLOURS = {"pending": "pending", "firing": "failed", "acknowledged": "cancelled", "resolved": "succeeded"}
NOTIFICATION_STATUS_COLOURS = {"sending": "running", "sent": "succeeded", "failed": "failed", "silenced": "skipped",
                               "skipped": "skipped"}
RESPONSE_STATUS_COLOURS = {"running": "running", "succeeded": "succeeded", "failed": "failed",
                           "rate_limited": "skipped"}
#: The message level a "Run now" outcome is reported at.
OUTCOME_LEVELS = {"ok": messages.SUCCESS, "warning": messages.WARNING, "critical": messages.ERROR}

#: What a definition problem is about: ``check 'x'.interval_s: ...`` (a key) or ``route 'x': config.url ...`` (text).
_PROBLEM_KEY = re.compile(r"^(?:check|route)(?: '[^']*')?(?:\.(?P<key>\w+)|: (?P<text>.*))", re.S)


def _badge(colours: dict[str, str], value: str, label: str):
    return status_badge(colours.get(value, "pending"), label)


def _check_link(check: Check):
    return format_html('<a href="{}">{}</a>', reverse("admin:agents_check_change", args=[check.pk]), check.name)


def _pairs_text(pairs: dict) -> str:
    """``name=value`` per line, sorted by name; a dash when there is none."""
    if not pairs:
        return "—"
    return format_html_join(mark_safe("<br>"), "{}={}", sorted(pairs.items()))


def _matchers_text(matchers: dict) -> str:
    return json.dumps(matchers, sort_keys=True, ensure_ascii=False) if matchers else "every alert"




def metric_chart(name: str, samples: list[tuple[datetime, float]], *, unit: str = "", start: datetime,
                 end: datetime, interval_s: float, thresholds: dict[str, float | None] | None = None) -> dict:
    """Lay out one metric's samples (oldest first) over the window ``start``..``end`` as SVG: a time axis with
    ticks, a value axis from the lowest to the highest of the samples and thresholds, a dashed line per threshold,
    and the line broken where no sample came for more than two intervals. Plain values out; the template draws."""
    thresholds = {level: value for level, value in (thresholds or {}).items() if value is not None}
    values = [value for _, value in samples]
    low, high = min([*values, *thresholds.values()]), max([*values, *thresholds.values()])
    if high == low:
        low, high = low - 1, high + 1
    span_s = max((end - start).total_seconds(), 1.0)
    left, right = CHART_LABEL_WIDTH + CHART_PAD, CHART_WIDTH - CHART_PAD
    top, bottom = CHART_PAD, CHART_HEIGHT - CHART_PAD - CHART_AXIS_HEIGHT

    def x_of(at: datetime) -> float:
        return round(left + (at - start).total_seconds() / span_s * (right - left), 1)

    def y_of(value: float) -> float:
        return round(top + (1 - (value - low) / (high - low)) * (bottom - top), 1)

    segments, current, previous = [], [], None
    for recorded_at, value in samples:
        if previous is not None and (recorded_at - previous).total_seconds() > 2 * max(interval_s, 1.0):
            segments.append(current)
            current = []
        current.append(f"{x_of(recorded_at):g},{y_of(value):g}")
        previous = recorded_at
    segments.append(current)
    ticks = [start + (end - start) * fraction for fraction in (0, 0.25, 0.5, 0.75, 1)]
    time_format = "%H:%M" if span_s <= 86400 else "%m-%d %H:%M"
    return {
        "name": name,
        "lines": [" ".join(points) for points in segments if len(points) > 1],
        "dots": [dict(zip(("x", "y"), points[0].split(","))) for points in segments if len(points) == 1],
        "gaps": len(segments) - 1,
        "last_x": f"{x_of(samples[-1][0]):g}",
        "last_y": f"{y_of(values[-1]):g}",
        "count": len(samples),
        "min": value_text(min(values), unit),
        "max": value_text(max(values), unit),
        "last": value_text(values[-1], unit),
        "start": start,
        "end": end,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "label_x": CHART_LABEL_WIDTH,
        "left": left,
        "right": right,
        "top": top,
        "bottom": bottom,
        "y_ticks": [{"y": y_of(value), "text_y": y_of(value) + 4, "label": value_text(value, unit)}
                    for value in (high, (high + low) / 2, low)],
        "x_ticks": [{"x": x_of(at), "label": at.astimezone(dt_timezone.utc).strftime(time_format)} for at in ticks],
        "axis_label_y": bottom + CHART_AXIS_HEIGHT,
        "tick_bottom": bottom + 4,
        "thresholds": [{"level": level, "y": y_of(value), "label": f"{level} {value_text(value, unit)}"}
                       for level, value in sorted(thresholds.items())],
    }


def check_charts(check: Check, *, window: timedelta = CHART_WINDOW) -> list[dict]:
    """One chart per metric of ``check`` over ``window``, by metric name; the check's value metric shows its
    warning and critical thresholds."""
    end = timezone.now()
    series = selectors.metric_series(check=check, window=window)
    units = dict(
        Metric.objects.filter(health_check=check, recorded_at__gte=end - window)
        .order_by().values_list("name", "unit").distinct()
    ) if series else {}
    thresholds = {"warning": check.warning, "critical": check.critical}
    # The thresholded value is the metric whose latest sample is the check's latest value.
    main = next((name for name, samples in sorted(series.items()) if samples[-1][1] == check.last_value), None)
    return [metric_chart(name, samples, unit=units.get(name, ""), start=end - window, end=end,
                         interval_s=check.interval_s, thresholds=thresholds if name == main else None)
            for name, samples in sorted(series.items())]


def _problem_field(problem: str, fields: dict[str, str], parameters: str) -> str | None:
    """The form field a check or route problem is about (``fields`` maps definition keys to form fields): the key it
    names, the key it starts with, or ``parameters`` for a problem with a probe or handler parameter."""
    match = _PROBLEM_KEY.match(problem)
    if match is None:
        return None
    if match["key"]:
        return fields.get(match["key"])
    first = re.match(r"\w+", match["text"])
    field = fields.get(first.group(0)) if first else None
    return field or (parameters if "parameter" in match["text"] else None)


# --- checks -------------------------------------------------------------------------

#: The keys of a check definition, each with the form field (model field) holding it.
CHECK_DEFINITION_FIELDS = {
    "name": "name", "type": "check_type", "params": "params", "interval_s": "interval_s",
    "timeout_s": "timeout_s", "warning": "warning", "critical": "critical", "direction": "direction",
    "max_attempts": "max_attempts", "severity": "severity", "keep_firing_for_s": "keep_firing_for_s",
    "tags": "tags", "enabled": "enabled", "description": "description",
}


class CheckForm(DefinitionForm):
    """A check, validated like a definitions file (the probe checks its params) and saved through the service."""

    definition_fields = CHECK_DEFINITION_FIELDS
    definition_empty = {"params": dict, "tags": list}

    params = StorableJSONField(
        required=False, initial=dict,
        help_text='JSON. e.g. {"url": "http://localhost:8000/health"} (http), {"host": "db", "port": 5432} (tcp), '
                  '{"path": "/"} (disk), {"queue": "default"} (celery_queue), {} (cpu, memory).',
    )
    tags = StorableJSONField(required=False, initial=list, help_text='JSON list, e.g. ["web", "prod"].')

    class Meta:
        model = Check
        fields = ["team", *CHECK_DEFINITION_FIELDS.values()]

    def definition_problems(self, definition: dict) -> list[str]:
        if self.instance.pk is not None and self.instance.check_type == CheckType.EXTERNAL:
            # Made from alerts posted from outside: no definition describes it (check_save refuses one).
            return [rules.external_check_retype_problem(self.instance.name)]
        return rules.check_definition_validate(definition, "check", probe_validate=probes.probe_validate)

    def problem_field(self, problem: str) -> str | None:
        return _problem_field(problem, self.definition_fields, "params")


@admin.register(Check)
class CheckAdmin(TeamScopedMixin, ServiceActionsMixin, SafeFilterMixin, admin.ModelAdmin):
    """Checks with their latest state; edited through the definition rules, run at once with "Run now"."""

    form = CheckForm
    list_display = ("name", "check_type", "status_label", "last_value_label", "last_run_at", "interval",
                    "enabled", "open_alert")
    list_filter = ("check_type", "last_status", "enabled")
    search_fields = ("name",)
    actions = ("run_now",)
    state_fields = ("status_label", "last_value_label", "last_message", "last_run_at", "last_duration_ms",
                    "next_run_at", "consecutive_failures", "last_failed_at", "open_alert", "source", "created_at",
                    "updated_at")

    def get_queryset(self, request):
        # The newest open alert and how many are open, as subqueries: one query for the whole page.
        open_alerts = Alert.objects.filter(health_check=OuterRef("pk"), state__in=OPEN_ALERT_STATES)
        newest = open_alerts.order_by("-pk")
        return super().get_queryset(request).annotate(
            open_alert_id=Subquery(newest.values("pk")[:1]),
            open_alert_state=Subquery(newest.values("state")[:1]),
            open_alert_total=Subquery(
                open_alerts.order_by().values("health_check").annotate(total=Count("pk")).values("total"),
                output_field=IntegerField(),
            ),
        )

    def get_fieldsets(self, request, obj=None):
        definition = (None, {"fields": ["team", *CHECK_DEFINITION_FIELDS.values()]})
        if obj is None:
            return [definition]
        return [definition, ("State", {"fields": self.state_fields})]

    def get_readonly_fields(self, request, obj=None):
        # A check is known by its name (definition files, silences, routes match on it): renaming is not an edit.
        return ("name", *self.state_fields) if obj is not None else ()

    def save_model(self, request, obj, form, change):
        check, _ = services.check_save(name=form.definition["name"], fields=services.check_fields(form.definition),
                                       team=obj.team)
        obj.pk, obj.next_run_at = check.pk, check.next_run_at
        obj._state.adding = False

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            chosen = request.GET.get("window", "6h")
            window = CHART_WINDOWS.get(chosen, CHART_WINDOW)
            context.update(charts=check_charts(obj, window=window),
                           chart_window=format_duration(window.total_seconds()),
                           chart_windows=[{"key": key, "chosen": CHART_WINDOWS[key] == window}
                                          for key in CHART_WINDOWS])
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @admin.display(description="status", ordering="last_status")
    def status_label(self, obj):
        return _badge(CHECK_STATUS_COLOURS, obj.last_status, obj.get_last_status_display())

    @admin.display(description="last value", ordering="last_value")
    def last_value_label(self, obj):
        return value_text(obj.last_value, obj.last_unit) or self.get_empty_value_display()

    @admin.display(description="interval", ordering="interval_s")
    def interval(self, obj):
        return format_duration(obj.interval_s, precise=False)

    @admin.display(description="open alert")
    def open_alert(self, obj):
        alert_id = getattr(obj, "open_alert_id", None)
        if alert_id is None:
            return self.get_empty_value_display()
        badge = _badge(ALERT_STATE_COLOURS, obj.open_alert_state, obj.open_alert_state)
        if obj.open_alert_total > 1:
            url = reverse("admin:agents_alert_changelist") + (
                f"?health_check__id__exact={obj.pk}&state__in={','.join(OPEN_ALERT_STATES)}"
            )
            return format_html('<a href="{}">{} open</a> {}', url, obj.open_alert_total, badge)
        return format_html('<a href="{}">#{}</a> {}', reverse("admin:agents_alert_change", args=[alert_id]),
                           alert_id, badge)

    @admin.action(description="Run now", permissions=("change",))
    def run_now(self, request, queryset):
        """Run each selected check at once, as a scheduled run would, and report what each found."""
        outcomes = self.apply_each(request, queryset, lambda check: services.check_run_now(name=check.name),
                                   "Ran %(count)d check.", "Ran %(count)d checks.")
        for outcome in outcomes:
            value = value_text(outcome.value, outcome.unit)
            found = f"{outcome.check}: {outcome.status}" + (f", {value}" if value else "") + f" — {outcome.message}"
            if outcome.alert_id is not None:
                found += f" (alert #{outcome.alert_id} {outcome.alert_state})"
            self.message_user(request, found, OUTCOME_LEVELS.get(outcome.status, messages.INFO))


@admin.register(Metric)
class MetricAdmin(TeamScopedMixin, ReadOnlyMixin, SafeFilterMixin, admin.ModelAdmin):
    """Metric samples, newest first; written by check runs and downsampled by retention."""

    list_display = ("name", "check_link", "value", "unit", "recorded_at", "sample_count")
    list_select_related = ("health_check",)
    search_fields = ("name", "health_check__name")
    date_hierarchy = "recorded_at"
    show_full_result_count = False  # a count of every sample on each page load is the slowest query here

    @admin.display(description="check", ordering="health_check__name")
    def check_link(self, obj):
        return self.get_empty_value_display() if obj.health_check_id is None else _check_link(obj.health_check)


# --- alerts -------------------------------------------------------------------------


class NotificationInline(ReadOnlyMixin, admin.TabularInline):
    """An alert's notification log: one row per event sent (or silenced), with every delivery attempt."""

    model = Notification
    fields = ("event", "sequence", "route", "handler", "status_label", "attempts_list", "error", "created_at",
              "finished_at")
    readonly_fields = fields
    extra = 0
    verbose_name_plural = "notification log"

    @admin.display(description="status")
    def status_label(self, obj):
        return _badge(NOTIFICATION_STATUS_COLOURS, obj.status, obj.get_status_display())

    @admin.display(description="attempts")
    def attempts_list(self, obj):
        if not obj.attempts:
            return "—"
        return format_html_join(
            mark_safe("<br>"), "{} {}: {}",
            ((attempt.get("at", ""), "ok" if attempt.get("ok") else "failed", attempt.get("detail", ""))
             for attempt in obj.attempts if isinstance(attempt, dict)),
        )


class _ResponseColumnsMixin:
    """Columns shown wherever incident responses are listed."""

    @admin.display(description="status", ordering="status")
    def status_label(self, obj):
        return _badge(RESPONSE_STATUS_COLOURS, obj.status, obj.get_status_display())

    @admin.display(description="result")
    def result_text(self, obj):
        return "—" if obj.result is None else json_block(obj.result)

    @admin.display(description="workflow run")
    def workflow_run_link(self, obj):
        if obj.workflow_run_id is None:
            return "—"
        url = reverse("admin:agents_workflowrun_change", args=[obj.workflow_run_id])
        return format_html('<a href="{}">run {}</a>', url, obj.workflow_run_id)


class IncidentResponseInline(ReadOnlyMixin, _ResponseColumnsMixin, admin.TabularInline):
    """The response rules applied to an alert, with their outcome."""

    model = IncidentResponse
    fields = ("rule", "status_label", "result_text", "error", "workflow_run_link", "created_at", "finished_at")
    readonly_fields = fields
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("rule")


@admin.register(Alert)
class AlertAdmin(TeamScopedMixin, ReadOnlyMixin, ServiceActionsMixin, SafeFilterMixin, admin.ModelAdmin):
    """Alerts, written only by check runs and the lifecycle services; acknowledged, resolved or silenced here."""

    list_display = ("id", "check_link", "state_label", "severity", "count", "summary", "silenced", "started_at",
                    "last_seen_at", "resolved_at", "acknowledged_by", "trace")
    list_display_links = ("id",)
    list_filter = ("state", "severity")

    @admin.display(description="trace")
    def trace(self, obj):
        return trace_link(obj.trace_id)

    list_select_related = ("health_check",)
    search_fields = ("health_check__name", "summary", "target")
    date_hierarchy = "started_at"
    fields = ("check_link", "state_label", "silenced", "severity", "summary", "target", "labels_text",
              "annotations_text", "fingerprint", "count", "last_value",
              "started_at", "fired_at", "last_seen_at", "resolved_at", "resolved_by", "acknowledged_at",
              "acknowledged_by", "ack_note", "ack_expires_at", "route", "escalation_level", "reminders_sent")
    readonly_fields = fields
    inlines = (NotificationInline, IncidentResponseInline)
    actions = ("acknowledge", "resolve", "silence_checks")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("health_check")

    def get_changelist_instance(self, request):
        """The page's alerts, each told which active silence covers it (one query for the page)."""
        changelist = super().get_changelist_instance(request)
        silences = alerts.alerts_silences(changelist.result_list)
        for alert in changelist.result_list:
            alert.covering_silence = silences.get(alert.pk)
        return changelist

    @admin.display(description="silenced")
    def silenced(self, obj):
        if not hasattr(obj, "covering_silence"):
            obj.covering_silence = alerts.alerts_silences([obj]).get(obj.pk)
        if obj.covering_silence is None:
            return self.get_empty_value_display()
        url = reverse("admin:agents_silence_change", args=[obj.covering_silence.pk])
        return format_html('<a href="{}" class="mon-silenced">{}</a>', url,
                           selectors.silence_text(obj.covering_silence))

    @admin.display(description="labels")
    def labels_text(self, obj):
        return _pairs_text(obj.labels)

    @admin.display(description="annotations")
    def annotations_text(self, obj):
        return _pairs_text(obj.annotations)

    def has_operate_permission(self, request) -> bool:
        """Acknowledging and resolving change an alert: the user needs the permission to change alerts."""
        return request.user.has_perm("agents.change_alert")

    def has_silence_permission(self, request) -> bool:
        """Silencing creates a silence: the user needs the permission to add silences."""
        return request.user.has_perm("agents.add_silence")

    @admin.display(description="check", ordering="health_check__name")
    def check_link(self, obj):
        return _check_link(obj.health_check)

    @admin.display(description="state", ordering="state")
    def state_label(self, obj):
        return _badge(ALERT_STATE_COLOURS, obj.state, obj.get_state_display())

    @admin.action(description="Acknowledge selected alerts", permissions=("operate",))
    def acknowledge(self, request, queryset):
        """Acknowledge each firing alert (reminders stop); any other state is refused with its reason."""
        user = request.user.get_username()
        self.apply_each(request, queryset, lambda alert: alerts.alert_acknowledge(alert_id=alert.pk, user=user),
                        "%(count)d alert acknowledged.", "%(count)d alerts acknowledged.")

    @admin.action(description="Resolve selected alerts", permissions=("operate",))
    def resolve(self, request, queryset):
        """Resolve each open alert by hand; a resolved one is refused."""
        user = request.user.get_username()
        self.apply_each(request, queryset, lambda alert: alerts.alert_resolve(alert_id=alert.pk, user=user),
                        "%(count)d alert resolved.", "%(count)d alerts resolved.")

    @admin.action(description="Silence matching checks for 1 hour", permissions=("silence",))
    def silence_checks(self, request, queryset):
        """One silence per distinct check of the selected alerts, from now for an hour."""
        user = request.user.get_username()
        ends_at = timezone.now() + SILENCE_FOR
        # Each silence is of its check's team: one of another team would never apply to the check.
        checks = Check.objects.filter(pk__in=queryset.values("health_check")).select_related("team").order_by("name")
        self.apply_each(
            request, checks,
            lambda check: alerts.silence_create(matchers={"check": [check.name]}, ends_at=ends_at, created_by=user,
                                                comment="Silenced from the alert list for 1 hour.", team=check.team),
            "Silenced %(count)d check for 1 hour.", "Silenced %(count)d checks for 1 hour.",
        )


@admin.register(IncidentResponse)
class IncidentResponseAdmin(TeamScopedMixin, ReadOnlyMixin, _ResponseColumnsMixin, SafeFilterMixin, admin.ModelAdmin):
    """Every response rule applied to an alert, with its outcome; written by the response task."""

    list_display = ("id", "rule", "alert_link", "status_label", "workflow_run_link", "error", "created_at",
                    "finished_at", "trace")
    list_filter = ("status", "rule")

    @admin.display(description="trace")
    def trace(self, obj):
        return trace_link(obj.trace_id)

    list_select_related = ("rule", "alert__health_check")
    search_fields = ("rule__name", "alert__health_check__name", "error")
    change_list_template = "admin/agents/alert/change_list.html"
    change_form_template = "admin/agents/alert/change_form.html"
    fields = ("rule", "alert_link", "status_label", "result_text", "error", "workflow_run_link", "created_at",
              "finished_at")
    readonly_fields = fields

    @admin.display(description="alert", ordering="alert")
    def alert_link(self, obj):
        url = reverse("admin:agents_alert_change", args=[obj.alert_id])
        return format_html('<a href="{}">#{} {}</a>', url, obj.alert_id, obj.alert.health_check.name)



# --- silences, routes, response rules ------------------------------------------------


class SilenceForm(forms.ModelForm):
    """A silence: what it matches (at least one matcher) and a window that ends after it starts."""

    matchers = StorableJSONField(required=False, help_text=Silence._meta.get_field("matchers").help_text)

    class Meta:
        model = Silence
        fields = ("team", "matchers", "starts_at", "ends_at", "comment")

    def service_check(self, cleaned: dict) -> None:
        """The service's checks (``alerts.silence_problems``), each shown on its field: of a new silence, or of the
        fields changed (a silence's start never changes; one that has ended cannot be changed at all). Called once
        the team is known (``SilenceAdmin.get_form``)."""
        now, instance = timezone.now(), self.instance
        if instance.pk is not None and (ended := alerts.silence_ended(instance, now, hint=alerts.SILENCE_ENDED_HINT)):
            raise forms.ValidationError(ended)  # as silence_update refuses it
        # What is not valid as typed (not in ``cleaned``) has its error already and is not checked further.
        given = {field: cleaned[field] for field in ("matchers", "ends_at")
                 if field in cleaned and (instance.pk is None or field in self.changed_data)}
        if given.get("matchers", {}) in (None, ""):
            given["matchers"] = {}  # an empty box: no matcher (an empty list is still no mapping)
        if instance.pk is None:
            if "starts_at" not in cleaned:
                given.pop("ends_at", None)
            given.update(starts_at=cleaned.get("starts_at"), team=cleaned.get("team"))
        for problem in alerts.silence_problems(**given, silence=instance if instance.pk else None, now=now):
            field = problem.split(":", 1)[0].split(".", 1)[0]
            self.add_error(field if field in self.fields else None, problem)


@admin.register(Silence)
class SilenceAdmin(TeamScopedMixin, SafeFilterMixin, admin.ModelAdmin):
    """Silences: alerts they match notify nobody between starts_at and ends_at (the alerts still exist)."""

    form = SilenceForm
    list_display = ("id", "matchers_text", "starts_at", "ends_at", "active", "comment", "created_by")
    search_fields = ("comment", "created_by")
    readonly_fields = ("created_by", "created_at")
    change_list_template = "admin/agents/alert/change_list.html"

    def get_changeform_initial_data(self, request):
        now = timezone.now()
        return {"starts_at": now, "ends_at": now + SILENCE_FOR, **super().get_changeform_initial_data(request)}

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)

        class Checked(form):
            def clean(self):
                cleaned = super().clean()  # the team chosen (or the user's only one) by now
                self.service_check(cleaned)
                return cleaned

        return Checked

    def get_readonly_fields(self, request, obj=None):
        fields = tuple(super().get_readonly_fields(request, obj))
        return (*fields, "starts_at") if obj is not None and "starts_at" not in fields else fields  # as the service

    def save_model(self, request, obj, form, change):
        if change:  # through the service, as the API changes it: checked, audited, alerts it stops covering notified
            changed = {field: getattr(obj, field) for field in ("matchers", "ends_at", "comment")
                       if field in form.changed_data}
            if changed:
                alerts.silence_update(silence_id=obj.pk, user=request.user.get_username(), **changed)
            return
        silence = alerts.silence_create(
            matchers=obj.matchers, starts_at=obj.starts_at, ends_at=obj.ends_at, comment=obj.comment,
            created_by=request.user.get_username(), team=obj.team,
        )
        obj.pk, obj.created_by, obj.created_at = silence.pk, silence.created_by, silence.created_at
        obj._state.adding = False

    @admin.display(description="matchers")
    def matchers_text(self, obj):
        return _matchers_text(obj.matchers)

    @admin.display(description="active")
    def active(self, obj):
        now = timezone.now()
        if obj.ends_at <= now:
            return status_badge("skipped", "ended")
        if obj.starts_at > now:
            return status_badge("pending", "scheduled")
        return status_badge("running", "active")


#: The keys of a route definition, each with the form field (model field) holding it.
ROUTE_DEFINITION_FIELDS = {
    "name": "name", "order": "order", "match": "matchers", "handler": "handler", "config": "config",
    "repeat_interval_s": "repeat_interval_s", "escalate_after": "escalate_after", "escalate_to": "escalate_to",
    "enabled": "enabled",
}


class NotificationRouteForm(DefinitionForm):
    """A route, validated like a definitions file: its matchers, its handler's config and its escalation."""

    definition_fields = ROUTE_DEFINITION_FIELDS
    definition_empty = {"config": dict}

    handler = forms.ChoiceField(choices=[(name, name) for name in NOTIFIER_TYPES])
    matchers = StorableJSONField(required=False, initial=dict, help_text='JSON, e.g. {"severity": ["critical"]}; '
                                                                       "empty matches every alert.")
    config = StorableJSONField(required=False, initial=dict,
                             help_text='JSON, e.g. {"url": "http://hooks.local/alerts"} (webhook), '
                                       '{"to": ["ops@example.com"]} (email), {} (log).')

    class Meta:
        model = NotificationRoute
        fields = ["team", *ROUTE_DEFINITION_FIELDS.values()]

    @staticmethod
    def _json_object(value, field: str) -> dict:
        """An empty box (or ``null``) as the empty object the model stores; any other value that is no JSON object
        (a number, a list) is refused on the field: the route's rules and handlers read a mapping."""
        if value is None or value == "":
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError(f"{field}: must be a JSON object ({{...}}) or empty, got {json.dumps(value)}")
        return value

    def clean_matchers(self):
        return self._json_object(self.cleaned_data["matchers"], "matchers")

    def clean_config(self):
        return self._json_object(self.cleaned_data["config"], "config")

    def definition_from(self, cleaned: dict) -> dict:
        definition = super().definition_from(cleaned)
        # A definitions file names the route to escalate to.
        definition["escalate_to"] = definition["escalate_to"].name if definition["escalate_to"] else None
        return definition

    def definition_problems(self, definition: dict) -> list[str]:
        """The route's problems; its heartbeat option (``watchdog`` in its config) is the route's, not the
        handler's, and is checked as a definitions file checks it."""
        route_names = set(NotificationRoute.objects.values_list("name", flat=True)) | {definition["name"]}
        config, heartbeat = rules.route_config_split(definition["config"] or {})
        problems = rules.route_definition_validate({**definition, "config": config, "watchdog": heartbeat}, "route",
                                                   route_names=route_names, notifier_validate=notifier_validate)
        # The form keeps the option in the config field: its problems are named there.
        return [re.sub(r"^(route(?: '[^']*')?)\.watchdog", r"\1.config.watchdog", problem) for problem in problems]

    def problem_field(self, problem: str) -> str | None:
        return _problem_field(problem, self.definition_fields, "config")


@admin.register(NotificationRoute)
class NotificationRouteAdmin(TeamScopedMixin, SafeFilterMixin, admin.ModelAdmin):
    """Where alerts are told: the first enabled route (by order) whose matchers match."""

    form = NotificationRouteForm
    list_display = ("name", "order", "handler", "matchers_text", "repeat_interval_s", "escalation", "enabled")
    list_filter = ("handler", "enabled")
    list_select_related = ("escalate_to",)
    search_fields = ("name",)
    ordering = ("order", "name")

    @admin.display(description="matchers")
    def matchers_text(self, obj):
        return _matchers_text(obj.matchers)

    @admin.display(description="escalation")
    def escalation(self, obj):
        if obj.escalate_to_id is None:
            return self.get_empty_value_display()
        return f"to {obj.escalate_to.name} after {obj.escalate_after} reminders"


@admin.register(ResponseRule)
class ResponseRuleAdmin(TeamScopedMixin, ReadOnlyMixin, SafeFilterMixin, admin.ModelAdmin):
    """Incident response rules, loaded from definitions files (`manage.py monitor load`)."""

    list_display = ("name", "response", "matchers_text", "limit", "enabled", "response_count")
    list_filter = ("enabled",)
    search_fields = ("name", "action", "workflow")
    fields = ("name", "matchers_text", "action", "workflow", "params_text", "max_runs", "per_s", "enabled",
              "created_at")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(response_total=Count("responses"))

    @admin.display(description="response")
    def response(self, obj):
        return f"workflow {obj.workflow}" if obj.workflow else f"action {obj.action}"

    @admin.display(description="matchers")
    def matchers_text(self, obj):
        return _matchers_text(obj.matchers)

    @admin.display(description="params")
    def params_text(self, obj):
        return json_block(obj.params)

    @admin.display(description="rate limit")
    def limit(self, obj):
        return f"{obj.max_runs} per {format_duration(obj.per_s, precise=False)}"

    @admin.display(description="responses", ordering="response_total")
    def response_count(self, obj):
        url = reverse("admin:agents_incidentresponse_changelist") + f"?rule__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.response_total)
