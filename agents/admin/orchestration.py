"""Admin for orchestration: agent tasks (cancel), messages with their broadcast receipts, events with the trigger
firings they caused, triggers and declared event types validated like a definitions file, and a page listing
everything under one trace id."""
import json
import re
from collections import Counter

from django import forms
from django.contrib import admin
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from agents.admin.common import (
    StorableJSONField,
    SafeFilterMixin,
    DefinitionForm,
    ReadOnlyMixin,
    ServiceActionsMixin,
    TeamScopedMixin,
    count_of,
    json_block,
    status_badge,
    trace_link,
)
from agents.admin.monitoring import ALERT_STATE_COLOURS, RESPONSE_STATUS_COLOURS
from agents.admin.workflows import flower_task_url, format_duration
from agents.core.teams import team_for_new, team_scoped
from agents.core.tracing import trace_id_valid
from agents.exceptions import TeamError
from agents.models import AgentMessage, AgentTask, Event, EventTypeDeclaration, MessageReceipt, Trigger, TriggerFiring
from agents.orchestration import agent_tasks, event_types, events, selectors

#: The workflow badge colour (``wf-<status>`` CSS class) each orchestration status is drawn in.
TASK_STATUS_COLOURS = {"pending": "pending", "queued": "pending", "running": "running", "completed": "succeeded",
                       "failed": "failed", "timed_out": "failed", "cancelled": "cancelled"}
MESSAGE_STATUS_COLOURS = {"pending": "pending", "sent": "pending", "delivered": "running", "handled": "succeeded",
                          "failed": "failed", "rejected": "cancelled"}
FIRING_STATUS_COLOURS = {"succeeded": "succeeded", "failed": "failed", "filtered": "skipped"}
#: Colours on the trace page, by model; a status missing here is drawn in the class of its own name.
TRACE_STATUS_COLOURS = {
    "agenttask": TASK_STATUS_COLOURS,
    "agentmessage": MESSAGE_STATUS_COLOURS,
    "event": {"published": "succeeded", "pending": "pending"},
    "triggerfiring": FIRING_STATUS_COLOURS,
    "decision": {"decided": "succeeded", "review": "cancelled", "error": "failed"},
    "alert": ALERT_STATE_COLOURS,
    "incidentresponse": RESPONSE_STATUS_COLOURS,
}

#: The keys of a trigger definition, each with the form field (model field) holding it.
TRIGGER_DEFINITION_FIELDS = {
    "name": "name", "event": "event_type", "filter": "filter", "action": "action", "target": "target",
    "params": "params", "priority": "priority", "enabled": "enabled",
}
#: What a trigger problem is about: ``trigger 'x'.target: ...`` (a key) or ``trigger 'x': config: ...`` (text).
_PROBLEM_KEY = re.compile(r"^trigger(?: '[^']*')?(?:\.(?P<key>\w+)|: (?P<text>\w+))")
#: What a declared event type problem is about: ``event type 'x'.schema.type: ...`` names the key (the form field).
_EVENT_TYPE_PROBLEM_KEY = re.compile(r"^event type(?: '[^']*')?\.(?P<key>name|schema|description)\b")
#: The form field a problem with an agent task's shape belongs to (the trigger's target is the agent type).
_TASK_PROBLEM_FIELDS = {"agent_type": "target", "config": "params"}


def _badge(colours: dict[str, str], value: str, label: str):
    return status_badge(colours.get(value, value), label)




def _error_block(text: str):
    return format_html('<pre class="wf-error">{}</pre>', text) if text else "—"


class _TraceColumnMixin:
    """The trace id column every orchestration list shows."""

    change_list_template = "admin/agents/orchestration/change_list.html"
    change_form_template = "admin/agents/orchestration/change_form.html"

    @admin.display(description="trace", ordering="trace_id")
    def trace(self, obj):
        return trace_link(obj.trace_id)

    @admin.display(description="trace id")
    def trace_full(self, obj):
        return trace_link(obj.trace_id, short=False)


# --- agent tasks ---------------------------------------------------------------------


