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

#: Keys per Redis round trip when a batch reads or writes many answers.
BATCH_KEYS = 1000
#: KEYS: the keys; ARGV: the expiry in seconds, then each key's value.
_SET_MANY = """
for index, key in ipairs(KEYS) do
    redis.call('SET', key, ARGV[index + 1], 'EX', ARGV[1])
end
return #KEYS
"""


class _RedisCache:
    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url)
        self.set_script = None

    def get(self, key: str):
        raw = self.client.get(key)
        return None if raw is None else json.loads(raw)

    def set(self, key: str, value, ttl_s: int) -> None:
        self.client.set(key, json.dumps(value), ex=ttl_s)

    def get_many(self, keys: list[str]) -> list:
        """The values of ``keys`` as JSON text (None where missing), one round trip per ``BATCH_KEYS`` keys: a
        batch decodes each distinct text once."""
        values = []
        for start in range(0, len(keys), BATCH_KEYS):
            values.extend(self.client.mget(keys[start:start + BATCH_KEYS]))
        return values

    def set_many(self, items: dict, ttl_s: int) -> None:
        """Store every key's value, given as JSON text, one command per ``BATCH_KEYS`` keys (SET with its expiry
        per key, in one server-side script: no per-key command to build and parse)."""
        if self.set_script is None:
            self.set_script = self.client.register_script(_SET_MANY)
        keys, texts = list(items), list(items.values())
        for start in range(0, len(keys), BATCH_KEYS):
            self.set_script(keys=keys[start:start + BATCH_KEYS], args=[ttl_s, *texts[start:start + BATCH_KEYS]])

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

    def get_many(self, keys: list[str]) -> list:
        """The values of ``keys`` as JSON text (None where missing or expired)."""
        return [None if (value := self.get(key)) is None else json.dumps(value) for key in keys]

    def set_many(self, items: dict, ttl_s: int) -> None:
        """Store every key's value, given as JSON text."""
        for key, text in items.items():
            self.set(key, json.loads(text), ttl_s)

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
