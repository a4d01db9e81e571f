"""Request rates per user (and per address for anonymous requests), from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``.

Counts live in Redis when ``CACHE_URL`` names it, so every web process shares them; the values are JSON lists of
request times (Django's Redis cache would pickle them).
"""
import json
from functools import lru_cache

from django.conf import settings
from django.core.cache import cache as default_cache
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

#: Prefix of the throttling keys in Redis.
KEY_PREFIX = "agents:api:"


class _JsonRedisCache:
    """The two calls DRF's throttles make (get, set), on Redis with JSON values."""

    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url)

    def get(self, key: str, default=None):
        raw = self.client.get(KEY_PREFIX + key)
        return default if raw is None else json.loads(raw)

    def set(self, key: str, value, timeout: float) -> None:
        self.client.set(KEY_PREFIX + key, json.dumps(value), ex=max(1, int(timeout)))


@lru_cache(maxsize=1)
def throttle_cache():
    """The process's store of request counts: Redis when configured, else Django's default (in-process) cache."""
    url = settings.AGENTS_API_THROTTLE_CACHE_URL
    if url.startswith(("redis://", "rediss://")):
        return _JsonRedisCache(url)
    return default_cache


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
