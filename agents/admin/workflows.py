"""Admin for workflows: definitions and their DAG, runs with progress, steps, a Gantt timeline and actions."""
import json
from collections import defaultdict
from datetime import datetime

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, Q
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html

from agents.admin.common import (
    SafeFilterMixin,
    ReadOnlyMixin,
    ServiceActionsMixin,
    TeamScopedMixin,
    TeamScopedRelatedFilter,
    is_object_id,
    status_badge,
    trace_link,
)
from agents.exceptions import AgentsError
from agents.models import (
    MapItem,
    Pool,
    RunStatus,
    StepRun,
    StepStatus,
    WorkflowBackfill,
    WorkflowDefinition,
    WorkflowRun,
    WorkflowSignal,
    WorkflowVersion,
)
from agents.models.workflows import RUN_FINISHED
from agents.workflows import dag, selectors, services

#: Size of the DAG drawing, in SVG pixels.
DAG_BOX_WIDTH, DAG_BOX_HEIGHT, DAG_GAP_X, DAG_GAP_Y, DAG_MARGIN = 180, 40, 60, 16, 10
#: Size of the Gantt timeline, in SVG pixels: label column, bar area, row height, axis height.
GANTT_LABEL_WIDTH, GANTT_WIDTH, GANTT_ROW_HEIGHT, GANTT_AXIS_HEIGHT = 200, 720, 20, 24
#: At most this many step attempts are drawn on one run page (a run may hold hundreds of thousands).
GANTT_MAX_ATTEMPTS = 2000
#: Items of one mapped step drawn on the timeline (the rest are counted, and listed under Map items).
GANTT_MAX_ITEMS_PER_STEP = 50


def dag_layout(graph: dict[str, tuple[str, ...]], *, actions: dict[str, str],
               statuses: dict[str, str] | None = None) -> dict:
    """Lay out a step graph for drawing: layer = longest path from a root (x), index in the layer (y).

    Plain values in and out; the template draws the boxes and one arrow per dependency.
    """
    layer: dict[str, int] = {}
    order = dag.topological_order(graph)
    for step in order:
        layer[step] = max((layer[need] + 1 for need in graph[step]), default=0)
    filled: dict[int, int] = defaultdict(int)
    nodes: dict[str, dict] = {}
    for step in order:
        column, row = layer[step], filled[layer[step]]
        filled[column] += 1
        nodes[step] = {
            "id": step,
            "action": actions.get(step, ""),
            "status": (statuses or {}).get(step, ""),
            "x": DAG_MARGIN + column * (DAG_BOX_WIDTH + DAG_GAP_X),
            "y": DAG_MARGIN + row * (DAG_BOX_HEIGHT + DAG_GAP_Y),
        }
    edges = []
    for step in order:
        for need in graph[step]:
            start, end = nodes[need], nodes[step]
            x1, y1 = start["x"] + DAG_BOX_WIDTH, start["y"] + DAG_BOX_HEIGHT / 2
            x2, y2 = end["x"] - 2, end["y"] + DAG_BOX_HEIGHT / 2
            middle = (x1 + x2) / 2
            edges.append({"source": need, "target": step,
                          "path": f"M{x1:g},{y1:g} C{middle:g},{y1:g} {middle:g},{y2:g} {x2:g},{y2:g}"})
    columns = max(layer.values(), default=0) + 1
    rows = max(filled.values(), default=1)
    return {
        "nodes": list(nodes.values()),
        "edges": edges,
        "box_width": DAG_BOX_WIDTH,
        "box_height": DAG_BOX_HEIGHT,
        "width": 2 * DAG_MARGIN + columns * DAG_BOX_WIDTH + (columns - 1) * DAG_GAP_X,
        "height": 2 * DAG_MARGIN + rows * DAG_BOX_HEIGHT + (rows - 1) * DAG_GAP_Y,
    }


