"""Workflow definitions: parse YAML/JSON, validate every rule, and hash the normalised result.

Pure: no Django. ``workflow_spec_parse`` either returns a ``WorkflowSpec`` or raises
``WorkflowSpecError`` listing every problem, each naming the step (and field) at fault.
"""
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agents.core.definitions import DefinitionTextError, definition_load_text, is_name, name_problem
from agents.exceptions import WorkflowSpecError
from agents.workflows import dag, templates
from agents.core.actions import action_get, action_names

#: Limits that keep a definition and its messages bounded.
MAX_STEPS = 5000
#: Most dependencies (``needs`` entries, all steps together) a workflow may declare; counted before anything else
#: is validated, so a dense definition is refused at once instead of holding a web worker while it is checked.
MAX_EDGES = 20_000
MAX_RETRIES = 100
MAX_BACKOFF_S = 3000  # below the broker's visibility timeout, so a retry countdown never re-delivers early
MAX_TIMEOUT_S = 86400

TOP_LEVEL_KEYS = {"name", "description", "params", "steps", "schedule", "schedules", "max_active_runs", "deadline_s",
                  "on_deadline"}
SCHEDULE_KEYS = {"name", "cron", "timezone", "catchup", "max_catchup_runs", "params"}
#: Most schedules one workflow may carry, and most missed slots one catch-up may start.
MAX_SCHEDULES = 20
MAX_CATCHUP_RUNS = 1000
#: The run parameter a scheduled or backfilled run's logical time (ISO 8601, UTC) is given in.
LOGICAL_TIME_PARAM = "logical_time"
STEP_KEYS = {"id", "action", "params", "needs", "retries", "timeout_s", "on_failure", "description", "when",
             "run_if", "map", "pool", "pool_slots", "concurrency", "deadline_s", "cache"}
