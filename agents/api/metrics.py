"""``GET /metrics``: the Prometheus exposition, for a scraper holding the bearer token, on an allowed address, or
logged in by basic auth as a user with ``agents.view_metric``; never open: with none configured every scrape is
refused, naming the settings to set. An address that fails too often is refused (429) for a while, as on the API."""
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
from agents.monitoring.exposition import exposition_text

#: The permission a basic-auth user needs (the viewers group holds it).
METRICS_PERMISSION = "agents.view_metric"
NOT_CONFIGURED = (
    "metrics are not configured: set AGENTS_METRICS_TOKEN (a bearer token), AGENTS_METRICS_ALLOW_IPS (scrape "
    f"addresses or networks) or AGENTS_METRICS_BASIC_AUTH=true (a user with {METRICS_PERMISSION})"
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


def metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when ``request`` may scrape; else the 401 (no or wrong credentials, counted against the client address),
    429 (the address is over ``AGENTS_API_THROTTLE_AUTH_FAILURES``: checked before any password is hashed) or 403
    (none configured, or a user without the permission) saying what is accepted."""
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
        if user.has_perm(METRICS_PERMISSION):
            return None
        return _refused(403, f"user {user.get_username()!r} lacks the permission {METRICS_PERMISSION}")
    accepted = [*(["a bearer token (Authorization: Bearer ...)"] if token else []),
                *([f"basic auth as a user with {METRICS_PERMISSION}"] if basic else []),
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
