"""Orchestration tasks: agent tasks (sent to their agent type's queue), message delivery, event dispatch and the
sweeps (routed to ``default`` unless sent elsewhere)."""
from celery import shared_task
from celery.signals import worker_init

from agents.core.events import events_relay as events_relay_service
from agents.models import AgentTaskStatus
from agents.orchestration import agent_tasks, events, messages
from workers.hooks import HardLimitTask, killed_by

#: This process's worker name (``name@host``), once it is a worker: what a hook run in the worker's main process
#: (which has no task request of its own) knows its agents by.
_worker_hostname: list[str] = []


@worker_init.connect(weak=False)
def _worker_hostname_keep(sender, **kwargs) -> None:
    _worker_hostname[:] = [sender.hostname]


class BroadcastTask(HardLimitTask):
    """A broadcast's delivery: when the hard time limit kills its process, the worker (which runs this hook) fails
    the receipts its handlers had taken, instead of leaving them ``delivered`` until the worker stops."""

    def hard_limit_killed(self, task_id, args, kwargs, limit_s):
        if _worker_hostname:
            message_id, agent, attempt = _broadcast_arguments(*args, **kwargs)
            messages.receipts_fail_killed(message_id=message_id, hostname=_worker_hostname[0], agent=agent,
                                          attempt=attempt, limit_s=limit_s or 0.0)


class MessageDeliverTask(HardLimitTask):
    """A direct or typed message's delivery: when the hard time limit kills its process, the worker (which runs this
    hook) fails the message at once. Celery acknowledges a task killed so (``acks_late``), so nothing would deliver it
    again and it would stay ``delivered`` for ever."""

    def hard_limit_killed(self, task_id, args, kwargs, limit_s):
        if _worker_hostname:
            message_id = args[0] if args else kwargs["message_id"]
            messages.message_fail_killed(message_id=message_id, hostname=_worker_hostname[0], limit_s=limit_s or 0.0)


def _broadcast_arguments(message_id: int, agent: str | None = None, attempt: int = 1) -> tuple[int, str | None, int]:
    """``message_broadcast_deliver``'s arguments, defaults filled in."""
    return message_id, agent, attempt


class AgentTaskRunTask(HardLimitTask):
    """An agent task's run: when the hard time limit kills its process (an action that did not stop at its soft
    limit, ``timeout_s``), the worker (which runs this hook) ends the task timed out at once, instead of leaving it
    running until the reaper finds its claim lapsed. The attempt fences it: a later attempt is left alone."""

    def hard_limit_killed(self, task_id, args, kwargs, limit_s):
        task, attempt = (args[0], args[1]) if len(args) >= 2 else (kwargs["task_id"], kwargs["attempt"])
        agent_tasks.task_finish(task_id=task, attempt=attempt, status=AgentTaskStatus.TIMED_OUT,
                                error=f"{killed_by(limit_s)}: the action did not stop at its timeout_s")


@shared_task(name="workers.agents.agent_task_run", base=AgentTaskRunTask, bind=True, acks_on_failure_or_timeout=True)
def agent_task_run(self, task_id: int, attempt: int) -> dict | None:
    """Run attempt ``attempt`` of agent task ``task_id`` on this worker's agent of its type."""
    task = agent_tasks.task_run(task_id=task_id, attempt=attempt, hostname=self.request.hostname or "")
    return None if task is None else {"task_id": task.pk, "status": task.status}


@shared_task(name="workers.agents.message_deliver", base=MessageDeliverTask, bind=True,
             max_retries=messages.HANDLER_RETRIES)
def message_deliver(self, message_id: int) -> dict | None:
    """Handle a message on this worker; a failing handler is retried with backoff, then the message fails."""
    message, retry = messages.message_handle(message_id=message_id, hostname=self.request.hostname or "")
    if retry:
        raise self.retry(countdown=2 ** (message.attempts - 1))
    return None if message is None else {"message_id": message.pk, "status": message.status}


@shared_task(name="workers.agents.message_broadcast_deliver", base=BroadcastTask, bind=True)
def message_broadcast_deliver(self, message_id: int, agent: str | None = None, attempt: int = 1) -> list[dict]:
    """Handle a broadcast message once per live, enabled agent of this worker it is for (attempt ``attempt`` of each
    agent's handling; a failing one is sent again to this worker by the service, with backoff)."""
    receipts = messages.message_broadcast_handle(message_id=message_id, hostname=self.request.hostname or "",
                                                 agent=agent, attempt=attempt)
    return [{"agent": receipt.agent, "status": receipt.status} for receipt in receipts]


@shared_task(name="workers.agents.event_dispatch")
def event_dispatch(event_id: int) -> list[dict]:
    """Evaluate the triggers of one event."""
    return [{"trigger": firing.trigger.name, "status": firing.status}
            for firing in events.event_dispatch(event_id=event_id)]


@shared_task(name="workers.agents.events_relay")
def events_relay() -> int:
    """Send again events whose on-commit send was lost."""
    return events_relay_service()


@shared_task(name="workers.agents.agent_tasks_reap")
def agent_tasks_reap() -> int:
    """Time out agent tasks whose worker never reported, and send again the broadcasts whose handler's process died
    (their receipts' claims lapsed); how many of both."""
    return agent_tasks.tasks_reap() + messages.receipts_lapsed_resend()
