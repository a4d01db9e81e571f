"""Workflow services: load definitions as versions, start, cancel and re-run runs."""
import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, Min, OuterRef, Q, Subquery
from django.utils import timezone

from agents.core.actions import action_definitions, action_get
from agents.core.audit import audit_record
from agents.core.events import event_publish
from agents.core.jsonable import UNSTORABLE
from agents.core.params import FROM_EVENT, params_undeclared
from agents.core.dispatch import task_send_on_commit, tasks_revoke
from agents.core.teams import DEFINITION_MODELS, definition_team_problem, owned_get_or_create, same_team, team_acting
from agents.core.definitions import DefinitionTextError, definition_read_file, is_name, name_problem
from agents.exceptions import (
    BrokerUnavailableError,
    NotAllowedError,
    TeamError,
    WorkflowNotFoundError,
    WorkflowRunStateError,
    WorkflowSpecError,
)
from agents.core.tracing import trace_id_ensure
from agents.core.transitions import transition
from agents.core.times import utc_in_calendar
from agents.models import (
    EventType,
    MapItem,
    MapItemStatus,
    Pool,
    RunStatus,
    SignalDecision,
    StepRun,
    StepStatus,
    Team,
    WorkflowBackfill,
    WorkflowDefinition,
    WorkflowRun,
    WorkflowSignal,
    WorkflowVersion,
    default_team_found,
)
from agents.models.workflows import RUN_ACTIVE, RUN_FINISHED, STEP_FINISHED
from agents.workflows import engine, schedules, templates, waits
from agents.workflows.spec import (
    LOGICAL_TIME_PARAM,
    SUBWORKFLOW_ACTIONS,
    WAIT_ACTIONS,
    signal_of,
    subworkflow_targets,
    workflow_spec_load_text,
    workflow_spec_parse,
    WorkflowSpec,
)

logger = logging.getLogger(__name__)


def workflow_validate_text(*, text: str, source: str = "definition", team: Team | None = None) -> WorkflowSpec:
    """Parse and validate a definition's text, and the workflows it starts against those stored; raise
    ``WorkflowSpecError`` listing every problem. What another team's definitions declare is not asked (loading
    into ``team``, default the default team, or the workflow's own team: a load refuses naming another's)."""
    spec = workflow_spec_parse(workflow_spec_load_text(text, source=source), cron_problems=schedules.cron_problems)
    owner = WorkflowDefinition.objects.filter(name=spec.name).values_list("team_id", flat=True).first()
    team_id = owner if owner is not None else team.pk if team is not None else default_team_found()
    errors = (_subworkflow_problems(spec) + _stored_problems(spec, team_id) + _pool_problems(spec)
              + _pool_wait_problems(spec, team_id))
    if errors:
        raise WorkflowSpecError(errors)
    return spec


def _stored_problems(spec: WorkflowSpec, team_id: int) -> list[str]:
    """What the definitions a step's params name refuse of them, as running its action would (a run parameter its
    sub-workflow or pipeline does not declare: ``Action.stored_problems``), naming the step and the parameter. Only
    the literal params are asked: a top-level value holding a template is known when the run gets there (a mapping
    holding one keeps its literal keys), and a step whose literal params do not fit its action is not asked, nor
    about a definition of another team than ``team_id``."""
    problems = []
    for step in spec.steps.values():
        action = action_get(step.action)
        templated = [key for key, value in step.params.items()
                     if isinstance(value, str) and templates.is_templated(value)]
        literal = {key: value for key, value in step.params.items() if key not in templated}
        if action is None or action.check is None or action.validate({**literal, **dict.fromkeys(templated,
                                                                                                FROM_EVENT)}):
            continue
        named = [(DEFINITION_MODELS[key], name) for key, name in action_definitions(action.name, literal).values()
                 if key in DEFINITION_MODELS]
        named += [(WorkflowDefinition, target) for _, target in subworkflow_targets([step])]
        if any(definition_team_problem(model, name, team_id, what="it") for model, name in named):
            continue  # refused by the load, naming the team; what it declares is its own team's to see
        # A templated value is given, its value None: known when the run gets there (as a trigger's '$.' path).
        problems.extend(f"step {step.id!r}: params.{param}: {problem}"
                        for param, problem in action.stored_problems({**literal, **dict.fromkeys(templated)}))
    return problems


def _pool_wait_problems(spec: WorkflowSpec, team_id: int) -> list[str]:
    """A step that holds slots of a pool while it waits for its sub-workflow, whose step (or a step of a workflow
    that one waits for, newest versions of team ``team_id``'s workflows) takes slots of the same pool, when the pool
    has fewer slots than they need together: the child would wait forever for the slots its parent holds."""
    slots_of: dict[str, int | None] = {}

    def slots(pool: str) -> int | None:
        if pool not in slots_of:
            slots_of[pool] = Pool.objects.filter(name=pool).values_list("slots", flat=True).first()
        return slots_of[pool]

    problems = []
    for step in spec.steps.values():
        target = _waited_for(step.action, step.params)
        if step.pool is None or target is None:
            continue
        pending, seen = [([target], {step.pool: step.pool_slots})], {spec.name, target}
        while pending:
            path, held = pending.pop()
            version = (WorkflowVersion.objects.filter(definition__name=path[-1], definition__team_id=team_id)
                       .order_by("-number").values_list("spec", flat=True).first())
            for child in (version or {}).get("steps") or ():
                pool, taken = child.get("pool"), child.get("pool_slots", 1)
                if pool in held and slots(pool) is not None and held[pool] + taken > slots(pool):
                    problems.append(
                        f"step {step.id!r}: takes {_slots(held[pool])} of pool {pool!r} while it waits for workflow "
                        f"{' -> '.join(map(repr, path))}, whose step {child.get('id')!r} takes {taken} more: the pool "
                        f"has {slots(pool)}, fewer than the {held[pool] + taken} they need together, so the child "
                        f"would wait forever for the slots its parent holds")
                grandchild = _waited_for(child.get("action"), child.get("params") or {})
                if grandchild is not None and grandchild not in seen:
                    seen.add(grandchild)
                    more = {pool: held.get(pool, 0) + taken} if pool else {}
                    pending.append(([*path, grandchild], held | more))
    return problems


def _waited_for(action: str | None, params: dict) -> str | None:
    """The workflow a step runs and waits for (an action that finishes later, ``workflow.run``), named literally;
    None for other steps."""
    key = SUBWORKFLOW_ACTIONS.get(action)
    found = action_get(action) if key else None
    target = params.get(key) if found is not None and found.deferred else None
    return target if isinstance(target, str) and not templates.is_templated(target) else None