def gantt_layout(attempts: list[StepRun], *, now: datetime, items: dict[str, list[MapItem]] | None = None,
                 items_total: dict[str, int] | None = None) -> dict:
    """Lay out one bar per started step attempt, relative to the earliest start; unfinished bars end at ``now``.
    A mapped step's items (``items``: its first ones by index, of ``items_total``) follow its last attempt, one
    indented bar each, and a line says how many more there are."""
    items, items_total = items or {}, items_total or {}
    last_attempt = {row.step_id: index for index, row in enumerate(attempts)}
    entries = []  # (label, title, status, started_at, finished_at, worker, error, kind)
    for index, row in enumerate(attempts):
        entries.append((f"{row.step_id} #{row.attempt}", f"{row.step_id} attempt {row.attempt}", row.status,
                        row.started_at, row.finished_at, row.worker, row.error, "attempt"))
        if last_attempt[row.step_id] != index:
            continue
        for item in items.get(row.step_id, ()):
            entries.append((f"[{item.index}]", f"{row.step_id} item {item.index} (try {item.attempts})", item.status,
                            item.started_at, item.finished_at, item.worker, item.error, "item"))
        more = items_total.get(row.step_id, 0) - len(items.get(row.step_id, ()))
        if more > 0:
            entries.append((f"{more} more item{'s' if more != 1 else ''}", "", "", None, None, "", "", "more"))
    started = [entry for entry in entries if entry[3]]
    origin = min((entry[3] for entry in started), default=now)
    end = max((entry[4] or now for entry in started), default=origin)
    span_s = max((end - origin).total_seconds(), 0.001)
    scale = GANTT_WIDTH / span_s
    rows = []
    for index, (label, title, status, started_at, finished_at, worker, error, kind) in enumerate(entries):
        y = GANTT_AXIS_HEIGHT + index * GANTT_ROW_HEIGHT
        bar = None
        if started_at:
            offset_s = (started_at - origin).total_seconds()
            length_s = ((finished_at or now) - started_at).total_seconds()
            bar = {"x": round(GANTT_LABEL_WIDTH + offset_s * scale, 2), "width": round(max(length_s * scale, 2.0), 2),
                   "y": y + 3, "offset": format_duration(offset_s), "length": format_duration(length_s),
                   "running": finished_at is None}
        rows.append({"label": label, "title": title, "kind": kind, "status": status, "error": error,
                     "worker": worker, "text_y": y + GANTT_ROW_HEIGHT - 6, "bar": bar,
                     "label_x": 16 if kind != "attempt" else 4})
    tick_s = _tick_interval(span_s)
    ticks = []
    count = int(span_s / tick_s) + 1
    for index in range(count):
        value_s = index * tick_s
        ticks.append({"x": round(GANTT_LABEL_WIDTH + value_s * scale, 2),
                      "label": format_duration(value_s, precise=False)})
    return {
        "rows": rows,
        "ticks": ticks,
        "label_width": GANTT_LABEL_WIDTH,
        "bar_height": GANTT_ROW_HEIGHT - 6,
        "axis_y": GANTT_AXIS_HEIGHT - 4,
        "width": GANTT_LABEL_WIDTH + GANTT_WIDTH + 40,
        "height": GANTT_AXIS_HEIGHT + len(rows) * GANTT_ROW_HEIGHT + 4,
        "span": format_duration(span_s),
    }


def _tick_interval(span_s: float) -> float:
    """The round interval (1, 2 or 5 times a power of ten seconds) giving at most eight ticks over ``span_s``."""
    magnitude = 0.001
    while True:
        for factor in (1, 2, 5):
            if span_s / (factor * magnitude) <= 8:
                return factor * magnitude
        magnitude *= 10


def format_duration(seconds: float | None, *, precise: bool = True) -> str | None:
    """``0.25 s``, ``12.3 s``, ``4 min 5 s``, ``2 h 3 min``; None stays None."""
    if seconds is None:
        return None
    if seconds < 60:
        if not precise:
            return f"{seconds:g} s"
        return f"{seconds:.3f} s" if seconds < 1 else f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def flower_task_url(task_id: str) -> str:
    """The Flower page of Celery task ``task_id``."""
    return f"{settings.AGENTS_FLOWER_URL.rstrip('/')}/task/{task_id}"


def flower_worker_url(worker: str) -> str:
    """The Flower page of the Celery worker a step attempt recorded as ``node@host:pid``."""
    node, _, pid = worker.rpartition(":")
    return f"{settings.AGENTS_FLOWER_URL.rstrip('/')}/worker/{node if node and pid.isdigit() else worker}"


def _graph(version: WorkflowVersion) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """A version's dependencies and actions, from its stored (already validated) spec."""
    steps = version.spec["steps"]
    return {step["id"]: tuple(step["needs"]) for step in steps}, {step["id"]: step["action"] for step in steps}


def _percent_bar(percent: float, done: int, total: int):
    return format_html(
        '<progress class="wf-progress" value="{}" max="100" title="{} of {} steps">{}%</progress> {}%',
        percent, done, total, percent, percent,
    )


