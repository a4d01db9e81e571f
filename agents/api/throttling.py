"""Request rates per user (and per address for anonymous requests), from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``;
and failed authentications per client address (``AGENTS_API_THROTTLE_AUTH_FAILURES``), for the API and /metrics.

Counts live in Redis when ``CACHE_URL`` names it, so every web process shares them; the values are JSON lists of
request times (Django's Redis cache would pickle them), and failures are one counter per address, incremented
atomically so parallel guesses are all counted.
"""
import json
import math
import time
from functools import lru_cache

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.core.cache import cache as default_cache
from drf_spectacular.authentication import SessionScheme
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, BaseThrottle, SimpleRateThrottle, UserRateThrottle

#: Prefix of the throttling keys in Redis.
KEY_PREFIX = "agents:api:"
#: The key counting one client address's failed authentications (after ``KEY_PREFIX``).
AUTH_FAILURES_KEY = "auth_failures:{address}"


class _JsonRedisCache:
    """The two calls DRF's throttles make (get, set), on Redis with JSON values; and counters over a window."""

    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url)

    def get(self, key: str, default=None):
        raw = self.client.get(KEY_PREFIX + key)
        return default if raw is None else json.loads(raw)

    def set(self, key: str, value, timeout: float) -> None:
        self.client.set(KEY_PREFIX + key, json.dumps(value), ex=max(1, int(timeout)))

    def window_add(self, key: str, window_s: int) -> None:
        """Count one more event under ``key``; its window opens with the first event and lasts ``window_s``."""
        # One transaction: the counter never exists without its expiry, and no increment is lost to another process.
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(KEY_PREFIX + key, 0, ex=window_s, nx=True).incr(KEY_PREFIX + key).execute()

    def window_count(self, key: str) -> int:
        """The events counted under ``key`` in its open window (0 once it has closed)."""
        return int(self.client.get(KEY_PREFIX + key) or 0)

    def window_left_s(self, key: str) -> float:
        """Seconds until the window of ``key`` closes."""
        return max(self.client.pttl(KEY_PREFIX + key), 0) / 1000


class _CacheWindows:
    """The same counters in Django's default cache: the process's own memory, where no other process races it."""

    def window_add(self, key: str, window_s: int) -> None:
        count, ends = default_cache.get(KEY_PREFIX + key) or (0, time.time() + window_s)
        default_cache.set(KEY_PREFIX + key, (count + 1, ends), max(1, math.ceil(ends - time.time())))

    def window_count(self, key: str) -> int:
        return (default_cache.get(KEY_PREFIX + key) or (0, 0))[0]

    def window_left_s(self, key: str) -> float:
        return max((default_cache.get(KEY_PREFIX + key) or (0, 0))[1] - time.time(), 0)


@lru_cache(maxsize=1)
def throttle_cache():
    """The process's store of request counts: Redis when configured, else Django's default (in-process) cache."""
    url = settings.AGENTS_API_THROTTLE_CACHE_URL
    if url.startswith(("redis://", "rediss://")):
        return _JsonRedisCache(url)
    return default_cache


def _windows() -> _JsonRedisCache | _CacheWindows:
    store = throttle_cache()
    return store if isinstance(store, _JsonRedisCache) else _CacheWindows()


class _SettingsRate:
    """Reads the rate when asked, so a changed setting applies without a restart of the class."""

    @property
    def cache(self):
        return throttle_cache()

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class ApiUserRateThrottle(_SettingsRate, UserRateThrottle):
    """``user`` rate per authenticated user."""


class ApiAnonRateThrottle(_SettingsRate, AnonRateThrottle):
    """``anon`` rate per client address for unauthenticated requests."""


# --- Failed authentications per client address ------------------------------------------------------------


def client_address(request) -> str:
    """The address failures are counted for: ``REMOTE_ADDR``; with ``REST_FRAMEWORK["NUM_PROXIES"]`` set, the
    address that many proxies back in ``X-Forwarded-For``, as DRF's throttles read it. Without that setting the
    header is ignored: a client writes what it likes there, and would get a fresh count with every request."""
    if api_settings.NUM_PROXIES is None:
        return request.META.get("REMOTE_ADDR", "")
    return BaseThrottle().get_ident(request)


def auth_failure_rate() -> tuple[int, int] | None:
    """(failures allowed, window in seconds) from ``AGENTS_API_THROTTLE_AUTH_FAILURES`` (``10/minute``); None when
    it is empty (no limit)."""
    rate = settings.AGENTS_API_THROTTLE_AUTH_FAILURES.strip()
    return SimpleRateThrottle.parse_rate(None, rate) if rate else None  # DRF's parser; it reads no state


def auth_failure_record(request) -> None:
    """Count a failed authentication (a wrong token, password or session) against the request's client address."""
    if (rate := auth_failure_rate()) is not None:
        _windows().window_add(AUTH_FAILURES_KEY.format(address=client_address(request)), rate[1])


def auth_failure_refusal(request) -> tuple[str, int] | None:
    """None while the request's client address is within its failed authentications; else why it is refused (one
    sentence) and the whole seconds until it may try again (``Retry-After``). Checked before any credential, so a
    refused guess costs no password hash, and a correct credential is refused too until the window closes."""
    if (rate := auth_failure_rate()) is None:
        return None
    allowed, window_s = rate
    key = AUTH_FAILURES_KEY.format(address=client_address(request))
    windows = _windows()
    if windows.window_count(key) < allowed:
        return None
    wait_s = max(1, math.ceil(windows.window_left_s(key)))
    return (f"too many failed authentications from this address ({allowed} within {window_s} s, "
            f"AGENTS_API_THROTTLE_AUTH_FAILURES).", wait_s)


class FailureLimitedTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, first of the API's: refuses (429) every request from an address over its failed
    authentications before looking at its credentials, and counts each unknown, revoked or inactive user's token."""

    def authenticate(self, request):
        if (refusal := auth_failure_refusal(request)) is not None:
            message, wait_s = refusal
            raise Throttled(wait=wait_s, detail=message)
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            auth_failure_record(request)
            raise


class FailureLimitedSessionAuthentication(SessionAuthentication):
    """DRF's session authentication, counting a session cookie that names no live session (forged or expired), or
    one whose user is gone, inactive or has changed password; not a live anonymous session (a visitor's, or one
    that only holds messages)."""

    def authenticate(self, request):
        found = super().authenticate(request)
        if found is None and request.COOKIES.get(settings.SESSION_COOKIE_NAME):
            session = request._request.session
            if session.is_empty() or SESSION_KEY in session:
                auth_failure_record(request)
        return found


class FailureLimitedSessionScheme(SessionScheme):
    """The schema's cookie scheme for the session authentication above (drf-spectacular matches only DRF's own)."""

    target_class = FailureLimitedSessionAuthentication