def _slots(count: int) -> str:
    return f"{count} slot" + ("" if count == 1 else "s")


def _subworkflow_problems(spec: WorkflowSpec) -> list[str]:
    """A sub-workflow that does not exist, or that leads back to ``spec`` through the newest versions of the
    workflows it starts (indirect recursion), each naming its step."""
    errors = []
    for step_id, target in subworkflow_targets(spec.steps.values()):
        if target == spec.name:
            continue  # refused by the parser already
        if not WorkflowDefinition.objects.filter(name=target).exists():
            errors.append(f"step {step_id!r}: runs workflow {target!r}, which does not exist; load it first")
            continue
        path = _path_back_to(spec.name, start=target)
        if path:
            errors.append(f"step {step_id!r}: runs workflow {target!r}, which runs this one again "
                          f"({' -> '.join([spec.name, *path])}); recursion is not allowed")
    return errors


def _pool_problems(spec: WorkflowSpec) -> list[str]:
    """Steps taking slots of a pool that does not exist, or more slots than it has."""
    pools = dict(Pool.objects.filter(name__in={step.pool for step in spec.steps.values() if step.pool})
                 .values_list("name", "slots"))
    problems = []
    for step in spec.steps.values():
        if step.pool is not None and step.pool not in pools:
            problems.append(f"step {step.id!r}: pool {step.pool!r} does not exist; create it first (manage.py pools "
                            f"set {step.pool} --slots N)")
        elif step.pool is not None and step.pool_slots > pools[step.pool]:
            problems.append(f"step {step.id!r}: pool_slots {step.pool_slots} is more than pool {step.pool!r} has "
                            f"({pools[step.pool]})")
    return problems


#: Most slots a pool may have.
POOL_MAX_SLOTS = 1_000_000


def pool_problems(*, name: str, slots) -> dict[str, str]:
    """Why ``pool_set`` refuses a pool, by field (``name``, ``slots``); empty when it takes it. An existing pool keeps
    at least the slots a step of a workflow that may still run takes of it (``pool_takers``)."""
    problems = {}
    if not is_name(name) or len(name) > 100:
        problems["name"] = name_problem(name)
    if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= POOL_MAX_SLOTS:
        problems["slots"] = f"must be a whole number from 1 to {POOL_MAX_SLOTS}, got {slots!r}"
    elif "name" not in problems and (more := [taker for taker in pool_takers(name) if taker[2] > slots]):
        most = max(taken for _, _, taken in more)
        problems["slots"] = (f"{_takers_text(more)} of pool {name!r} (a step that may still run); give it at least "
                             f"{most}")
    return problems


def pool_takers(name: str) -> list[tuple[str, str, int]]:
    """(workflow, step, slots) for each step that takes slots of pool ``name`` in a version that may still run: the
    newest version of each workflow (what a new run starts) and the version of each run not finished."""
    newest = WorkflowVersion.objects.filter(definition=OuterRef("definition")).order_by("-number").values("number")[:1]
    unfinished = WorkflowRun.objects.exclude(status__in=RUN_FINISHED).values("version_id")
    versions = (WorkflowVersion.objects.filter(Q(number=Subquery(newest)) | Q(pk__in=unfinished))
                .order_by("definition__name", "number").values_list("definition__name", "spec"))
    takers: dict[tuple[str, str, int], None] = {}
    for workflow, spec in versions:
        for step in (spec or {}).get("steps") or ():
            if isinstance(step, dict) and step.get("pool") == name:
                takers[workflow, str(step.get("id")), step.get("pool_slots", 1)] = None
    return list(takers)


def _takers_text(takers: list[tuple[str, str, int]]) -> str:
    shown = ", ".join(f"workflow {workflow!r} step {step!r} takes {slots}" for workflow, step, slots in takers[:3])
    return shown + (f" (and {len(takers) - 3} more)" if len(takers) > 3 else "")


def pool_set(*, name: str, slots: int, description: str | None = None) -> tuple[Pool, bool]:
    """Create pool ``name`` or change its slots; more slots start waiting steps at once. Returns (pool, created)."""
    if problems := pool_problems(name=name, slots=slots):
        raise WorkflowSpecError([f"{field}: {problem}" for field, problem in problems.items()])
    with transaction.atomic():
        pool, created = Pool.objects.select_for_update().get_or_create(name=name, defaults={"slots": slots})
        was = pool.slots
        pool.slots = slots
        if description is not None:
            pool.description = description
        pool.save()
        audit_record("pool.set", "pool", pool.pk, f"pool {name}: {slots} slots", name=name, slots=slots, was=was)
        transaction.on_commit(engine.holds_release)
    return pool, created


def pool_delete_problem(name: str) -> str | None:
    """Why pool ``name`` may not be deleted now, or None: a step holds or waits for its slots, or a step of a workflow
    that may still run (``pool_takers``) would take them, and would fail without it."""
    busy = StepRun.objects.filter(pool=name, status__in=(StepStatus.RUNNING, StepStatus.PENDING)).count()
    if busy:
        return f"pool {name!r} is in use by {busy} step attempts (running or waiting); delete it when they are done"
    if takers := pool_takers(name):
        return (f"pool {name!r} is used by steps that may still run: {_takers_text(takers)}; change those workflows "
                f"(load versions without it) and let their runs finish first")
    return None


def pool_delete(*, name: str) -> None:
    """Delete pool ``name``, refused while a step holds or waits for one of its slots."""
    with transaction.atomic():
        pool = Pool.objects.select_for_update().filter(name=name).first()
        if pool is None:
            raise WorkflowNotFoundError(f"no pool named {name!r}")
        if problem := pool_delete_problem(name):
            raise WorkflowRunStateError(problem)
        pool.delete()
        audit_record("pool.delete", "pool", None, f"deleted pool {name}", name=name)


def _path_back_to(name: str, *, start: str) -> list[str]:
    """The chain of workflows from ``start`` that starts ``name`` again (newest versions), or [] when none does."""
    pending, seen = [[start]], {start}
    while pending:
        path = pending.pop()
        version = (WorkflowVersion.objects.filter(definition__name=path[-1]).order_by("-number")
                   .values_list("spec", flat=True).first())
        for step in (version or {}).get("steps", []):
            target = (step.get("params") or {}).get(SUBWORKFLOW_ACTIONS.get(step.get("action"), ""))
            if target == name:
                return [*path, name]
            if isinstance(target, str) and not templates.is_templated(target) and target not in seen:
                seen.add(target)
                pending.append([*path, target])
    return []