@admin.register(AgentTask)
class AgentTaskAdmin(TeamScopedMixin, ReadOnlyMixin, ServiceActionsMixin, _TraceColumnMixin, SafeFilterMixin,
                     admin.ModelAdmin):
    """Tasks submitted to agents by type and priority, written by the task service; cancelled here."""

    list_display = ("id", "agent_type", "status_label", "priority", "agent_name", "attempt", "created_at",
                    "started_at", "finished_at", "trace")
    list_display_links = ("id",)
    list_filter = ("status", "agent_type")
    search_fields = ("trace_id", "agent_name")
    date_hierarchy = "created_at"
    show_full_result_count = False  # tasks grow without bound: skip the extra unfiltered COUNT(*)
    fields = ("agent_type", "status_label", "priority", "timeout_s", "attempt", "requeues", "process_deaths",
              "agent_link", "config_block", "result_block", "error_text", "celery_link", "submitted_by", "trace_full",
              "created_at", "queued_at", "started_at", "finished_at", "duration")
    readonly_fields = fields
    actions = ("cancel_tasks",)

    def has_operate_permission(self, request) -> bool:
        """Cancelling changes a task: the user needs the permission to change agent tasks."""
        return request.user.has_perm("agents.change_agenttask")

    @admin.action(description="Cancel selected tasks", permissions=("operate",))
    def cancel_tasks(self, request, queryset):
        """Cancel each selected task (a running one is stopped on its worker); a finished one is refused."""
        self.apply_each(request, queryset, lambda task: agent_tasks.task_cancel(task_id=task.pk),
                        "%(count)d task cancelled.", "%(count)d tasks cancelled.")

    @admin.display(description="status", ordering="status")
    def status_label(self, obj):
        return _badge(TASK_STATUS_COLOURS, obj.status, obj.get_status_display())

    @admin.display(description="agent")
    def agent_link(self, obj):
        if obj.agent_id is None:
            return obj.agent_name or "—"
        return format_html('<a href="{}">{}</a>', reverse("admin:agents_agent_change", args=[obj.agent_id]),
                           obj.agent_name or obj.agent_id)

    @admin.display(description="config")
    def config_block(self, obj):
        return json_block(obj.config)

    @admin.display(description="result")
    def result_block(self, obj):
        return "—" if obj.result is None else json_block(obj.result)

    @admin.display(description="error")
    def error_text(self, obj):
        return _error_block(obj.error)

    @admin.display(description="Celery task (Flower)")
    def celery_link(self, obj):
        if not obj.celery_task_id:
            return "—"
        return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', flower_task_url(obj.celery_task_id),
                           obj.celery_task_id)

    @admin.display(description="duration")
    def duration(self, obj):
        if obj.started_at and obj.finished_at:
            return format_duration((obj.finished_at - obj.started_at).total_seconds())
        return "—"


# --- messages ------------------------------------------------------------------------


class MessageReceiptInline(ReadOnlyMixin, admin.TabularInline):
    """A broadcast message's handling by each agent that received it."""

    model = MessageReceipt
    fields = ("agent", "status_label", "response_text", "error", "process_deaths", "created_at", "handled_at")
    readonly_fields = fields
    extra = 0
    verbose_name_plural = "broadcast receipts"

    @admin.display(description="status")
    def status_label(self, obj):
        return _badge(MESSAGE_STATUS_COLOURS, obj.status, obj.get_status_display())

    @admin.display(description="response")
    def response_text(self, obj):
        return "—" if obj.response is None else json_block(obj.response)


@admin.register(AgentMessage)
class AgentMessageAdmin(TeamScopedMixin, ReadOnlyMixin, _TraceColumnMixin, SafeFilterMixin, admin.ModelAdmin):
    """Messages between agents, stored before they are sent; a broadcast shows each agent's receipt."""

    list_display = ("id", "message_type", "sender", "recipient", "status_label", "correlation", "attempts",
                    "created_at", "trace")
    list_display_links = ("id",)
    list_filter = ("message_type", "status")
    search_fields = ("correlation_id", "trace_id", "recipient", "sender")
    date_hierarchy = "created_at"
    show_full_result_count = False  # heartbeats make this the longest table: skip the extra COUNT(*)
    fields = ("message_type", "team", "sender", "recipient", "status_label", "correlation", "attempts", "handled_by",
              "process_deaths", "payload_block", "response_block", "error_text", "trace_full", "created_at", "sent_at",
              "delivered_at", "handled_at")
    readonly_fields = fields
    inlines = (MessageReceiptInline,)

    @admin.display(description="status", ordering="status")
    def status_label(self, obj):
        return _badge(MESSAGE_STATUS_COLOURS, obj.status, obj.get_status_display())

    @admin.display(description="correlation id", ordering="correlation_id")
    def correlation(self, obj):
        """The request and its response share a correlation id: link to both."""
        if not obj.correlation_id:
            return "—"
        url = reverse("admin:agents_agentmessage_changelist") + "?" + urlencode({"correlation_id": obj.correlation_id})
        return format_html('<a href="{}">{}</a>', url, obj.correlation_id)

    @admin.display(description="payload")
    def payload_block(self, obj):
        return json_block(obj.payload)

    @admin.display(description="response")
    def response_block(self, obj):
        return "—" if obj.response is None else json_block(obj.response)

    @admin.display(description="error")
    def error_text(self, obj):
        return _error_block(obj.error)


