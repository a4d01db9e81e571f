"""The decision cache: JSON values only (never pickle), in Redis or, embedded, in files.

Keys come from the rule set version's hash and the canonical JSON of the context
fields its rules read, so every worker computes the same key and a new version
misses by construction.
"""
import json
import os
import time
import uuid
from functools import lru_cache
from pathlib import Path

from django.conf import settings


class _RedisCache:
    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url)

    def get(self, key: str):
        raw = self.client.get(key)
        return None if raw is None else json.loads(raw)

    def set(self, key: str, value, ttl_s: int) -> None:
        self.client.set(key, json.dumps(value), ex=ttl_s)

    def clear(self) -> None:
        for key in self.client.scan_iter("agents:decision:*"):
            self.client.delete(key)


class _FileCache:
    """One JSON file per key under ``VAR_DIR/cache/decisions``: shared by every process of the machine."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / (key.rsplit(":", 1)[-1][:64] + ".json")

    def get(self, key: str):
        try:
            stored = json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None
        if stored.get("key") != key or stored.get("expires", 0) < time.time():
            return None
        return stored["value"]

    def set(self, key: str, value, ttl_s: int) -> None:
        path = self._path(key)
        temporary = path.with_name(f"{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            temporary.write_text(json.dumps({"key": key, "expires": time.time() + ttl_s, "value": value}))
            temporary.replace(path)
        except OSError:
            temporary.unlink(missing_ok=True)  # the cache is best effort: the answer is still returned

    def clear(self) -> None:
        for path in self.directory.glob("*.json"):
            path.unlink(missing_ok=True)


@lru_cache(maxsize=1)
def decision_cache():
    """Return the process's decision cache (Redis when ``CACHE_URL`` names it, else files under var/)."""
    url = settings.AGENTS_DECISION_CACHE_URL
    if url.startswith(("redis://", "rediss://")):
        return _RedisCache(url)
    return _FileCache(settings.VAR_DIR / "cache" / "decisions")
