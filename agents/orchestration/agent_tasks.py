"""Agent tasks: work submitted for an agent type with a priority and a timeout, run by whichever agent of that
type takes it from its queue first.

A task waits in the broker (never in a polling loop) until an enabled agent of its type is up (a disabled agent's
worker stops consuming the type's queue, and sends back what it took meanwhile). Every status change is a
guarded UPDATE fenced by the task's attempt number, so a result from an attempt that was re-queued (its agent
went offline) is ignored. A delivery runs a task only once it has claimed it (``task_claim``), so a message the broker
hands out twice runs its action once; a task whose action kills its worker process every time fails after
``AGENTS_PROCESS_DEATHS`` such deaths instead of running forever. A task acts for the team that submitted
it: it runs that team's definitions only.
"""
import logging
from datetime import datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, Model, OuterRef, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from agents.core.actions import ActionContext, TaskKind, action_definitions, action_get, action_names, task_kinds_of
from agents.core.audit import audit_record
from agents.core.dispatch import task_send, tasks_revoke
from agents.core.teams import DEFINITION_MODELS, acting_for, definition_team_problem
from agents.core.tracing import trace_id_ensure
from agents.core.transitions import sources_of, transition
from agents.exceptions import AgentsError, AgentTaskError, BrokerUnavailableError
from agents.core.jsonable import iso, storable, storable_answer
from agents.core.deaths import DeathsCounted, process_deaths_error, process_deaths_max
from agents.core.redaction import secrets_redacted
from agents.models import (
    AGENT_TASK_FINISHED,
    AGENT_TASK_TRANSITIONS,
    Agent,
    AgentTask,
    AgentTaskStatus,
    Team,
)

logger = logging.getLogger(__name__)

#: Seconds past the lapse of a run's claim (past its timeout without a claim) after which the reaper times out a task
#: whose worker never reported and that no delivery took over: time for the delivery due when the claim lapses.
REAP_GRACE_S = 30.0
#: Seconds the hard time limit of a task's run is past its soft limit (``timeout_s``).
HARD_LIMIT_GRACE_S = 10.0
#: Seconds a delivery's claim on a task outlasts the task's hard time limit: the claim lapses only once the run
#: holding it can no longer be running (its worker died).
CLAIM_GRACE_S = 30.0


def task_timeout_max_s() -> float:
    """The longest ``timeout_s`` a task may have, in seconds: its claim (hard limit and grace) ends before the
    broker's visibility timeout (``AGENTS_VISIBILITY_TIMEOUT_S``), after which Redis hands out an unacknowledged
    message again, so no second delivery can find a task still running."""
    return float(settings.AGENTS_VISIBILITY_TIMEOUT_S) - HARD_LIMIT_GRACE_S - CLAIM_GRACE_S


def task_claim_s(timeout_s: float) -> float:
    """Seconds a delivery's claim on a task of ``timeout_s`` lasts: past the run's hard time limit."""
    return timeout_s + HARD_LIMIT_GRACE_S + CLAIM_GRACE_S


def _into(status: str) -> list[str]:
    return sources_of(AGENT_TASK_TRANSITIONS, status)


# ------------------------------------------------------------------------------------ broker and disabled agents

def agent_disabled(name: str) -> bool:
    """Whether the agent ``name`` is registered and disabled: it takes no new work (an unregistered one is not)."""
    return Agent.objects.filter(name=name, enabled=False).exists()


def disabled_handback_s() -> float:
    """Seconds after which work a disabled agent's worker took before it stopped consuming the type's queue is sent
    back to that queue: a tick of the worker's registry thread (``AGENTS_STATUS_INTERVAL_S``), at least 1 s, by when
    that worker no longer takes from the queue, so an enabled agent of the type takes it."""
    return max(1.0, float(settings.AGENTS_STATUS_INTERVAL_S))


# ------------------------------------------------------------------------------------ what a task does

#: The task that runs an attempt of an agent task on an agent of its type.
RUN_TASK = "workers.agents.agent_task_run"


