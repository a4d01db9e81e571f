"""The workflow area's actions: the built-ins every step can use (noop, sleep, fail, echo, http.request) and
sub-workflows (``workflow.run`` waits for the child run, ``workflow.start`` does not). Registered in the kernel's
action registry on its first lookup (``agents.core.registry``), with the agent-task kind of workflow agents and the
hook that re-dispatches the steps of a lost worker.
"""
import time
from typing import Any
from urllib.parse import urlsplit

from agents.core.lazy import lazy
from agents.core.actions import ActionContext, Deferred, Wait, action, run_params_check, task_kind
from agents.core.breakers import breaker, http_key
from agents.core.crypto import headers_resolved
from agents.core.hooks import workers_lost
from agents.core.network import connection_failure_reason
from agents.core.outbound import outbound_request, outbound_target, url_shown
from agents.core.params import Param
from agents.exceptions import (
    ActionError,
    AgentsError,
    CircuitOpenError,
    HostLookupError,
    OutboundRequestError,
    PermanentActionError,
    SecretError,
)
from agents.workflows.engine import workflow_steps_requeue_lost
from agents.workflows.services import workflow_params_problems, workflow_run_start

requests = lazy("requests")

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
        "follow_redirects": Param("boolean", default=False),
    },
)
def http_request(context: ActionContext, *, url, method, headers, json, timeout_s, expect_status,
                 follow_redirects) -> dict:
    """Send an HTTP request through the outbound guard to an allowed host; fail on a status other than expected
    (2xx by default). Redirects are followed only with ``follow_redirects``, each hop checked again."""
    shown = url_shown(url)
    try:
        # Before any header (a secret, maybe) is read.
        target = outbound_target(url, "AGENTS_HTTP_ALLOWED_HOSTS", timeout_s=timeout_s)
        headers = _headers_resolve(headers or {}, host=urlsplit(url).hostname or "")
        with breaker(http_key(target.url), timeout_s=timeout_s) as call:
            response = outbound_request(method, url, setting="AGENTS_HTTP_ALLOWED_HOSTS", headers=headers, json=json,
                                        timeout_s=timeout_s, follow_redirects=follow_redirects, target=target)
            if response.status_code >= 500:
                call.failed(f"answered {response.status_code}")
    except HostLookupError as error:  # the resolver failed for now: the step's retries may reach the host
        raise ActionError(str(error)) from None
    except OutboundRequestError as error:
        raise PermanentActionError(str(error)) from None
    except CircuitOpenError as error:
        # Retryable: a later attempt, after the cool-down, may be the trial call that closes the circuit.
        raise ActionError(f"{method} {shown} not sent: {error}") from None
    except requests.RequestException as error:
        reason = connection_failure_reason(error, timeout_s) or type(error).__name__
        raise ActionError(f"{method} {shown} failed: {reason}") from None
    ok = response.status_code in expect_status if expect_status else 200 <= response.status_code < 300
    if not ok:
        raise ActionError(f"{method} {shown} answered {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        body = response.text[:10_000]
    return {"status": response.status_code, "body": body}


def _headers_resolve(headers: dict, *, host: str) -> dict:
    """``headers_resolved``: a secret of the workflow's team (``PermanentActionError`` naming why not)."""
    try:
        return headers_resolved(headers, host=host)
    except SecretError as error:
        raise PermanentActionError(str(error)) from None


#: What the workflow a sub-workflow step names refuses of its run parameters (one it does not declare).
_RUN_PARAMS_CHECK = run_params_check("workflow",
                                     lambda name, params: workflow_params_problems(workflow=name, params=params))


@action(
    "workflow.run",
    params={"workflow": Param("string", required=True), "params": Param("object", default=None)},
    deferred=True,
    check=_RUN_PARAMS_CHECK,
)
def workflow_run(context: ActionContext, *, workflow: str, params: dict | None) -> Deferred:
    """Start the latest version of ``workflow`` as a child run; the step finishes when it does."""
    try:
        # A child the broker cannot take now is started by the reconciler: the step waits for it all the same.
        child = workflow_run_start(workflow=workflow, params=params or {}, parent_run_id=context.run_id,
                                   parent_step_id=context.step_id, report_unsent=False)
    except AgentsError as error:  # missing workflow, unknown parameter, nested too deep: a retry cannot help
        raise PermanentActionError(str(error)) from None
    return Deferred(child_run_id=child.pk)


@action("workflow.start", params={"workflow": Param("string", required=True), "params": Param("object", default=None)},
        check=_RUN_PARAMS_CHECK)
def workflow_start(context: ActionContext, *, workflow: str, params: dict | None) -> dict:
    """Start the latest version of ``workflow`` as a run of its own and return its id at once, without waiting
    for it (what a trigger, an incident response or a workflow agent task does)."""
    try:
        # A run the broker cannot take now is started by the reconciler: it is started all the same.
        run = workflow_run_start(workflow=workflow, params=params or {}, report_unsent=False)
    except AgentsError as error:  # missing workflow, unknown parameter, another team's: a retry cannot help
        raise PermanentActionError(str(error)) from None
    return {"workflow_run_id": run.pk, "status": run.status}


#: What a waiting step does when its timeout passes: fail, succeed with a null result, or succeed with ``default``.
ON_TIMEOUT = ("fail", "continue", "default")
_WAIT_PARAMS = {
    "timeout_s": Param("number", default=None, minimum=0.001, maximum=366 * 86400),
    "on_timeout": Param("string", default="fail", choices=ON_TIMEOUT),
    "default": Param("any", default=None),
}


@action("wait.signal", params={"name": Param("string", required=True), **_WAIT_PARAMS}, deferred=True)
def wait_signal(context: ActionContext, *, name: str, timeout_s: float | None, on_timeout: str, default) -> Wait:
    """Wait, holding no worker, for the signal ``name`` sent to the run (``workflow signal``, the API); its payload
    is the step's result. A signal sent before the step started is taken when it starts."""
    return Wait(signal=name, timeout_s=timeout_s)


@action("approval", params={"approvers": Param("array", required=True),
                            "require": Param("integer", default=1, minimum=1, maximum=100), **_WAIT_PARAMS},
        deferred=True)
def approval(context: ActionContext, *, approvers: list, require: int, timeout_s: float | None, on_timeout: str,
             default) -> Wait:
    """Wait for ``require`` members of the ``approvers`` groups to approve (one rejection fails the step); the
    decisions (who, when, comment) are the step's result. Decided on the admin run page, the API or the command."""
    return Wait(signal=context.step_id, timeout_s=timeout_s)


# A workflow agent's task ``{workflow: name, params: {...}}`` starts that workflow.
task_kind(agent_type="workflow", key="workflow", action="workflow.start", extra=("params",))
# Steps running on a worker that was lost are re-dispatched under a new attempt.
workers_lost.register("workflow_steps", workflow_steps_requeue_lost)