# --- events and triggers -------------------------------------------------------------


class _FiringColumnsMixin:
    """Columns shown wherever trigger firings are listed."""

    @admin.display(description="status", ordering="status")
    def status_label(self, obj):
        return _badge(FIRING_STATUS_COLOURS, obj.status, obj.get_status_display())

    @admin.display(description="trigger", ordering="trigger__name")
    def trigger_link(self, obj):
        url = reverse("admin:agents_trigger_change", args=[obj.trigger_id])
        return format_html('<a href="{}">{}</a>', url, obj.trigger.name)

    @admin.display(description="result")
    def result_text(self, obj):
        return "—" if obj.result is None else json.dumps(obj.result, sort_keys=True, default=str)

    @admin.display(description="error")
    def error_text(self, obj):
        return _error_block(obj.error)


class TriggerFiringInline(ReadOnlyMixin, _FiringColumnsMixin, admin.TabularInline):
    """The triggers an event was evaluated against, with what each started: those of the user's teams only (a
    system event, seen by every team, fires every team's triggers)."""

    model = TriggerFiring
    fields = ("trigger_link", "status_label", "result_text", "error_text", "created_at")
    readonly_fields = fields
    extra = 0
    show_change_link = True

    def get_queryset(self, request):
        return team_scoped(super().get_queryset(request), request.user).select_related("trigger")


@admin.register(Event)
class EventAdmin(TeamScopedMixin, ReadOnlyMixin, _TraceColumnMixin, SafeFilterMixin, admin.ModelAdmin):
    """Domain events from the outbox, with the trigger firings each caused."""

    list_display = ("id", "event_type", "source", "created_at", "published_at", "trace", "firing_count")
    list_display_links = ("id",)
    list_filter = ("event_type",)
    search_fields = ("trace_id", "idempotency_key")
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = ("event_type", "team", "payload_block", "source", "idempotency_key", "trace_full", "created_at",
              "published_at")
    readonly_fields = fields
    inlines = (TriggerFiringInline,)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            firing_total=count_of(TriggerFiring, "event", user=request.user))

    @admin.display(description="firings", ordering="firing_total")
    def firing_count(self, obj):
        url = reverse("admin:agents_triggerfiring_changelist") + f"?event__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.firing_total)

    @admin.display(description="payload")
    def payload_block(self, obj):
        return json_block(obj.payload)


@admin.register(TriggerFiring)
class TriggerFiringAdmin(TeamScopedMixin, ReadOnlyMixin, _FiringColumnsMixin, _TraceColumnMixin, SafeFilterMixin,
                         admin.ModelAdmin):
    """Every trigger evaluated on every event, with what it started; written by event dispatch."""

    list_display = ("id", "trigger_link", "event_link", "status_label", "result_text", "created_at", "trace")
    list_display_links = ("id",)
    list_filter = ("status", "trigger")
    list_select_related = ("trigger", "event")
    search_fields = ("trace_id", "trigger__name")
    fields = ("trigger_link", "event_link", "status_label", "result_text", "error_text", "trace_full", "created_at")
    readonly_fields = fields

    @admin.display(description="event", ordering="event")
    def event_link(self, obj):
        url = reverse("admin:agents_event_change", args=[obj.event_id])
        return format_html('<a href="{}">{} #{}</a>', url, obj.event.event_type, obj.event_id)


def _problem_field(problem: str) -> str | None:
    """The form field a trigger problem is about: the key it names, or the task-shape key it starts with."""
    match = _PROBLEM_KEY.match(problem)
    if match is None:
        return None
    if match["key"]:
        return TRIGGER_DEFINITION_FIELDS.get(match["key"])
    return _TASK_PROBLEM_FIELDS.get(match["text"])