class _VersionColumnsMixin:
    """Columns shown wherever versions are listed."""

    @admin.display(description="content hash")
    def short_hash(self, obj):
        return obj.content_hash[:12]

    @admin.display(description="steps")
    def step_count(self, obj):
        return len(obj.spec["steps"])


class _RunActionsMixin(ServiceActionsMixin):
    """Admin actions that start, cancel or re-run workflow runs."""

    def has_start_permission(self, request) -> bool:
        """Starting a run creates one: the user needs the permission to add runs."""
        return request.user.has_perm("agents.add_workflowrun")

    def _start_runs(self, request, objects, start) -> None:
        runs = self.apply_each(request, objects, start, "Started %(count)d run.", "Started %(count)d runs.")
        if runs:
            self.message_user(request, "Run ids: " + ", ".join(str(run.pk) for run in runs), messages.INFO)


class WorkflowVersionInline(ReadOnlyMixin, _VersionColumnsMixin, admin.TabularInline):
    """A definition's versions, newest first; versions are immutable."""

    model = WorkflowVersion
    fields = ("number", "short_hash", "step_count", "created_at")
    readonly_fields = fields
    ordering = ("-number",)
    extra = 0
    show_change_link = True


class BackfillForm(forms.Form):
    """A past range of a schedule to start runs for."""

    schedule = forms.ChoiceField(required=False, help_text="Default: the workflow's only schedule.")
    start = forms.DateTimeField(label="From", help_text="First slot (included), e.g. 2026-11-01 00:00 (the "
                                                         "server's time zone unless an offset is given).")
    end = forms.DateTimeField(label="To", help_text="Last slot (included), not later than now.")
    max_parallel = forms.IntegerField(required=False, min_value=1, max_value=1000,
                                      help_text="At most this many of its runs at a time (default: all at once).")
    dry_run = forms.BooleanField(required=False, initial=True, help_text="List the slots; start nothing.")

    def __init__(self, *args, schedules: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["schedule"].choices = [("", "—"), *((name, name) for name in schedules)]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("start") and cleaned.get("end") and cleaned["end"] < cleaned["start"]:
            self.add_error("end", "must not be before From")
        elif cleaned.get("end") and cleaned["end"] > timezone.now():
            self.add_error("end", "must not be later than now: a backfill covers past slots (the schedule starts "
                                  "the others at their time)")
        return cleaned


@admin.register(WorkflowDefinition)
class WorkflowDefinitionAdmin(TeamScopedMixin, _RunActionsMixin, SafeFilterMixin, admin.ModelAdmin):
    """Workflows by name, with their versions; definitions are loaded with `manage.py workflow load`."""

    list_display = ("name", "description", "latest_version", "run_count", "enabled", "schedule_list")
    list_filter = ("enabled",)
    search_fields = ("name", "description")
    fields = ("name", "team", "description", "enabled", "schedule_list", "created_at", "updated_at")
    readonly_fields = fields
    inlines = (WorkflowVersionInline,)
    actions = ("start_latest", "enable", "disable")
    change_form_template = "admin/agents/workflowdefinition/change_form.html"

    def get_urls(self):
        backfill = path("<path:object_id>/backfill/", self.admin_site.admin_view(self.backfill_view),
                        name="agents_workflowdefinition_backfill")
        return [backfill, *super().get_urls()]

    @admin.display(description="schedules")
    def schedule_list(self, obj):
        newest = obj.versions.order_by("-number").first()
        found = (newest.spec.get("schedules") or []) if newest else []
        return ", ".join(f"{item['name']}: {item['cron']} ({item['timezone']})" for item in found) or "—"

    @admin.action(description="Enable (schedules fire)", permissions=("start",))
    def enable(self, request, queryset):
        self.apply_each(request, queryset, lambda row: services.workflow_enable(workflow=row.name, enabled=True),
                        "Enabled %(count)d workflow.", "Enabled %(count)d workflows.")

    @admin.action(description="Disable (schedules paused)", permissions=("start",))
    def disable(self, request, queryset):
        self.apply_each(request, queryset, lambda row: services.workflow_enable(workflow=row.name, enabled=False),
                        "Disabled %(count)d workflow.", "Disabled %(count)d workflows.")

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["may_backfill"] = self.has_start_permission(request)  # the backfill page refuses the others
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def backfill_view(self, request, object_id):
        """Backfill one of the workflow's schedules over a past range; a dry run lists the slots first."""
        definition = self.get_queryset(request).filter(pk=object_id).first() if is_object_id(object_id) else None
        if definition is None:
            raise Http404("no such workflow")
        if not self.has_start_permission(request):
            raise PermissionDenied
        slots, skipped = None, 0
        form = BackfillForm(request.POST or None, schedules=self.schedule_names(definition))
        if request.method == "POST" and form.is_valid():
            try:
                outcome = services.workflow_backfill(
                    workflow=definition.name, start=form.cleaned_data["start"], end=form.cleaned_data["end"],
                    schedule=form.cleaned_data["schedule"] or None, max_parallel=form.cleaned_data["max_parallel"],
                    dry_run=form.cleaned_data["dry_run"], created_by=request.user.get_username())
            except AgentsError as error:
                form.add_error(None, str(error))
            else:
                if not form.cleaned_data["dry_run"]:
                    self.message_user(request, f"Backfill of {definition.name}: started {outcome['started']} of "
                                               f"{len(outcome['slots'])} runs ({outcome['skipped']} slots already "
                                               f"had one).", messages.SUCCESS)
                    return redirect(reverse("admin:agents_workflowrun_changelist")
                                    + f"?version__definition__id__exact={definition.pk}")
                slots, skipped = outcome["slots"], outcome["skipped"]
        context = {**self.admin_site.each_context(request), "opts": self.opts, "original": definition,
                   "title": f"Backfill {definition.name}", "form": form, "slots": slots, "skipped": skipped}
        return TemplateResponse(request, "admin/agents/workflowdefinition/backfill.html", context)

    @staticmethod
    def schedule_names(definition) -> list[str]:
        newest = definition.versions.order_by("-number").first()
        return [item["name"] for item in (newest.spec.get("schedules") or [])] if newest else []

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            latest_number=Max("versions__number"), run_total=Count("versions__runs", distinct=True)
        )

    @admin.display(description="latest version", ordering="latest_number")
    def latest_version(self, obj):
        return obj.latest_number

    @admin.display(description="runs", ordering="run_total")
    def run_count(self, obj):
        url = reverse("admin:agents_workflowrun_changelist") + f"?version__definition__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.run_total)

    @admin.action(description="Start a run of the latest version", permissions=("start",))
    def start_latest(self, request, queryset):
        """Start one run of each selected workflow's newest version."""
        self._start_runs(request, queryset, lambda definition: services.workflow_run_start(workflow=definition.name))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(TeamScopedMixin, ReadOnlyMixin, _VersionColumnsMixin, _RunActionsMixin, SafeFilterMixin,
                           admin.ModelAdmin):
    """Immutable versions: a drawing of the DAG and the source text; runs are started from here."""

    list_display = ("__str__", "definition", "number", "short_hash", "step_count", "run_count", "created_at")
    list_filter = ("definition",)
    search_fields = ("definition__name", "content_hash")
    list_select_related = ("definition",)
    fields = ("definition", "number", "content_hash", "created_at")
    readonly_fields = fields
    actions = ("start_runs",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(run_total=Count("runs"))

    @admin.display(description="runs", ordering="run_total")
    def run_count(self, obj):
        url = reverse("admin:agents_workflowrun_changelist") + f"?version__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.run_total)

    @admin.action(description="Start a run", permissions=("start",))
    def start_runs(self, request, queryset):
        """Start one run of each selected version."""
        self._start_runs(request, queryset.select_related("definition"),
                         lambda version: services.workflow_run_start(version=version))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            graph, actions = _graph(obj)
            context.update(dag=dag_layout(graph, actions=actions), source=obj.source)
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)


