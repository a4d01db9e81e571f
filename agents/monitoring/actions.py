"""The monitoring area's actions: ``monitoring.check`` for workflow steps, and the agent-task kind of monitoring
agents (``{check: name}``). Loaded on the first lookup in a registry (``agents.core.registry``)."""
from agents.core.actions import ActionContext, action, task_kind
from agents.core.params import Param
from agents.core.teams import definition_team_problem, team_acting
from agents.exceptions import ActionError, CheckNotFoundError, CheckSpecError, PermanentActionError, TeamError
from agents.models import Check, CheckType
from agents.monitoring.services import check_run_now, external_nothing_to_run


def _stored_problems(params: dict) -> list[tuple[str, str]]:
    """What the check ``params`` name says of running it: an external one (its alerts posted from outside) has
    nothing to run, so work naming it is refused when stored rather than failing when it runs."""
    check = params.get("check")
    if isinstance(check, str) and Check.objects.filter(name=check, check_type=CheckType.EXTERNAL).exists():
        return [("check", external_nothing_to_run(check))]
    return []


@action(
    "monitoring.check",
    params={"check": Param("string", required=True), "require_ok": Param("boolean", default=True)},
    check=_stored_problems,
)
def monitoring_check(context: ActionContext, *, check: str, require_ok: bool) -> dict:
    """Run the monitoring check ``check`` now (recording its result and alert as a scheduled run would) and
    return its outcome; with ``require_ok`` (the default) a critical result fails the step. Acting for a team (a
    workflow's step, a team's agent task), the check must be that team's."""
    try:
        if problem := definition_team_problem(Check, check, team_acting.get(), what=f"check {check!r}"):
            raise TeamError(problem)
        outcome = check_run_now(name=check)
    except (CheckNotFoundError, CheckSpecError, TeamError) as error:  # no retry would change them
        raise PermanentActionError(str(error)) from None
    if require_ok and outcome.status == "critical":
        raise ActionError(f"check {check} is critical: {outcome.message}")
    return outcome.as_json()


# A monitoring agent's task ``{check: name}`` runs that check now and returns its outcome, critical or not.
task_kind(agent_type="monitoring", key="check", action="monitoring.check", fixed={"require_ok": False})