CACHE_KEYS = {"key", "ttl_s"}
#: Bounds of limits: slots a step takes, runs or step attempts at once, seconds to a deadline or of a cache.
MAX_POOL_SLOTS = 1000
MAX_ACTIVE_RUNS = 10_000
MAX_DEADLINE_S = 366 * 86400
MAX_CACHE_TTL_S = 366 * 86400
#: What a run past its deadline does besides publishing workflow.deadline_missed.
ON_DEADLINE = ("continue", "cancel")
MAP_KEYS = {"over", "max_items", "concurrency"}
#: Bounds of a mapped step: items (``max_items`` at most this) and items running at once.
MAX_MAP_ITEMS = 100_000
MAX_MAP_CONCURRENCY = 1000
#: Which outcomes of its ``needs`` a step runs after (Airflow's trigger rules); otherwise it is skipped.
RUN_IF = ("all_succeeded", "all_done", "any_succeeded", "all_failed", "none_failed")
RUN_IF_DEFAULT = "all_succeeded"
RETRY_KEYS = {"max", "backoff_s", "max_backoff_s", "jitter"}
ON_FAILURE = ("fail", "continue")
NON_FINITE = "numbers must be finite (NaN and infinity cannot be stored as JSON)"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed step is tried again."""

    max: int = 0
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    jitter: bool = True

    def delay_s(self, retry_index: int, rand: float = 1.0) -> float:
        """Seconds before retry number ``retry_index`` (0-based); ``rand`` in [0, 1] scales the jitter."""
        delay = min(self.max_backoff_s, self.backoff_s * (2**retry_index))
        # "Equal jitter": keep half the delay, randomise the other half, so delays still grow.
        return delay / 2 + delay / 2 * rand if self.jitter else delay


@dataclass(frozen=True)
class StepSpec:
    """One validated step."""

    id: str
    action: str
    params: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    retries: RetryPolicy = RetryPolicy()
    timeout_s: float | None = None
    on_failure: str = "fail"
    description: str = ""
    #: An expression over params and upstream results; false: the step is skipped ("condition false").
    when: str | None = None
    #: Which outcomes of ``needs`` it runs after (``RUN_IF``).
    run_if: str = RUN_IF_DEFAULT
    #: ``{over, max_items, concurrency}``: the step runs once per item of the list ``over`` gives.
    map: dict | None = None
    #: The pool whose ``pool_slots`` slots the step takes while it runs.
    pool: str | None = None
    pool_slots: int = 1
    #: At most this many attempts of this step run at once, across the workflow's runs.
    concurrency: int | None = None
    #: Seconds from the run's start by which the step should have finished (workflow.deadline_missed if not).
    deadline_s: float | None = None
    #: ``{key, ttl_s}``: a succeeded result of the same action and key within ``ttl_s`` is reused.
    cache: dict | None = None


#: Step fields left out of the stored form while they have their default (older definitions keep their hash).
STEP_DEFAULTS = {"when": None, "map": None, "run_if": RUN_IF_DEFAULT, "pool": None, "pool_slots": 1,
                 "concurrency": None, "deadline_s": None, "cache": None}


@dataclass(frozen=True)
class WorkflowSpec:
    """A validated workflow definition."""

    name: str
    description: str
    params: dict
    steps: dict[str, StepSpec]
    #: Each schedule normalised: ``{name, cron, timezone, catchup, max_catchup_runs, params}``.
    schedules: tuple[dict, ...] = ()
    #: At most this many runs active at once (more wait as ``queued``, in order).
    max_active_runs: int | None = None
    #: Seconds from the run's creation by which it should have finished, and what happens when it has not.
    deadline_s: float | None = None
    on_deadline: str = "continue"

    def deadline_from(self, start: datetime) -> datetime | None:
        """When a run started (or re-run) at ``start`` should have finished by; None without ``deadline_s``."""
        return start + timedelta(seconds=self.deadline_s) if self.deadline_s else None

    def schedule(self, name: str) -> dict | None:
        """The schedule called ``name``, or None."""
        return next((schedule for schedule in self.schedules if schedule["name"] == name), None)

    def to_dict(self) -> dict:
        """Return the normalised JSON form (what is stored and hashed; no ``schedules`` key when there are none,
        so definitions stored before schedules keep their hash)."""
        limits = {key: value for key, value in (("max_active_runs", self.max_active_runs),
                                                 ("deadline_s", self.deadline_s), ("on_deadline", self.on_deadline))
                  if value is not None and value != "continue"}
        return ({"schedules": [dict(schedule) for schedule in self.schedules]} if self.schedules else {}) | limits | {
            "name": self.name,
            "description": self.description,
            "params": self.params,
            "steps": [
                # A step without a condition has no "when" key: definitions stored before conditions keep their hash.
                {key: value for key, value in
                 {**asdict(step), "needs": list(step.needs), "retries": asdict(step.retries)}.items()
                 if key not in STEP_DEFAULTS or value != STEP_DEFAULTS[key]}
                for step in self.steps.values()
            ],
        }

    def content_hash(self) -> str:
        """Return the sha256 of the canonical JSON form: equal definitions hash equal."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def graph(self) -> dict[str, tuple[str, ...]]:
        """Return each step's dependencies."""
        return {step_id: step.needs for step_id, step in self.steps.items()}


def workflow_spec_load_text(text: str, *, source: str = "definition") -> Any:
    """Parse YAML or JSON text into plain data; raise ``WorkflowSpecError`` if unreadable."""
    try:
        return definition_load_text(text, source=source)
    except DefinitionTextError as error:
        raise WorkflowSpecError([str(error)]) from None