class TriggerForm(DefinitionForm):
    """A trigger, validated like a definitions file (event type, filter expression, target) and saved through
    the loading service."""

    definition_fields = TRIGGER_DEFINITION_FIELDS
    definition_empty = {"params": dict}

    params = StorableJSONField(
        required=False, initial=dict,
        help_text='JSON. A string "$.payload.x" is replaced by that value of the event. e.g. '
                  '{"run": "$.payload.run_id"} (workflow), {"workflow": "report", "params": {}} (task), '
                  '{"message_type": "status_update"} (message).',
    )

    #: Who fills the form in (set per request by the admin): a new trigger with no team chosen joins their team.
    user = None

    class Meta:
        model = Trigger
        fields = ["team", *TRIGGER_DEFINITION_FIELDS.values()]

    def definition_problems(self, definition: dict) -> list[str]:
        problems = events.trigger_validate(definition, "trigger")
        team = self.instance.team if self.instance.pk else self.cleaned_data.get("team") or self._user_team()
        if team is not None and (problem := event_types.event_type_owner_problem(definition["event"], team)):
            problems.append(f"trigger.event: {problem}")  # else saving would fail: a type is its team's only
        if team is not None and not problems:  # else saving would fail: a trigger starts its own team's only
            field = "params" if definition["action"] == "task" else "target"
            problems += [f"trigger.{field}: {problem}" for problem in events.trigger_team_problems(definition, team.pk)]
            if not problems:
                problems += events.trigger_params_problems(definition)  # saving would refuse them too
        return problems

    def _user_team(self):
        try:
            return team_for_new(self.user)
        except TeamError:
            return None  # the team chooser says what to choose

    def problem_field(self, problem: str) -> str | None:
        return _problem_field(problem)


@admin.register(Trigger)
class TriggerAdmin(TeamScopedMixin, SafeFilterMixin, admin.ModelAdmin):
    """Triggers: on an event type (and filter), start a workflow, submit an agent task or send a message."""

    form = TriggerForm
    list_display = ("name", "event_type", "filter", "action", "target", "priority", "enabled", "firing_count")
    list_filter = ("event_type", "action", "enabled")
    search_fields = ("name", "target")
    change_list_template = "admin/agents/orchestration/change_list.html"
    change_form_template = "admin/agents/orchestration/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(firing_total=count_of(TriggerFiring, "trigger"))

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.user = request.user  # a class made for this request
        return form

    def get_readonly_fields(self, request, obj=None):
        # A trigger is known by its name (definition files update it by name): renaming is not an edit.
        return ("name", "source", "created_at", "updated_at") if obj is not None else ()

    def save_model(self, request, obj, form, change):
        events.triggers_load(text=json.dumps([form.definition]), source="admin", team=obj.team)
        trigger = Trigger.objects.get(name=form.definition["name"])
        obj.pk, obj.source, obj.created_at, obj.updated_at = (trigger.pk, trigger.source, trigger.created_at,
                                                              trigger.updated_at)
        obj._state.adding = False

    @admin.display(description="firings", ordering="firing_total")
    def firing_count(self, obj):
        url = reverse("admin:agents_triggerfiring_changelist") + f"?trigger__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.firing_total)


class EventTypeForm(DefinitionForm):
    """A declared event type, validated like an event types file (name, JSON schema) and saved through the loading
    service."""

    definition_fields = {"name": "name", "schema": "schema", "description": "description"}
    definition_empty = {"schema": dict}

    schema = StorableJSONField(
        required=False, initial=dict,
        help_text='JSON schema of the payload, e.g. {"type": "object", "required": ["order_id"], "properties": '
                  '{"order_id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}}}. {} takes any object.',
    )

    class Meta:
        model = EventTypeDeclaration
        fields = ["team", "name", "schema", "description"]

    def definition_problems(self, definition: dict) -> list[str]:
        return event_types.event_type_validate(definition, "event type")

    def problem_field(self, problem: str) -> str | None:
        match = _EVENT_TYPE_PROBLEM_KEY.match(problem)
        return match["key"] if match else None


