"""Teams: every definition belongs to a team (a group marked as one) and what it produces belongs with it. A member
of team B gets 404 for team A's objects in the API and admin, cannot load over them, run them or use team A's
secrets; triggers and sub-workflows stay inside their team; superusers see everything. A secret's value that a
server echoes back is stored and logged redacted."""
import json
import logging
import textwrap
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.api.groups import OPERATORS
from agents.core.crypto import secret_set, secret_value
from agents.core.redaction import SecretRedactFilter
from agents.core.teams import acting_for, definition_team_problem, team_create
from agents.data import services as data_services
from agents.data.sources import source_frame
from agents.exceptions import DataSourceError, TeamError
from agents.models import (
    AgentMessage,
    AgentTask,
    Check,
    Dataset,
    Event,
    EventType,
    Notification,
    NotificationRoute,
    ResponseRule,
    StepRun,
    Trigger,
    TriggerFiring,
    WorkflowDefinition,
    WorkflowRun,
)
from agents.monitoring import alerts
from agents.monitoring import services as monitoring_services
from agents.orchestration import agent_tasks, messages
from agents.orchestration.events import event_dispatch, trigger_team_problems, triggers_load
from agents.workflows import services as workflow_services
from tests.api.conftest import RULES, WORKFLOW, client_for, error_of
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db


def _member(username: str, team: str, *, staff: bool = False) -> User:
    user = User.objects.create_user(username=username, password="pw-1234-pw", is_staff=staff)
    user.groups.add(Group.objects.get(name=OPERATORS), team_create(name=team)[0].group)
    return user


@pytest.fixture
def team_a_client(db):
    return client_for(_member("alice", "team-a"))


@pytest.fixture
def team_b_client(db):
    return client_for(_member("bob", "team-b"))


def _memory_check(name: str, team: str):
    item = {"name": name, "type": "memory", "critical": 0}
    check, _ = monitoring_services.check_save(name=name, fields=monitoring_services.check_fields(item),
                                              team=team_create(name=team)[0])
    return check


def _team_a_objects(client) -> dict:
    """One of each kind of object, made by a member of team A through the API."""
    assert client.post("/api/workflows/", {"text": WORKFLOW}, format="json").status_code == 201
    run = client.post("/api/workflow-runs/", {"workflow": "api-flow"}, format="json").json()
    assert client.post("/api/rulesets/", {"text": RULES, "activate": True}, format="json").status_code == 201
    decision = client.post("/api/decisions/", {"ruleset": "api-loans", "context": {"amount": 5}},
                           format="json").json()
    pipeline = json.dumps({"name": "a-revenue", "source": {"kind": "file", "path": "a/orders.csv"},
                           "output": {"dataset": "a_revenue"}})
    assert client.post("/api/pipelines/", {"text": pipeline}, format="json").status_code == 201
    dataset = Dataset.objects.create(name="a_revenue", number=1, path="datasets/a.parquet", row_count=1,
                                     checksum="0" * 64, team=team_create(name="team-a")[0])
    _memory_check("a-memory", "team-a")
    alert = client.post("/api/checks/a-memory/run/").json()
    silence = client.post("/api/silences/", {"matchers": {"check": ["a-memory"]}, "duration": "1h"},
                          format="json").json()
    return {"run": run["run_id"], "decision": decision["decision_id"], "dataset": dataset.pk,
            "alert": alert["alert_id"], "silence": silence["id"]}


