"""Circuit breakers on calls to external dependencies, one per dependency key, shared by every worker.

A dependency is named by a key: ``http:<host>:<port>`` for anything spoken to over HTTP (the ``http.request``
action, api data sources, http checks, webhook notifications), ``tcp:<host>:<port>`` for tcp checks.

closed     calls go through; each failure (connection error, timeout, 5xx answer) adds one to a counter that any
           success empties. AGENTS_BREAKER_FAILURES consecutive failures open the circuit.
open       calls fail fast with ``CircuitOpenError``, without reaching the dependency, for
           AGENTS_BREAKER_COOLDOWN_S seconds.
half-open  after the cool-down exactly one caller (whichever worker asks first) makes a trial call; the others
           still fail fast. Its success closes the circuit, its failure opens it for another cool-down.

State lives in Redis (AGENTS_BREAKER_URL; by default CACHE_URL when it is a Redis URL): counters are HINCRBY, the
opening is HSETNX so only the first of many concurrent failures opens it, and the trial is a SET NX with an
expiry so two workers cannot both make it, and a trial whose worker died is given to another caller later.
Without Redis, one JSON file under ``var/breakers``, locked with flock, is shared by every process of the
machine. When the store itself cannot be reached, calls go through unguarded (logged): a breaker must never
become one more thing that fails.
"""
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.conf import settings

from agents.exceptions import BreakerStoreError, CircuitOpenError
from agents.core.network import connection_failure_reason

logger = logging.getLogger("agents.core.breakers")

#: Every Redis key of the breakers starts with this.
KEY_PREFIX = "agents:breaker:"
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
#: Seconds a trial call may hold its token when the caller gives no timeout; a trial whose worker died is handed
#: to another caller after this.
DEFAULT_TRIAL_S = 60.0
#: Seconds to reach the Redis store before calling it unavailable (the call then goes through unguarded).
STORE_TIMEOUT_S = 2.0
#: Longest failure reason kept (reasons never hold a URL: it may carry a secret).
MAX_REASON_CHARS = 200
#: Seconds a breaker's state is kept after its last failure: a dependency that has not failed for a day is
#: forgotten (closed), so a breaker nobody calls any more does not stay open, and alerting, for ever.
STATE_TTL_S = 24 * 3600

Result = TypeVar("Result")


# ------------------------------------------------------------------------------------ keys and failures


