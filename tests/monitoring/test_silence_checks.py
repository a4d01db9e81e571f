"""A silence naming a check by a plain name (no glob character) that no check of its team has is refused, naming
the field, from every entry point (``monitor silence``, the API's create and change); a glob may match nothing yet."""
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.api.groups import OPERATORS
from agents.core.teams import team_create
from agents.exceptions import SilenceError
from agents.models import DEFAULT_TEAM, Check, Silence
from agents.monitoring import alerts
from tests.api.conftest import client_for, error_of
from tests.monitoring.conftest import make_check

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(db):
    """A client of an operator of the default team."""
    user = User.objects.create_user("oncall", password="oncall-pass-1234")
    user.groups.add(Group.objects.get(name=OPERATORS), team_create(name=DEFAULT_TEAM)[0].group)
    return client_for(user)


def monitor(*args) -> str:
    out = StringIO()
    call_command("monitor", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_monitor_silence_refuses_a_check_name_no_check_has_and_stores_nothing():
    # given the checks there are
    make_check("api")
    make_check("db-primary")

    # when an operator silences a mistyped name
    with pytest.raises(CommandError) as refused:
        monitor("silence", "--check", "no-such-check", "--for", "1h")

    # then the command exits 1 naming the check and the checks there are, and no silence is in force
    assert refused.value.returncode == 1
    assert "matchers.check: no check named 'no-such-check' in team 'default' (checks: api, db-primary)" in str(
        refused.value)
    assert not Silence.objects.exists()


def test_monitor_silence_takes_a_known_name_and_a_glob_that_matches_nothing_yet():
    make_check("api")

    known = monitor("silence", "--check", "api", "--for", "1h")
    later = monitor("silence", "--check", "batch-*", "--for", "1h")

    assert known.startswith("silence #") and later.startswith("silence #")
    assert sorted(silence.matchers["check"] for silence in Silence.objects.all()) == [["api"], ["batch-*"]]


def test_a_silence_of_one_team_may_not_name_a_check_of_another():
    # a silence only ever covers checks of its own team: one naming another team's check would silence nothing
    make_check("api")
    shop = team_create(name="shop")[0]

    with pytest.raises(SilenceError, match="no check named 'api' in team 'shop' \\(checks: none loaded\\)"):
        alerts.silence_create(matchers={"check": ["api"]}, ends_at=timezone.now() + timedelta(hours=1), team=shop)

    assert not Silence.objects.exists()


def test_the_api_refuses_a_silence_of_an_unknown_check_with_a_400_on_matchers_check(api):
    make_check("api")

    response = api.post("/api/silences/", {"matchers": {"check": ["api", "apx"]}, "duration": "1h"}, format="json")

    assert response.status_code == 400
    assert list(error_of(response)["fields"]) == ["matchers.check"]
    assert error_of(response)["fields"]["matchers.check"][0].startswith(
        "no check named 'apx' in team 'default' (checks: api)")
    assert error_of(response)["code"] == "silence"  # bad input, not alert_state (the docs' 409 code)
    assert not Silence.objects.exists()


def test_the_api_refuses_changing_a_silence_to_an_unknown_check_and_keeps_it(api):
    make_check("api")
    created = api.post("/api/silences/", {"matchers": {"check": ["api"]}, "duration": "1h"}, format="json").json()

    response = api.patch(f"/api/silences/{created['id']}/", {"matchers": {"check": ["apx"]}}, format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"]["matchers.check"][0].startswith("no check named 'apx'")
    assert Silence.objects.get().matchers == {"check": ["api"]}


def test_monitor_load_refuses_a_silence_of_a_check_neither_stored_nor_in_the_file(tmp_path):
    # the file's own checks are there by the time its silences are: a silence of one of them loads
    path = tmp_path / "monitoring.yaml"
    path.write_text("checks: [{name: web, type: memory, critical: 99}]\n"
                    "silences: [{match: {check: wbe}, ends_at: '2999-01-01T00:00:00Z', comment: typo}]\n")

    with pytest.raises(CommandError, match=r"silences\[0\]\.match\.check: no check named 'wbe' in team 'default'"):
        monitor("load", str(path))
    assert not Silence.objects.exists()

    path.write_text(path.read_text().replace("check: wbe", "check: web"))
    monitor("load", str(path))
    assert Silence.objects.get().matchers == {"check": "web"}


def test_monitor_load_keeps_an_unchanged_silence_whose_check_has_gone(tmp_path):
    # as silence_update keeps matchers left as they were: the same file loads again
    path = tmp_path / "monitoring.yaml"
    path.write_text("checks: [{name: web, type: memory, critical: 99}]\n"
                    "silences: [{match: {check: web}, ends_at: '2999-01-01T00:00:00Z', comment: upgrade}]\n")
    monitor("load", str(path))
    Check.objects.filter(name="web").delete()
    path.write_text("silences: [{match: {check: web}, ends_at: '2999-01-01T00:00:00Z', comment: upgrade}]\n")

    assert "1 unchanged" in monitor("load", str(path))
    assert Silence.objects.count() == 1


def test_a_change_with_an_unknown_check_and_an_end_before_its_start_names_both_and_keeps_the_silence():
    make_check("api")
    start = timezone.now() + timedelta(hours=1)
    silence = alerts.silence_create(matchers={"check": "api"}, starts_at=start, ends_at=start + timedelta(hours=1))

    with pytest.raises(SilenceError) as refused:
        alerts.silence_update(silence_id=silence.pk, matchers={"check": "apj"}, ends_at=start - timedelta(minutes=5))

    assert [error.split(":")[0] for error in refused.value.errors] == ["matchers.check", "ends_at"]
    silence.refresh_from_db()
    assert silence.matchers == {"check": "api"} and silence.ends_at == start + timedelta(hours=1)