def test_a_member_of_team_b_gets_404_for_each_of_team_a_s_objects(team_a_client, team_b_client):
    # given a workflow, run, rule set, decision, pipeline, dataset, check, alert and silence of team A
    made = _team_a_objects(team_a_client)
    urls = ["/api/workflows/api-flow/", f"/api/workflow-runs/{made['run']}/", "/api/rulesets/api-loans/",
            f"/api/decisions/{made['decision']}/", "/api/pipelines/a-revenue/", f"/api/datasets/{made['dataset']}/",
            "/api/checks/a-memory/", f"/api/alerts/{made['alert']}/", f"/api/silences/{made['silence']}/"]
    for url in urls:
        assert team_a_client.get(url).status_code == 200, url

    # when a member of team B asks for each, then each is not found, as if it did not exist
    for url in urls:
        response = team_b_client.get(url)
        assert response.status_code == 404, url
        assert error_of(response)["code"] == "not_found"
    # and no list shows them
    for url in ["/api/workflows/", "/api/workflow-runs/", "/api/rulesets/", "/api/decisions/", "/api/pipelines/",
                "/api/datasets/", "/api/checks/", "/api/alerts/", "/api/silences/"]:
        assert team_b_client.get(url).json()["count"] == 0, url
    assert team_a_client.get("/api/checks/").json()["count"] == 1
    assert not [row for row in team_b_client.get("/api/metrics/summary/").json()["metrics"]
                if row["check"] == "a-memory"]


def test_a_member_of_team_b_cannot_change_or_run_team_a_s_objects(team_a_client, team_b_client):
    made = _team_a_objects(team_a_client)

    # acting on them by id or name: not found
    assert team_b_client.post(f"/api/workflow-runs/{made['run']}/cancel/").status_code == 404
    assert team_b_client.post("/api/rulesets/api-loans/activate/", {"version": 1}, format="json").status_code == 404
    assert team_b_client.post("/api/pipelines/a-revenue/run/", {}, format="json").status_code == 404
    assert team_b_client.post("/api/checks/a-memory/run/").status_code == 404
    assert team_b_client.post(f"/api/alerts/{made['alert']}/ack/", {}, format="json").status_code == 404
    assert team_b_client.post(f"/api/silences/{made['silence']}/end/").status_code == 404
    # starting or deciding by name: 400 naming the field, as for a name that does not exist
    started = team_b_client.post("/api/workflow-runs/", {"workflow": "api-flow"}, format="json")
    assert started.status_code == 400 and "no workflow named 'api-flow'" in error_of(started)["fields"]["workflow"][0]
    decided = team_b_client.post("/api/decisions/", {"ruleset": "api-loans", "context": {"amount": 5}},
                                 format="json")
    assert decided.status_code == 400 and "ruleset" in error_of(decided)["fields"]
    # loading a new version over team A's definition: refused, team A's versions unchanged
    changed = WORKFLOW.replace("Two echo steps.", "Taken over.")
    loaded = team_b_client.post("/api/workflows/", {"text": changed}, format="json")
    assert loaded.status_code == 400
    assert "belongs to another team" in error_of(loaded)["fields"]["text"][0]
    assert team_a_client.get("/api/workflows/api-flow/").json()["versions"][-1]["version"] == 1


def test_a_superuser_sees_every_team_s_objects(team_a_client, team_b_client):
    made = _team_a_objects(team_a_client)
    admin = client_for(User.objects.create_superuser("root", password="pw-1234-pw"))

    assert admin.get(f"/api/workflow-runs/{made['run']}/").status_code == 200
    assert admin.get("/api/checks/").json()["count"] == 1


def test_a_load_names_one_of_the_user_s_teams_or_is_refused(db):
    user = _member("carol", "team-a")
    user.groups.add(team_create(name="team-c")[0].group)
    client = client_for(user)

    # a member of two teams must say which
    unnamed = client.post("/api/workflows/", {"text": WORKFLOW}, format="json")
    assert unnamed.status_code == 400
    assert "several teams (team-a, team-c)" in error_of(unnamed)["fields"]["team"][0]
    # and may not name a team they are not in
    foreign = client.post("/api/workflows/", {"text": WORKFLOW, "team": "team-b"}, format="json")
    assert foreign.status_code == 400 and "team" in error_of(foreign)["fields"]

    loaded = client.post("/api/workflows/", {"text": WORKFLOW, "team": "team-c"}, format="json")

    assert loaded.status_code == 201
    assert WorkflowDefinition.objects.get(name="api-flow").team.name == "team-c"


