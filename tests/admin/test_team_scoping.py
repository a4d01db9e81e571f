"""What the admin shows a staff member of one team about another team: none of its agent tasks on a shared agent's
page or in the agent list, none of its definitions' names in a list filter, none of its team names, and no audit
entry at all (the log spans every team: superusers read it).

Rows are made directly with the ORM or the load services (as the services write them), so nothing is sent to the
broker. Alice is a staff operator of team A; Bob a staff operator of teams B and C (two teams, so that a filter of
his own has two choices and is drawn)."""
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.urls import reverse
from django.utils import timezone

from agents.api.groups import OPERATORS, VIEWERS
from agents.core.audit import actor, audit_record
from agents.core.teams import team_create
from agents.data.services import pipeline_load
from agents.decisions.services import rules_load
from agents.models import (
    Agent,
    AgentTask,
    AuditEntry,
    Alert,
    DataRun,
    Decision,
    DecisionModelVersion,
    Event,
    EventTypeDeclaration,
    IncidentResponse,
    ResponseRule,
    ShadowComparison,
    Team,
    Trigger,
    TriggerFiring,
    WorkflowRun,
)
from agents.monitoring import services as monitoring
from agents.workflows.services import workflow_load
from tests.conftest import NAMED_RULES

pytestmark = pytest.mark.django_db


