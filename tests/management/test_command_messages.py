"""What a command says is what it did: bad input is refused by name before anything is made or started, and a
command that changed nothing (or less than asked) says so."""
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from agents.core.audit import actor
from agents.core.crypto import key_generate, secret_set
from agents.core.teams import team_create, team_member_set
from agents.exceptions import AgentsError
from agents.models import AuditEntry, Secret, Team
from agents.setup import admin_ensure
from tests.conftest import PROJECT_DIR

pytestmark = pytest.mark.django_db
WORKFLOWS = PROJECT_DIR / "examples" / "workflows"


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- ensure_admin -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("username, message", [
    ("", "AGENTS_ADMIN_USERNAME is set but empty"),
    ("bad name!/ü", r"AGENTS_ADMIN_USERNAME 'bad name!/ü': Enter a valid username"),
    ("a" * 151, r"AGENTS_ADMIN_USERNAME 'a{40}\.\.\.': Ensure this value has at most 150 characters \(it has 151\)"),
])
def test_ensure_admin_refuses_a_user_name_django_would_not_accept_and_makes_nothing(var_dir, monkeypatch, username,
                                                                                     message):
    monkeypatch.setenv("AGENTS_ADMIN_USERNAME", username)

    for basic_auth in ((), ("--basic-auth",)):  # bin/run runs both
        with pytest.raises(CommandError, match=message):
            run("ensure_admin", *basic_auth)

    assert not User.objects.exists()
    assert not (var_dir / "admin_password").exists()


def test_ensure_admin_takes_a_name_with_the_characters_django_allows(var_dir, monkeypatch):
    monkeypatch.setenv("AGENTS_ADMIN_USERNAME", "ops.lead+1@example-site_" + "x" * 126)

    said = run("ensure_admin")

    assert User.objects.get(is_superuser=True).username == "ops.lead+1@example-site_" + "x" * 126
    assert "Admin user: ops.lead+1@example-site_" in said


def test_admin_ensure_itself_refuses_a_name_the_user_model_would_not_accept(var_dir):
    with pytest.raises(AgentsError, match="the admin's user name 'bad name': Enter a valid username"):
        admin_ensure(username="bad name")

    assert not User.objects.exists() and not (var_dir / "admin_password").exists()


# --- demo ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "soon"])
def test_demo_refuses_a_timeout_that_is_not_a_finite_number_of_seconds_above_zero(timeout):
    with pytest.raises(CommandError, match=r"--timeout: expected a (finite )?number of seconds"):
        run("demo", "--timeout", timeout)


# --- workflow enable ----------------------------------------------------------------------------------------


def test_enabling_a_workflow_says_whether_it_has_schedules_to_fire():
    run("workflow", "load", str(WORKFLOWS / "order_fulfilment.yaml"))
    run("workflow", "load", str(WORKFLOWS / "nightly_orders.yaml"))

    unscheduled = run("workflow", "enable", "order-fulfilment")
    scheduled = run("workflow", "enable", "nightly-orders")

    assert unscheduled.strip() == ("order-fulfilment: enabled, but it has no schedule: nothing fires it on a "
                                   "timetable (a schedule in a version loaded later will)")
    assert "schedules fire" not in unscheduled
    assert scheduled.strip() == "nightly-orders: enabled; its 1 schedule fires"


def test_disabling_a_workflow_says_whether_it_had_schedules_to_pause():
    run("workflow", "load", str(WORKFLOWS / "order_fulfilment.yaml"))
    run("workflow", "load", str(WORKFLOWS / "nightly_orders.yaml"))

    assert run("workflow", "disable", "order-fulfilment").strip() == "order-fulfilment: disabled (it has no schedule)"
    assert run("workflow", "disable", "nightly-orders").strip() == "nightly-orders: disabled; its 1 schedule is paused"


# --- teams --------------------------------------------------------------------------------------------------


def test_removing_someone_who_is_not_a_member_says_so_and_can_be_run_twice():
    User.objects.create_user("admin")
    team_create(name="shop")
    with actor("ops"):
        team_member_set(team="shop", username="admin")
        first = run("teams", "member", "shop", "admin", "--remove")
        second = run("teams", "member", "shop", "admin", "--remove")

    assert first.strip() == "admin removed from team shop"
    assert second.strip() == "admin was not a member of team shop; nothing changed"
    assert not User.objects.get(username="admin").groups.filter(name="shop").exists()
    assert AuditEntry.objects.filter(action="team.member").count() == 2  # the add and the one removal


def test_adding_someone_already_a_member_says_so():
    User.objects.create_user("admin")
    team_create(name="shop")

    first = run("teams", "member", "shop", "admin")
    second = run("teams", "member", "shop", "admin")

    assert first.strip() == "admin added to team shop"
    assert second.strip() == "admin is a member of team shop already; nothing changed"


def test_adding_an_existing_team_with_a_description_updates_it_and_says_so():
    run("teams", "add", "shop", "--description", "sells things")

    updated = run("teams", "add", "shop", "--description", "sells and ships things")
    again = run("teams", "add", "shop", "--description", "sells and ships things")
    bare = run("teams", "add", "shop")

    assert updated.strip() == "team shop exists already; its description was updated"
    assert again.strip() == bare.strip() == "team shop exists already; nothing changed"
    assert Team.objects.get(group__name="shop").description == "sells and ships things"


# --- secrets rotate -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("keys, message", [
    (["garbage"], "AGENTS_ENCRYPTION_KEYS item 1 of 1 is not a Fernet key"),
    ([None, "short"], "AGENTS_ENCRYPTION_KEYS item 2 of 2 is not a Fernet key"),
])
def test_secrets_rotate_names_a_key_that_is_not_a_fernet_key(settings, keys, message):
    good = key_generate()
    settings.AGENTS_ENCRYPTION_KEYS = [good]
    secret_set(name="A", value="alpha")
    before = Secret.objects.get().ciphertext

    settings.AGENTS_ENCRYPTION_KEYS = [key or good for key in keys]
    with pytest.raises(CommandError, match=message) as refused:
        run("secrets", "rotate")

    assert "no key" not in str(refused.value)
    assert Secret.objects.get().ciphertext == before


def test_secrets_rotate_with_no_secret_still_refuses_a_bad_key(settings):
    settings.AGENTS_ENCRYPTION_KEYS = ["garbage"]

    with pytest.raises(CommandError, match="AGENTS_ENCRYPTION_KEYS item 1 of 1 is not a Fernet key"):
        run("secrets", "rotate")