def test_admin_shows_a_member_only_their_team_s_definitions(client, team_a_client):
    _team_a_objects(team_a_client)
    bob = _member("bob-admin", "team-b", staff=True)
    client.force_login(bob)
    definition = WorkflowDefinition.objects.get(name="api-flow")

    listing = client.get("/admin/agents/workflowdefinition/")
    change = client.get(f"/admin/agents/workflowdefinition/{definition.pk}/change/", follow=True)

    assert listing.status_code == 200 and "api-flow" not in listing.content.decode()
    # Django admin answers an object it cannot find by sending the user to the index, saying it does not exist
    assert change.redirect_chain and "doesn’t exist" in change.content.decode()
    assert "Two echo steps" not in change.content.decode()


# --- what crosses teams -----------------------------------------------------------------------------------


def test_a_sub_workflow_of_another_team_is_refused_at_load(team_a_client, team_b_client):
    assert team_a_client.post("/api/workflows/", {"text": WORKFLOW}, format="json").status_code == 201
    parent = textwrap.dedent("""\
        name: b-parent
        steps:
          - id: child
            action: workflow.run
            params: {workflow: api-flow}
        """)

    response = team_b_client.post("/api/workflows/", {"text": parent}, format="json")

    assert response.status_code == 400
    assert "runs workflow 'api-flow', which belongs to another team" in error_of(response)["fields"]["text"][0]
    assert not WorkflowDefinition.objects.filter(name="b-parent").exists()


def test_a_trigger_may_start_only_its_own_team_s_workflows(team_a_client):
    assert team_a_client.post("/api/workflows/", {"text": WORKFLOW}, format="json").status_code == 201
    trigger = json.dumps([{"name": "b-on-decision", "event": "decision.made", "action": "workflow",
                           "target": "api-flow"}])

    with pytest.raises(TeamError, match="starts workflow 'api-flow', which belongs to another team"):
        triggers_load(text=trigger, team=team_create(name="team-b")[0])
    assert not Trigger.objects.filter(name="b-on-decision").exists()


@pytest.mark.parametrize("response", [{"workflow": "api-flow"},
                                      {"action": "workflow.start", "params": {"workflow": "api-flow"}}])
def test_a_response_rule_may_start_only_its_own_team_s_workflows(team_a_client, response):
    # it was stored, to be refused at every alert it matched: a way to learn another team's workflow names
    assert team_a_client.post("/api/workflows/", {"text": WORKFLOW}, format="json").status_code == 201
    text = json.dumps({"responses": [{"name": "b-restart", **response}]})

    with pytest.raises(TeamError, match="response 'b-restart' starts workflow 'api-flow', which belongs to another"):
        monitoring_services.definitions_load(text=text, team=team_create(name="team-b")[0])
    assert not ResponseRule.objects.filter(name="b-restart").exists()

#: A response rule's action on a definition of team A, and how its refusal names the rule, the field and the definition.
RESPONSE_ACTIONS = [
    ({"action": "decision.evaluate", "params": {"ruleset": "api-loans", "context": {"amount": 5}}},
     "response 'b-respond' runs rule set 'api-loans' (params.ruleset), which belongs to another team"),
    ({"action": "data.pipeline", "params": {"pipeline": "a-revenue"}},
     "response 'b-respond' runs pipeline 'a-revenue' (params.pipeline), which belongs to another team"),
    ({"action": "monitoring.check", "params": {"check": "a-memory"}},
     "response 'b-respond' runs check 'a-memory' (params.check), which belongs to another team"),
]


@pytest.mark.parametrize(("response", "refused"), RESPONSE_ACTIONS)
def test_a_response_rule_may_run_only_its_own_team_s_rule_sets_pipelines_and_checks(team_a_client, tmp_path, response,
                                                                                     refused):
    # given team A's rule set, pipeline and check, and a file of team B's check, route and two responses, one of them
    # running an action on one of team A's (it was stored, to be refused at every alert it matched)
    _team_a_objects(team_a_client)
    team_create(name="team-b")
    path = tmp_path / "b-monitoring.json"
    path.write_text(json.dumps({
        "checks": [{"name": "b-memory", "type": "memory", "critical": 0}],
        "routes": [{"name": "b-log", "handler": "log"}],
        "responses": [{"name": "b-echo", "action": "echo", "params": {"value": 1}}, {"name": "b-respond", **response}],
    }))

    # when team B loads it
    with pytest.raises(CommandError) as error:
        call_command("monitor", "load", str(path), "--team", "team-b")

    # then it is refused naming the rule, the field and the definition, and nothing of the file is stored
    assert str(error.value) == refused
    assert not ResponseRule.objects.exists()
    assert not Check.objects.filter(name="b-memory").exists()
    assert not NotificationRoute.objects.filter(name="b-log").exists()
    # while team A may load the same responses, running its own
    call_command("monitor", "load", str(path), "--team", "team-a")
    assert sorted(ResponseRule.objects.filter(team__group__name="team-a").values_list("name", flat=True)) == [
        "b-echo", "b-respond"]


