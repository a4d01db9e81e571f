"""The decision area's actions: ``decision.evaluate`` for workflow steps, and the agent-task kind of decision
agents (``{ruleset: name, context: {...}}``). Registered when the app is ready."""
from agents.core.actions import ActionContext, action, task_kind
from agents.core.params import Param
from agents.decisions.services import decide
from agents.exceptions import AgentsError, PermanentActionError


@action("decision.evaluate",
        params={"ruleset": Param("string", required=True), "context": Param("object", default=None)})
def decision_evaluate(step: ActionContext, *, ruleset: str, context: dict | None) -> dict:
    """Decide with the active version of ``ruleset`` on the step's ``context`` param, or else on the
    run's params merged with the step's inputs."""
    decision_context = context if context is not None else {**step.run_params, **step.inputs}
    try:
        return decide(ruleset=ruleset, context=decision_context, explain=False)
    except AgentsError as error:
        raise PermanentActionError(str(error)) from None


# A decision agent's task ``{ruleset: name, context: {...}}`` decides on that context ({} when none is given).
task_kind(agent_type="decision", key="ruleset", action="decision.evaluate", extra=("context",), fixed={})
