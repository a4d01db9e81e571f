"""API of the agent registry: list and show agents, enable and disable them."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import action

from agents.api.common import ApiViewSet, FilterSerializer, JSONObjectField
from agents.api.errors import service_errors
from agents.api.fields import ChoiceField
from agents.models import Agent, AgentStatus, AgentType
from agents.orchestration.registry import agents_set_enabled
from agents.orchestration.selectors import agent_get, agent_list, agent_to_dict


class AgentSerializer(serializers.Serializer):
    """An agent: what it is, where it runs, whether it is alive and given work."""

    name = serializers.CharField(help_text="'<worker hostname>:<agent type>'.")
    agent_type = ChoiceField(choices=AgentType.choices)
    status = ChoiceField(choices=AgentStatus.choices)
    enabled = serializers.BooleanField(help_text="Disabled agents keep their worker but are given no new work.")
    queues = serializers.ListField(child=serializers.CharField())
    capabilities = serializers.ListField(child=serializers.CharField(), help_text="Task names the agent can run.")
    config = JSONObjectField()
    hostname = serializers.CharField()
    pid = serializers.IntegerField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    last_heartbeat = serializers.DateTimeField(allow_null=True)
    status_changed_at = serializers.DateTimeField(allow_null=True)


class AgentFilterSerializer(FilterSerializer):
    """Filters of the agent list."""

    type = ChoiceField(choices=AgentType.choices, required=False)
    status = ChoiceField(choices=AgentStatus.choices, required=False)
    enabled = serializers.BooleanField(required=False, allow_null=True, default=None)


class AgentViewSet(ApiViewSet):
    """Agents the workers registered (one per agent type a worker consumes)."""

    queryset = Agent.objects.all()
    serializer_class = AgentSerializer
    filter_serializer_class = AgentFilterSerializer
    lookup_field = "name"
    noun = "agent"
    filter_lookups = {"type": "agent_type", "status": "status", "enabled": "enabled", "name": "name__icontains"}
    perms = {"list": "view_agent", "retrieve": "view_agent", "enable": "change_agent", "disable": "change_agent"}

    @extend_schema(parameters=[AgentFilterSerializer])
    def list(self, request):
        """Agents by type and name; filter by `type`, `status`, `enabled` and `name`."""
        return self.page(self.filtered(agent_list()), agent_to_dict)

    def retrieve(self, request, name: str):
        """One agent."""
        with service_errors():
            return self.show(agent_to_dict(agent_get(name=name)))

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def enable(self, request, name: str):
        """Give the agent new work again."""
        return self._set_enabled(name, True)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def disable(self, request, name: str):
        """Give the agent no new work (its worker keeps running)."""
        return self._set_enabled(name, False)

    def _set_enabled(self, name: str, enabled: bool):
        with service_errors():
            agent = agent_get(name=name)
            agents_set_enabled(names=[agent.name], enabled=enabled)
            return self.show(agent_to_dict(agent_get(name=name)))