def workflow_validate_file(*, path: str) -> WorkflowSpec:
    """Validate the definition in file ``path``."""
    return workflow_validate_text(text=_read(path), source=path)


def workflow_load(*, text: str, source: str = "definition", team: Team | None = None) -> tuple[WorkflowVersion, bool]:
    """Store a definition as a new immutable version unless the newest version holds identical content; a new workflow
    belongs to ``team`` (default: the default team), and an existing one only takes a load into its own team.

    Returns the version and whether it was created.
    """
    spec = workflow_validate_text(text=text, source=source, team=team)
    content_hash = spec.content_hash()
    with transaction.atomic():
        definition, _ = owned_get_or_create(WorkflowDefinition, name=spec.name, team=team, what="workflow")
        for step_id, target in subworkflow_targets(spec.steps.values()):
            same_team(definition.team_id, WorkflowDefinition.objects.filter(name=target).first(),
                      what=f"step {step_id!r} runs workflow {target!r}, which")
        # The workflow's row lock orders concurrent loads: the second of two loads of the same text finds the first's.
        definition = WorkflowDefinition.objects.select_for_update().get(pk=definition.pk)
        newest = definition.versions.order_by("-number").first()
        if newest is not None and newest.content_hash == content_hash:
            return newest, False
        # Content an older version holds (a revert) becomes the newest version again, as a version of its own.
        if definition.description != spec.description:
            definition.description = spec.description
            definition.save(update_fields=["description", "updated_at"])
        number = (newest.number if newest is not None else 0) + 1
        version = WorkflowVersion.objects.create(
            definition=definition, number=number, content_hash=content_hash, spec=spec.to_dict(), source=text
        )
        audit_record("workflow.load", "workflow_version", version.pk, f"loaded workflow {spec.name} v{number}",
                     workflow=spec.name, version=number, source=source, content_hash=content_hash)
        # The newest version's schedules become its celery-beat entries (admin > Periodic tasks).
        schedules.beat_entries_sync(workflow=spec.name, schedules=spec.schedules, enabled=definition.enabled)
    return version, True


def workflow_load_file(*, path: str, team: Team | None = None) -> tuple[WorkflowVersion, bool]:
    """Load the definition in file ``path`` (see ``workflow_load``)."""
    return workflow_load(text=_read(path), source=path, team=team)


def workflow_version_latest(*, workflow: str) -> WorkflowVersion:
    """Return the newest version of the workflow called ``workflow``."""
    version = (
        WorkflowVersion.objects.select_related("definition")
        .filter(definition__name=workflow)
        .order_by("-number")
        .first()
    )
    if version is None:
        raise WorkflowNotFoundError(f"no workflow named {workflow!r}; load it first (`manage.py workflow load FILE`)")
    return version


def workflow_params_problems(*, workflow: str, params: dict) -> list[str]:
    """Each of the run parameters ``params`` that the newest version of ``workflow`` does not declare, as starting a
    run of it refuses them (``workflow_run_start``); none for a workflow that does not exist (whoever names it says
    so). Work that will start it (an agent task) is refused with these when it is submitted."""
    version_id = (WorkflowVersion.objects.filter(definition__name=workflow).order_by("-number")
                  .values_list("pk", flat=True).first())
    return [] if version_id is None else _params_undeclared(engine.compiled_version(version_id), params)


def _params_undeclared(compiled: engine.CompiledVersion, params: dict) -> list[str]:
    return params_undeclared(compiled.spec.params, params, of=compiled.name)


def workflow_run_start(
    *,
    workflow: str | None = None,
    version: WorkflowVersion | None = None,
    params: dict | None = None,
    parent_run_id: int | None = None,
    parent_step_id: str = "",
    schedule: str = "",
    logical_time: datetime | None = None,
    backfill_id: int | None = None,
    report_unsent: bool = True,
) -> WorkflowRun:
    """Start a run pinned to ``version`` (or the newest version of ``workflow``); its steps are queued on commit.
    When the broker cannot be reached the run stays pending, for the reconciler to start once the broker is back;
    ``BrokerUnavailableError`` says so, unless ``report_unsent`` is false (a step, trigger or API client starting
    it: it is started all the same, a warning is logged, and the returned run's ``launch_deferred`` says so).

    A run for a schedule's slot (``schedule``, ``logical_time``) gets the slot as its ``logical_time`` param; a
    second start of the same slot raises ``IntegrityError`` (one run per workflow, schedule and slot)."""
    version = version or workflow_version_latest(workflow=workflow)
    acting = team_acting.get()
    if acting is not None and version.definition.team_id != acting:  # a step, trigger or response of another team
        raise TeamError(f"workflow {version.definition.name!r} belongs to another team")
    if parent_run_id is not None:
        _depth_check(parent_run_id, version.definition.name)
    compiled = engine.compiled_version(version.pk)
    params = params or {}
    if unknown := _params_undeclared(compiled, params):
        raise WorkflowSpecError(unknown)
    slot = {} if logical_time is None else {LOGICAL_TIME_PARAM: logical_time.astimezone(UTC).isoformat()}
    with transaction.atomic():
        queued = _at_max_active_runs(version.definition_id, compiled.spec.max_active_runs)
        run = WorkflowRun.objects.create(
            status=RunStatus.QUEUED if queued else RunStatus.PENDING, queued_at=timezone.now() if queued else None,
            deadline_at=compiled.spec.deadline_from(timezone.now()),
            version=version,
            params={**compiled.spec.params, **params, **slot},
            steps_total=len(compiled.spec.steps),
            parent_run_id=parent_run_id,
            parent_step_id=parent_step_id,
            trace_id=trace_id_ensure(),
            schedule_key=f"{compiled.name}:{schedule}" if logical_time is not None else "",
            logical_time=logical_time,
            backfill_id=backfill_id,
        )
        StepRun.objects.bulk_create(
            StepRun(run=run, step_id=step_id, attempt=1, run_attempt=1) for step_id in compiled.spec.steps
        )
        if parent_run_id is None:  # a sub-workflow is started by its parent's step, not by an operator
            audit_record("workflow_run.start", "workflow_run", run.pk,
                         f"started run #{run.pk} of {compiled.name} v{version.number}",
                         workflow=compiled.name, version=version.number, params=params)
        if not queued:  # a queued run starts when an active one ends
            transaction.on_commit(lambda: _run_launch(run, compiled, report_unsent=report_unsent))
    return run