def workflow_spec_parse(data: Any, *, cron_problems=None) -> WorkflowSpec:
    """Validate plain data as a workflow definition; raise ``WorkflowSpecError`` with every problem.

    ``cron_problems(cron, timezone) -> [problem, ...]`` checks a schedule's cron expression and time zone (the
    caller's: this module stays pure); without it only their shape is checked (a stored, validated spec). Given, the
    data is a new version being loaded: what only a new version is refused for (``_new_version_problems``) is checked
    too; a version stored before is compiled and runs as it did."""
    errors: list[str] = []
    if not isinstance(data, dict):
        raise WorkflowSpecError([f"a workflow definition must be a mapping with name and steps, got {_kind(data)}"])
    for key in sorted(set(data) - TOP_LEVEL_KEYS):
        errors.append(f"unknown top-level field {key!r} (allowed: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    name = data.get("name")
    if not is_name(name):
        errors.append(f"name: {name_problem(name)}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        errors.append("description: must be text")
        description = ""
    params = data.get("params") or {}
    if not isinstance(params, dict):
        errors.append(f"params: must be a mapping, got {_kind(params)}")
        params = {}
    elif _has_non_finite(params):
        errors.append(f"params: {NON_FINITE}")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        errors.append("steps: must be a non-empty list")
        raise WorkflowSpecError(errors)
    if len(raw_steps) > MAX_STEPS:
        errors.append(f"steps: {len(raw_steps)} steps, at most {MAX_STEPS} allowed")
        raise WorkflowSpecError(errors)
    edges = sum(len(raw["needs"]) if isinstance(raw, dict) and isinstance(raw.get("needs"), list) else 1
                for raw in raw_steps)
    if edges > MAX_EDGES:
        errors.append(f"steps: {edges} dependencies (needs) in all, at most {MAX_EDGES} allowed")
        raise WorkflowSpecError(errors)

    steps: dict[str, StepSpec] = {}
    first_seen: dict[str, int] = {}
    for index, raw in enumerate(raw_steps, start=1):
        step = _parse_step(raw, index, errors)
        if step is None:
            continue
        if step.id in first_seen:
            errors.append(f"duplicate step id {step.id!r} (steps {first_seen[step.id]} and {index})")
            continue
        first_seen[step.id] = index
        steps[step.id] = step

    for step in steps.values():
        for need in step.needs:
            if need not in steps:
                errors.append(f"step {step.id!r}: needs {need!r}, which is not a step of this workflow")
    # Cycles among the steps that parsed, whatever else is wrong: every problem is reported at once.
    for cycle in dag.find_cycles({step_id: step.needs for step_id, step in steps.items()}):
        errors.append(f"cycle between steps: {' -> '.join(cycle)}")
    # What each template and condition reads, on the graph as written (a need no step has, or a cycle, said above):
    # every problem at once.
    errors.extend(_expression_problems(steps, params))
    if cron_problems is not None:  # a new version, loaded: not one stored before, compiled to run
        errors.extend(_new_version_problems(steps, params))
    errors.extend(_wait_problems(steps))
    for step_id, target in subworkflow_targets(steps.values()):
        if target == name:
            errors.append(f"step {step_id!r}: runs workflow {name!r}, the workflow itself (recursion is not allowed)")
    if "schedule" in data and "schedules" in data:
        errors.append("schedule: give schedule or schedules, not both")
    schedules = _parse_schedules(data.get("schedule", data.get("schedules")), params, errors, cron_problems)
    max_active_runs = _whole(data.get("max_active_runs"), "max_active_runs", 1, MAX_ACTIVE_RUNS, errors)
    deadline_s = _seconds(data.get("deadline_s"), "deadline_s", MAX_DEADLINE_S, errors)
    on_deadline = data.get("on_deadline", "continue")
    if on_deadline not in ON_DEADLINE:
        errors.append(f"on_deadline: must be {' or '.join(ON_DEADLINE)}, got {on_deadline!r}")
    elif on_deadline != "continue" and deadline_s is None and all(step.deadline_s is None for step in steps.values()):
        errors.append("on_deadline: needs deadline_s, on the workflow or on a step")
    if errors:
        raise WorkflowSpecError(errors)
    return WorkflowSpec(name=name, description=description, params=params, steps=steps, schedules=schedules,
                        max_active_runs=max_active_runs, deadline_s=deadline_s, on_deadline=on_deadline)


def _whole(value: Any, where: str, least: int, most: int, errors: list[str]) -> int | None:
    """An optional whole number from ``least`` to ``most`` (None when absent)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        errors.append(f"{where}: must be a whole number from {least} to {most}, got {value!r}")
        return None
    return value


def _seconds(value: Any, where: str, most: float, errors: list[str]) -> float | None:
    """An optional number of seconds above 0 and at most ``most`` (None when absent)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= most:
        errors.append(f"{where}: must be a number of seconds above 0 and at most {most:g}, got {value!r}")
        return None
    return float(value)


def _parse_schedules(raw: Any, params: dict, errors: list[str], cron_problems) -> tuple[dict, ...]:
    """``schedule``: one mapping or a list of them, each normalised with its defaults."""
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        errors.append(f"schedule: must be a mapping (cron, timezone, ...) or a list of them, got {_kind(raw)}")
        return ()
    if len(items) > MAX_SCHEDULES:
        errors.append(f"schedule: {len(items)} schedules, at most {MAX_SCHEDULES} allowed")
        return ()
    schedules, seen = [], set()
    for index, item in enumerate(items):
        where = "schedule" if isinstance(raw, dict) else f"schedule[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{where}: must be a mapping with cron (and timezone, catchup, ...), got {_kind(item)}")
            continue
        for key in sorted(set(item) - SCHEDULE_KEYS):
            errors.append(f"{where}: unknown field {key!r} (allowed: {', '.join(sorted(SCHEDULE_KEYS))})")
        name = item.get("name", "default" if isinstance(raw, dict) else str(index + 1))
        if not is_name(str(name)) or not isinstance(name, (str, int)) or isinstance(name, bool):
            errors.append(f"{where}.name: {name_problem(name)}")
        elif str(name) in seen:
            errors.append(f"{where}.name: {name!r} names two schedules")
        seen.add(str(name))
        cron, timezone = item.get("cron"), item.get("timezone", "UTC")
        zone_named = isinstance(timezone, str) and bool(timezone)
        if not zone_named:
            errors.append(f"{where}.timezone: must be a time zone name such as 'Europe/Paris', got {timezone!r}")
        if not isinstance(cron, str) or not cron.strip():
            errors.append(f"{where}.cron: is required, five fields such as '0 2 * * *' (minute hour day month "
                          f"weekday)")
        elif cron_problems is not None:  # the cron checked in UTC when the zone is no name: every problem at once
            errors.extend(f"{where}.{problem}" for problem in cron_problems(cron, timezone if zone_named else "UTC"))
        catchup = item.get("catchup", False)
        if not isinstance(catchup, bool):
            errors.append(f"{where}.catchup: must be true or false, got {catchup!r}")
        most = item.get("max_catchup_runs", 10)
        if isinstance(most, bool) or not isinstance(most, int) or not 1 <= most <= MAX_CATCHUP_RUNS:
            errors.append(f"{where}.max_catchup_runs: must be a whole number from 1 to {MAX_CATCHUP_RUNS}, "
                          f"got {most!r}")
        values = item.get("params") or {}
        if not isinstance(values, dict):
            errors.append(f"{where}.params: must be a mapping, got {_kind(values)}")
            values = {}
        for key in sorted(set(values) - set(params)):
            errors.append(f"{where}.params: {key!r} is not a parameter of the workflow (declared: "
                          f"{', '.join(sorted(params)) or 'none'})")
        if _has_non_finite(values):
            errors.append(f"{where}.params: {NON_FINITE}")
        schedules.append({"name": str(name), "cron": " ".join(str(cron).split()), "timezone": timezone,
                          "catchup": catchup, "max_catchup_runs": most, "params": values})
    return tuple(schedules)


def _expression_problems(steps: dict[str, StepSpec], params: dict) -> list[str]:
    """Each template in a step's params and each ``when``: its syntax, and that it reads declared params and
    steps upstream of it (the only results there when it runs)."""
    graph = {step_id: step.needs for step_id, step in steps.items()}
    declared = set(params) | {LOGICAL_TIME_PARAM}
    problems = []
    for step in steps.values():
        found = [(f"step {step.id!r}: {where}", text)
                 for where, text in _expressions_of(step.params, step.when, step.map, step.cache)]
        if not found:
            continue
        upstream = dag.ancestors(graph, step.id)
        for where, text in found:
            items = step.map is not None and not where.endswith(("map.over", "cache.key"))  # item params: item, index
            wrong, read = templates.expression_problems(text, where, params=declared, item=items)
            problems.extend(wrong)
            problems.extend(f"{where}: reads steps.{other}, which is not upstream of {step.id!r} (add it to needs, "
                            f"directly or through another step)" if other in steps else
                            f"{where}: reads steps.{other}, which is not a step of this workflow"
                            for other in sorted(read - upstream))
    return problems


def _expressions_of(params: Any, when: Any, mapping: dict | None, cache: dict | None) -> list[tuple[str, str]]:
    """(where, text) of each expression of a step: its params' templates, ``when``, ``map.over`` and ``cache.key``."""
    return templates.templates_in(params, "params") + [
        (where, text) for where, text in (("when", when), ("map.over", (mapping or {}).get("over")),
                                          ("cache.key", (cache or {}).get("key"))) if isinstance(text, str) and text]


def _new_version_problems(steps: dict[str, StepSpec], params: dict) -> list[str]:
    """What a new version's mapped steps may not do, though a version stored before did it (it is still compiled
    and run as it was): run an action that finishes later or waits (each item must end in its own task with a
    result: a Deferred or Wait would start a child run or a wait no item takes back, and the child runs on all the
    same), or read ``item`` or ``index`` in ``when`` (decided once for the whole step, before its items, where both
    read as nothing); or give a step whose action finishes later or waits a ``timeout_s``, which bounds only the task
    that hands it off, so it would bound nothing, or a ``cache``, which would keep nothing."""
    declared = set(params) | {LOGICAL_TIME_PARAM}
    problems = []
    for step in steps.values():
        action = action_get(step.action)
        if step.timeout_s is not None and step.map is None and action is not None and action.deferred:
            bound = ("params.timeout_s with on_timeout" if step.action in ("wait.signal", "approval")
                     else "the step's deadline_s and the workflow's on_deadline: cancel")
            problems.append(f"step {step.id!r}: timeout_s: {step.action!r} finishes later or waits, and timeout_s "
                            f"bounds only the task that starts it, not the wait; bound the wait with {bound}")
        if step.cache is not None and action is not None and action.deferred:
            problems.append(f"step {step.id!r}: cache: {step.action!r} finishes later or waits, and only a result "
                            f"the step's own task returns is cached; remove cache")
        if step.map is None:
            continue
        if action is not None and action.deferred:
            problems.append(f"step {step.id!r}: map: a mapped step cannot run an action that finishes later or "
                            f"waits: {action.name!r} (run it in a step of its own; workflow.start starts a run per "
                            f"item without waiting for it)")
        if step.when is not None:
            where = f"step {step.id!r}: when"
            without, _ = templates.expression_problems(step.when, where, params=declared, item=False)
            with_items, _ = templates.expression_problems(step.when, where, params=declared, item=True)
            if without != with_items:
                problems.append(f"{where}: a mapped step's when is decided once for the whole step, before its "
                                f"items, and cannot read item or index (there is no condition per item: give "
                                f"map.over only the items to run)")
    return problems


def step_references(step: StepSpec) -> frozenset[str]:
    """The steps whose results a step's templates and condition read."""
    texts = [text for _, text in templates.templates_in(step.params, "params")]
    texts += [step.when] if step.when is not None else []
    texts += [step.map["over"]] if step.map is not None else []
    texts += [step.cache["key"]] if step.cache is not None else []
    read: set[str] = set()
    for text in texts:
        read |= templates.expression_problems(text, "", params=set(), item=True)[1]
    return frozenset(read)


#: Actions whose step waits for a signal sent to its run.
WAIT_ACTIONS = ("wait.signal", "approval")


def signal_of(step: StepSpec) -> str | None:
    """The signal a waiting step takes: a wait.signal's ``name``, an approval's step id; None for other steps."""
    if step.action == "wait.signal":
        return step.params.get("name")
    if step.action == "approval":
        return step.id
    return None


def _wait_problems(steps: dict[str, StepSpec]) -> list[str]:
    """Waiting steps: a literal signal name, taken by one step only; approvers named literally."""
    problems, taken = [], {}
    for step in steps.values():
        if step.action not in WAIT_ACTIONS or not step.params:
            continue  # (a step whose params are wrong has them reported already)
        where = f"step {step.id!r}"
        name = signal_of(step)
        if step.action == "wait.signal" and (templates.is_templated(name) or not is_name(name)):
            problems.append(f"{where}: params.name: {name_problem(name)} (a literal, not a template)")
            continue
        if step.action == "approval":
            approvers = step.params.get("approvers")
            if templates.is_templated(approvers) or not isinstance(approvers, list) or not approvers or not all(
                    isinstance(group, str) and group.strip() for group in approvers):
                problems.append(f"{where}: params.approvers: must be a non-empty list of group names")
        if name in taken:
            problems.append(f"{where}: waits for signal {name!r}, as step {taken[name]!r} does; a signal is taken by "
                            f"one step")
        taken.setdefault(name, step.id)
    return problems


#: Actions that start another workflow, with the parameter naming it.
SUBWORKFLOW_ACTIONS = {"workflow.run": "workflow", "workflow.start": "workflow"}


def subworkflow_targets(steps) -> list[tuple[str, str]]:
    """(step id, workflow name) for each step that starts another workflow by a literal name (a templated name is
    known when the run gets there: the engine renders it, and the run it starts is checked then)."""
    targets = []
    for step in steps:
        key = SUBWORKFLOW_ACTIONS.get(step.action)
        if key and isinstance(step.params.get(key), str) and not templates.is_templated(step.params[key]):
            targets.append((step.id, step.params[key]))
    return targets


def _parse_step(raw: Any, index: int, errors: list[str]) -> StepSpec | None:
    if not isinstance(raw, dict):
        errors.append(f"step {index}: must be a mapping with id and action, got {_kind(raw)}")
        return None
    step_id = raw.get("id")
    if not is_name(step_id):
        errors.append(f"step {index}: id {name_problem(step_id)}")
        return None
    where = f"step {step_id!r}"
    problems_before = len(errors)
    for key in sorted(set(raw) - STEP_KEYS):
        errors.append(f"{where}: unknown field {key!r} (allowed: {', '.join(sorted(STEP_KEYS))})")

    action_name = raw.get("action")
    action = action_get(action_name) if isinstance(action_name, str) else None
    if action is None:
        errors.append(f"{where}: unknown action {action_name!r} (known: {', '.join(action_names())})")
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        errors.append(f"{where}: params must be a mapping, got {_kind(params)}")
        params = {}
    elif action is not None:
        # A templated value's type is known only when the run gets there: it is checked then.
        templated = {key for key, value in params.items() if templates.is_templated(value)}
        problems = [problem for problem in action.validate({k: v for k, v in params.items() if k not in templated})
                    if not any(problem == f"missing required parameter {key!r}" for key in templated)]
        if not problems and _has_non_finite(params):  # inside a parameter that takes any JSON
            problems = [f"params: {NON_FINITE}"]
        errors.extend(f"{where}: {problem}" for problem in problems)
    when = raw.get("when")
    if when is not None and (not isinstance(when, str) or not when.strip()):
        errors.append(f"{where}: when must be an expression (text), got {_kind(when)}")

    needs = raw.get("needs") or []
    if isinstance(needs, str):
        needs = [needs]
    if not isinstance(needs, list) or not all(isinstance(need, str) for need in needs):
        errors.append(f"{where}: needs must be a list of step ids")
        needs = []
    if len(set(needs)) != len(needs):
        errors.append(f"{where}: needs lists a step more than once")

    retries = _parse_retries(raw.get("retries"), where, errors)
    timeout_s = raw.get("timeout_s")
    if timeout_s is not None and (
        isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= MAX_TIMEOUT_S
    ):
        errors.append(f"{where}: timeout_s must be a number of seconds above 0 and at most {MAX_TIMEOUT_S}, "
                      f"got {timeout_s!r}")
    on_failure = raw.get("on_failure", "fail")
    if on_failure not in ON_FAILURE:
        errors.append(f"{where}: on_failure must be 'fail' or 'continue', got {on_failure!r}")
    mapping = _parse_map(raw.get("map"), where, errors)
    run_if = raw.get("run_if", RUN_IF_DEFAULT)
    if run_if not in RUN_IF:
        errors.append(f"{where}: run_if must be one of {', '.join(RUN_IF)}, got {run_if!r}")
    elif run_if != RUN_IF_DEFAULT and not needs:
        errors.append(f"{where}: run_if {run_if} needs steps to wait for (needs)")
    pool = raw.get("pool")
    if pool is not None and not is_name(pool):
        errors.append(f"{where}: pool {name_problem(pool)}")
    pool_slots = raw.get("pool_slots", 1)
    if _whole(pool_slots, f"{where}: pool_slots", 1, MAX_POOL_SLOTS, errors) is not None and pool is None \
            and pool_slots != 1:
        errors.append(f"{where}: pool_slots needs a pool")
    concurrency = _whole(raw.get("concurrency"), f"{where}: concurrency", 1, MAX_MAP_CONCURRENCY, errors)
    deadline_s = _seconds(raw.get("deadline_s"), f"{where}: deadline_s", MAX_DEADLINE_S, errors)
    cache = _parse_cache(raw.get("cache"), where, errors)
    if cache is not None and mapping is not None:
        errors.append(f"{where}: cache applies to a whole step, not to a mapped one")
    if (pool is not None or concurrency is not None) and mapping is not None:
        errors.append(f"{where}: pool and concurrency limit whole steps; a mapped step limits its items with "
                      f"map.concurrency")
    description = raw.get("description") or ""
    if len(errors) > problems_before:
        # Its expressions' syntax is checked here, as what they read is checked only for a whole step: every problem
        # at once. Keep the id so later checks (duplicates, needs) still see the step.
        for name, text in _expressions_of(params, when, mapping, cache):
            errors.extend(templates.syntax_problems(text, f"{where}: {name}"))
        return StepSpec(id=step_id, action=str(action_name), needs=tuple(needs))
    return StepSpec(
        id=step_id,
        action=action_name,
        params=params,
        needs=tuple(needs),
        retries=retries,
        timeout_s=float(timeout_s) if timeout_s is not None else None,
        on_failure=on_failure,
        description=str(description),
        when=when.strip() if isinstance(when, str) else None,
        run_if=run_if,
        map=mapping,
        pool=pool,
        pool_slots=pool_slots,
        concurrency=concurrency,
        deadline_s=deadline_s,
        cache=cache,
    )


def _parse_cache(raw: Any, where: str, errors: list[str]) -> dict | None:
    """``cache: {key, ttl_s}`` (None when the step is not cached)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        errors.append(f"{where}: cache must be a mapping (key, ttl_s), got {_kind(raw)}")
        return None
    for key in sorted(set(raw) - CACHE_KEYS):
        errors.append(f"{where}: cache has unknown field {key!r} (allowed: {', '.join(sorted(CACHE_KEYS))})")
    key = raw.get("key")
    if not isinstance(key, str) or not key.strip():
        errors.append(f"{where}: cache.key must be an expression (e.g. params.day or steps.fetch.result.etag)")
    ttl_s = _seconds(raw.get("ttl_s"), f"{where}: cache.ttl_s", MAX_CACHE_TTL_S, errors)
    if raw.get("ttl_s") is None:
        errors.append(f"{where}: cache.ttl_s is required (seconds a result may be reused)")
    return {"key": key.strip() if isinstance(key, str) else "", "ttl_s": ttl_s}


def _parse_map(raw: Any, where: str, errors: list[str]) -> dict | None:
    """``map: {over, max_items, concurrency}`` normalised with its defaults (None when the step is not mapped)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        errors.append(f"{where}: map must be a mapping (over, max_items, concurrency), got {_kind(raw)}")
        return None
    for key in sorted(set(raw) - MAP_KEYS):
        errors.append(f"{where}: map has unknown field {key!r} (allowed: {', '.join(sorted(MAP_KEYS))})")
    over = raw.get("over")
    if not isinstance(over, str) or not over.strip():
        errors.append(f"{where}: map.over must be an expression giving a list (e.g. steps.list.result.files)")
    normalised = {"over": over.strip() if isinstance(over, str) else "", "max_items": raw.get("max_items", 1000),
                  "concurrency": raw.get("concurrency", 16)}
    for key, most in (("max_items", MAX_MAP_ITEMS), ("concurrency", MAX_MAP_CONCURRENCY)):
        value = normalised[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            errors.append(f"{where}: map.{key} must be a whole number from 1 to {most}, got {value!r}")
    return normalised


def _parse_retries(raw: Any, where: str, errors: list[str]) -> RetryPolicy:
    if raw is None:
        return RetryPolicy()
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"max": raw}
    if not isinstance(raw, dict):
        errors.append(f"{where}: retries must be a mapping (max, backoff_s, max_backoff_s, jitter), got {_kind(raw)}")
        return RetryPolicy()
    for key in sorted(set(raw) - RETRY_KEYS):
        errors.append(f"{where}: retries has unknown field {key!r} (allowed: {', '.join(sorted(RETRY_KEYS))})")
    policy = RetryPolicy()
    values = {**asdict(policy), **{k: v for k, v in raw.items() if k in RETRY_KEYS}}
    maximum = values["max"]
    if isinstance(maximum, bool) or not isinstance(maximum, int) or not 0 <= maximum <= MAX_RETRIES:
        errors.append(f"{where}: retries.max must be a whole number from 0 to {MAX_RETRIES}, got {maximum!r}")
    for key in ("backoff_s", "max_backoff_s"):
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_BACKOFF_S:
            errors.append(f"{where}: retries.{key} must be a number of seconds from 0 to {MAX_BACKOFF_S}, "
                          f"got {value!r}")
    if not isinstance(values["jitter"], bool):
        errors.append(f"{where}: retries.jitter must be true or false, got {values['jitter']!r}")
    try:
        if values["max_backoff_s"] < values["backoff_s"]:
            errors.append(f"{where}: retries.max_backoff_s ({values['max_backoff_s']}) is below backoff_s "
                          f"({values['backoff_s']})")
        return RetryPolicy(
            max=int(values["max"]), backoff_s=float(values["backoff_s"]),
            max_backoff_s=float(values["max_backoff_s"]), jitter=bool(values["jitter"]),
        )
    except (TypeError, ValueError):
        return RetryPolicy()


def _has_non_finite(value: Any) -> bool:
    """Whether a NaN or infinite float (YAML's .nan, .inf) is anywhere in ``value``."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _kind(value: Any) -> str:
    kinds = {dict: "a mapping", list: "a list", str: "text", type(None): "nothing"}
    return kinds.get(type(value), type(value).__name__)