def _kinds(agent_type: str) -> dict[str, TaskKind]:
    """The config kinds an agent type's task may be: those its area registered, and ``action`` (every type)."""
    return {**task_kinds_of(agent_type),
            "action": TaskKind(agent_type=agent_type, key="action", action="", param="", extra=("params",))}


def task_config_validate(agent_type: str, config: Any) -> list[str]:
    """Every problem with a task's agent type and config, naming the field."""
    if agent_type not in settings.AGENT_QUEUES:
        return [f"agent_type: {agent_type!r} is not an agent type ({', '.join(settings.AGENT_QUEUES)})"]
    if not isinstance(config, dict):
        return ["config: must be a JSON object"]
    kinds = _kinds(agent_type)
    given = [key for key in kinds if key in config]
    if len(given) != 1:
        return [f"config: give exactly one of {', '.join(kinds)} for a {agent_type} task"]
    kind = given[0]
    errors = [f"config: unknown key {key!r} for a {kind} task (allowed: {', '.join((kind, *kinds[kind].extra))})"
              for key in config if key not in (kind, *kinds[kind].extra)]
    if not isinstance(config[kind], str) or not config[kind]:
        errors.append(f"config.{kind}: must be a name")
    for key in kinds[kind].extra:
        if key in config and not isinstance(config[key], dict):
            errors.append(f"config.{key}: must be a JSON object")
    if kind == "action" and isinstance(config.get("action"), str):
        action = action_get(config["action"])
        if action is None:
            errors.append(f"config.action: unknown action {config['action']!r} (known: {', '.join(action_names())})")
        elif action.deferred:
            errors.append(f"config.action: {config['action']!r} finishes later (submit a workflow task instead)")
        elif isinstance(config.get("params", {}), dict):
            errors.extend(f"config.params: {problem}" for problem in action.validate(config.get("params") or {}))
    return errors


def task_definitions(agent_type: str, config: dict) -> list[tuple[str, type[Model], str]]:
    """The definitions a valid task config runs, as (field, model, name): the one its config key names
    (``{"workflow": name}``), or the one its action's params name where a task kind runs that action
    (``{"action": "workflow.start", "params": {"workflow": name}}``)."""
    kinds = _kinds(agent_type)
    key = next((key for key in kinds if key in config), None)
    if key is None:
        return []
    if key != "action":
        name = config[key]
        return [(f"config.{key}", DEFINITION_MODELS[key], name)] if key in DEFINITION_MODELS and isinstance(name, str) \
            else []
    params = config.get("params") or {}
    if not isinstance(params, dict):
        return []
    # An action task may run any type's action on any agent.
    return [(f"config.params.{param}", DEFINITION_MODELS[key], name)
            for param, (key, name) in action_definitions(config["action"], params).items() if key in DEFINITION_MODELS]


def task_definition_problems(team_id: int | None, agent_type: str, config: dict) -> list[str]:
    """Each definition a task config runs that does not exist, or (with ``team_id``) belongs to another team than
    ``team_id``, naming the field: a task naming one would be queued only to fail on its agent."""
    problems = []
    for field, model, name in task_definitions(agent_type, config):
        noun = model._meta.verbose_name
        if problem := definition_team_problem(model, name, team_id, what=f"{field}: {noun} {name!r}",
                                              missing=f"{field}: no {noun} named {name!r}"):
            problems.append(problem)
    return problems


def task_params_problems(agent_type: str, config: dict) -> list[str]:
    """What the definitions a valid task config runs refuse of the params it gives them (a run parameter its
    workflow or pipeline does not declare), naming the field: the run the task starts would refuse them."""
    kind = _task_kind(agent_type, config)
    name, params = _task_action(kind, config)
    action = action_get(name)
    if action is None:
        return []
    return [f"config.{_config_field(kind, param)}: {problem}" for param, problem in action.stored_problems(params)]


def _task_kind(agent_type: str, config: dict) -> TaskKind:
    """The kind of a valid task config: the one whose key it gives."""
    kinds = _kinds(agent_type)
    return kinds[next(key for key in kinds if key in config)]