@admin.register(EventTypeDeclaration)
class EventTypeDeclarationAdmin(TeamScopedMixin, SafeFilterMixin, admin.ModelAdmin):
    """Event types of the teams' own, which may be published from outside (``events publish``, POST /api/events/),
    with the JSON schema their payload must match."""

    form = EventTypeForm
    list_display = ("name", "team", "description", "schema_text", "uses", "source", "updated_at")
    list_filter = ("team",)
    list_select_related = ("team__group",)
    search_fields = ("name", "description")
    change_list_template = "admin/agents/orchestration/change_list.html"
    change_form_template = "admin/agents/orchestration/change_form.html"

    def get_readonly_fields(self, request, obj=None):
        # Triggers and published events name a type: renaming it is not an edit.
        return ("name", "source", "created_at", "updated_at") if obj is not None else ()

    def get_fields(self, request, obj=None):
        fields = ["team", "name", "description", "schema"]
        return [*fields, "source", "created_at", "updated_at"] if obj is not None else fields

    def save_model(self, request, obj, form, change):
        event_types.event_types_load(text=json.dumps([form.definition]), source="admin", team=obj.team)
        declaration = EventTypeDeclaration.objects.get(name=form.definition["name"])
        obj.pk, obj.source, obj.created_at, obj.updated_at = (declaration.pk, declaration.source,
                                                              declaration.created_at, declaration.updated_at)
        obj._state.adding = False

    @admin.display(description="schema")
    def schema_text(self, obj):
        return format_html("<code>{}</code>", json.dumps(obj.schema, sort_keys=True, default=str)[:300])

    @admin.display(description="used by")
    def uses(self, obj):
        query = urlencode({"event_type": obj.name})
        return format_html('<a href="{}?{}">triggers</a> · <a href="{}?{}">events</a>',
                           reverse("admin:agents_trigger_changelist"), query,
                           reverse("admin:agents_event_changelist"), query)


# --- the trace page ------------------------------------------------------------------


class TraceForm(forms.Form):
    """The trace id to look up."""

    trace_id = forms.CharField(label="Trace id", max_length=64, strip=True,
                               widget=forms.TextInput(attrs={"size": 34, "placeholder": "32 hex characters"}))


def _trace_problem(trace_id: str) -> str:
    return (f"{trace_id[:80]!r} is not a trace id: a trace id is 32 lowercase hex characters (log lines, the "
            "X-Trace-Id header and every list here show them).")


def trace_view(request, trace_id: str | None = None):
    """Everything stored under one trace id, in time order; without an id, a form to type one."""
    site = admin.site
    problem, records, cut_kinds = "", [], []
    if trace_id is None:
        typed = request.GET.get("trace_id", "").strip().lower()
        if typed and trace_id_valid(typed):
            return redirect("admin:agents_trace", typed)
        problem = _trace_problem(typed) if typed else ""
        form = TraceForm(initial={"trace_id": typed})
    else:
        trace_id = trace_id.strip().lower()
        form = TraceForm(initial={"trace_id": trace_id})
        if not trace_id_valid(trace_id):
            problem = _trace_problem(trace_id)
        else:
            records, cut_kinds = _trace_rows(request, trace_id)
    context = {
        **site.each_context(request),
        "title": f"Trace {trace_id}" if trace_id and not problem else "Find a trace",
        "trace_id": trace_id if not problem else "",
        "form": form,
        "problem": problem,
        "records": records,
        "cut_kinds": cut_kinds,
        "per_kind_limit": selectors.TRACE_RECORDS_PER_KIND,
    }
    return TemplateResponse(request, "admin/agents/orchestration/trace.html", context)


def _trace_rows(request, trace_id: str) -> tuple[list[dict], list[str]]:
    """The trace's records the user may view, each with its change page link, badge and time since the first;
    and the kinds cut at ``TRACE_RECORDS_PER_KIND`` rows."""
    viewable = {model for model in selectors.TRACE_MODELS
                if request.user.has_perm(f"agents.view_{model}") or request.user.has_perm(f"agents.change_{model}")}
    records = selectors.trace_records(trace_id, models=viewable, user=request.user)
    first = records[0]["at"] if records else None
    counts = Counter(record["kind"] for record in records)
    rows = [{
        **record,
        "url": reverse(f"admin:agents_{record['model']}_change", args=[record["id"]]),
        "badge": _badge(TRACE_STATUS_COLOURS.get(record["model"], {}), record["status"], record["status_label"]),
        "offset": "+" + format_duration((record["at"] - first).total_seconds()),
    } for record in records]
    return rows, sorted(kind for kind, count in counts.items() if count >= selectors.TRACE_RECORDS_PER_KIND)


def _add_trace_urls(site: admin.AdminSite) -> None:
    """Serve the trace page at ``<admin>/agents/trace/[<trace id>/]`` on ``site``, behind its staff login.

    The page belongs to no model, so no ModelAdmin's URLs can hold it; the site's own URL list does.
    """
    site_urls = site.get_urls

    def get_urls():
        return [
            path("agents/trace/", site.admin_view(trace_view), name="agents_trace_find"),
            path("agents/trace/<str:trace_id>/", site.admin_view(trace_view), name="agents_trace"),
            *site_urls(),
        ]

    site.get_urls = get_urls


_add_trace_urls(admin.site)