def staff_member(username: str, *teams: str, group: str = OPERATORS) -> User:
    """A staff user (not a superuser) of ``group``, a member of each of ``teams``."""
    user = User.objects.create_user(username=username, password="pw-1234-pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group), *(team_create(name=team)[0].group for team in teams))
    return user


@pytest.fixture
def alice(client):
    return staff_member("alice", "team-a")


@pytest.fixture
def bob(client):
    return staff_member("bob", "team-b", "team-c")


def page_as(client, user, url: str, **params) -> str:
    client.force_login(user)
    response = client.get(url, params)
    assert response.status_code == 200, url
    return response.content.decode()


def task_ids(page: str) -> set[int]:
    """The agent tasks a page links to."""
    return {int(pk) for pk in re.findall(r"/admin/agents/agenttask/(\d+)/change/", page)}


# --- a shared agent's tasks -------------------------------------------------------------------


@pytest.fixture
def agent_tasks():
    """An agent that ran a failed task of team A, is running one of team A, and ran one of team B."""
    agent = Agent.objects.create(name="w1@host:workflow", agent_type="workflow", status="busy", hostname="w1@host")
    team_a, team_b = team_create(name="team-a")[0], team_create(name="team-b")[0]
    failed_a = AgentTask.objects.create(agent_type="workflow", config={"workflow": "w"}, agent=agent, team=team_a,
                                        status="failed", error="alpha-private-error: payroll password rejected",
                                        trace_id="a" * 32, finished_at=timezone.now())
    running_a = AgentTask.objects.create(agent_type="workflow", config={"workflow": "w"}, agent=agent, team=team_a,
                                         status="running", started_at=timezone.now() - timedelta(minutes=3))
    done_b = AgentTask.objects.create(agent_type="workflow", config={"workflow": "w"}, agent=agent, team=team_b,
                                      status="completed", error="bravo-own-note", trace_id="b" * 32,
                                      finished_at=timezone.now())
    return agent, {"failed_a": failed_a, "running_a": running_a, "done_b": done_b}


def test_an_agent_s_page_lists_only_the_recent_tasks_of_the_user_s_teams(client, alice, bob, agent_tasks):
    agent, tasks = agent_tasks
    url = reverse("admin:agents_agent_change", args=[agent.pk])

    # when Bob (team B) opens the shared agent's page
    page = page_as(client, bob, url)

    # then he sees his team's task, and nothing of team A's: no id, error text or trace
    assert task_ids(page) == {tasks["done_b"].pk}
    assert "bravo-own-note" in page and "bbbbbbbb" in page
    assert "alpha-private-error" not in page and "aaaaaaaa" not in page
    # while Alice (team A) sees team A's two tasks, and not team B's
    page = page_as(client, alice, url)
    assert task_ids(page) == {tasks["failed_a"].pk, tasks["running_a"].pk}
    assert "alpha-private-error" in page and "bravo-own-note" not in page


def test_the_agent_list_links_the_running_task_to_its_team_s_members_only(client, alice, bob, agent_tasks):
    agent, tasks = agent_tasks
    url = reverse("admin:agents_agent_changelist")

    # when each opens the agent list, then the agent shows as busy to both
    for_bob, for_alice = page_as(client, bob, url), page_as(client, alice, url)

    # and only Alice, whose team's task it runs, gets its "current task" link
    assert task_ids(for_alice) == {tasks["running_a"].pk}
    assert f'<a href="{reverse("admin:agents_agenttask_change", args=[tasks["running_a"].pk])}">' in for_alice
    assert task_ids(for_bob) == set()
    assert '<td class="field-current_task">-</td>' in for_bob
    assert "w1@host:workflow" in for_bob


# --- list filters -----------------------------------------------------------------------------

WORKFLOW = "name: {name}\nsteps:\n  - {{id: a, action: noop}}\n"
PIPELINE = '{{"name": "{name}", "source": {{"kind": "file", "path": "orders.csv"}}}}'


def _team_definitions(team_name: str, prefix: str) -> None:
    """A workflow, rule set, pipeline, response rule and trigger of ``team_name`` called ``<prefix>-<kind>``, and
    one row of everything the admin lists by one of them (a run, a decision, a model, a comparison, ...)."""
    team = team_create(name=team_name)[0]
    version, _ = workflow_load(text=WORKFLOW.format(name=f"{prefix}-flow"), team=team)
    WorkflowRun.objects.create(version=version, status="succeeded")
    pipeline_version, _ = pipeline_load(text=PIPELINE.format(name=f"{prefix}-pipe"), team=team)
    DataRun.objects.create(version=pipeline_version, status="succeeded")
    rules, _ = rules_load(text=NAMED_RULES.format(name=f"{prefix}-rules"), activate=True, team=team)
    decision = Decision.objects.create(ruleset=rules.ruleset, version=rules, context={"amount": 500},
                                       decision="review", engine="rules", latency_ms=1.0)
    ShadowComparison.objects.create(decision=decision, candidate="version 2", candidate_decision="approve",
                                    agrees=False)
    DecisionModelVersion.objects.create(ruleset=rules.ruleset, number=1, path=f"{prefix}/v1.skops", sha256="ab" * 32,
                                        features=[{"name": "amount", "type": "number"}], classes=['"review"'],
                                        metrics={"holdout_accuracy": 0.9, "rows": 100})
    check, _ = monitoring.check_save(name=f"{prefix}-check", team=team,
                                     fields=monitoring.check_fields({"name": f"{prefix}-check", "type": "memory"}))
    now = timezone.now()
    alert = Alert.objects.create(health_check=check, fingerprint=f"{prefix}-x", target="x", state="firing",
                                 summary="down", started_at=now, last_seen_at=now)
    rule = ResponseRule.objects.create(name=f"{prefix}-response", workflow=f"{prefix}-flow", team=team)
    IncidentResponse.objects.create(rule=rule, alert=alert, status="succeeded")
    trigger = Trigger.objects.create(name=f"{prefix}-trigger", event_type="workflow.failed", action="message",
                                     target="*", params={"message_type": "status_update"}, team=team)
    event = Event.objects.create(event_type="workflow.failed", payload={}, team=team)
    TriggerFiring.objects.create(trigger=trigger, event=event, status="succeeded")
    EventTypeDeclaration.objects.create(name=f"{prefix}.happened", team=team)


@pytest.fixture
def definitions(alice, bob):
    """Team A's definitions (``alpha-*``), and Bob's in team B (``bravo-*``) and team C (``charlie-*``)."""
    for team, prefix in (("team-a", "alpha"), ("team-b", "bravo"), ("team-c", "charlie")):
        _team_definitions(team, prefix)


def filter_block(page: str) -> str:
    """The changelist's filter sidebar."""
    start = page.index('id="changelist-filter"')
    return page[start:page.index("</nav>", start)]


#: Each list with a filter on a team-owned definition, and the definition's kind in the ``<prefix>-<kind>`` names.
FILTERED_LISTS = [
    ("workflowversion", "flow"), ("workflowrun", "flow"),
    ("pipelineversion", "pipe"), ("datarun", "pipe"),
    ("rulesetversion", "rules"), ("decision", "rules"), ("decisionmodelversion", "rules"),
    ("shadowcomparison", "rules"),
    ("incidentresponse", "response"), ("triggerfiring", "trigger"),
]


@pytest.mark.parametrize(("model", "kind"), FILTERED_LISTS)
def test_a_list_filter_offers_only_the_user_s_teams_definitions(client, bob, definitions, model, kind):
    # when Bob (teams B and C) opens the list
    page = page_as(client, bob, reverse(f"admin:agents_{model}_changelist"))

    # then its filter offers his teams' two definitions, and team A's is named nowhere on the page
    filters = filter_block(page)
    assert f">bravo-{kind}</a>" in filters and f">charlie-{kind}</a>" in filters
    assert f"alpha-{kind}" not in page


def test_the_team_filter_of_declared_event_types_offers_only_the_user_s_teams(client, bob, definitions):
    url = reverse("admin:agents_eventtypedeclaration_changelist")

    page = page_as(client, bob, url)

    filters = filter_block(page)
    assert ">team-b</a>" in filters and ">team-c</a>" in filters
    assert "team-a" not in page and "alpha.happened" not in page
    assert "bravo.happened" in page and "charlie.happened" in page
    # a superuser is offered every team
    root = User.objects.create_superuser("root", password="pw-1234-pw")
    assert ">team-a</a>" in filter_block(page_as(client, root, url))


# --- the audit log ----------------------------------------------------------------------------


@pytest.fixture
def audit_entries(alice, bob):
    """What Alice and Bob each did, as the services record it."""
    with actor("alice"):
        audit_record("workflow_run.start", "workflow_run", 1, "started alpha-flow", params={"who": "alpha-param"})
    with actor("bob"):
        audit_record("workflow_run.start", "workflow_run", 2, "started bravo-flow", params={"who": "bravo-param"})


@pytest.mark.parametrize("group", [OPERATORS, VIEWERS])
def test_the_audit_log_is_not_shown_to_a_team_s_staff_member(client, audit_entries, group):
    # given a staff member of team B (an operator or a viewer)
    member = staff_member(f"b-{group}", "team-b", group=group)
    client.force_login(member)
    entry = AuditEntry.objects.get(actor="alice")

    # when they open the audit log, or an entry of it
    listing = client.get(reverse("admin:agents_auditentry_changelist"))
    change = client.get(reverse("admin:agents_auditentry_change", args=[entry.pk]))
    index = client.get(reverse("admin:index")).content.decode()

    # then it is refused, and the index does not offer it
    assert listing.status_code == 403 and change.status_code == 403
    assert "alpha-param" not in listing.content.decode() + change.content.decode()
    assert reverse("admin:agents_auditentry_changelist") not in index


def test_a_superuser_reads_every_team_s_audit_entries(client, audit_entries):
    root = User.objects.create_superuser("root", password="pw-1234-pw")

    page = page_as(client, root, reverse("admin:agents_auditentry_changelist"))

    assert "started alpha-flow" in page and "started bravo-flow" in page


def test_the_team_list_shows_a_member_their_own_teams_only(client, alice, bob):
    page = page_as(client, bob, reverse("admin:agents_team_changelist"))

    assert ">team-b</a>" in page and ">team-c</a>" in page
    assert "team-a" not in page


def test_only_a_superuser_may_make_a_team(client, alice):
    # an operator holds add_ of every model; making a group a team decides who sees what: superusers only
    group = Group.objects.create(name="payroll")
    client.force_login(alice)

    assert client.get(reverse("admin:agents_team_add")).status_code == 403
    assert client.post(reverse("admin:agents_team_add"), {"group": group.pk}).status_code == 403
    assert 'href="/admin/agents/team/add/"' not in page_as(client, alice, reverse("admin:agents_team_changelist"))
    assert not Team.objects.filter(group=group).exists()

    client.force_login(User.objects.create_superuser("root", password="pw-1234-pw"))
    response = client.post(reverse("admin:agents_team_add"), {"group": group.pk, "description": "pay"})
    assert response.status_code == 302 and Team.objects.filter(group=group).exists()


# --- a system event's firings -----------------------------------------------------------------


def test_a_system_event_shows_each_member_only_their_team_s_trigger_firings(client, alice, bob):
    # given a system event (no team: every team sees it) that fired a trigger of team A and one of team B
    event = Event.objects.create(event_type="agent.offline", payload={"agent": "w1"})
    for team_name, prefix in (("team-a", "alpha"), ("team-b", "bravo")):
        trigger = Trigger.objects.create(name=f"{prefix}-on-offline", event_type="agent.offline", action="message",
                                         target="*", params={"message_type": "status_update"},
                                         team=team_create(name=team_name)[0])
        TriggerFiring.objects.create(trigger=trigger, event=event, status="failed", error=f"{prefix}-firing-error")

    # when Bob opens the event, and the event list
    page = page_as(client, bob, reverse("admin:agents_event_change", args=[event.pk]))
    listing = page_as(client, bob, reverse("admin:agents_event_changelist"))

    # then he sees his team's firing only, and the list counts only it
    assert "bravo-on-offline" in page and "bravo-firing-error" in page
    assert "alpha-on-offline" not in page and "alpha-firing-error" not in page
    assert re.search(r'<td class="field-firing_count"><a href="[^"]+">1</a></td>', listing)


@pytest.mark.parametrize("name", ["django_celery_beat_periodictask", "django_celery_results_taskresult",
                                  "django_celery_results_groupresult", "django_celery_beat_crontabschedule"])
def test_the_site_s_celery_pages_are_for_superusers_only(client, name):
    # they hold no team: an operator of team B stopped and ran team A's schedule there, and read its tasks' results
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    schedule = PeriodicTask.objects.create(name="workflow alpha-flow schedule default", task="workers.x",
                                           crontab=CrontabSchedule.objects.create(minute="0", hour="2"))
    member = staff_member("bea", "team-b")
    # even given the permissions of those apps' models, as a site might give its operators
    member.user_permissions.add(*Permission.objects.filter(
        content_type__app_label__in=["django_celery_beat", "django_celery_results"]))
    client.force_login(member)
    listing = client.get(reverse(f"admin:{name}_changelist"))
    disabled = client.post(reverse("admin:django_celery_beat_periodictask_changelist"),
                           {"action": "disable_tasks", "_selected_action": [schedule.pk]})
    index = client.get(reverse("admin:index")).content.decode()

    assert listing.status_code == 403 and disabled.status_code == 403
    assert PeriodicTask.objects.get(pk=schedule.pk).enabled
    assert reverse(f"admin:{name}_changelist") not in index
    client.force_login(User.objects.create_superuser("root", password="pw-1234-pw"))
    assert client.get(reverse(f"admin:{name}_changelist")).status_code == 200
