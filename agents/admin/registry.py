"""Admin for the agent registry."""
from django.contrib import admin, messages
from django.utils.translation import ngettext

from agents.models import Agent
from agents.orchestration.registry import agents_set_enabled


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    """Agents as workers registered them; operators enable or disable them."""

    list_display = ("name", "agent_type", "status", "enabled", "hostname", "last_heartbeat", "status_changed_at")
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

    @admin.action(description="Enable selected agents")
    def enable_agents(self, request, queryset):
        """Enable the selected agents through the registry service."""
        self._report(request, agents_set_enabled(names=queryset.values_list("name", flat=True), enabled=True), "enabled")

    @admin.action(description="Disable selected agents")
    def disable_agents(self, request, queryset):
        """Disable the selected agents through the registry service."""
        self._report(request, agents_set_enabled(names=queryset.values_list("name", flat=True), enabled=False), "disabled")

    def _report(self, request, count: int, verb: str) -> None:
        message = ngettext("%(count)d agent %(verb)s.", "%(count)d agents %(verb)s.", count) % {
            "count": count,
            "verb": verb,
        }
        self.message_user(request, message, messages.SUCCESS)