class WorkflowFilter(TeamScopedRelatedFilter):
    """Filter runs by workflow (the version's definition): the user's teams' workflows, not every team's."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        self.title = "workflow"


@admin.register(WorkflowRun)
class WorkflowRunAdmin(TeamScopedMixin, ReadOnlyMixin, _RunActionsMixin, SafeFilterMixin, admin.ModelAdmin):
    """Runs with their progress; a run's page shows its steps, their attempts and a timeline."""

    list_display = ("id", "workflow", "version_number", "status_badge", "progress", "logical_time", "started_at",
                    "duration", "trace")
    list_display_links = ("id",)
    list_filter = ("status", ("version__definition", WorkflowFilter))
    search_fields = ("version__definition__name", "trace_id")

    @admin.display(description="trace")
    def trace(self, obj):
        return trace_link(obj.trace_id)

    list_select_related = ("version__definition",)
    date_hierarchy = "created_at"
    fields = (
        "workflow_link", "version_link", "status_badge", "attempt", "progress_detail", "error", "failed_step",
        "params_text", "schedule_key", "logical_time", "backfill", "parent_link", "paused_by", "deadline_at",
        "deadline_missed_at", "rerun_at", "created_at", "started_at", "finished_at", "duration",
    )
    readonly_fields = fields
    actions = ("cancel_runs", "rerun_runs", "pause_runs", "resume_runs")

    def get_urls(self):
        decide = path("<path:object_id>/decide/", self.admin_site.admin_view(self.decide_view),
                      name="agents_workflowrun_decide")
        return [decide, *super().get_urls()]

    def decide_view(self, request, object_id):
        """Approve or reject an approval step of the run (a POST from the run page's Waiting box); the decision,
        who made it and the comment are recorded. Only members of the step's approver groups may decide."""
        run = self.get_queryset(request).filter(pk=object_id).first() if is_object_id(object_id) else None
        if run is None:
            raise Http404("no such run")
        if request.method != "POST":
            return redirect(reverse("admin:agents_workflowrun_change", args=[run.pk]))
        if not request.user.has_perm("agents.add_workflowsignal"):
            raise PermissionDenied
        decision, _, step = request.POST.get("decide", "").partition(":")  # "approve:STEP" or "reject:STEP"
        try:
            outcome = services.workflow_signal(run_id=run.pk, name=step, decision=decision,
                                               comment=request.POST.get(f"comment:{step}", "").strip()[:2000],
                                               user=request.user)
        except AgentsError as error:
            self.message_user(request, f"Not recorded: {error}", messages.ERROR)
        else:
            said = {"taken": "the step is decided", "recorded": "it waits for more approvals",
                    "kept": "it is taken when the step starts waiting"}[outcome["state"]]
            self.message_user(request, f"Recorded your decision ({decision}) on step {step!r}: {said}.",
                              messages.SUCCESS)
        return redirect(reverse("admin:agents_workflowrun_change", args=[run.pk]))

    @admin.display(description="workflow", ordering="version__definition__name")
    def workflow(self, obj):
        return obj.version.definition.name

    @admin.display(description="version", ordering="version__number")
    def version_number(self, obj):
        return obj.version.number

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="progress")
    def progress(self, obj):
        # selectors.run_progress also estimates an ETA with one query per active run; the list needs only the
        # share of steps that succeeded, which get_queryset counts.
        done = getattr(obj, "succeeded_steps", None)  # a run not listed through get_queryset counts them itself
        if done is None:
            done = selectors.run_step_counts(obj)[StepStatus.SUCCEEDED]
        total = obj.steps_total
        return _percent_bar(round(100.0 * done / total, 1) if total else 100.0, done, total)

    @admin.display(description="duration")
    def duration(self, obj):
        return format_duration(obj.duration_s) or self.get_empty_value_display()

    @admin.display(description="workflow")
    def workflow_link(self, obj):
        url = reverse("admin:agents_workflowdefinition_change", args=[obj.version.definition_id])
        return format_html('<a href="{}">{}</a>', url, obj.version.definition.name)

    @admin.display(description="version")
    def version_link(self, obj):
        url = reverse("admin:agents_workflowversion_change", args=[obj.version_id])
        return format_html('<a href="{}">v{}</a> ({})', url, obj.version.number, obj.version.content_hash[:12])

    @admin.display(description="progress")
    def progress_detail(self, obj):
        progress = selectors.run_progress(obj)
        bar = _percent_bar(progress["percent"], progress["done"], progress["total"])
        eta = progress["eta_s"]
        apart = ", ".join(f"{progress[status]} {status}" for status in ("failed", "skipped", "cancelled")
                          if progress[status])
        apart = f"; {apart}" if apart else ""
        if obj.status in RUN_FINISHED or eta is None:
            return format_html("{} ({} of {} steps succeeded{})", bar, progress["done"], progress["total"], apart)
        return format_html("{} ({} of {} steps succeeded{}, about {} left)", bar, progress["done"],
                           progress["total"], apart, format_duration(eta))

    @admin.display(description="params")
    def params_text(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.params, indent=2, sort_keys=True))

    @admin.display(description="parent run")
    def parent_link(self, obj):
        if obj.parent_run_id is None:
            return self.get_empty_value_display()
        url = reverse("admin:agents_workflowrun_change", args=[obj.parent_run_id])
        return format_html('<a href="{}">run {}</a>, step {}', url, obj.parent_run_id, obj.parent_step_id)

    @admin.action(description="Cancel selected runs", permissions=("operate",))
    def cancel_runs(self, request, queryset):
        """Cancel each selected run; a finished run is refused with its reason."""
        self.apply_each(request, queryset, lambda run: services.workflow_run_cancel(run_id=run.pk),
                         "%(count)d run cancelled.", "%(count)d runs cancelled.")

    @admin.action(description="Re-run selected runs from failure", permissions=("operate",))
    def rerun_runs(self, request, queryset):
        """Re-run each selected failed or cancelled run from its failure; others are refused with their reason."""
        self.apply_each(request, queryset, lambda run: services.workflow_run_retry(run_id=run.pk),
                         "%(count)d run re-run from failure.", "%(count)d runs re-run from failure.")

    @admin.action(description="Pause selected runs", permissions=("operate",))
    def pause_runs(self, request, queryset):
        """Pause each selected run: no new step starts; running steps finish."""
        self.apply_each(request, queryset, lambda run: services.workflow_run_pause(
            run_id=run.pk, by=request.user.get_username()), "%(count)d run paused.", "%(count)d runs paused.")

    @admin.action(description="Resume selected runs", permissions=("operate",))
    def resume_runs(self, request, queryset):
        """Resume each selected paused run where it stopped."""
        self.apply_each(request, queryset, lambda run: services.workflow_run_resume(run_id=run.pk),
                        "%(count)d run resumed.", "%(count)d runs resumed.")

    def has_operate_permission(self, request) -> bool:
        """Cancelling and re-running change a run: the user needs the permission to change runs."""
        return request.user.has_perm("agents.change_workflowrun")

    def get_queryset(self, request):
        # The list's progress bar counts succeeded steps in the same query: a failed run is not 100 % done.
        return super().get_queryset(request).select_related("version__definition").annotate(succeeded_steps=Count(
            "step_runs__step_id", filter=Q(step_runs__status=StepStatus.SUCCEEDED), distinct=True))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context.update(self._run_context(obj))
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def _run_context(self, run: WorkflowRun) -> dict:
        """The steps table, every attempt, the DAG coloured by status and the Gantt timeline of ``run``."""
        state = selectors.run_to_dict(run)
        graph, actions = _graph(run.version)
        attempts_total = StepRun.objects.filter(run=run).count()
        rank = {step_id: index for index, step_id in enumerate(graph)}
        attempts = sorted(
            StepRun.objects.filter(run=run)[:GANTT_MAX_ATTEMPTS],
            key=lambda row: (rank.get(row.step_id, len(rank)), row.attempt),
        )
        child_runs = {row.step_id: row.child_run_id for row in attempts if row.child_run_id}
        items: dict[str, dict[str, int]] = defaultdict(dict)  # mapped steps: their items by status, this attempt
        for step_id, status, total in (MapItem.objects.filter(run=run, run_attempt=run.attempt)
                                       .values_list("step_id", "status").annotate(total=Count("pk"))
                                       .order_by("step_id", "status")):
            items[step_id][status] = total
        map_url = reverse("admin:agents_mapitem_changelist")
        steps = []
        for step_id, step in state["steps"].items():
            started, finished = parse_datetime(step["started_at"] or ""), parse_datetime(step["finished_at"] or "")
            steps.append({
                **step,
                "id": step_id,
                "action": actions.get(step_id, ""),
                "status_label": StepStatus(step["status"]).label,
                "started": started,
                "finished": finished,
                "duration": format_duration((finished - started).total_seconds()) if started and finished else None,
                "task_url": flower_task_url(step["task_id"]) if step["task_id"] else None,
                "worker_url": flower_worker_url(step["worker"]) if step["worker"] else None,
                "child_run_id": child_runs.get(step_id),
                "items": sum(items[step_id].values()) if step_id in items else None,
                "items_by_status": sorted(items[step_id].items()) if step_id in items else [],
                "items_url": f"{map_url}?run__id__exact={run.pk}&step_id={step_id}",
            })
        attempt_rows = [{
            "row": row,
            "status_label": row.get_status_display(),
            "duration": format_duration(row.duration_s),
            "task_url": flower_task_url(row.task_id) if row.task_id else None,
        } for row in attempts]
        statuses = {step_id: step["status"] for step_id, step in state["steps"].items()}
        return {
            "waits": _waits(run, actions),
            "steps": steps,
            "attempts": attempt_rows,
            "attempts_total": attempts_total,
            "attempts_cut": attempts_total > len(attempts),
            "dag": dag_layout(graph, actions=actions, statuses=statuses),
            "gantt": gantt_layout(attempts, now=timezone.now(), items=_gantt_items(run, items),
                                  items_total={step_id: sum(counts.values()) for step_id, counts in items.items()}),
        }