def _run_launch(run: WorkflowRun, compiled: engine.CompiledVersion, *, report_unsent: bool) -> None:
    """Send a new run's first steps; when the broker cannot be reached, say what became of the run."""
    try:
        engine.launch(run_id=run.pk, run_attempt=1, version_id=run.version_id, launch=compiled.plan.start,
                      source=engine.dag.START)
    except BrokerUnavailableError as error:
        told = BrokerUnavailableError(
            f"{error} (run #{run.pk} of {compiled.name} is stored and stays pending: the reconciler sends its steps "
            f"once the broker is back; cancel it if it should not run)", reason=error.reason)
        if report_unsent:
            raise told from None
        run.launch_deferred = str(told)
        logger.warning("%s", told)


def _slot_start(version: WorkflowVersion, schedule: dict, slot: datetime, *,
                backfill_id: int | None = None) -> WorkflowRun | None:
    """Start the run of ``schedule``'s ``slot`` unless it has one (then None): the unique constraint decides."""
    try:
        with transaction.atomic():
            return workflow_run_start(version=version, params=schedule["params"], schedule=schedule["name"],
                                      logical_time=slot, backfill_id=backfill_id)
    except IntegrityError:
        return None


def _schedule_of(workflow: str, schedule: str) -> tuple[WorkflowVersion, dict]:
    version = workflow_version_latest(workflow=workflow)
    found = engine.compiled_version(version.pk).spec.schedule(schedule)
    if found is None:
        raise WorkflowNotFoundError(f"workflow {workflow!r} has no schedule {schedule!r} in its newest version")
    return version, found


def schedule_fire(*, workflow: str, schedule: str, now: datetime | None = None) -> list[WorkflowRun]:
    """What a schedule's beat entry runs: start the run of the newest slot at or before ``now`` and, with
    ``catchup``, the slots missed since the schedule's newest run (at most ``max_catchup_runs``, the newest ones),
    oldest first (a schedule with no run yet starts its newest slot only). Each slot starts once whoever fires it
    (two beats, a late or repeated message). Nothing for a disabled workflow or a schedule no longer in its newest
    version."""
    now = now or timezone.now()
    try:
        version, found = _schedule_of(workflow, schedule)
    except WorkflowNotFoundError:
        return []
    if not version.definition.enabled:
        return []
    latest = schedules.slot_latest(found["cron"], found["timezone"], now=now)
    if latest is None:
        return []
    slots = [latest]
    newest = (WorkflowRun.objects.filter(schedule_key=f"{workflow}:{schedule}", logical_time__isnull=False)
              .order_by("-logical_time").values_list("logical_time", flat=True).first())
    if found["catchup"] and newest is not None and newest < latest:
        window_start = max(newest, now - schedules.MAX_SLOT_WINDOW + timedelta(days=1))
        slots = schedules.schedule_slots(found["cron"], found["timezone"], after=window_start, until=now,
                                         limit=found["max_catchup_runs"], newest=True) or slots
    return [run for slot in slots if (run := _slot_start(version, found, slot)) is not None]


def _aware(value: datetime, name: str) -> datetime:
    """``value`` in UTC; refused naming ``name`` without an offset, or when UTC puts it outside the years 1-9999
    (PostgreSQL would store the backfill, and no read of it would work after)."""
    if timezone.is_naive(value):
        raise WorkflowRunStateError(f"{name}: give a time with its offset or Z (e.g. 2026-11-01T00:00:00Z)")
    try:
        return utc_in_calendar(value)
    except ValueError as error:
        raise WorkflowRunStateError(f"{name}: {error}") from None


def workflow_backfill(*, workflow: str, start: datetime, end: datetime, schedule: str | None = None,
                      max_parallel: int | None = None, dry_run: bool = False, created_by: str = "") -> dict:
    """Runs for the slots of ``schedule`` (the workflow's only one by default) with ``start <= slot <= end``,
    skipping slots that have a run. ``max_parallel`` runs at a time: each one that ends starts the next. With
    ``dry_run``, nothing starts. Returns ``{backfill_id, slots, skipped, started}`` (slots as ISO 8601)."""
    start, end = _aware(start, "from"), _aware(end, "to")
    if end < start:
        raise WorkflowRunStateError("to: must not be before from")
    now = timezone.now()
    if end > now:  # a future slot's run would take the slot, and the schedule would not fire it at its time
        raise WorkflowRunStateError(f"to: {end.isoformat()} is later than now ({now.isoformat(timespec='seconds')}); "
                                    f"a backfill covers past slots, the schedule starts the others at their time")
    if max_parallel is not None and not 1 <= max_parallel <= 1000:
        raise WorkflowRunStateError("max_parallel: must be from 1 to 1000")
    version = workflow_version_latest(workflow=workflow)
    spec = engine.compiled_version(version.pk).spec
    if schedule is None:
        if not spec.schedules:
            raise WorkflowRunStateError(f"schedule: workflow {workflow!r} has no schedule to backfill")
        if len(spec.schedules) > 1:
            names = ", ".join(item["name"] for item in spec.schedules)
            raise WorkflowRunStateError(f"schedule: workflow {workflow!r} has {len(spec.schedules)} schedules "
                                        f"({names}): name one")
        schedule = spec.schedules[0]["name"]
    version, found = _schedule_of(workflow, schedule)
    try:
        slots = schedules.schedule_slots(found["cron"], found["timezone"], after=start, until=end, inclusive=True,
                                         limit=schedules.MAX_BACKFILL_SLOTS + 1)
    except ValueError as error:
        raise WorkflowRunStateError(f"from/to: {error}") from None
    except OverflowError:  # a slot before year 1 or after 9999
        raise WorkflowRunStateError("from/to: the range reaches past the years 1-9999") from None
    if len(slots) > schedules.MAX_BACKFILL_SLOTS:
        raise WorkflowRunStateError(f"from/to: more than {schedules.MAX_BACKFILL_SLOTS} slots (backfill a shorter "
                                    f"range)")
    taken = set(WorkflowRun.objects.filter(schedule_key=f"{workflow}:{schedule}", logical_time__in=slots)
                .values_list("logical_time", flat=True))
    todo = [slot for slot in slots if slot not in taken]
    outcome = {"backfill_id": None, "workflow": workflow, "schedule": schedule,
               "slots": [slot.isoformat() for slot in todo], "skipped": len(slots) - len(todo), "started": 0}
    if dry_run or not todo:
        return outcome
    with transaction.atomic():
        backfill = WorkflowBackfill.objects.create(
            definition=version.definition, schedule=schedule, range_from=start, range_to=end,
            pending=[slot.isoformat() for slot in todo], slots_total=len(todo), max_parallel=max_parallel,
            created_by=created_by)
        audit_record("workflow.backfill", "workflow_backfill", backfill.pk,
                     f"backfill of {workflow}:{schedule}, {len(todo)} slots from {start.isoformat()} to "
                     f"{end.isoformat()}", workflow=workflow, schedule=schedule, slots=len(todo),
                     max_parallel=max_parallel)
    outcome.update(backfill_id=backfill.pk, started=len(backfill_continue(backfill_id=backfill.pk)))
    return outcome


