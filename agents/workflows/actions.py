"""The action registry: what a workflow step can do, with a parameter schema per action.

Pure: imports nothing from Django at module level. Actions receive an
``ActionContext`` and their validated params and return a JSON-serialisable result,
or ``Deferred`` when the step finishes later (a sub-workflow), without holding a worker.
"""
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.exceptions import ActionError, PermanentActionError

#: JSON types a parameter may declare, and the Python types that satisfy each.
PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "any": (object,),
}


@dataclass(frozen=True)
class Param:
    """One parameter of an action: JSON type, whether required, default, and bounds."""

    type: str = "any"
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None

    def check(self, value: Any) -> str | None:
        """Return why ``value`` does not fit this parameter, or None when it does."""
        if self.type != "any":
            allowed = PARAM_TYPES[self.type]
            if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
                return f"must be {_article(self.type)} {self.type}, got {_json_type(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if self.minimum is not None and isinstance(value, (int, float)) and value < self.minimum:
            return f"must be at least {self.minimum}, got {value}"
        if self.maximum is not None and isinstance(value, (int, float)) and value > self.maximum:
            return f"must be at most {self.maximum}, got {value}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        return None


@dataclass(frozen=True)
class ActionContext:
    """What a step knows when its action runs."""

    run_id: int
    step_id: str
    attempt: int
    workflow: str
    run_params: dict
    inputs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Deferred:
    """Returned by an action whose step completes later (when ``child_run_id`` finishes)."""

    child_run_id: int


@dataclass(frozen=True)
class Action:
    """A registered action."""

    name: str
    function: Callable[..., Any]
    params: dict[str, Param]
    deferred: bool = False

    def validate(self, params: dict) -> list[str]:
        """Return the problems with ``params`` for this action (empty when they fit)."""
        problems = []
        for name in params:
            if name not in self.params:
                known = ", ".join(sorted(self.params)) or "none"
                problems.append(f"unknown parameter {name!r} (known: {known})")
        for name, param in self.params.items():
            if name not in params:
                if param.required:
                    problems.append(f"missing required parameter {name!r}")
                continue
            reason = param.check(params[name])
            if reason:
                problems.append(f"parameter {name!r} {reason}")
        return problems

    def with_defaults(self, params: dict) -> dict:
        """Return ``params`` with every unset optional parameter at its default."""
        return {**{n: p.default for n, p in self.params.items() if not p.required}, **params}

    def call(self, context: "ActionContext", params: dict) -> Any:
        """Run the action with ``params`` (defaults filled in) in ``context``."""
        return self.function(context, **self.with_defaults(params))


_registry: dict[str, Action] = {}


def action(name: str, *, params: dict[str, Param] | None = None, deferred: bool = False):
    """Register the decorated function as the action ``name``."""

    def register(function):
        if name in _registry and _registry[name].function is not function:
            raise ValueError(f"action {name!r} is already registered")
        _registry[name] = Action(name=name, function=function, params=params or {}, deferred=deferred)
        return function

    return register


def action_get(name: str) -> Action | None:
    """Return the action called ``name``, or None."""
    return _registry.get(name)


def action_names() -> list[str]:
    """Return the names of every registered action, sorted."""
    return sorted(_registry)


def _json_type(value: Any) -> str:
    for name, types in PARAM_TYPES.items():
        if name != "any" and isinstance(value, types) and not (isinstance(value, bool) and name != "boolean"):
            return name
    return "null" if value is None else type(value).__name__


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# --- built-in actions --------------------------------------------------------


@action("noop")
def noop(context: ActionContext) -> None:
    """Do nothing; for structure and benchmarks."""
    return None


@action("sleep", params={"seconds": Param("number", required=True, minimum=0, maximum=86400)})
def sleep(context: ActionContext, *, seconds: float) -> dict:
    """Sleep ``seconds``."""
    time.sleep(seconds)
    return {"slept_s": seconds}


@action(
    "fail",
    params={
        "times": Param("integer", minimum=0, default=None),
        "message": Param("string", default="failed on purpose"),
    },
)
def fail(context: ActionContext, *, times: int | None, message: str) -> dict:
    """Fail the first ``times`` attempts of this step in this run (every attempt when unset)."""
    if times is None or context.attempt <= times:
        raise ActionError(f"{message} (attempt {context.attempt})")
    return {"succeeded_on_attempt": context.attempt}


@action("echo", params={"value": Param("any")})
def echo(context: ActionContext, *, value: Any = None) -> dict:
    """Return its value, the run's parameters and the step's inputs."""
    return {"value": value, "params": context.run_params, "inputs": context.inputs}



