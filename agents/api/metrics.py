"""``GET /metrics``: the Prometheus exposition, for a scraper holding the bearer token, on an allowed address, or
logged in by basic auth as a user with ``agents.view_metric`` who sees every team (a superuser, a member of every
team, or a scrape account in no team); never open: with none configured every scrape is refused, naming the settings
to set. The exposition is site-wide (every team's checks, rule sets, pipelines and workflows), so a member of some
teams only is refused it: their teams' figures are at ``GET /api/metrics/summary/``. An address that fails too often
is refused (429) for a while, as on the API."""
import base64
import binascii
import hmac
import ipaddress

from django.conf import settings
from django.contrib.auth import authenticate
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from agents.api.throttling import auth_failure_record, auth_failure_refusal
from agents.core.teams import sees_all, teams_of
from agents.models import Team
from agents.monitoring.exposition import exposition_text

#: The permission a basic-auth user needs (the viewers group holds it).
METRICS_PERMISSION = "agents.view_metric"
#: Who may read the site-wide exposition by basic auth, besides holding the permission.
SEES_EVERY_TEAM = "who sees every team: a superuser, a member of every team, or a scrape account in no team"
NOT_CONFIGURED = (
    "metrics are not configured: set AGENTS_METRICS_TOKEN (a bearer token), AGENTS_METRICS_ALLOW_IPS (scrape "
    f"addresses or networks) or AGENTS_METRICS_BASIC_AUTH=true (a user with {METRICS_PERMISSION} {SEES_EVERY_TEAM})"
)


def _refused(status: int, message: str, *, challenge: str = "") -> HttpResponse:
    response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    if challenge:
        response["WWW-Authenticate"] = challenge
    return response


def _address_allowed(address: str, allowed: list[str]) -> bool:
    """Whether ``address`` is one of, or inside one of, the allowed addresses and networks (a bad entry matches
    nothing)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in allowed:
        try:
            if ip in ipaddress.ip_network(str(entry).strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


def _basic_user(credentials: str):
    try:
        username, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return authenticate(username=username, password=password)


def _basic_refusal(user) -> HttpResponse | None:
    """None when basic-auth ``user`` may read the exposition; else the 403 saying why. The exposition is site-wide,
    so the user must see every team's objects: a superuser, a member of every team (a deployment with the default
    team only scrapes as before teams), or a dedicated scrape account in no team; a member of some teams only sees
    their figures in the API."""
    if not user.has_perm(METRICS_PERMISSION):
        return _refused(403, f"user {user.get_username()!r} lacks the permission {METRICS_PERMISSION}")
    mine = teams_of(user)
    if not sees_all(user) and mine.exists() and Team.objects.exclude(pk__in=mine).exists():
        return _refused(403, f"user {user.get_username()!r} is a member of some teams only, and /metrics shows every "
                             f"team's series: scrape with the bearer token, or as a user {SEES_EVERY_TEAM}; a team's "
                             "own figures are at GET /api/metrics/summary/")
    return None


def metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when ``request`` may scrape; else the 401 (no or wrong credentials, counted against the client address),
    429 (the address is over ``AGENTS_API_THROTTLE_AUTH_FAILURES``: checked before any password is hashed) or 403
    (none configured, a user without the permission, or a member of some teams only) saying what is accepted."""
    token, allowed, basic = settings.AGENTS_METRICS_TOKEN, settings.AGENTS_METRICS_ALLOW_IPS, \
        settings.AGENTS_METRICS_BASIC_AUTH
    if not (token or allowed or basic):
        return _refused(403, NOT_CONFIGURED)
    if allowed and _address_allowed(request.META.get("REMOTE_ADDR", ""), allowed):
        return None
    if (refusal := auth_failure_refusal(request)) is not None:
        message, wait_s = refusal
        response = _refused(429, f"{message} Try again in {wait_s} s.")
        response["Retry-After"] = str(wait_s)
        return response
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if token and scheme == "bearer" and hmac.compare_digest(credentials.encode(), token.encode()):
        return None
    if basic and scheme == "basic" and (user := _basic_user(credentials)) is not None:
        return _basic_refusal(user)
    accepted = [*(["a bearer token (Authorization: Bearer ...)"] if token else []),
                *([f"basic auth as a user with {METRICS_PERMISSION} {SEES_EVERY_TEAM}"] if basic else []),
                *(["a scrape from an address in AGENTS_METRICS_ALLOW_IPS"] if allowed else [])]
    challenges = [*(['Bearer realm="metrics"'] if token else []), *(['Basic realm="metrics"'] if basic else [])]
    auth_failure_record(request)
    return _refused(401, f"scraping needs {' or '.join(accepted)}", challenge=", ".join(challenges))


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Every metric of the site in Prometheus' text format, read from the database now."""
    if (refusal := metrics_refusal(request)) is not None:
        return refusal
    return HttpResponse(exposition_text(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