def _waits(run: WorkflowRun, actions: dict[str, str]) -> list[dict]:
    """The run's steps waiting for a signal (with an approval's decisions so far) or held back, for its page."""
    compiled = selectors.run_spec(run)
    found = []
    rows = StepRun.objects.filter(run=run, run_attempt=run.attempt).filter(
        Q(status=StepStatus.RUNNING) & ~Q(waiting_for="") | Q(status=StepStatus.PENDING) & ~Q(held=""))
    for row in rows.order_by("step_id"):
        step = compiled.steps.get(row.step_id)
        entry = {"step_id": row.step_id, "action": actions.get(row.step_id, ""), "signal": row.waiting_for,
                 "until": row.wait_until, "held": row.held, "held_at": row.held_at, "approval": False}
        if step is not None and step.action == "approval" and row.waiting_for:
            entry.update(approval=True, approvers=", ".join(step.params["approvers"]),
                         require=step.params.get("require", 1),
                         decisions=list(selectors.signals_taken(row)))
        found.append(entry)
    return found


def _gantt_items(run: WorkflowRun, counts: dict[str, dict[str, int]]) -> dict[str, list[MapItem]]:
    """The first items (by index) of each mapped step of the run's current attempt, for the timeline."""
    return {step_id: list(MapItem.objects.filter(run=run, run_attempt=run.attempt, step_id=step_id)
                          .order_by("index")[:GANTT_MAX_ITEMS_PER_STEP]) for step_id in counts}