@action(
    "http.request",
    params={
        "url": Param("string", required=True),
        "method": Param("string", default="GET", choices=("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")),
        "headers": Param("object", default=None),
        "json": Param("any", default=None),
        "timeout_s": Param("number", default=10, minimum=0.1, maximum=300),
        "expect_status": Param("array", default=None),
    },
)
def http_request(context: ActionContext, *, url, method, headers, json, timeout_s, expect_status) -> dict:
    """Send an HTTP request to an allowed host; fail on a status other than expected (2xx by default)."""
    from urllib.parse import urlsplit

    import requests

    from agents.breakers import breaker, http_key
    from agents.exceptions import CircuitOpenError
    from agents.network import host_refusal

    refusal = host_refusal(urlsplit(url).hostname or "", "AGENTS_HTTP_ALLOWED_HOSTS")
    if refusal:
        raise PermanentActionError(refusal)
    try:
        with breaker(http_key(url), timeout_s=timeout_s) as call:
            response = requests.request(method, url, headers=headers, json=json, timeout=timeout_s)
            if response.status_code >= 500:
                call.failed(f"answered {response.status_code}")
    except CircuitOpenError as error:
        # Retryable: a later attempt, after the cool-down, may be the trial call that closes the circuit.
        raise ActionError(f"{method} {url} not sent: {error}") from None
    except requests.RequestException as error:
        raise ActionError(f"{method} {url} failed: {error}") from None
    ok = response.status_code in expect_status if expect_status else 200 <= response.status_code < 300
    if not ok:
        raise ActionError(f"{method} {url} answered {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        body = response.text[:10_000]
    return {"status": response.status_code, "body": body}


@action(
    "workflow.run",
    params={"workflow": Param("string", required=True), "params": Param("object", default=None)},
    deferred=True,
)
def workflow_run(context: ActionContext, *, workflow: str, params: dict | None) -> Deferred:
    """Start the latest version of ``workflow`` as a child run; the step finishes when it does."""
    from agents.workflows.services import workflow_run_start

    child = workflow_run_start(
        workflow=workflow, params=params or {}, parent_run_id=context.run_id, parent_step_id=context.step_id
    )
    return Deferred(child_run_id=child.pk)


@action("decision.evaluate", params={"ruleset": Param("string", required=True), "context": Param("object", default=None)})
def decision_evaluate(step: ActionContext, *, ruleset: str, context: dict | None) -> dict:
    """Decide with the active version of ``ruleset`` on the step's ``context`` param, or else on the
    run's params merged with the step's inputs."""
    from agents.decisions.services import decide
    from agents.exceptions import AgentsError

    decision_context = context if context is not None else {**step.run_params, **step.inputs}
    try:
        return decide(ruleset=ruleset, context=decision_context, explain=False)
    except AgentsError as error:
        raise PermanentActionError(str(error)) from None


@action(
    "data.pipeline",
    params={
        "pipeline": Param("string", required=True),
        "params": Param("object", default=None),
        "require_quality": Param("boolean", default=True),
    },
)
def data_pipeline(context: ActionContext, *, pipeline: str, params: dict | None, require_quality: bool) -> dict:
    """Run the latest version of data ``pipeline``; return its run, dataset (id, name, number, path) and quality.

    The step fails (without retrying) when the pipeline is invalid or missing; a failed run fails the step and
    may be retried. With ``require_quality: false`` a run failed only by quality checks still returns.
    """
    from agents.data.selectors import data_run_json
    from agents.data.services import pipeline_run
    from agents.exceptions import DataError, PipelineNotFoundError, PipelineSpecError

    try:
        run = pipeline_run(pipeline=pipeline, params=params or {})
    except (PipelineNotFoundError, PipelineSpecError) as error:
        raise PermanentActionError(str(error)) from None
    except DataError as error:
        raise ActionError(str(error)) from None
    result = data_run_json(run)
    summary = {key: result[key] for key in ("run_id", "status", "rows_in", "rows_out", "output", "quality_passed")}
    summary["quality"] = [
        {key: check[key] for key in ("name", "type", "status", "unexpected_count", "unexpected_percent")}
        for check in result["quality"]
    ]
    if run.status != "succeeded" and (require_quality or run.quality_passed is not False):
        raise ActionError(f"data run {run.pk} of {pipeline} failed: {run.error}")
    return summary


@action(
    "monitoring.check",
    params={"check": Param("string", required=True), "require_ok": Param("boolean", default=True)},
)
def monitoring_check(context: ActionContext, *, check: str, require_ok: bool) -> dict:
    """Run the monitoring check ``check`` now (recording its result and alert as a scheduled run would) and
    return its outcome; with ``require_ok`` (the default) a critical result fails the step."""
    from agents.exceptions import CheckNotFoundError
    from agents.monitoring.services import check_run_now

    try:
        outcome = check_run_now(name=check)
    except CheckNotFoundError as error:
        raise PermanentActionError(str(error)) from None
    if require_ok and outcome.status == "critical":
        raise ActionError(f"check {check} is critical: {outcome.message}")
    return outcome.as_json()
