"""Admin for the agent registry: agents with their live status, the task each is running and its recent tasks (of
the user's teams only: agents are shared, their tasks belong to teams)."""
from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import ngettext

from agents.admin.common import SafeFilterMixin, status_badge
from agents.admin.orchestration import TASK_STATUS_COLOURS
from agents.admin.workflows import format_duration
from agents.core.teams import team_scoped
from agents.models import Agent, AgentTask, AgentTaskStatus
from agents.orchestration.registry import agents_set_enabled

#: The workflow badge colour (``wf-<status>`` CSS class) each agent status is drawn in.
AGENT_STATUS_COLOURS = {"idle": "succeeded", "busy": "running", "error": "failed", "offline": "skipped"}
#: Tasks listed on an agent's page, newest first; the rest are in the task list.
RECENT_TASKS_SHOWN = 20


@admin.register(Agent)
class AgentAdmin(SafeFilterMixin, admin.ModelAdmin):
    """Agents as workers registered them; operators enable or disable them."""

    list_display = ("name", "agent_type", "status_label", "current_task", "enabled", "hostname", "last_heartbeat",
                    "status_changed_at")
    list_filter = ("agent_type", "status", "enabled")
    search_fields = ("name", "hostname")
    ordering = ("agent_type", "name")
    readonly_fields = (
        "status",
        "hostname",
        "pid",
        "boot_id",
        "started_at",
        "last_heartbeat",
        "status_changed_at",
        "created_at",
        "updated_at",
    )
    actions = ("enable_agents", "disable_agents")
    change_list_template = "admin/agents/orchestration/change_list.html"
    change_form_template = "admin/agents/agent/change_form.html"

    def has_add_permission(self, request):
        return False  # workers register their agents; one made here would be no worker's

    def get_readonly_fields(self, request, obj=None):
        # Agents are shared by every team and described by their worker (name, type, queues, capabilities, config):
        # here an operator enables or disables one. Edited by hand, a queue list could hold anything ("abc" was
        # stored as a text and read back as three queues; a NUL failed the save).
        return tuple(field.name for field in self.model._meta.fields if field.name not in ("id", "enabled"))

    def save_model(self, request, obj, form, change):
        # Through the registry service, writing the flag only: a whole save would write the status and heartbeat it
        # read back over a heartbeat the worker wrote meanwhile.
        agents_set_enabled(names=[obj.name], enabled=obj.enabled)

    def get_queryset(self, request):
        # The task each agent is running, as subqueries: one query for the whole page. Agents are shared, their
        # tasks are not: only a task of the user's teams is shown (another team's is left out, as if none ran).
        running = team_scoped(AgentTask.objects.filter(agent=OuterRef("pk"), status=AgentTaskStatus.RUNNING),
                              request.user).order_by("-started_at")
        return super().get_queryset(request).annotate(
            running_task_id=Subquery(running.values("pk")[:1]),
            running_task_started_at=Subquery(running.values("started_at")[:1]),
        )

    @admin.display(description="status", ordering="status")
    def status_label(self, obj):
        return status_badge(AGENT_STATUS_COLOURS.get(obj.status, obj.status), obj.get_status_display())

    @admin.display(description="current task")
    def current_task(self, obj):
        task_id = getattr(obj, "running_task_id", None)
        if task_id is None:
            return self.get_empty_value_display()
        url = reverse("admin:agents_agenttask_change", args=[task_id])
        started = obj.running_task_started_at
        if started is None:
            return format_html('<a href="{}">#{}</a>', url, task_id)
        running_s = max(int((timezone.now() - started).total_seconds()), 0)
        return format_html('<a href="{}">#{}</a> for {}', url, task_id, format_duration(running_s, precise=False))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            tasks = team_scoped(AgentTask.objects.filter(agent=obj), request.user)  # the user's teams' only
            context.update(
                recent_tasks=[
                    {"task": task, "badge": status_badge(TASK_STATUS_COLOURS.get(task.status, task.status),
                                                         task.get_status_display())}
                    for task in tasks.order_by("-created_at", "-pk")[:RECENT_TASKS_SHOWN]
                ],
                task_total=tasks.count(),
                tasks_url=reverse("admin:agents_agenttask_changelist") + f"?agent__id__exact={obj.pk}",
            )
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def has_operate_permission(self, request) -> bool:
        """Enabling and disabling change an agent: the user needs the permission to change agents."""
        return request.user.has_perm("agents.change_agent")

    @admin.action(description="Enable selected agents", permissions=("operate",))
    def enable_agents(self, request, queryset):
        """Enable the selected agents through the registry service."""
        names = queryset.values_list("name", flat=True)
        self._report(request, agents_set_enabled(names=names, enabled=True), "enabled")

    @admin.action(description="Disable selected agents", permissions=("operate",))
    def disable_agents(self, request, queryset):
        """Disable the selected agents through the registry service."""
        names = queryset.values_list("name", flat=True)
        self._report(request, agents_set_enabled(names=names, enabled=False), "disabled")

    def _report(self, request, count: int, verb: str) -> None:
        message = ngettext("%(count)d agent %(verb)s.", "%(count)d agents %(verb)s.", count) % {
            "count": count,
            "verb": verb,
        }
        self.message_user(request, message, messages.SUCCESS)