def _task_action(kind: TaskKind, config: dict) -> tuple[str, dict]:
    """The action a valid task config of ``kind`` runs, and its params."""
    if kind.key == "action":
        return config["action"], config.get("params") or {}
    return kind.action, kind.params(config)


def _config_field(kind: TaskKind, param: str) -> str:
    """Where in a task config of ``kind`` its action's parameter ``param`` is given."""
    if kind.key == "action":
        return f"params.{param}"
    return kind.key if param == kind.param else param


# ------------------------------------------------------------------------------------ submitting


def task_submit(*, agent_type: str, config: dict, priority: int = 5, timeout_s: float = 300.0,
                submitted_by: str = "", team: Team | None = None) -> AgentTask:
    """Store a task and send it, on commit, to the queue of ``agent_type`` with broker priority ``priority``.

    With ``team`` the task acts for that team: a definition of another team named in its config is refused, and
    it runs as that team (``acting_for``). Without one (a command, a superuser) it acts for no team in particular.
    A run parameter the workflow or pipeline it starts does not declare is refused, as starting that run would."""
    errors = task_config_validate(agent_type, config)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        errors.append(f"priority: must be a whole number from 0 (highest) to 9, got {priority!r}")
    most = task_timeout_max_s()
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= most:
        errors.append(f"timeout_s: must be a number of seconds above 0 and at most {most:g} (the broker's visibility "
                      f"timeout, AGENTS_VISIBILITY_TIMEOUT_S, less {HARD_LIMIT_GRACE_S + CLAIM_GRACE_S:g} s), "
                      f"got {timeout_s!r}")
    if not errors:
        errors.extend(task_definition_problems(team.pk if team is not None else None, agent_type, config))
    if not errors:
        errors.extend(task_params_problems(agent_type, config))
    if errors:
        raise AgentTaskError.of(errors)
    with transaction.atomic():
        task = AgentTask.objects.create(
            agent_type=agent_type, config=config, priority=priority, timeout_s=float(timeout_s),
            submitted_by=submitted_by, trace_id=trace_id_ensure(), team=team,
        )
        audit_record("agent_task.submit", "agent_task", task.pk, f"submitted task #{task.pk} to a {agent_type} agent",
                     agent_type=agent_type, config=config, priority=priority, timeout_s=float(timeout_s))
        transaction.on_commit(lambda: _send(task.pk, attempt=1))
    return task


def _send(task_id: int, *, attempt: int, countdown: float | None = None, eta: datetime | None = None) -> None:
    """Mark the task queued (unless a delivery runs it) and hand it to the broker on its agent type's queue, due
    ``countdown`` seconds from now or at ``eta``."""
    task = AgentTask.objects.get(pk=task_id)
    celery_id = f"agent-task-{task.pk}-{attempt}"
    transition(AgentTask.objects.filter(pk=task.pk, attempt=attempt), [AgentTaskStatus.PENDING, AgentTaskStatus.QUEUED],
               AgentTaskStatus.QUEUED, queued_at=timezone.now(), celery_task_id=celery_id)
    try:
        task_send(
            RUN_TASK, task.pk, attempt, task_id=celery_id, queue=task.agent_type, priority=task.priority,
            soft_time_limit=task.timeout_s, time_limit=task.timeout_s + HARD_LIMIT_GRACE_S, countdown=countdown,
            eta=eta, what=f"agent task #{task.pk}",
        )
    except BrokerUnavailableError as error:  # say so on the task instead of leaving it queued
        transition(AgentTask.objects.filter(pk=task.pk, attempt=attempt), [AgentTaskStatus.QUEUED],
                   AgentTaskStatus.FAILED, error=f"could not send to the broker: {error.reason}",
                   finished_at=timezone.now())
        raise


# ------------------------------------------------------------------------------------ running


