"""The data area's actions: ``data.pipeline`` for workflow steps, and the agent-task kind of data agents
(``{pipeline: name, params: {...}}``). Loaded on the first lookup in a registry (``agents.core.registry``)."""
from agents.core.actions import ActionContext, action, run_params_check, task_kind
from agents.core.hooks import workers_lost
from agents.core.params import Param
from agents.core.teams import definition_team_problem, team_acting
from agents.data.selectors import data_run_json
from agents.data.services import data_runs_requeue_lost, pipeline_params_problems, pipeline_run
from agents.exceptions import (
    ActionError,
    DataError,
    PermanentActionError,
    PipelineNotFoundError,
    PipelineSpecError,
    TeamError,
)
from agents.models import Pipeline


@action(
    "data.pipeline",
    params={
        "pipeline": Param("string", required=True),
        "params": Param("object", default=None),
        "require_quality": Param("boolean", default=True),
    },
    check=run_params_check("pipeline", lambda name, params: pipeline_params_problems(pipeline=name, params=params)),
)
def data_pipeline(context: ActionContext, *, pipeline: str, params: dict | None, require_quality: bool) -> dict:
    """Run the latest version of data ``pipeline``; return its run, dataset (id, name, number, path) and quality.

    The step fails (without retrying) when the pipeline is invalid, missing or, acting for a team, another team's;
    a failed run fails the step and may be retried. With ``require_quality: false`` a run failed only by quality
    checks still returns.
    """
    try:
        if problem := definition_team_problem(Pipeline, pipeline, team_acting.get(), what=f"pipeline {pipeline!r}"):
            raise TeamError(problem)
        run = pipeline_run(pipeline=pipeline, params=params or {})
    except (PipelineNotFoundError, PipelineSpecError, TeamError) as error:
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


# A data agent's task ``{pipeline: name, params: {...}}`` runs that pipeline here and now; a run failed only by
# its quality checks completes the task with the quality results, any other failure fails the task.
task_kind(agent_type="data", key="pipeline", action="data.pipeline", extra=("params",),
          fixed={"require_quality": False})


workers_lost.register("data_runs", data_runs_requeue_lost)
