"""Services of the agent registry: register, heartbeat, mark offline, enable.

Every status write is a guarded ``UPDATE ... WHERE status IN (...)`` and, for
writes coming from a worker, fenced by that worker start's ``boot_id``: a late
heartbeat from a worker that has since restarted (or been replaced) changes nothing.
"""
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from agents.core.events import event_publish
from agents.core.hooks import workers_lost_notify
from agents.core.transitions import transition
from agents.exceptions import AgentNotFoundError, InvalidTransitionError
from agents.models import Agent, AgentStatus, EventType
from agents.models.registry import agent_statuses_into
from agents.orchestration.agent_tasks import tasks_requeue_lost
from agents.orchestration.messages import receipts_fail_lost

#: Statuses a worker's own heartbeat may set; ``error`` is left for an operator or service to clear.
_LIVE_STATUSES = (AgentStatus.OFFLINE, AgentStatus.IDLE, AgentStatus.BUSY)


def agent_name(*, hostname: str, agent_type: str) -> str:
    """Return the registry name of the ``agent_type`` agent hosted by worker ``hostname``."""
    return f"{hostname}:{agent_type}"


def agent_types_for_queues(queues: Iterable[str]) -> list[str]:
    """Return the agent types a worker consuming ``queues`` hosts, in a stable order."""
    consumed = set(queues)
    return [agent_type for agent_type in settings.AGENT_QUEUES if agent_type in consumed]


def agents_register(
    *,
    hostname: str,
    queues: Iterable[str],
    boot_id: str,
    pid: int | None = None,
    capabilities: dict[str, list[str]] | None = None,
) -> list[Agent]:
    """Register (or re-register after a restart) the agents a worker hosts; they start idle.

    A worker that restarts under the same name after it was killed (its last start never marked its agents
    offline) will never go silent for the offline sweep: what its last start was running, agent tasks and workflow
    steps, is re-queued here instead, and the broadcasts its agents had not answered are failed (a worker registers
    before it consumes, so none of it is this start's).
    """
    capabilities = capabilities or {}
    now = timezone.now()
    agents = []
    with transaction.atomic():
        killed = list(
            Agent.objects.filter(hostname=hostname).exclude(boot_id=boot_id).exclude(status=AgentStatus.OFFLINE)
            .values_list("name", flat=True)
        )
        if killed:
            tasks_requeue_lost(agent_names=killed)
            receipts_fail_lost(agent_names=killed)
            workers_lost_notify(hostnames=[hostname], reason="restarted without stopping")
        for agent_type in agent_types_for_queues(queues):
            agent, _ = Agent.objects.update_or_create(
                name=agent_name(hostname=hostname, agent_type=agent_type),
                defaults={
                    "agent_type": agent_type,
                    "queues": [agent_type],
                    "capabilities": sorted(capabilities.get(agent_type, [])),
                    "status": AgentStatus.IDLE,
                    "hostname": hostname,
                    "pid": pid,
                    "boot_id": boot_id,
                    "started_at": now,
                    "last_heartbeat": now,
                    "status_changed_at": now,
                },
            )
            agents.append(agent)
    return agents


def agents_heartbeat(*, hostname: str, boot_id: str, statuses: dict[str, str]) -> list[str]:
    """Record that a worker is alive and whether each of its agents is busy or idle.

    ``statuses`` maps agent type to ``idle`` or ``busy``. Returns the agent types
    whose row is missing or now belongs to another worker start, so the caller can
    register them again. An agent in ``error`` keeps that status.
    """
    now = timezone.now()
    lost = []
    for agent_type, status in statuses.items():
        updated = Agent.objects.filter(
            name=agent_name(hostname=hostname, agent_type=agent_type), boot_id=boot_id
        ).update(
            last_heartbeat=now,
            status=Case(When(status__in=_LIVE_STATUSES, then=Value(status)), default="status"),
            status_changed_at=Case(
                When(status__in=[s for s in _LIVE_STATUSES if s != status], then=Value(now)),
                default="status_changed_at",
            ),
        )
        if not updated:
            lost.append(agent_type)
    return lost


def agents_stop(*, hostname: str, boot_id: str) -> int:
    """Mark a stopping worker's agents offline; returns how many changed. The broadcasts whose retry waits for one of
    them are failed saying so: the offline sweep skips agents already offline, and the worker may never come back."""
    stopping = Agent.objects.filter(hostname=hostname, boot_id=boot_id,
                                    status__in=agent_statuses_into(AgentStatus.OFFLINE))
    names = list(stopping.values_list("name", flat=True))
    changed = stopping.update(status=AgentStatus.OFFLINE, status_changed_at=timezone.now())
    if names:
        receipts_fail_lost(agent_names=names, retries_only=True)
    return changed


def agents_mark_offline(*, silent_for_s: float | None = None) -> int:
    """Mark offline every agent not heard from for ``silent_for_s`` seconds; returns how many.

    Each publishes an ``agent.offline`` event, the tasks it was running are re-queued once (see
    ``tasks_requeue_lost``), the broadcasts it had not answered are failed saying so (``receipts_fail_lost``), and
    the workflow steps its worker was running are re-dispatched under a new attempt (see
    ``workflow_steps_requeue_lost``).
    """
    silent_for_s = settings.AGENTS_OFFLINE_AFTER_S if silent_for_s is None else silent_for_s
    now = timezone.now()
    cutoff = now - timedelta(seconds=silent_for_s)
    silent = (
        Agent.objects.filter(status__in=agent_statuses_into(AgentStatus.OFFLINE))
        .exclude(last_heartbeat__gte=cutoff)
    )
    gone = []
    hostnames = set()
    with transaction.atomic():
        for agent in silent.select_for_update(skip_locked=True):
            moved = transition(Agent.objects.filter(pk=agent.pk).exclude(last_heartbeat__gte=cutoff), [agent.status],
                               AgentStatus.OFFLINE, status_changed_at=now)
            if moved:
                gone.append(agent.name)
                hostnames.add(agent.hostname)
                event_publish(EventType.AGENT_OFFLINE, {
                    "agent": agent.name, "agent_type": agent.agent_type, "hostname": agent.hostname,
                    "last_heartbeat": agent.last_heartbeat.isoformat() if agent.last_heartbeat else None,
                })
        if gone:
            tasks_requeue_lost(agent_names=gone)
            receipts_fail_lost(agent_names=gone)
            workers_lost_notify(hostnames=hostnames)
    return len(gone)


def agent_transition(*, name: str, status: str) -> Agent:
    """Move agent ``name`` to ``status`` if its current status allows it."""
    if status not in AgentStatus.values:
        raise InvalidTransitionError(f"unknown agent status {status!r}; expected one of "
                                     f"{', '.join(AgentStatus.values)}")
    updated = transition(Agent.objects.filter(name=name), agent_statuses_into(status), status,
                         status_changed_at=timezone.now())
    if not updated:
        agent = Agent.objects.filter(name=name).first()
        if agent is None:
            raise AgentNotFoundError(f"no agent named {name!r}")
        raise InvalidTransitionError(f"agent {name!r} cannot go from {agent.status} to {status}")
    return Agent.objects.get(name=name)


def agents_set_enabled(*, names: Iterable[str], enabled: bool) -> int:
    """Enable or disable the named agents; returns how many changed."""
    return Agent.objects.filter(name__in=list(names)).exclude(enabled=enabled).update(enabled=enabled)
