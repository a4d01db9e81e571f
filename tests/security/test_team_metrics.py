"""``GET /metrics`` by basic auth: the exposition is site-wide (every team's checks and rule sets), so a member of
some teams only is refused it (their teams' figures are in ``GET /api/metrics/summary/``), while a scrape account
that sees every team (a superuser, a user in no team with ``agents.view_metric``) still scrapes."""
import base64

import pytest
from django.contrib.auth.models import Group, User

from agents.api.groups import VIEWERS
from agents.core.teams import team_create
from agents.decisions.services import rules_load
from agents.models import Decision, Team
from agents.monitoring import services as monitoring
from tests.conftest import NAMED_RULES

pytestmark = pytest.mark.django_db

PASSWORD = "pw-1234-pw"


def basic(username: str) -> dict:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{username}:{PASSWORD}".encode()).decode()}


def viewer(username: str, *teams: str) -> User:
    """A viewer (holding ``agents.view_metric``), a member of each of ``teams``."""
    user = User.objects.create_user(username=username, password=PASSWORD)
    user.groups.add(Group.objects.get(name=VIEWERS), *(team_create(name=team)[0].group for team in teams))
    return user


@pytest.fixture
def scraping(settings):
    """Basic auth is the only way in."""
    settings.AGENTS_METRICS_TOKEN, settings.AGENTS_METRICS_ALLOW_IPS = "", []
    settings.AGENTS_METRICS_BASIC_AUTH = True


@pytest.fixture
def two_teams():
    """A check, and a rule set with a decision, of team A (``alpha-*``) and of team B (``bravo-*``)."""
    for team_name, prefix in (("team-a", "alpha"), ("team-b", "bravo")):
        team = team_create(name=team_name)[0]
        monitoring.check_save(name=f"{prefix}-check", team=team,
                              fields=monitoring.check_fields({"name": f"{prefix}-check", "type": "memory"}))
        version, _ = rules_load(text=NAMED_RULES.format(name=f"{prefix}-rules"), activate=True, team=team)
        Decision.objects.create(ruleset=version.ruleset, version=version, context={"amount": 500},
                                decision="review", engine="rules", latency_ms=1.0)


def test_a_team_member_s_basic_auth_scrape_is_refused_and_shows_no_other_team_s_series(client, scraping, two_teams):
    # given Vic, a viewer of team B only
    viewer("vic", "team-b")

    # when Vic scrapes /metrics with his password
    scraped = client.get("/metrics", **basic("vic"))

    # then it is refused saying why and where his team's figures are, and no series of team A is in the answer
    body = scraped.content.decode()
    assert scraped.status_code == 403
    assert "member of some teams only" in body and "/api/metrics/summary/" in body
    assert "alpha-check" not in body and "alpha-rules" not in body

def test_a_scrape_account_that_sees_every_team_still_scrapes_every_team_s_series(client, scraping, two_teams):
    # a superuser, a viewer in every team (the default team too), and a viewer in no team (a scrape account)
    User.objects.create_superuser("root", password=PASSWORD)
    viewer("everywhere", *(team.name for team in Team.objects.select_related("group")))
    viewer("scraper")

    for username in ("root", "everywhere", "scraper"):
        scraped = client.get("/metrics", **basic(username))

        body = scraped.content.decode()
        assert scraped.status_code == 200, username
        assert 'check="alpha-check"' in body and 'check="bravo-check"' in body, username
        assert "alpha-rules" in body and "bravo-rules" in body, username
