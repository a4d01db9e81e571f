"""A backfill can be seen (how far it is, its runs, why it ended early) and stopped, from the command, the API and
the admin; stopping is a guarded transition: once ended, a backfill cannot be stopped again."""
import json

import pytest
from django.core.management import CommandError, call_command

from agents.api.groups import OPERATORS, VIEWERS
from agents.models import RunStatus, WorkflowBackfill, WorkflowRun
from agents.workflows import services
from tests.api.conftest import _user, client_for
from tests.workflows.conftest import held_backfill, held_flow

pytestmark = pytest.mark.django_db

def _backfill(name: str = "nightly", max_parallel: int | None = 1) -> int:
    return held_backfill(name=name, max_parallel=max_parallel)["backfill_id"]


def _listed(capsys, workflow: str = "nightly") -> list[dict]:
    capsys.readouterr()
    call_command("workflow", "backfills", workflow, "--json")
    return json.loads(capsys.readouterr().out)


def test_the_command_lists_a_backfill_stops_it_and_refuses_a_second_stop(capsys):
    backfill_id = _backfill()

    (starting,) = _listed(capsys)
    call_command("workflow", "backfill-stop", str(backfill_id))
    said = capsys.readouterr().out
    (ended,) = _listed(capsys)
    with pytest.raises(CommandError, match=f"backfill #{backfill_id} has ended .*nothing to stop"):
        call_command("workflow", "backfill-stop", str(backfill_id))
    call_command("workflow", "backfills", "nightly")
    table = capsys.readouterr().out

    assert starting["state"] == "starting" and starting["slots_total"] == 3 and starting["slots_pending"] == 2
    assert sum(starting["runs"].values()) == 1 and starting["ended_reason"] == ""
    assert "2 of 3 slots not started" in said
    assert ended["state"] == "ended" and ended["slots_pending"] == 2 and ended["finished_at"]
    assert "stopped by" in ended["ended_reason"] and "2 of 3 slots not started" in ended["ended_reason"]
    assert f"#{backfill_id}" in table and "1/3 slots started" in table and "ended" in table
    # the run it started goes on; when it ends, no slot starts after it
    (run,) = WorkflowRun.objects.filter(backfill_id=backfill_id)
    services.workflow_run_cancel(run_id=run.pk)
    assert services.backfill_continue(backfill_id=backfill_id) == []
    assert WorkflowRun.objects.filter(backfill_id=backfill_id).count() == 1


def test_a_backfill_whose_runs_all_ended_is_done_and_cannot_be_stopped(capsys):
    backfill_id = _backfill(max_parallel=None)  # every slot starts at once
    (running,) = _listed(capsys)
    for run in WorkflowRun.objects.filter(backfill_id=backfill_id):
        services.workflow_run_cancel(run_id=run.pk)

    (done,) = _listed(capsys)
    with pytest.raises(CommandError, match="has ended \\(every slot started\\)"):
        call_command("workflow", "backfill-stop", str(backfill_id))

    assert running["state"] == "running" and running["slots_pending"] == 0
    assert done["state"] == "done" and done["runs"] == {RunStatus.CANCELLED: 3} and done["ended_reason"] == ""


def test_the_command_names_an_unknown_workflow_or_backfill(capsys):
    with pytest.raises(CommandError, match="no workflow named 'nowhere'"):
        call_command("workflow", "backfills", "nowhere")
    with pytest.raises(CommandError, match="no backfill with id 999999"):
        call_command("workflow", "backfill-stop", "999999")
    services.workflow_load(text=held_flow())
    call_command("workflow", "backfills", "nightly")
    assert "nightly: no backfills" in capsys.readouterr().out


def test_the_api_lists_and_stops_backfills_within_the_user_s_teams():
    backfill_id = _backfill()
    other_id = _backfill("weekly")
    operator = client_for(_user("otto", OPERATORS))
    viewer = client_for(_user("vera", VIEWERS))
    outsider = client_for(_user("oscar", OPERATORS, team="elsewhere"))

    listed = viewer.get("/api/workflows/nightly/backfills/")
    viewer_stop = viewer.post(f"/api/workflows/nightly/backfills/{backfill_id}/stop/")
    outsider_list = outsider.get("/api/workflows/nightly/backfills/")
    outsider_stop = outsider.post(f"/api/workflows/nightly/backfills/{backfill_id}/stop/")
    wrong_workflow = operator.post(f"/api/workflows/nightly/backfills/{other_id}/stop/")
    stopped = operator.post(f"/api/workflows/nightly/backfills/{backfill_id}/stop/")
    again = operator.post(f"/api/workflows/nightly/backfills/{backfill_id}/stop/")

    assert listed.status_code == 200 and listed.json()["count"] == 1
    (row,) = listed.json()["results"]
    assert row["backfill_id"] == backfill_id and row["state"] == "starting" and row["from"].startswith("2026-11-01")
    assert viewer_stop.status_code == 403
    assert outsider_list.status_code == 404 and outsider_stop.status_code == 404
    assert wrong_workflow.status_code == 404
    assert stopped.status_code == 200 and stopped.json()["state"] == "ended"
    assert again.status_code == 409 and "nothing to stop" in again.json()["error"]["message"]
    assert WorkflowBackfill.objects.get(pk=other_id).finished_at is None  # the other workflow's goes on


def test_the_admin_lists_backfills_with_their_runs_and_stops_one(admin_client):
    backfill_id = _backfill()

    listing = admin_client.get("/admin/agents/workflowbackfill/")
    runs = admin_client.get(f"/admin/agents/workflowrun/?backfill__id__exact={backfill_id}")
    stop = admin_client.post("/admin/agents/workflowbackfill/", {"action": "stop_backfills",
                                                                 "_selected_action": [backfill_id]}, follow=True)
    again = admin_client.post("/admin/agents/workflowbackfill/", {"action": "stop_backfills",
                                                                  "_selected_action": [backfill_id]}, follow=True)

    page = listing.content.decode()
    assert listing.status_code == 200 and "starting" in page and "1 of 3" in page and "(1 unfinished, 0 failed)" in page
    assert runs.status_code == 200 and "1 workflow run" in runs.content.decode()
    assert "1 backfill stopped." in stop.content.decode()
    assert WorkflowBackfill.objects.get(pk=backfill_id).ended_reason.startswith("stopped by admin")
    assert "nothing to stop" in again.content.decode()


def test_an_api_backfill_id_too_long_for_an_id_is_a_404():
    _backfill()
    operator = client_for(_user("otto", OPERATORS))

    assert operator.post("/api/workflows/nightly/backfills/" + "9" * 5000 + "/stop/").status_code == 404
    assert operator.post("/api/workflows/nightly/backfills/99999999999999999999/stop/").status_code == 404