def test_whether_a_definition_is_another_team_s_is_answered_once_for_tasks_triggers_and_responses(db):
    # given team A's workflow, and team B
    team_a, team_b = team_create(name="team-a")[0], team_create(name="team-b")[0]
    workflow_services.workflow_load(text=WORKFLOW, team=team_a)

    def problem(name: str, team_id: int | None) -> str | None:
        return definition_team_problem(WorkflowDefinition, name, team_id, what=f"workflow {name!r}",
                                       missing=f"no workflow {name!r}")

    # then team B is told it is another team's, team A and code acting for no team are not, and a missing one is
    # reported as the asker says
    assert problem("api-flow", team_b.pk) == "workflow 'api-flow' belongs to another team"
    assert problem("api-flow", team_a.pk) is None and problem("api-flow", None) is None
    assert problem("no-flow", team_b.pk) == problem("no-flow", None) == "no workflow 'no-flow'"
    # and each place that asks says so in its own words
    assert agent_tasks.task_definition_problems(team_b.pk, "workflow", {"workflow": "api-flow"}) == [
        "config.workflow: workflow definition 'api-flow' belongs to another team"]
    assert trigger_team_problems({"name": "b-go", "action": "workflow", "target": "api-flow"}, team_b.pk) == [
        "trigger 'b-go' starts workflow 'api-flow', which belongs to another team"]
    with pytest.raises(TeamError) as refused:
        monitoring_services.definitions_load(text=json.dumps({"responses": [{"name": "b-go", "workflow": "api-flow"}]}),
                                             team=team_b)
    assert str(refused.value) == "response 'b-go' starts workflow 'api-flow', which belongs to another team"


def test_an_event_about_team_a_s_object_fires_only_team_a_s_triggers(db):
    team_a, team_b = team_create(name="team-a")[0], team_create(name="team-b")[0]
    for name, team in (("a-told", team_a), ("b-told", team_b)):
        triggers_load(text=json.dumps([{"name": name, "event": "workflow.failed", "action": "message",
                                        "target": "type:monitoring"}]), team=team)
    event = Event.objects.create(event_type=EventType.WORKFLOW_FAILED, payload={"workflow_run_id": 1},
                                 team=team_a)

    event_dispatch(event_id=event.pk)

    assert list(TriggerFiring.objects.values_list("trigger__name", flat=True)) == ["a-told"]


@pytest.mark.django_db(transaction=True)
def test_a_webhook_of_team_b_cannot_send_team_a_s_secret(worker, endpoint):
    # given team A's secret, and a route of team B whose webhook header names it
    secret_set(name="A_TOKEN", value="a-secret-value", team=team_create(name="team-a")[0])
    team_b = team_create(name="team-b")[0]
    monitoring_services.definitions_load(text=json.dumps({
        "checks": [{"name": "b-memory", "type": "memory", "critical": 0}],
        "routes": [{"name": "b-hook", "handler": "webhook",
                    "config": {"url": f"{endpoint.url}/hook", "headers": {"X-Token": {"secret": "A_TOKEN"}}}}],
    }), team=team_b)

    # when team B's check fires
    monitoring_services.check_run_now(name="b-memory")

    # then its notice fails naming why, and nothing reached the endpoint
    notice = wait_for(lambda: Notification.objects.filter(route="b-hook").exclude(status="sending").first(),
                      timeout_s=20, what="the firing notice to be tried")
    assert notice.status == "failed"
    assert "secret 'A_TOKEN', which belongs to another team" in notice.error
    assert endpoint.headers == []