def backfill_continue(*, backfill_id: int) -> list[WorkflowRun]:
    """Start a backfill's pending slots, oldest first, while fewer than ``max_parallel`` of its runs are
    unfinished. Safe to run twice: the slots are taken from the row under a lock, and a slot starts once."""
    started = []
    with transaction.atomic():
        backfill = WorkflowBackfill.objects.select_for_update().select_related("definition").filter(
            pk=backfill_id).first()
        if backfill is None or not backfill.pending or backfill.finished_at is not None:
            return started
        try:
            version, found = _schedule_of(backfill.definition.name, backfill.schedule)
        except WorkflowNotFoundError as error:
            # Renamed or removed in a newer version: no slot of it can start, so the backfill ends (once: the row
            # is locked and finished_at checked) with the slots it never started left in pending.
            backfill.finished_at = timezone.now()
            backfill.ended_reason = f"{len(backfill.pending)} slots not started: {error}"
            backfill.save(update_fields=["finished_at", "ended_reason"])
            logger.warning("backfill #%s ended with %s", backfill.pk, backfill.ended_reason)
            return started
        # Every unfinished run takes a place: a paused or queued one as much as a running one.
        active = backfill.runs.exclude(status__in=RUN_FINISHED).count()
        room = len(backfill.pending) if backfill.max_parallel is None else max(0, backfill.max_parallel - active)
        take, backfill.pending = backfill.pending[:room], backfill.pending[room:]
        if not backfill.pending:
            backfill.finished_at = timezone.now()
        backfill.save(update_fields=["pending", "finished_at"])
        for slot in take:
            run = _slot_start(version, found, datetime.fromisoformat(slot), backfill_id=backfill.pk)
            if run is not None:
                started.append(run)
    if take and len(started) < len(take):  # a slot someone else started meanwhile: take the next one instead
        task_send_on_commit(engine.BACKFILL_CONTINUE_TASK, backfill_id)
    return started


def backfill_stop(*, backfill_id: int, by: str = "") -> WorkflowBackfill:
    """Stop a backfill: its pending slots never start (the runs it started go on; cancel them as runs). Refused
    for a backfill that has ended: every slot started, or it was stopped or ended before."""
    with transaction.atomic():
        backfill = WorkflowBackfill.objects.select_for_update().select_related("definition").filter(
            pk=backfill_id).first()
        if backfill is None:
            raise WorkflowNotFoundError(f"no backfill with id {backfill_id!r}")
        if backfill.finished_at is not None:
            raise WorkflowRunStateError(f"backfill #{backfill.pk} has ended "
                                        f"({backfill.ended_reason or 'every slot started'}): nothing to stop")
        # The slots it never started stay listed in pending, as when its schedule is gone; finished_at keeps them.
        left = len(backfill.pending)
        backfill.finished_at = timezone.now()
        backfill.ended_reason = f"stopped by {by or 'an operator'}: {left} of {backfill.slots_total} slots not started"
        backfill.save(update_fields=["finished_at", "ended_reason"])
        audit_record("workflow.backfill_stop", "workflow_backfill", backfill.pk,
                     f"stopped backfill #{backfill.pk} of {backfill.definition.name}:{backfill.schedule}", left=left)
    return backfill


def backfills_sweep() -> int:
    """``backfill_continue`` for each unfinished backfill with pending slots and no unfinished run (the message
    that would have continued it was lost, or never sent): a beat sweep. Returns how many runs it started."""
    unfinished = WorkflowRun.objects.filter(backfill=OuterRef("pk")).exclude(status__in=RUN_FINISHED)
    stalled = (WorkflowBackfill.objects.filter(finished_at__isnull=True).exclude(pending=[])
               .exclude(Exists(unfinished)).order_by("pk").values_list("pk", flat=True))
    return sum(len(backfill_continue(backfill_id=backfill_id)) for backfill_id in list(stalled[:1000]))


def workflow_enable(*, workflow: str, enabled: bool) -> WorkflowDefinition:
    """Enable or disable a workflow: a disabled workflow's schedules do not fire (its beat entries are paused)."""
    with transaction.atomic():
        definition = WorkflowDefinition.objects.select_for_update().filter(name=workflow).first()
        if definition is None:
            raise WorkflowNotFoundError(f"no workflow named {workflow!r}")
        if definition.enabled != enabled:
            definition.enabled = enabled
            definition.save(update_fields=["enabled", "updated_at"])
            audit_record("workflow.enable" if enabled else "workflow.disable", "workflow", definition.pk,
                         f"{'enabled' if enabled else 'disabled'} workflow {workflow}", workflow=workflow)
        _beat_entries_sync(definition)
    return definition


def _beat_entries_sync(definition: WorkflowDefinition) -> None:
    newest = definition.versions.order_by("-number").first()
    found = engine.compiled_version(newest.pk).spec.schedules if newest else ()
    schedules.beat_entries_sync(workflow=definition.name, schedules=found, enabled=definition.enabled)


def _depth_check(parent_run_id: int, workflow: str) -> None:
    """Refuse a sub-workflow run nested deeper than ``AGENTS_WORKFLOW_MAX_DEPTH`` below its root run."""
    limit = settings.AGENTS_WORKFLOW_MAX_DEPTH
    depth, run_id = 0, parent_run_id
    while run_id is not None and depth <= limit:
        depth += 1
        run_id = WorkflowRun.objects.filter(pk=run_id).values_list("parent_run_id", flat=True).first()
    if depth > limit:
        raise WorkflowRunStateError(
            f"sub-workflow {workflow!r} not started: it would be nested more than {limit} levels below its root "
            f"run (AGENTS_WORKFLOW_MAX_DEPTH)"
        )


