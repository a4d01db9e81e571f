"""Tasks of the agent registry (routed to the ``default`` queue)."""
from celery import shared_task

from agents.orchestration.registry import agents_mark_offline as agents_mark_offline_service
from agents.core.tracing import trace_id_get


@shared_task(name="workers.registry.agents_mark_offline")
def agents_mark_offline() -> int:
    """Mark agents offline that have not heart-beaten within ``AGENTS_OFFLINE_AFTER_S``."""
    return agents_mark_offline_service()


@shared_task(name="workers.registry.agent_ping", bind=True)
def agent_ping(self) -> dict:
    """Answer with the worker and queue that ran this task; used by the demo and health checks."""
    return {
        "worker": self.request.hostname,
        "queue": (self.request.delivery_info or {}).get("routing_key"),
    }


@shared_task(name="workers.registry.trace_echo", bind=True)
def trace_echo(self) -> dict:
    """Answer with the trace id this task runs under and its task id; shows a trace reaches the workers."""
    return {"trace_id": trace_id_get(), "task_id": self.request.id}