@pytest.mark.django_db(transaction=True)
def test_a_pipeline_of_team_b_cannot_read_with_team_a_s_secret(worker, endpoint):
    secret_set(name="A_KEY", value="a-api-key", team=team_create(name="team-a")[0])
    pipeline = json.dumps({"name": "b-pull", "output": {"dataset": "b_pull"},
                           "source": {"kind": "api", "url": f"{endpoint.url}/records",
                                      "headers": {"X-Api-Key": {"secret": "A_KEY"}}}})
    version, _ = data_services.pipeline_load(text=pipeline, team=team_create(name="team-b")[0])

    run = data_services.data_run_enqueue(version=version)

    finished = wait_for(lambda: (row := type(run).objects.get(pk=run.pk)).status in ("succeeded", "failed") and row,
                        timeout_s=30, what="the data run to finish")
    assert finished.status == "failed"
    assert "secret 'A_KEY', which belongs to another team" in finished.error
    assert endpoint.headers == []


def test_a_dataset_name_of_another_team_cannot_be_read_as_a_source(db):
    Dataset.objects.create(name="a_private", number=1, path="datasets/a.parquet", row_count=1, checksum="0" * 64,
                           team=team_create(name="team-a")[0])
    with acting_for(team_create(name="team-b")[0].pk), pytest.raises(DataSourceError, match="no dataset named"):
        source_frame({"kind": "dataset", "dataset": "a_private", "number": None})


# --- commands -----------------------------------------------------------------------------------------------


def test_commands_load_into_the_team_named_and_refuse_an_unknown_one(tmp_path, capsys):
    team_create(name="team-b")
    path = tmp_path / "flow.yaml"
    path.write_text(WORKFLOW)

    call_command("workflow", "load", str(path), "--team", "team-b")
    with pytest.raises(CommandError, match="no team 'nobody'"):
        call_command("workflow", "load", str(path), "--team", "nobody")

    assert WorkflowDefinition.objects.get(name="api-flow").team.name == "team-b"


def test_teams_command_marks_a_group_as_a_team_and_adds_members(capsys):
    User.objects.create_user("dora")

    call_command("teams", "add", "payments")
    call_command("teams", "member", "payments", "dora")
    call_command("teams", "list", "--json")

    out = capsys.readouterr().out
    listed = json.loads(out[out.index("["):])
    assert {"team": "payments", "description": "", "members": ["dora"]} in listed
    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("teams", "member", "payments", "nobody")


def test_a_silence_covers_only_its_own_team_s_alerts(db):
    check = _memory_check("shared-name-glob", "team-a")
    outcome = monitoring_services.check_run_now(name=check.name)
    alert = type(check).objects.get(pk=check.pk).alerts.get(pk=outcome.alert_id)
    alerts.silence_create(matchers={"check": ["shared-*"]}, ends_at=timezone.now() + timedelta(hours=1),
                          team=team_create(name="team-b")[0])

    assert alerts.silence_for_alert(alert) is None


def test_an_agent_task_may_run_only_the_user_s_team_s_definitions(team_a_client, team_b_client):
    assert team_a_client.post("/api/workflows/", {"text": WORKFLOW}, format="json").status_code == 201

    refused = team_b_client.post("/api/agent-tasks/", {"agent_type": "workflow", "config": {"workflow": "api-flow"}},
                                 format="json")
    accepted = team_a_client.post("/api/agent-tasks/", {"agent_type": "workflow", "config": {"workflow": "api-flow"}},
                                  format="json")

    assert refused.status_code == 400
    assert "no workflow definition named 'api-flow'" in error_of(refused)["fields"]["config"][0]
    assert accepted.status_code == 201


# --- redaction ----------------------------------------------------------------------------------------------


