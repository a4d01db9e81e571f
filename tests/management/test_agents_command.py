"""`manage.py agents list|status`: output a person or a script can read, clear errors on bad input."""
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.models import Agent
from tests.conftest import embedded_install, manage

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command("agents", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def agents():
    now = timezone.now()
    return [
        Agent.objects.create(name="w1@host:workflow", agent_type="workflow", status="busy", last_heartbeat=now),
        Agent.objects.create(name="w1@host:data", agent_type="data", status="offline", enabled=False),
    ]


def test_list_prints_a_table_of_agents(agents):
    lines = run("list").splitlines()

    assert lines[0].split() == ["NAME", "AGENT_TYPE", "STATUS", "ENABLED", "LAST_HEARTBEAT"]
    assert lines[1].split()[:4] == ["w1@host:data", "data", "offline", "false"]
    assert lines[2].split()[:4] == ["w1@host:workflow", "workflow", "busy", "true"]


def test_list_json_filters_by_type_and_status(agents):
    assert [a["name"] for a in json.loads(run("list", "--json"))] == ["w1@host:data", "w1@host:workflow"]
    assert [a["name"] for a in json.loads(run("list", "--json", "--type", "workflow"))] == ["w1@host:workflow"]
    assert json.loads(run("list", "--json", "--status", "idle")) == []


def test_list_with_no_agents_says_how_to_get_one():
    assert "No agents registered" in run("list")


def test_status_prints_one_agent(agents):
    shown = json.loads(run("status", "w1@host:workflow", "--json"))

    assert shown["status"] == "busy"
    assert shown["agent_type"] == "workflow"
    assert shown["last_heartbeat"] is not None
    assert "status: busy" in run("status", "w1@host:workflow")


def test_status_of_an_unknown_agent_is_an_error_naming_it():
    with pytest.raises(CommandError, match="no agent named 'nobody'"):
        run("status", "nobody")


def test_bad_input_exits_non_zero_with_a_message_and_no_traceback(tmp_path, embedded_migrated):
    env = embedded_install(tmp_path, embedded_migrated)

    unknown = manage("agents", "status", "nobody", env=env)
    bad_type = manage("agents", "list", "--type", "robot", env=env)
    no_subcommand = manage("agents", env=env)

    assert unknown.returncode == 1
    assert "no agent named 'nobody'" in unknown.stderr
    assert bad_type.returncode == 2
    assert "invalid choice: 'robot'" in bad_type.stderr
    assert no_subcommand.returncode != 0
    for result in (unknown, bad_type, no_subcommand):
        assert "Traceback" not in result.stderr