def task_claim(*, task_id: int, attempt: int, hostname: str) -> AgentTask | None:
    """Take a task for one run by the agent of its type on worker ``hostname``: queued, or running under a claim
    that has lapsed (the worker that held it died). None when it is not this delivery's to run: another delivery of
    the same attempt runs it now, or it was re-queued, cancelled or finished. The claim lasts past the run's hard
    time limit (``task_claim_s``); what the run writes after its action is fenced by it (``claimed_until``).

    Taking over a run (from ``running``) counts a death of its worker process (``process_deaths``); the takeover that
    brings them to ``AGENTS_PROCESS_DEATHS`` keeps the agent and start of the run that died last, for the
    failure ``task_run`` then records instead of running the action again."""
    task = AgentTask.objects.filter(pk=task_id).first()
    if task is None:
        return None
    name = f"{hostname}:{task.agent_type}"
    agent = Agent.objects.filter(name=name).first()
    now = timezone.now()
    free = Q(status=AgentTaskStatus.QUEUED) | Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
    counted = DeathsCounted(taken_over=Q(status=AgentTaskStatus.RUNNING))
    claimed = transition(AgentTask.objects.filter(free, pk=task_id, attempt=attempt), _into(AgentTaskStatus.RUNNING),
                         AgentTaskStatus.RUNNING, process_deaths=counted.deaths,
                         started_at=counted.unless_giving_up("started_at", now),
                         agent_id=counted.unless_giving_up("agent_id", agent.pk if agent else None),
                         agent_name=counted.unless_giving_up("agent_name", name),
                         claimed_until=now + timedelta(seconds=task_claim_s(task.timeout_s)))
    if not claimed:
        return None
    task.refresh_from_db()
    return task


def task_execute(*, task: AgentTask) -> Any:
    """Run what the task's config says, as the task's team; return its JSON result (raises what it raises).

    A task of a team runs only that team's definitions: the ones its config names are checked again here, and the
    action runs inside ``acting_for`` the team, so what it starts or reads (a workflow, a rule set, a secret) must be
    the team's too."""
    with acting_for(task.team_id):
        problems = task_definition_problems(task.team_id, task.agent_type, task.config) if task.team_id else []
        if problems:
            raise AgentTaskError.of(problems)
        return _action_call(task)


def _action_call(task: AgentTask) -> Any:
    name, params = _task_action(_task_kind(task.agent_type, task.config), task.config)
    action = action_get(name)
    if action is None:
        raise AgentTaskError(f"no action {name!r} is registered on this worker")
    context = ActionContext(run_id=0, step_id=f"task-{task.pk}", attempt=task.attempt, workflow=f"task:{task.pk}",
                            run_params=params)
    return action.call(context, params)


def task_finish(*, task_id: int, attempt: int, status: str, result: Any = None, error: str = "",
                claimed_until=None) -> bool:
    """Record the outcome of attempt ``attempt`` (of the run whose claim ends at ``claimed_until``, when given);
    ignored (False) when the task has moved on since, or another delivery has taken it over."""
    rows = AgentTask.objects.filter(pk=task_id, attempt=attempt)
    if claimed_until is not None:
        rows = rows.filter(claimed_until=claimed_until)
    return transition(rows, _into(status), status, result=result, error=storable(secrets_redacted(error)[:5000]),
                      finished_at=timezone.now(), claimed_until=None)