class EchoServer:
    """A local server that answers every request with the headers it was sent, as JSON (as a debugging endpoint or
    an error page quoting the request might)."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"received": dict(self.headers)}).encode()
                self.send_response(int(self.path.rsplit("/", 1)[-1] or 200))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.mark.django_db(transaction=True)
def test_a_secret_header_echoed_back_is_stored_redacted(worker, echo):
    # given a workflow of team A whose http.request step sends team A's secret in a header to a server that echoes
    team_a = team_create(name="team-a")[0]
    secret_set(name="ECHO_TOKEN", value="s3cr3t-echo-value", team=team_a)
    flow = json.dumps({"name": "echoing", "steps": [
        {"id": "call", "action": "http.request",
         "params": {"url": f"{echo.url}/200", "headers": {"X-Token": {"secret": "ECHO_TOKEN"}}}}]})
    version, _ = workflow_services.workflow_load(text=flow, team=team_a)

    # when it runs
    run = workflow_services.workflow_run_start(version=version)

    # then the server got the value, and the stored result shows it redacted
    finished = wait_for(lambda: (row := WorkflowRun.objects.get(pk=run.pk)).status in ("succeeded", "failed") and row,
                        timeout_s=30, what="the run to finish")
    assert finished.status == "succeeded", StepRun.objects.get(run=run, step_id="call").error
    result = StepRun.objects.get(run=run, step_id="call").result
    assert result["body"]["received"]["X-Token"] == "[redacted]"
    assert "s3cr3t-echo-value" not in json.dumps(result)


@pytest.mark.django_db(transaction=True)
def test_a_secret_echoed_back_to_an_agent_task_or_a_request_is_stored_redacted(worker, echo):
    # given a team's secret, and an agent task and a request of that team whose http.request sends it in a header
    # to a server that echoes it
    team_a = team_create(name="team-a")[0]
    secret_set(name="ECHO_TOKEN", value="s3cr3t-echo-value", team=team_a)

    def call(status: int) -> dict:
        return {"action": "http.request", "params": {"url": f"{echo.url}/{status}",
                                                      "headers": {"X-Token": {"secret": "ECHO_TOKEN"}}}}

    with acting_for(team_a.pk):
        task = agent_tasks.task_submit(agent_type="workflow", config=call(200))
        response = messages.message_request(recipient="type:data", payload=call(200), timeout_s=30)

    # then what each stored (and the request answered) shows the value redacted: a viewer of the team never reads it
    done = wait_for(lambda: (row := AgentTask.objects.get(pk=task.pk)).status in ("completed", "failed") and row,
                    timeout_s=30, what="the task to end")
    assert done.status == "completed", done.error
    assert done.result["body"]["received"]["X-Token"] == "[redacted]"
    assert response.payload["result"]["body"]["received"]["X-Token"] == "[redacted]"
    stored = [json.dumps([done.result, done.error]),
              *(json.dumps([row.payload, row.response, row.error]) for row in AgentMessage.objects.all())]
    assert not [text for text in stored if "s3cr3t-echo-value" in text]


@pytest.mark.django_db(transaction=True)
def test_a_workflow_of_team_b_cannot_send_team_a_s_secret(worker, echo):
    secret_set(name="A_ONLY", value="a-only-value", team=team_create(name="team-a")[0])
    flow = json.dumps({"name": "b-caller", "steps": [
        {"id": "call", "action": "http.request",
         "params": {"url": f"{echo.url}/200", "headers": {"X-Token": {"secret": "A_ONLY"}}}}]})
    version, _ = workflow_services.workflow_load(text=flow, team=team_create(name="team-b")[0])

    run = workflow_services.workflow_run_start(version=version)

    finished = wait_for(lambda: (row := WorkflowRun.objects.get(pk=run.pk)).status in ("succeeded", "failed") and row,
                        timeout_s=30, what="the run to finish")
    assert finished.status == "failed"
    step = StepRun.objects.get(run=run, step_id="call")
    assert "secret 'A_ONLY', which belongs to another team" in step.error and step.attempt == 1


def test_log_lines_carry_no_secret_value_read_for_use(encryption_key, caplog):
    secret_set(name="LOGGED", value="logged-secret-value")
    value = secret_value({"secret": "LOGGED"})
    record = logging.LogRecord("agents.test", logging.WARNING, __file__, 1, "server said %s", (f"bad {value}",),
                               None)

    SecretRedactFilter().filter(record)

    assert record.getMessage() == "server said bad [redacted]"