@admin.register(StepRun)
class StepRunAdmin(TeamScopedMixin, ReadOnlyMixin, SafeFilterMixin, admin.ModelAdmin):
    """Every step attempt, read-only: find a task by id, or the failures of a step across runs."""

    list_display = ("step_id", "run_link", "attempt", "status_badge", "worker", "started_at", "duration", "flower_link")
    list_filter = ("status",)
    ordering = ("-run", "step_id", "attempt")
    search_fields = ("step_id", "task_id", "worker", "run__version__definition__name")
    list_select_related = ("run__version__definition",)
    readonly_fields = (
        "run_link", "step_id", "attempt", "run_attempt", "status_badge", "worker", "flower_link", "started_at",
        "finished_at", "duration", "retry_delay_s", "process_deaths", "error", "result", "child_run",
    )
    fields = readonly_fields

    @admin.display(description="run", ordering="run_id")
    def run_link(self, obj):
        url = reverse("admin:agents_workflowrun_change", args=[obj.run_id])
        return format_html('<a href="{}">{} run {}</a>', url, obj.run.version.definition.name, obj.run_id)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="duration")
    def duration(self, obj):
        return format_duration(obj.duration_s) or self.get_empty_value_display()

    @admin.display(description="Flower")
    def flower_link(self, obj):
        if not obj.task_id:
            return self.get_empty_value_display()
        url = flower_task_url(obj.task_id)
        return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, obj.task_id)