def task_run(*, task_id: int, attempt: int, hostname: str) -> AgentTask | None:
    """Claim, execute and record one attempt of a task (the body of the Celery task); None when this delivery may
    not run it (``task_claim``): a second delivery of a task still running runs nothing and sends itself again for
    when the claim lapses (``_claim_lapse_await``), and a queued task that reached a disabled agent is sent back to
    its type's queue for an enabled one (``disabled_handback_s``). A task whose worker process died
    ``AGENTS_PROCESS_DEATHS`` times running it is failed saying so, its action not run again."""
    # One query: is the task still queued, and this worker's agent of its type disabled?
    disabled_here = Agent.objects.filter(enabled=False, name=Concat(Value(f"{hostname}:"), OuterRef("agent_type")))
    handed_back = (AgentTask.objects.filter(pk=task_id, attempt=attempt, status=AgentTaskStatus.QUEUED)
                   .filter(Exists(disabled_here)).values_list("agent_type", flat=True).first())
    if handed_back is not None:
        # Taken from the type's queue before this worker stopped consuming it: back to the queue, for an enabled agent.
        logger.info("agent task %s attempt %s reached the disabled agent %s:%s; sent back to the %s queue", task_id,
                    attempt, hostname, handed_back, handed_back)
        _send(task_id, attempt=attempt, countdown=disabled_handback_s())
        return None
    task = task_claim(task_id=task_id, attempt=attempt, hostname=hostname)
    if task is None:
        _claim_lapse_await(task_id=task_id, attempt=attempt)
        return None
    ours = {"task_id": task_id, "attempt": attempt, "claimed_until": task.claimed_until}  # the fence of this claim
    if task.process_deaths >= process_deaths_max():
        # Its worker process died that many times running the action (out of memory, a crash in native code every
        # time): running it again would only kill another. Fenced by this claim: of two such deliveries at once,
        # only one claimed it, and a second run of this changes nothing.
        error = process_deaths_error(task.process_deaths, doing="running", last_on=f"agent {task.agent_name}")
        logger.warning("agent task %s attempt %s failed: %s", task_id, attempt, error)
        task_finish(**ours, status=AgentTaskStatus.FAILED, error=error)
        task.refresh_from_db()
        return task
    try:
        result = task_execute(task=task)
    except SoftTimeLimitExceeded:
        task_finish(**ours, status=AgentTaskStatus.TIMED_OUT, error=f"timed out after {task.timeout_s:g} s")
    except Exception as error:  # whatever the action raised fails the task; it must not stay 'running'
        detail = str(error) if isinstance(error, AgentsError) else f"{type(error).__name__}: {error}"
        task_finish(**ours, status=AgentTaskStatus.FAILED, error=detail)
    else:  # a NUL as U+FFFD, what JSON cannot hold (a set) as its repr; what a server echoed of a secret redacted
        task_finish(**ours, status=AgentTaskStatus.COMPLETED, result=secrets_redacted(storable_answer(result)))
    task.refresh_from_db()
    return task


def _claim_lapse_await(*, task_id: int, attempt: int) -> None:
    """What a delivery that could not claim a task does: while another delivery's claim on the same attempt holds,
    send the task again for when that claim lapses, when it finds the task finished and stops, or, if the run holding
    the claim died with its pool process (the broker hands its message out again at once, while the claim still
    holds), takes it over and runs it. A task re-queued, cancelled or finished is left alone."""
    claimed_until = (AgentTask.objects.filter(pk=task_id, attempt=attempt, status=AgentTaskStatus.RUNNING)
                     .values_list("claimed_until", flat=True).first())
    if claimed_until is None:
        logger.info("agent task %s attempt %s is not this delivery's to run (re-queued or finished); ignored",
                    task_id, attempt)
        return
    logger.info("agent task %s attempt %s is being run by another delivery; looking again at %s", task_id, attempt,
                claimed_until)
    _send(task_id, attempt=attempt, eta=claimed_until)


# ------------------------------------------------------------------------------------ operators and sweeps


def task_cancel(*, task_id: int) -> AgentTask:
    """Cancel a task that has not finished; a running one is also stopped on its worker."""
    task = AgentTask.objects.filter(pk=task_id).first()
    if task is None:
        raise AgentTaskError(f"no agent task #{task_id}")
    moved = transition(AgentTask.objects.filter(pk=task_id), _into(AgentTaskStatus.CANCELLED),
                       AgentTaskStatus.CANCELLED, finished_at=timezone.now(), error="cancelled by an operator")
    if not moved:
        task.refresh_from_db()
        raise AgentTaskError(f"agent task #{task_id} is already {task.status}")
    audit_record("agent_task.cancel", "agent_task", task_id, f"cancelled task #{task_id}", status_was=task.status)
    if task.celery_task_id:
        tasks_revoke([task.celery_task_id], terminate=task.status == AgentTaskStatus.RUNNING,
                     what=f"agent task #{task_id}")
    task.refresh_from_db()
    return task