def workflow_run_cancel(*, run_id: int, reason: str = "cancelled") -> WorkflowRun:
    """Cancel a run: queued steps never start, running steps are revoked; the run ends cancelled (``reason`` is
    its error). A run with nothing left to do (its last steps finished while it was paused) is not cancelled: it
    ends as resuming it would (succeeded, or failed after a failing step), and the cancel is refused, as for any
    finished run (``WorkflowRunStateError``, saying so)."""
    run_id = workflow_run_get(run_id=run_id).pk
    with transaction.atomic():
        # One at a time with a step of the run failing for good (which moves many steps as this does), before any row
        # lock: each may move an attempt committed after its first locks, which the other may hold.
        engine.run_steps_lock(run_id)
        # Lock the run's steps before the run: the order a finishing step takes them, so neither waits on the other.
        # Only the step rows (``of``: the model's ordering joins the run, whose row would be locked with the first
        # step's, before the step a finishing worker holds), in one order.
        list(StepRun.objects.select_for_update(of=("self",))
             .filter(run_id=run_id, status__in=(StepStatus.PENDING, StepStatus.RUNNING)).order_by("pk")
             .values_list("pk", flat=True))
        run = _run_for_update(run_id)
        if run.status in RUN_FINISHED:
            raise WorkflowRunStateError(f"run {run_id} has already {run.status}; only a queued, pending, running or "
                                        f"paused run can be cancelled")
        # Every step finished: cancelling would call a run whose steps all succeeded cancelled, and leave nothing for
        # a re-run to do. It ends after this transaction as the engine ends a run (its event, the queued runs next).
        nothing_left = run.steps_done >= run.steps_total
        children = [] if nothing_left else _run_cancel_locked(run, reason=reason)
    if nothing_left:
        _run_end_instead_of_cancel(run_id, was=run.status)
    for child_id in children:
        try:
            workflow_run_cancel(run_id=child_id)
        except WorkflowRunStateError:
            pass  # finished meanwhile: nothing left to cancel
    run.refresh_from_db()
    return run


def _run_cancel_locked(run: WorkflowRun, *, reason: str) -> list[int]:
    """Cancel ``run`` (locked, with its open steps, in the caller's transaction): its open steps and map items end
    cancelled, what runs is revoked on commit; return its unfinished child runs, to cancel next."""
    now, run_id = timezone.now(), run.pk
    active = StepRun.objects.filter(run=run, status__in=(StepStatus.PENDING, StepStatus.RUNNING))
    task_ids = [task_id for task_id in active.filter(status=StepStatus.RUNNING).values_list("task_id", flat=True)
                if task_id]
    # An ended step neither waits for a signal nor is held (for a pool, a limit or the pause) any more.
    active.update(status=StepStatus.CANCELLED, finished_at=now, error=reason, waiting_for="", held="")
    # A mapped step's items: those not sent never will be, and the running ones are revoked with the steps.
    items = MapItem.objects.filter(run=run, status__in=(MapItemStatus.PENDING, MapItemStatus.QUEUED,
                                                        MapItemStatus.RUNNING))
    task_ids += [task_id for task_id in items.filter(status=MapItemStatus.RUNNING).values_list("task_id", flat=True)
                 if task_id]
    items.update(status=MapItemStatus.CANCELLED, finished_at=now, error=reason)
    WorkflowRun.objects.filter(pk=run.pk, status=run.status).update(
        status=RunStatus.CANCELLED, finished_at=now, error=reason, steps_done=run.steps_total, paused_by=""
    )
    children = list(run.child_runs.exclude(status__in=RUN_FINISHED).values_list("pk", flat=True))
    audit_record("workflow_run.cancel", "workflow_run", run.pk, f"cancelled run #{run.pk}", status_was=run.status)
    if task_ids:
        transaction.on_commit(lambda: tasks_revoke(task_ids, terminate=True, what=f"run #{run_id}"))
    if run.parent_run_id:
        # A parent step waiting on this run learns it ended (and fails, or retries, accordingly).
        transaction.on_commit(lambda: engine.parent_step_complete(child_run_id=run_id))
    # Its steps' pool slots are free, and it no longer counts towards max_active_runs.
    transaction.on_commit(engine.holds_release)
    transaction.on_commit(lambda: engine.queued_runs_start(definition_id=run.version.definition_id))
    if run.backfill_id:  # its place in the backfill is free: the next pending slot starts
        task_send_on_commit(engine.BACKFILL_CONTINUE_TASK, run.backfill_id, trace_id=run.trace_id or None)
    return children


def _run_end_instead_of_cancel(run_id: int, *, was: str) -> None:
    """End run ``run_id``, whose steps have all finished, as the engine would have (``engine.run_finalize``, a
    paused run too), and refuse the cancel that found it so, saying how it ended."""
    engine.run_finalize(run_id=run_id, paused=True)
    run = workflow_run_get(run_id=run_id)
    outcome = "succeeded" if run.status == RunStatus.SUCCEEDED else "finished"
    raise WorkflowRunStateError(f"run {run_id} has already {run.status}: its steps had all {outcome} while it was "
                                f"{was}, so nothing was left to cancel")


def workflow_run_pause(*, run_id: int, by: str = "") -> WorkflowRun:
    """Pause a pending or running run: no new step starts (a step due to start is held, ``run paused``); steps
    already running finish, and waiting steps still take their signals. ``by`` is who paused it."""
    with transaction.atomic():
        run = _run_for_update(run_id)
        if run.status not in (RunStatus.PENDING, RunStatus.RUNNING):
            raise WorkflowRunStateError(f"run {run_id} is {run.status}; only a pending or running run can be paused")
        WorkflowRun.objects.filter(pk=run.pk, status=run.status).update(status=RunStatus.PAUSED, paused_by=by)
        audit_record("workflow_run.pause", "workflow_run", run.pk, f"paused run #{run.pk}", status_was=run.status)
    run.refresh_from_db()
    return run


def workflow_run_resume(*, run_id: int) -> WorkflowRun:
    """Resume a paused run where it stopped: the steps held while it was paused, and any other step that is ready,
    start now (a run whose steps all finished while paused ends)."""
    with transaction.atomic():
        run = _run_for_update(run_id)
        if run.status != RunStatus.PAUSED:
            raise WorkflowRunStateError(f"run {run_id} is {run.status}; only a paused run can be resumed")
        # A run paused between its first step's claim and that step moving it to running (``started_at`` still
        # empty; the step's own move was refused, the run being paused) has started all the same: it resumes running.
        started_at = run.started_at or (StepRun.objects.filter(run=run, started_at__isnull=False)
                                        .aggregate(first=Min("started_at"))["first"])
        status = RunStatus.RUNNING if started_at else RunStatus.PENDING
        transition(WorkflowRun.objects.filter(pk=run.pk), [RunStatus.PAUSED], status, paused_by="",
                   started_at=started_at)
        audit_record("workflow_run.resume", "workflow_run", run.pk, f"resumed run #{run.pk}")
        transaction.on_commit(lambda: engine.run_continue(run_id=run_id))
    run.refresh_from_db()
    return run