class PoolForm(forms.ModelForm):
    """A pool checked as ``pool_set`` checks it, so a name or slot count it refuses is a form error, not a 500."""

    slots = forms.IntegerField(min_value=1, max_value=services.POOL_MAX_SLOTS,
                               help_text=f"Steps that may hold the pool at once: 1 to {services.POOL_MAX_SLOTS}.")

    class Meta:
        model = Pool
        fields = ["name", "slots", "description"]

    def clean(self):
        cleaned = super().clean()
        name = self.instance.name if self.instance.pk else cleaned.get("name")  # read-only once the pool exists
        if name is not None and "slots" in cleaned:
            for field, problem in services.pool_problems(name=name, slots=cleaned["slots"]).items():
                self.add_error(field if field in self.fields else None, problem)
        return cleaned


@admin.register(Pool)
class PoolAdmin(SafeFilterMixin, admin.ModelAdmin):
    """Pools: set a pool's slots here (more slots start waiting steps at once); see what is taken and waiting."""

    form = PoolForm
    list_display = ("name", "slots", "used", "waiting", "description")
    search_fields = ("name",)
    fields = ("name", "slots", "description")

    @admin.display(description="slots taken")
    def used(self, obj):
        return selectors.pool_list(name=obj.name)[0]["used"]

    @admin.display(description="steps waiting")
    def waiting(self, obj):
        return selectors.pool_list(name=obj.name)[0]["waiting"]

    def get_readonly_fields(self, request, obj=None):
        """A pool's name is how steps name it: a changed name would be another pool."""
        return ("name",) if obj is not None else ()

    def has_delete_permission(self, request, obj=None):
        """A pool a step uses, waits for or may still take cannot be deleted (its steps would fail)."""
        if obj is not None and services.pool_delete_problem(obj.name):
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request, obj, form, change):
        pool, _ = services.pool_set(name=obj.name, slots=obj.slots, description=obj.description)
        obj.pk = pool.pk

    def delete_model(self, request, obj):
        services.pool_delete(name=obj.name)

    def delete_queryset(self, request, queryset):
        for pool in queryset:
            try:
                services.pool_delete(name=pool.name)
            except AgentsError as error:
                self.message_user(request, str(error), messages.ERROR)


