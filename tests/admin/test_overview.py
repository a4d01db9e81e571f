"""The admin index is the operator's overview: firing and pending alerts by severity, failed and running workflow
runs, offline agents, open circuits and queue depths, each linking to where it is handled."""
import html
import re
import textwrap
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.urls import reverse
from django.utils import timezone

from agents.api.groups import VIEWERS
from agents.core.teams import team_create, team_default
from agents.models import Agent, Alert, Silence, WorkflowRun
from agents.monitoring import services as monitoring
from agents.workflows import services as workflows

pytestmark = pytest.mark.django_db

FLOW = """
name: overview-flow
steps:
  - {id: only, action: noop}
"""


def alert(check_name: str, *, state: str, severity: str, minutes_ago: int, **fields) -> Alert:
    check, _ = monitoring.check_save(name=check_name, fields=monitoring.check_fields(
        {"name": check_name, "type": "memory"}))
    started = timezone.now() - timedelta(minutes=minutes_ago)
    return Alert.objects.create(health_check=check, fingerprint=check_name, target="localhost", state=state,
                                severity=severity, summary=f"{check_name} is down", started_at=started,
                                last_seen_at=started, fired_at=started if state == "firing" else None, **fields)


def count_of(page: str, selector: str) -> int:
    return int(re.search(selector + r'[^>]*><strong>(\d+)</strong>', page).group(1))


@pytest.fixture
def site_with_trouble():
    firing = alert("api", state="firing", severity="critical", minutes_ago=125)
    alert("disk", state="pending", severity="warning", minutes_ago=3)
    quiet = alert("db", state="firing", severity="critical", minutes_ago=10)
    alert("old", state="resolved", severity="critical", minutes_ago=300)
    silence = Silence.objects.create(matchers={"check": "db"}, starts_at=timezone.now() - timedelta(minutes=1),
                                     ends_at=timezone.now() + timedelta(hours=2), comment="maintenance")
    version, _ = workflows.workflow_load(text=textwrap.dedent(FLOW))
    now = timezone.now()
    failed = WorkflowRun.objects.create(version=version, status="failed", finished_at=now - timedelta(hours=1))
    WorkflowRun.objects.create(version=version, status="failed", finished_at=now - timedelta(days=2))  # too old
    running = WorkflowRun.objects.create(version=version, status="running")
    WorkflowRun.objects.create(version=version, status="succeeded", finished_at=now)
    Agent.objects.create(name="w9@host:data", agent_type="data", status="offline",
                         last_heartbeat=now - timedelta(minutes=42))
    Agent.objects.create(name="w1@host:workflow", agent_type="workflow", status="idle", last_heartbeat=now)
    return {"firing": firing, "quiet": quiet, "silence": silence, "failed": failed, "running": running}


def test_the_index_shows_what_needs_an_operator_with_links(admin_client, site_with_trouble):
    page = admin_client.get(reverse("admin:index")).content.decode()

    assert count_of(page, 'data-state="firing" data-severity="critical"') == 2
    assert count_of(page, 'data-state="pending" data-severity="warning"') == 1
    assert count_of(page, 'data-state="firing" data-severity="warning"') == 0
    firing, quiet = site_with_trouble["firing"], site_with_trouble["quiet"]
    assert reverse("admin:agents_alert_change", args=[firing.pk]) in page
    assert "2 h 5 min" in page  # how long the api alert has fired, rounded
    silence = site_with_trouble["silence"]
    row = re.search(rf'<tr class="ov-alert" data-alert="{quiet.pk}">(.*?)</tr>', page, re.S).group(1)
    assert f"silenced by #{silence.pk} until" in row
    assert count_of(page, 'id="ov-failed-count"') == 1 and count_of(page, 'id="ov-running-count"') == 1
    assert reverse("admin:agents_workflowrun_change", args=[site_with_trouble["failed"].pk]) in page
    assert reverse("admin:agents_workflowrun_change", args=[site_with_trouble["running"].pk]) in page
    assert count_of(page, 'id="ov-offline-count"') == 1 and "w9@host:data" in page and "42 min ago" in page
    queues = dict(re.findall(r'<tr class="ov-queue" data-queue="(\w+)"><td>\w+</td><td>(\d+)</td>', page))
    assert set(queues) == {"default", "workflow", "decision", "data", "monitoring"}
    assert 'id="content-main"' in page and "Workflow runs" in page  # the list of models is still below


def test_staff_see_only_the_parts_they_may_view(client, site_with_trouble):
    user = User.objects.create_user("watcher", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_alert"))
    user.groups.add(team_default().group)  # the alerts listed are those of the user's teams
    client.force_login(user)

    page = client.get(reverse("admin:index")).content.decode()

    assert 'id="ov-alerts"' in page and count_of(page, 'data-state="firing" data-severity="critical"') == 2
    assert 'id="ov-runs"' not in page and 'id="ov-agents"' not in page and 'id="ov-queues"' not in page


def test_a_team_member_sees_only_their_teams_alerts_and_runs(client):
    now = timezone.now()
    team_a, team_b = team_create(name="team-a")[0], team_create(name="team-b")[0]
    for name, team in (("a-secret-check", team_a), ("b-own-check", team_b)):
        check, _ = monitoring.check_save(name=name, fields=monitoring.check_fields({"name": name, "type": "memory"}),
                                         team=team)
        Alert.objects.create(health_check=check, fingerprint=name, state="firing", severity="critical",
                             summary=f"{name} is down", started_at=now, fired_at=now, last_seen_at=now)
    for name, team in (("a-secret-flow", team_a), ("b-own-flow", team_b)):
        version, _ = workflows.workflow_load(text=textwrap.dedent(FLOW).replace("overview-flow", name), team=team)
        WorkflowRun.objects.create(version=version, status="failed", finished_at=now - timedelta(minutes=5))
        WorkflowRun.objects.create(version=version, status="running")
    bob = User.objects.create_user("bob", password="x", is_staff=True)
    bob.groups.add(Group.objects.get(name=VIEWERS), team_b.group)
    client.force_login(bob)

    page = client.get(reverse("admin:index")).content.decode()

    assert "b-own-check" in page and "b-own-flow" in page
    assert "a-secret-check" not in page and "a-secret-flow" not in page
    assert count_of(page, 'data-state="firing" data-severity="critical"') == 1
    assert count_of(page, 'id="ov-failed-count"') == 1 and count_of(page, 'id="ov-running-count"') == 1


def test_each_run_count_links_to_a_list_of_just_those_runs(admin_client, site_with_trouble):
    # the running count (running, pending or paused) linked to the running runs alone, and the failed count (the
    # last day's) to every failed run
    WorkflowRun.objects.create(version=site_with_trouble["running"].version, status="pending")
    page = admin_client.get(reverse("admin:index")).content.decode()

    for anchor, count in (("ov-running-count", 2), ("ov-failed-count", 1)):
        url = html.unescape(re.search(rf'id="{anchor}" href="([^"]+)"', page).group(1))
        listing = admin_client.get(url)
        assert count_of(page, f'id="{anchor}"') == count
        assert listing.status_code == 200 and listing.context["cl"].result_count == count, url