def tasks_requeue_lost(*, agent_names: list[str]) -> dict[str, int]:
    """Tasks running on agents that went offline: re-queue each once under a new attempt (a late result of the
    lost attempt is then ignored; its worker's process deaths count from 0 again); fail one that was already
    re-queued."""
    counts = {"requeued": 0, "failed": 0}
    for task in AgentTask.objects.filter(status=AgentTaskStatus.RUNNING, agent_name__in=agent_names):
        if task.requeues >= 1:
            if task_finish(task_id=task.pk, attempt=task.attempt, status=AgentTaskStatus.FAILED,
                           error=f"agent {task.agent_name} went offline again; not re-queued a second time"):
                counts["failed"] += 1
            continue
        with transaction.atomic():
            moved = transition(
                AgentTask.objects.filter(pk=task.pk, attempt=task.attempt), [AgentTaskStatus.RUNNING],
                AgentTaskStatus.QUEUED, attempt=F("attempt") + 1, requeues=F("requeues") + 1, agent=None,
                process_deaths=0, claimed_until=None, queued_at=timezone.now(),
                error=f"agent {task.agent_name} went offline; re-queued",
            )
            if moved:
                counts["requeued"] += 1
                next_attempt = task.attempt + 1
                # Each send on its own: one the broker refuses must not drop the sends (and the sweep's other
                # on-commit work) after it, which would leave their tasks queued with nothing in the broker.
                transaction.on_commit(lambda pk=task.pk, attempt=next_attempt: _requeued_send(pk, attempt=attempt),
                                      robust=True)
    return counts


def _requeued_send(task_id: int, *, attempt: int) -> None:
    """Send a re-queued task; when the broker cannot be reached the task is failed saying so (``_send``), as a
    submitted one is, and the sweep goes on with the others: nothing sends a queued task later."""
    try:
        _send(task_id, attempt=attempt)
    except BrokerUnavailableError as error:
        logger.warning("re-queued agent task #%s failed: %s", task_id, error)


def tasks_reap(*, now=None) -> int:
    """Time out running tasks whose worker never reported (the hard time limit killed the run, or its worker died)
    and that no delivery took over: ``REAP_GRACE_S`` after the run's claim lapsed, so the delivery sent for that
    moment (``_claim_lapse_await``) runs it first; a run without a claim, ``REAP_GRACE_S`` past its timeout. Each is
    fenced by the claim it read, so a run taken over meanwhile is left alone."""
    now = now or timezone.now()
    grace = timedelta(seconds=REAP_GRACE_S)
    reaped = 0
    stale = Q(claimed_until__lte=now - grace) | Q(claimed_until__isnull=True)
    for task in AgentTask.objects.filter(stale, status=AgentTaskStatus.RUNNING, started_at__isnull=False):
        due = (task.claimed_until or task.started_at + timedelta(seconds=task.timeout_s)) + grace
        if due > now:
            continue
        rows = AgentTask.objects.filter(pk=task.pk, attempt=task.attempt, claimed_until=task.claimed_until)
        reaped += transition(rows, [AgentTaskStatus.RUNNING], AgentTaskStatus.TIMED_OUT, finished_at=now,
                             claimed_until=None,
                             error=f"no result {(due - task.started_at).total_seconds():g} s after it started")
    return reaped


def task_get(*, task_id: int) -> AgentTask:
    """The task ``task_id``; ``AgentTaskError`` if there is none."""
    task = AgentTask.objects.select_related("agent", "team__group").filter(pk=task_id).first()
    if task is None:
        raise AgentTaskError(f"no agent task #{task_id}")
    return task


def task_json(task: AgentTask) -> dict:
    """A task as the command and the API show it."""
    return {
        "task_id": task.pk, "agent_type": task.agent_type, "status": task.status, "priority": task.priority,
        "agent": task.agent_name or None, "attempt": task.attempt, "process_deaths": task.process_deaths,
        "result": task.result, "error": task.error,
        "config": task.config, "timeout_s": task.timeout_s, "trace_id": task.trace_id,
        "team": task.team.name if task.team_id else None,
        "created_at": iso(task.created_at), "started_at": iso(task.started_at), "finished_at": iso(task.finished_at),
        "finished": task.status in AGENT_TASK_FINISHED,
    }