def _at_max_active_runs(definition_id: int, limit: int | None) -> bool:
    """Whether a run of the workflow starting now must wait, under its version's ``max_active_runs`` (``limit``):
    that many are active, or runs already wait. Takes the workflow's row lock (in the caller's transaction), which
    orders starts with the runs that end and start the queued ones, so the limit holds and queued runs start in
    order."""
    if limit is None:
        return False
    WorkflowDefinition.objects.select_for_update().filter(pk=definition_id).exists()
    runs = WorkflowRun.objects.filter(version__definition_id=definition_id)
    return runs.filter(status__in=RUN_ACTIVE).count() >= limit or runs.filter(status=RunStatus.QUEUED).exists()


def workflow_run_retry(*, run_id: int) -> WorkflowRun:
    """Re-run a failed or cancelled run from failure: a new attempt re-runs what did not succeed."""
    with transaction.atomic():
        run = _run_for_update(run_id)
        if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise WorkflowRunStateError(f"run {run_id} is {run.status}; only a failed or cancelled run can be re-run")
        latest: dict[str, StepRun] = {}
        for row in StepRun.objects.filter(run=run).order_by("attempt"):
            latest[row.step_id] = row
        rerun = [row for row in latest.values() if row.status != StepStatus.SUCCEEDED]
        if not rerun:
            raise WorkflowRunStateError(f"run {run_id} has no failed, skipped or cancelled step to re-run")
        attempt = run.attempt + 1
        StepRun.objects.bulk_create(
            StepRun(run=run, step_id=row.step_id, attempt=row.attempt + 1, run_attempt=attempt) for row in rerun
        )
        # Within the workflow's max_active_runs, as a new run: at the limit it waits, queued, for a run to end.
        spec, now = engine.compiled_version(run.version_id).spec, timezone.now()
        queued = _at_max_active_runs(run.version.definition_id, spec.max_active_runs)
        WorkflowRun.objects.filter(pk=run.pk).update(
            status=RunStatus.QUEUED if queued else RunStatus.RUNNING, queued_at=now if queued else None,
            # Running at once, it has started (a run cancelled while it waited queued had not; one that ran before
            # keeps its first start); queued, it starts when its turn comes (``engine.queued_runs_start``).
            started_at=run.started_at or (None if queued else now),
            attempt=attempt,
            steps_done=run.steps_total - len(rerun), failed_step="", error="", finished_at=None,
            # Deadlines count from the re-run, the run's and its steps' alike: from the run's creation, a missed step
            # deadline cancelled every re-run again at once, while a missed run deadline was never looked at again.
            rerun_at=now, deadline_at=spec.deadline_from(now),
            deadline_missed_at=None,
        )
        version_id = run.version_id
        audit_record("workflow_run.rerun", "workflow_run", run_id,
                     f"re-ran run #{run_id} from failure (attempt {attempt}{', queued' if queued else ''})",
                     attempt=attempt, steps=sorted(row.step_id for row in rerun))
        if not queued:
            transaction.on_commit(lambda: engine.launch(
                run_id=run_id, run_attempt=attempt, version_id=version_id,
                launch=engine.run_plan(run_id, version_id, attempt).start, source=engine.dag.START))
    run.refresh_from_db()
    return run


def workflow_signal(*, run_id: int, name: str, payload=None, decision: str = "", comment: str = "",
                    user=None) -> dict:
    """Send the signal ``name`` to run ``run_id``: the step waiting for it takes it (its payload is the step's
    result); one that has not started waiting yet takes it when it does (the signal is kept). For an approval step
    (the signal is its id), ``decision`` is approve or reject, from ``user``, a member of one of its approver
    groups (``NotAllowedError`` otherwise); each approver decides once. Refused with nothing stored
    (``WorkflowRunStateError``) for a finished run, a step that no longer waits, or a signal no step takes.

    Returns ``{signal_id, run_id, step, state}``: ``taken`` (it ended the wait), ``recorded`` (an approval still
    short of its ``require``) or ``kept`` (the step has not started waiting)."""
    run = workflow_run_get(run_id=run_id)
    if run.status in RUN_FINISHED:
        raise WorkflowRunStateError(f"run {run_id} has already {run.status}; it takes no signals")
    compiled = engine.compiled_version(run.version_id)
    step = next((step for step in compiled.spec.steps.values() if signal_of(step) == name), None)
    if step is None:
        waiting = ", ".join(sorted(str(signal_of(s)) for s in compiled.spec.steps.values() if s.action in WAIT_ACTIONS))
        raise WorkflowRunStateError(f"no step of workflow {compiled.name!r} waits for signal {name!r} (signals it "
                                    f"takes: {waiting or 'none'})")
    sent_by = getattr(user, "username", "") if user is not None else ""
    if not isinstance(comment, str) or UNSTORABLE.search(comment):
        raise WorkflowSpecError(["comment: must be text without NUL characters or unpaired surrogates"])
    if step.action == "approval":
        if decision not in (SignalDecision.APPROVE, SignalDecision.REJECT):
            raise WorkflowSpecError([f"decision: must be approve or reject for approval step {step.id!r}"])
        approvers = step.params["approvers"]
        if user is None or not user.groups.filter(name__in=approvers).exists():
            made = set(Group.objects.filter(name__in=approvers).values_list("name", flat=True))
            missing = [name for name in approvers if name not in made]
            hint = (f" (no group named {', '.join(map(repr, missing))} exists: make it in the admin, Groups, and add "
                    "the approvers)" if missing else "")
            raise NotAllowedError(f"{sent_by or 'an anonymous user'} may not decide step {step.id!r}: only members "
                                  f"of {', '.join(approvers)} may{hint}")
    elif decision:
        raise WorkflowSpecError([f"decision: only an approval step takes one; step {step.id!r} is {step.action}"])
    with transaction.atomic():
        row = (StepRun.objects.select_for_update().filter(run_id=run.pk, step_id=step.id, run_attempt=run.attempt)
               .order_by("-attempt").first())
        if row is None:  # not in this attempt of the run: a re-run kept what it did in an earlier one
            row = (StepRun.objects.filter(run_id=run.pk, step_id=step.id).order_by("-run_attempt", "-attempt")
                   .first())
            raise WorkflowRunStateError(f"step {step.id!r} of run {run_id} is not waiting: " + (
                f"it has {row.status} (in run attempt {row.run_attempt}, kept by this re-run)" if row
                else "it has not been planned"))
        if row.status in STEP_FINISHED:
            raise WorkflowRunStateError(f"step {step.id!r} of run {run_id} is not waiting: it has {row.status}")
        if row.status == StepStatus.RUNNING and not row.waiting_for and not row.worker:
            # It waited and has been decided (a signal or its timeout took it): it is ending, and no longer waits.
            raise WorkflowRunStateError(f"step {step.id!r} of run {run_id} is not waiting: it has been decided and "
                                        f"is ending")
        waiting = row.status == StepStatus.RUNNING and row.waiting_for == name
        since = row.started_at if waiting else None
        # The signals of this wait: kept ones, and those taken since the waiting attempt started.
        earlier = WorkflowSignal.objects.filter(Q(consumed_at__isnull=True) | Q(consumed_at__gte=since) if since
                                                else Q(consumed_at__isnull=True), run_id=run.pk, name=name)
        if step.action == "approval" and earlier.filter(sent_by=sent_by).exists():
            raise WorkflowRunStateError(f"{sent_by} has already decided step {step.id!r}")
        if step.action == "wait.signal" and earlier.filter(consumed_at__isnull=True).exists():
            raise WorkflowRunStateError(f"a signal {name!r} is already kept for step {step.id!r}, which has not "
                                        f"started waiting")
        signal = WorkflowSignal.objects.create(run_id=run.pk, name=name, payload=payload, decision=decision,
                                               comment=comment, sent_by=sent_by)
        found = waits.signals_take(row=row, step=step) if waiting else None
        if found is not None:
            StepRun.objects.filter(pk=row.pk).update(waiting_for="")
        audit_record("workflow_run.signal", "workflow_run", run.pk,
                     f"signal {name!r} to run #{run.pk}" + (f": {decision}" if decision else ""),
                     step=step.id, decision=decision, comment=comment)
    if found is not None:
        row.run = run
        engine.wait_apply(row=row, decision=found, compiled=compiled)
    state = "taken" if found is not None else "recorded" if waiting else "kept"
    return {"signal_id": signal.pk, "run_id": run.pk, "step": step.id, "state": state}