@admin.register(WorkflowSignal)
class WorkflowSignalAdmin(TeamScopedMixin, ReadOnlyMixin, SafeFilterMixin, admin.ModelAdmin):
    """Signals sent to runs and approvers' decisions: who, when, why, and the step that took each."""

    list_display = ("run", "name", "decision", "sent_by", "created_at", "step_id", "consumed_at")
    list_filter = ("decision",)
    search_fields = ("name", "sent_by", "step_id")
    list_select_related = ("run",)
    fields = ("run", "name", "payload", "decision", "comment", "sent_by", "created_at", "step_id", "consumed_at")
    readonly_fields = fields


@admin.register(MapItem)
class MapItemAdmin(TeamScopedMixin, ReadOnlyMixin, SafeFilterMixin, admin.ModelAdmin):
    """The items of mapped steps: one row per item and run attempt, with its attempts and outcome."""

    list_display = ("run", "step_id", "run_attempt", "index", "status", "attempts", "process_deaths", "worker",
                    "finished_at")
    list_filter = ("status",)
    search_fields = ("step_id",)
    list_select_related = ("run",)
    fields = ("run", "step_id", "run_attempt", "index", "item", "status", "attempts", "process_deaths", "result",
              "error", "worker", "task_id", "started_at", "finished_at")
    readonly_fields = fields


@admin.register(WorkflowBackfill)
class WorkflowBackfillAdmin(TeamScopedMixin, ReadOnlyMixin, _RunActionsMixin, SafeFilterMixin, admin.ModelAdmin):
    """Backfills: how far each is, its runs, and why one ended with slots not started; stop one here."""

    list_display = ("id", "definition", "schedule", "range_from", "range_to", "state", "started", "runs",
                    "created_by", "created_at", "ended_reason")
    search_fields = ("definition__name", "schedule")
    list_select_related = ("definition",)
    fields = ("definition", "schedule", "range_from", "range_to", "state", "started", "runs", "max_parallel",
              "pending", "created_by", "created_at", "finished_at", "ended_reason")
    readonly_fields = fields
    actions = ("stop_backfills",)

    def get_queryset(self, request):
        # The list counts each backfill's runs in the same query.
        return super().get_queryset(request).annotate(
            run_count=Count("runs"), unfinished_runs=Count("runs", filter=~Q(runs__status__in=RUN_FINISHED)),
            failed_runs=Count("runs", filter=Q(runs__status=RunStatus.FAILED)))

    @admin.display(description="state")
    def state(self, obj):
        return selectors.backfill_state(obj, obj.unfinished_runs)

    @admin.display(description="slots started")
    def started(self, obj):
        return f"{obj.slots_total - len(obj.pending)} of {obj.slots_total}"

    @admin.display(description="runs")
    def runs(self, obj):
        url = reverse("admin:agents_workflowrun_changelist")
        return format_html('<a href="{}?backfill__id__exact={}">{} ({} unfinished, {} failed)</a>', url, obj.pk,
                           obj.run_count, obj.unfinished_runs, obj.failed_runs)

    @admin.action(description="Stop selected backfills (slots not started never start)", permissions=("start",))
    def stop_backfills(self, request, queryset):
        """Stop each selected backfill; one that has ended is refused with its reason."""
        self.apply_each(request, queryset, lambda backfill: services.backfill_stop(
            backfill_id=backfill.pk, by=request.user.get_username()),
            "%(count)d backfill stopped.", "%(count)d backfills stopped.")