def http_key(url: str) -> str:
    """The breaker key of an HTTP(S) URL's host and port (the scheme's default port when none is given)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return _key("http", parts.hostname or "", port or (443 if parts.scheme == "https" else 80))


def tcp_key(host: str, port: int) -> str:
    """The breaker key of a TCP connection to ``host:port``."""
    return _key("tcp", host, port)


def check_key(key: str, path: str = "") -> str:
    """The breaker key of one health check's target: ``key`` (``http_key``/``tcp_key``) and, for HTTP, the path.
    A check has a breaker of its own, so its failures never open the circuit of another check, a webhook or an
    action on the same host, nor theirs its own."""
    return f"check:{key}{path}"


def _key(kind: str, host: str, port: int) -> str:
    host = host.strip().lower()
    return f"{kind}:[{host}]:{port}" if ":" in host else f"{kind}:{host}:{port}"


def dependency_failure(error: BaseException) -> str | None:
    """Why ``error`` means the dependency failed (refused, reset, timed out, not resolved), or None when it does not
    (a bad URL, a refused redirect, an error of the caller's own). Never the URL: it may carry a secret."""
    import requests

    if isinstance(error, requests.RequestException):
        broken = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
        if not isinstance(error, broken):
            return None
    elif not isinstance(error, OSError):  # socket errors: refused, reset, timed out, name not resolved
        return None
    reason = connection_failure_reason(error)
    if reason is None:
        reason = "timed out" if isinstance(error, requests.Timeout) else type(error).__name__
    return reason[:MAX_REASON_CHARS]


# ------------------------------------------------------------------------------------ stores


@dataclass(frozen=True)
class _Stored:
    """A breaker as stored: times in milliseconds since the epoch."""

    failures: int = 0
    opened_ms: int | None = None
    last_error: str = ""
    last_failure_ms: int | None = None


class _RedisStore:
    """Breakers in Redis: a hash per breaker, a set of the keys with state, a token per trial call."""

    def __init__(self, url: str):
        import redis

        self.errors = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_timeout=STORE_TIMEOUT_S, socket_connect_timeout=STORE_TIMEOUT_S)
        self.index = f"{KEY_PREFIX}keys"

    def _hash(self, key: str) -> str:
        return f"{KEY_PREFIX}state:{key}"

    def _trial(self, key: str, opened_ms: int) -> str:
        return f"{KEY_PREFIX}trial:{key}:{opened_ms}"

    def read(self, key: str) -> _Stored:
        raw = {name.decode(): value.decode() for name, value in self.client.hgetall(self._hash(key)).items()}
        return _stored_from(raw)

    def failure_add(self, key: str, *, reason: str, now_ms: int) -> int:
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(self._hash(key), "failures", 1)
        pipe.hset(self._hash(key), mapping={"last_error": reason, "last_failure_ms": now_ms})
        pipe.expire(self._hash(key), STATE_TTL_S)
        pipe.sadd(self.index, key)
        return int(pipe.execute()[0])

    def open_first(self, key: str, *, now_ms: int) -> bool:
        return bool(self.client.hsetnx(self._hash(key), "opened_ms", now_ms))

    def reopen(self, key: str, *, reason: str, now_ms: int) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(self._hash(key), "failures", 1)
        pipe.hset(self._hash(key), mapping={"opened_ms": now_ms, "last_error": reason, "last_failure_ms": now_ms})
        pipe.expire(self._hash(key), STATE_TTL_S)
        pipe.sadd(self.index, key)
        pipe.execute()

    def success(self, key: str) -> None:
        import redis

        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self._hash(key))
                if pipe.hexists(self._hash(key), "opened_ms"):
                    return  # an open circuit is closed by its trial call only
                pipe.multi()
                pipe.delete(self._hash(key))
                pipe.srem(self.index, key)
                pipe.execute()
            except redis.WatchError:
                pass  # a concurrent failure or success came in between; its outcome stands

    def close(self, key: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._hash(key))
        pipe.srem(self.index, key)
        pipe.execute()

    def trial_claim(self, key: str, *, opened_ms: int, ttl_s: float) -> bool:
        return bool(self.client.set(self._trial(key, opened_ms), uuid.uuid4().hex, nx=True,
                                    px=max(1, int(ttl_s * 1000))))

    def trial_release(self, key: str, *, opened_ms: int) -> None:
        self.client.delete(self._trial(key, opened_ms))

    def trial_running(self, key: str, *, opened_ms: int) -> bool:
        return bool(self.client.exists(self._trial(key, opened_ms)))

    def keys(self) -> list[str]:
        members = sorted(member.decode() for member in self.client.smembers(self.index))
        pipe = self.client.pipeline(transaction=False)
        for key in members:
            pipe.exists(self._hash(key))
        kept = [key for key, exists in zip(members, pipe.execute()) if exists]
        if forgotten := sorted(set(members) - set(kept)):  # their state expired (STATE_TTL_S)
            self.client.srem(self.index, *forgotten)
        return kept