def workflow_deadlines_check(*, now: datetime | None = None) -> dict[str, int]:
    """Find the runs, and the steps, past their deadline (a beat sweep): each publishes one
    ``workflow.deadline_missed`` event (its mark is set in the same transaction, so it is published once whoever
    sweeps), and is cancelled when its workflow says ``on_deadline: cancel``. Returns how many of each."""
    now = now or timezone.now()
    found = {"runs": 0, "steps": 0, "cancelled": 0}
    late_runs = (WorkflowRun.objects.filter(deadline_at__lt=now, deadline_missed_at__isnull=True)
                 .exclude(status__in=RUN_FINISHED).select_related("version__definition"))
    for run in late_runs[:1000]:
        if _deadline_missed(run, step=None, due=run.deadline_at, now=now):
            found["runs"] += 1
            found["cancelled"] += _deadline_cancel(run)
    # Only unmarked, unfinished attempts of steps with a deadline are read: a sweep every few seconds stays cheap.
    active = WorkflowRun.objects.exclude(status__in=RUN_FINISHED)
    for version_id in active.order_by().values_list("version_id", flat=True).distinct():
        timed = {step.id: step.deadline_s for step in engine.compiled_version(version_id).spec.steps.values()
                 if step.deadline_s is not None}
        if not timed:
            continue
        late = (StepRun.objects.filter(run__version_id=version_id, step_id__in=timed, run_attempt=F("run__attempt"),
                                       status__in=(StepStatus.PENDING, StepStatus.RUNNING),
                                       deadline_missed_at__isnull=True)
                .exclude(run__status__in=RUN_FINISHED).select_related("run__version__definition"))
        for row in late[:1000]:
            due = (row.run.rerun_at or row.run.created_at) + timedelta(seconds=timed[row.step_id])
            if due < now and _deadline_missed(row.run, step=row.step_id, due=due, now=now):
                found["steps"] += 1
                found["cancelled"] += _deadline_cancel(row.run)
    return found


def _deadline_missed(run: WorkflowRun, *, step: str | None, due: datetime, now: datetime) -> bool:
    """Mark the run (or its unfinished step) as past its deadline and publish the event, once."""
    with transaction.atomic():
        if step is None:
            marked = WorkflowRun.objects.filter(pk=run.pk, deadline_missed_at__isnull=True).update(
                deadline_missed_at=now)
        else:
            marked = StepRun.objects.filter(run=run, step_id=step, run_attempt=run.attempt,
                                            status__in=(StepStatus.PENDING, StepStatus.RUNNING),
                                            deadline_missed_at__isnull=True).update(deadline_missed_at=now)
        if not marked:
            return False
        on_deadline = engine.compiled_version(run.version_id).spec.on_deadline
        event_publish(EventType.WORKFLOW_DEADLINE_MISSED,
                      {"workflow_run_id": run.pk, "workflow": run.version.definition.name, "step": step,
                       "deadline_at": due.isoformat(), "status": run.status, "on_deadline": on_deadline},
                      trace_id=run.trace_id or None, team_id=run.version.definition.team_id)
    return True


def _deadline_cancel(run: WorkflowRun) -> int:
    if engine.compiled_version(run.version_id).spec.on_deadline != "cancel":
        return 0
    try:
        workflow_run_cancel(run_id=run.pk, reason="deadline missed")
    except WorkflowRunStateError:
        return 0  # it ended meanwhile
    return 1


def workflow_run_get(*, run_id: int) -> WorkflowRun:
    """Return run ``run_id`` or raise ``WorkflowNotFoundError``."""
    try:
        return WorkflowRun.objects.select_related("version__definition").get(pk=run_id)
    except (WorkflowRun.DoesNotExist, ValueError):
        raise WorkflowNotFoundError(f"no workflow run with id {run_id!r}") from None


def _run_for_update(run_id: int) -> WorkflowRun:
    try:
        return WorkflowRun.objects.select_for_update().get(pk=run_id)
    except (WorkflowRun.DoesNotExist, ValueError):
        raise WorkflowNotFoundError(f"no workflow run with id {run_id!r}") from None


def _read(path: str) -> str:
    try:
        return definition_read_file(path)
    except DefinitionTextError as error:
        raise WorkflowSpecError([str(error)]) from None
