"""Read-side queries of the agent registry."""
from django.db.models import QuerySet

from agents.exceptions import AgentNotFoundError
from agents.models import Agent


def agent_list(*, agent_type: str | None = None, status: str | None = None) -> QuerySet[Agent]:
    """Return agents, optionally of one type and/or status, ordered by type and name."""
    agents = Agent.objects.all()
    if agent_type:
        agents = agents.filter(agent_type=agent_type)
    if status:
        agents = agents.filter(status=status)
    return agents.order_by("agent_type", "name")


def agent_get(*, name: str) -> Agent:
    """Return the agent called ``name`` or raise ``AgentNotFoundError``."""
    try:
        return Agent.objects.get(name=name)
    except Agent.DoesNotExist:
        raise AgentNotFoundError(f"no agent named {name!r}; `manage.py agents list` shows the known ones") from None


def agent_to_dict(agent: Agent) -> dict:
    """Return the JSON form of an agent, as the commands and the API print it."""
    return {
        "name": agent.name,
        "agent_type": agent.agent_type,
        "status": agent.status,
        "enabled": agent.enabled,
        "queues": agent.queues,
        "capabilities": agent.capabilities,
        "config": agent.config,
        "hostname": agent.hostname,
        "pid": agent.pid,
        "started_at": agent.started_at.isoformat() if agent.started_at else None,
        "last_heartbeat": agent.last_heartbeat.isoformat() if agent.last_heartbeat else None,
        "status_changed_at": agent.status_changed_at.isoformat() if agent.status_changed_at else None,
    }
