"""The agent admin: staff see and operate agents, anonymous users are sent to log in."""
import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from agents.api.groups import VIEWERS
from agents.models import Agent

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent():
    return Agent.objects.create(name="w1@host:data", agent_type="data", status="idle", hostname="w1@host")


def test_staff_see_the_agent_list_and_detail(admin_client, agent):
    listing = admin_client.get(reverse("admin:agents_agent_changelist"))
    detail = admin_client.get(reverse("admin:agents_agent_change", args=[agent.pk]))

    assert listing.status_code == 200
    assert b"w1@host:data" in listing.content
    assert detail.status_code == 200
    assert b"w1@host" in detail.content


def test_list_filters_by_status(admin_client, agent):
    Agent.objects.create(name="w2@host:data", agent_type="data", status="offline")

    response = admin_client.get(reverse("admin:agents_agent_changelist"), {"status__exact": "offline"})

    assert b"w2@host:data" in response.content
    assert b"w1@host:data" not in response.content


def test_anonymous_users_are_redirected_to_login(client, agent):
    for url in (reverse("admin:index"), reverse("admin:agents_agent_changelist")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_disable_action_reports_a_pluralised_count(admin_client, agent):
    Agent.objects.create(name="w2@host:data", agent_type="data", enabled=False)

    response = admin_client.post(
        reverse("admin:agents_agent_changelist"),
        {"action": "disable_agents", "_selected_action": [str(a.pk) for a in Agent.objects.all()]},
        follow=True,
    )

    assert "1 agent disabled." in [str(m) for m in response.context["messages"]]
    assert not Agent.objects.filter(enabled=True).exists()


def test_health_probe_reports_the_database(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": True}


def test_a_viewer_neither_sees_nor_can_post_the_enable_and_disable_actions(client, agent):
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.groups.add(Group.objects.get(name=VIEWERS))
    client.force_login(viewer)

    listing = client.get(reverse("admin:agents_agent_changelist")).content.decode()
    posted = client.post(reverse("admin:agents_agent_changelist"),
                         {"action": "disable_agents", "_selected_action": [str(agent.pk)]}, follow=True)

    assert "w1@host:data" in listing
    assert 'value="enable_agents"' not in listing and 'value="disable_agents"' not in listing
    assert not any("disabled" in str(m) for m in posted.context["messages"])
    agent.refresh_from_db()
    assert agent.enabled