class _FileStore:
    """Breakers in one JSON file, every operation under an exclusive flock: shared by the processes of a machine."""

    def __init__(self, directory: Path):
        self.errors = (OSError, ValueError)
        self.directory = directory
        self.path = directory / "breakers.json"
        self.lock_path = directory / "breakers.lock"

    @contextmanager
    def _locked(self, *, write: bool) -> Iterator[dict]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            try:
                data = json.loads(self.path.read_text()) if self.path.exists() else {}
            except ValueError:
                data = {}  # a damaged file (written by hand?): start again rather than fail every call
            data = data if isinstance(data, dict) else {}
            now_ms = _now_ms()
            # State not failed for STATE_TTL_S is forgotten, as Redis expires it.
            data["breakers"] = {key: entry for key, entry in data.get("breakers", {}).items()
                                if entry.get("last_failure_ms", now_ms) + STATE_TTL_S * 1000 > now_ms}
            data["trials"] = {name: until for name, until in data.get("trials", {}).items() if until > now_ms}
            yield data
            if write:
                temporary = self.path.with_name(f"breakers.{os.getpid()}.{uuid.uuid4().hex}.tmp")
                temporary.write_text(json.dumps(data))
                temporary.replace(self.path)

    def read(self, key: str) -> _Stored:
        with self._locked(write=False) as data:
            return _stored_from(data["breakers"].get(key, {}))

    def failure_add(self, key: str, *, reason: str, now_ms: int) -> int:
        with self._locked(write=True) as data:
            entry = data["breakers"].setdefault(key, {})
            entry.update(failures=int(entry.get("failures", 0)) + 1, last_error=reason, last_failure_ms=now_ms)
            return entry["failures"]

    def open_first(self, key: str, *, now_ms: int) -> bool:
        with self._locked(write=True) as data:
            entry = data["breakers"].setdefault(key, {})
            if entry.get("opened_ms") is not None:
                return False
            entry["opened_ms"] = now_ms
            return True

    def reopen(self, key: str, *, reason: str, now_ms: int) -> None:
        with self._locked(write=True) as data:
            entry = data["breakers"].setdefault(key, {})
            entry.update(failures=int(entry.get("failures", 0)) + 1, opened_ms=now_ms, last_error=reason,
                         last_failure_ms=now_ms)

    def success(self, key: str) -> None:
        with self._locked(write=True) as data:
            if data["breakers"].get(key, {}).get("opened_ms") is None:
                data["breakers"].pop(key, None)

    def close(self, key: str) -> None:
        with self._locked(write=True) as data:
            data["breakers"].pop(key, None)

    def trial_claim(self, key: str, *, opened_ms: int, ttl_s: float) -> bool:
        name, now_ms = f"{key}|{opened_ms}", _now_ms()
        with self._locked(write=True) as data:
            if data["trials"].get(name, 0) > now_ms:
                return False
            data["trials"][name] = now_ms + max(1, int(ttl_s * 1000))
            return True

    def trial_release(self, key: str, *, opened_ms: int) -> None:
        with self._locked(write=True) as data:
            data["trials"].pop(f"{key}|{opened_ms}", None)

    def trial_running(self, key: str, *, opened_ms: int) -> bool:
        with self._locked(write=False) as data:
            return data["trials"].get(f"{key}|{opened_ms}", 0) > _now_ms()

    def keys(self) -> list[str]:
        with self._locked(write=False) as data:
            return sorted(data["breakers"])


def _stored_from(raw: dict) -> _Stored:
    def number(name: str) -> int | None:
        value = raw.get(name)
        return None if value in (None, "") else int(value)

    return _Stored(failures=number("failures") or 0, opened_ms=number("opened_ms"),
                   last_error=str(raw.get("last_error", "")), last_failure_ms=number("last_failure_ms"))


@lru_cache(maxsize=4)
def _store_for(url: str, var_dir: str):
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _RedisStore(url)
    return _FileStore(Path(var_dir) / "breakers")


def _store():
    """The store named by AGENTS_BREAKER_URL (read at every call, so a changed setting takes effect at once)."""
    return _store_for(settings.AGENTS_BREAKER_URL, str(settings.VAR_DIR))


def _store_name(store) -> str:
    return "Redis" if isinstance(store, _RedisStore) else f"the file {store.path}"


# ------------------------------------------------------------------------------------ the state machine


def _now_ms() -> int:
    return int(time.time() * 1000)


def _threshold() -> int:
    return max(1, int(settings.AGENTS_BREAKER_FAILURES))


def _cooldown_ms() -> int:
    return max(0, int(float(settings.AGENTS_BREAKER_COOLDOWN_S) * 1000))


