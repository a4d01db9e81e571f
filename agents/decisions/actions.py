"""The decision area's actions: ``decision.evaluate`` for workflow steps, the agent-task kind of decision agents
(``{ruleset: name, context: {...}}``), and the ``decision_models`` custom check. Loaded on the first lookup in a
registry (``agents.core.registry``)."""
from agents.core.actions import ActionContext, action, task_kind
from agents.core.checks import ProbeResult, check_function
from agents.core.params import Param
from agents.core.teams import definition_team_problem, team_acting
from agents.decisions.services import decide, dmn_decision_check, models_unusable
from agents.exceptions import AgentsError, DecisionError, PermanentActionError, RuleSetNotFoundError, TeamError
from agents.models import RuleSet


def _stored_problems(params: dict) -> list[tuple[str, str]]:
    """What the rule set ``params`` name (its active version) says of the ``decision`` they give: a DMN model needs
    one of its decisions named, any other rule set none; work that could only fail is refused when stored. A
    decision given but not known yet (None: a trigger's '$.' path) and a rule set without an active version are
    left to the run."""
    ruleset, decision = params.get("ruleset"), params.get("decision")
    if not isinstance(ruleset, str) or ("decision" in params and decision is None):
        return []
    try:
        dmn_decision_check(ruleset=ruleset, decision=decision)
    except RuleSetNotFoundError:
        return []
    except DecisionError as error:
        return [("decision", str(error))]
    return []


@action("decision.evaluate",
        params={"ruleset": Param("string", required=True), "context": Param("object", default=None),
                "decision": Param("string", default=None)},
        check=_stored_problems)
def decision_evaluate(step: ActionContext, *, ruleset: str, context: dict | None, decision: str | None = None) -> dict:
    """Decide with the active version of ``ruleset`` on the step's ``context`` param, or else on the
    run's params merged with the step's inputs. For a DMN model, ``decision`` names the decision to evaluate.
    Acting for a team (a workflow's step, a team's agent task), the rule set must be that team's."""
    decision_context = context if context is not None else {**step.run_params, **step.inputs}
    try:
        if problem := definition_team_problem(RuleSet, ruleset, team_acting.get(), what=f"rule set {ruleset!r}"):
            raise TeamError(problem)
        dmn_decision_check(ruleset=ruleset, decision=decision)
        return decide(ruleset=ruleset, context=decision_context, explain=False, decision=decision)
    except AgentsError as error:
        raise PermanentActionError(str(error)) from None


# A decision agent's task ``{ruleset: name, context: {...}}`` decides on that context ({} when none is given). A task
# for a DMN model names the action: ``{action: decision.evaluate, params: {ruleset, decision, context}}``.
task_kind(agent_type="decision", key="ruleset", action="decision.evaluate", extra=("context",), fixed={})


@check_function("decision_models")
def decision_models_check(args: dict) -> ProbeResult:
    """Champion and challenger models that cannot be used (file missing or changed), naming them: a check
    ``{type: custom, params: {function: decision_models}, critical: 1}`` alerts while decisions fall back."""
    unusable = models_unusable()
    count = float(len(unusable))
    if unusable:
        named = ", ".join(f"{model['ruleset']} v{model['version']} ({model['alias']}: {model['reason']})"
                          for model in unusable)
        message = f"{len(unusable)} decision model{'s' if len(unusable) != 1 else ''} unusable: {named}"
    else:
        message = "every decision model in use loads"
    return ProbeResult(value=count, unit="models", ok=True, message=message, target="decision_models",
                       metrics={"custom.decision_models": (count, "models")})