def _when(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(frozen=True)
class _Admission:
    """Why a call was let through: the circuit was closed (with ``failures`` counted), or it is the trial call."""

    trial: bool
    failures: int = 0
    opened_ms: int | None = None


class BreakerCall:
    """The call under way inside ``breaker()``: ``failed(reason)`` records an answer that is a failure (a 5xx)."""

    def __init__(self, key: str):
        self.key = key
        self.failure: str | None = None

    def failed(self, reason: str) -> None:
        """Count this call as a failure of the dependency although it raised nothing (it answered 5xx)."""
        self.failure = reason[:MAX_REASON_CHARS]


def _open_error(key: str, stored: _Stored, *, trial_running: bool = False) -> CircuitOpenError:
    """The error a caller gets while the circuit is open: the dependency, the failures, when a trial is let through."""
    last = f" (last: {stored.last_error})" if stored.last_error else ""
    counted = f"{stored.failures} consecutive failure{'s' if stored.failures != 1 else ''}{last}"
    if trial_running:
        cooldown_s = _cooldown_ms() / 1000
        return CircuitOpenError(
            f"circuit open for {key} after {counted}; a trial call is under way now: it closes the circuit if it "
            f"succeeds, else the next trial is in {cooldown_s:g} s", key=key, failures=stored.failures,
        )
    retry_ms = (stored.opened_ms or 0) + _cooldown_ms()
    retry_at = _when(retry_ms)
    wait_s = max(0.0, (retry_ms - _now_ms()) / 1000)
    return CircuitOpenError(
        f"circuit open for {key} after {counted}; calls fail fast until a trial call at "
        f"{retry_at:%Y-%m-%d %H:%M:%S} UTC (in {wait_s:.1f} s)", key=key, failures=stored.failures, retry_at=retry_at,
    )


def _admit(store, key: str, *, trial_ttl_s: float) -> _Admission:
    """Let a call through (closed, or as the one trial call of a half-open circuit) or raise CircuitOpenError."""
    stored = store.read(key)
    if stored.opened_ms is None:
        return _Admission(trial=False, failures=stored.failures)
    if _now_ms() < stored.opened_ms + _cooldown_ms():
        raise _open_error(key, stored)
    if store.trial_claim(key, opened_ms=stored.opened_ms, ttl_s=trial_ttl_s):
        logger.info("circuit half-open for %s: making a trial call", key)
        return _Admission(trial=True, failures=stored.failures, opened_ms=stored.opened_ms)
    # Another caller holds this opening's trial, or the state moved on since it was read: look once more.
    again = store.read(key)
    if again.opened_ms is None:
        return _Admission(trial=False, failures=again.failures)
    if again.opened_ms != stored.opened_ms:
        raise _open_error(key, again)
    raise _open_error(key, again, trial_running=True)


def _settle(store, key: str, admission: _Admission, *, failure: str | None, neutral: bool) -> None:
    """Record a call's outcome: a failure (which may open the circuit), a success, or neither."""
    if failure is not None:
        now_ms = _now_ms()
        if admission.trial:
            store.reopen(key, reason=failure, now_ms=now_ms)
            logger.warning("circuit open again for %s: the trial call failed (%s)", key, failure)
            return
        failures = store.failure_add(key, reason=failure, now_ms=now_ms)
        if failures >= _threshold() and store.open_first(key, now_ms=now_ms):
            logger.warning("circuit open for %s after %d consecutive failures (last: %s)", key, failures, failure)
    elif neutral:
        if admission.trial:  # the trial ended without an answer either way: the next caller may try
            store.trial_release(key, opened_ms=admission.opened_ms)
    elif admission.trial:
        store.close(key)
        logger.info("circuit closed for %s: the trial call succeeded", key)
    elif admission.failures:
        store.success(key)


@contextmanager
def breaker(key: str, *, timeout_s: float | None = None) -> Iterator[BreakerCall]:
    """Guard the call made inside the block with the breaker of dependency ``key``.

    Raises CircuitOpenError before the block runs when the circuit is open. A connection error or timeout raised
    in the block (see ``dependency_failure``), or ``attempt.failed(reason)`` for a 5xx answer, counts as a failure;
    any other exception counts as nothing; a block that returns is a success (a 4xx answer is one: the dependency
    answered). ``timeout_s`` is the longest the call can take, so a trial whose worker died is handed on after it.
    """
    store = _store()
    trial_ttl_s = (2 * timeout_s if timeout_s else DEFAULT_TRIAL_S) + 5  # connect and read may each take timeout_s
    try:
        admission = _admit(store, key, trial_ttl_s=trial_ttl_s)
    except store.errors as error:
        logger.warning("circuit breaker store unavailable (%s): calling %s unguarded", type(error).__name__, key)
        admission = None
    attempt = BreakerCall(key)
    try:
        yield attempt
    except BaseException as error:
        failure = attempt.failure or (dependency_failure(error) if isinstance(error, Exception) else None)
        _settle_guarded(store, key, admission, failure=failure, neutral=failure is None)
        raise
    _settle_guarded(store, key, admission, failure=attempt.failure, neutral=False)


def _settle_guarded(store, key: str, admission: _Admission | None, *, failure: str | None, neutral: bool) -> None:
    if admission is None:
        return
    try:
        _settle(store, key, admission, failure=failure, neutral=neutral)
    except store.errors as error:
        logger.warning("circuit breaker store unavailable (%s): outcome of a call to %s not recorded",
                       type(error).__name__, key)


def call(key: str, function: Callable[[], Result], *, timeout_s: float | None = None) -> Result:
    """Return ``function()`` called under the breaker of ``key`` (see ``breaker``); raise CircuitOpenError when
    the circuit is open. An exception ``function`` raises counts as a failure when it is a connection error or a
    timeout, and is raised again."""
    with breaker(key, timeout_s=timeout_s):
        return function()


# ------------------------------------------------------------------------------------ reading and resetting


def _read_guarded(read: Callable[[Any], Result]) -> Result:
    store = _store()
    try:
        return read(store)
    except store.errors as error:
        raise BreakerStoreError(f"circuit breaker store ({_store_name(store)}) cannot be read: "
                                f"{type(error).__name__}: {error}") from None


def _state_of(store, key: str) -> dict:
    stored = store.read(key)
    cooldown_ms = _cooldown_ms()
    retry_ms = stored.opened_ms + cooldown_ms if stored.opened_ms is not None else None
    if retry_ms is None:
        state = CLOSED
    elif _now_ms() < retry_ms:
        state = OPEN
    else:
        state = HALF_OPEN
    return {
        "key": key,
        "state": state,
        "failures": stored.failures,
        "threshold": _threshold(),
        "cooldown_s": cooldown_ms / 1000,
        "opened_at": _when(stored.opened_ms),
        "retry_at": _when(retry_ms),
        "trial_running": state == HALF_OPEN and store.trial_running(key, opened_ms=stored.opened_ms),
        "last_error": stored.last_error,
        "last_failure_at": _when(stored.last_failure_ms),
    }


def breaker_state(key: str) -> dict:
    """The breaker of ``key``: state (closed, open, half_open), failures, threshold, cooldown_s, opened_at and
    retry_at (when the next trial call is let through; aware datetimes), trial_running, last_error,
    last_failure_at. A dependency that never failed is closed with 0 failures. Raises BreakerStoreError."""
    return _read_guarded(lambda store: _state_of(store, key))


def breakers_list() -> list[dict]:
    """Every breaker with state (failures counted, or open), not closed ones first, then by key; each as
    ``breaker_state`` gives it. Raises BreakerStoreError when the store cannot be read."""
    states = _read_guarded(lambda store: [_state_of(store, key) for key in store.keys()])
    return sorted(states, key=lambda state: (state["state"] == CLOSED, state["key"]))


def breaker_reset(key: str) -> dict:
    """Close the breaker of ``key`` and forget its failures; return its state before. Raises BreakerStoreError."""

    def reset(store) -> dict:
        before = _state_of(store, key)
        store.close(key)
        return before

    before = _read_guarded(reset)
    logger.info("circuit breaker for %s reset (was %s, %d failure%s counted)", key, before["state"],
                before["failures"], "" if before["failures"] == 1 else "s")
    return before


def breaker_summary(state: dict) -> str:
    """One line on a breaker that is not closed: its failures and when (or whether) its trial call comes."""
    failures = f"{state['failures']} failure{'s' if state['failures'] != 1 else ''}"
    if state["state"] == OPEN:
        return f"{failures}, next trial at {state['retry_at']:%H:%M:%S} UTC"
    return f"{failures}, half-open: {'trial call under way' if state['trial_running'] else 'next call is the trial'}"
