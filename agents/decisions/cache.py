"""The decision cache: JSON values only (never pickle), in Redis or, embedded, in a SQLite file.

Keys come from the rule set version's hash and the canonical JSON of the context
fields its rules read (and which of them are absent: JsonLogic tells an absent field
from a null one), so every worker computes the same key and a new version misses by
construction.
"""
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from functools import lru_cache
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

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
        """Remove every entry, ``BATCH_KEYS`` keys per command (a round trip per key took seconds for a batch's)."""
        keys = list(self.client.scan_iter("agents:decision:*", count=BATCH_KEYS))
        for start in range(0, len(keys), BATCH_KEYS):
            self.client.delete(*keys[start:start + BATCH_KEYS])


class _FileCache:
    """Entries in one SQLite file, ``VAR_DIR/cache/decisions.sqlite3``: shared by every process of the machine (a
    file per entry cost a batch of 20,000 decisions 6-12 s). Best effort, like any cache: a locked file is a miss, a
    write that cannot be made is skipped, and a file that is no database is replaced; the answer is still returned.
    A file found broken in use is replaced too, and a process whose file another process replaced moves to the new
    one at its next read or write (its connection would otherwise go on with a file no one else sees).

    Written for batches (bench/decisions.py: a cold batch of 20,000 stored its entries in 0.57 s before, 0.16 s now):

    - A batch's keys are read, and its entries written, by one statement each, handed the whole chunk as one JSON
      parameter (``json_each``). Python's sqlite3 lets go of the GIL around every step of a statement: with
      ``executemany``, a row at a time, so a store on a thread beside a busy batch waited for the GIL once per row
      (the switch interval, up to 5 ms); one statement is one step.
    - Entries are appended (a rowid table) and found by a digest of their key (16 bytes of BLAKE2b, as 32 hex
      digits). Keyed by the whole key in the table itself, each entry landed on a random page of it, and a chunk
      rewrote most of the file into the write-ahead log.
    """

    #: Seconds a statement waits for another process's write before the cache gives up on it.
    BUSY_TIMEOUT_S = 2.0

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # a connection per thread (a batch stores its entries from a thread)
        self.writes = 0  # entries written since the expired ones were last removed

    def _db(self) -> sqlite3.Connection:
        local, pid = self._local, os.getpid()
        if getattr(local, "pid", None) != pid:  # a forked child opens its own
            inherited = getattr(local, "db", None)
            if inherited is not None:
                # The parent's connection: never used here, and not closed while this process runs (closing it
                # could checkpoint and remove the write-ahead log the parent still uses); kept until the exit.
                _INHERITED.append(inherited)
            local.db = None
        elif local.db is not None and self._inode() != local.inode:
            # Another process found the file broken and replaced it: this connection writes to a file nobody reads.
            local.db.close()
            local.db = None
        if local.db is None:
            # Read before opening: if another process replaces the file in between, the next call sees a different
            # identity and opens again (read after, it would name the new file while the connection holds the old).
            identity = self._inode()
            try:
                db = self._open()
            except sqlite3.OperationalError:  # locked or unreadable for now: a miss this time
                raise
            except sqlite3.DatabaseError as error:  # not a database (any more): the cache starts again
                self._replace(error)
                identity = self._inode()
                db = self._open()
            if identity is None:  # the file was created by this open
                identity = self._inode()
            local.db, local.pid, local.inode = db, pid, identity
        return local.db

    def _inode(self) -> tuple[int, int] | None:
        """The file's identity. The old file stays open while a connection holds it, so a new file cannot reuse its
        inode while it is compared."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return None
        return found.st_dev, found.st_ino

    def _replace(self, error: sqlite3.DatabaseError) -> None:
        """Remove the broken file (the next connection starts a new one), naming it and what was wrong in the log."""
        logger.warning("decision cache: %s is broken (%s); starting a new one", self.path, error)
        for path in (self.path, self.path.with_name(self.path.name + "-wal"),
                     self.path.with_name(self.path.name + "-shm")):
            path.unlink(missing_ok=True)

    def _failed(self, error: Exception, doing: str) -> None:
        """A read or write that failed: a miss or a skipped write, logged. A file found broken is replaced and this
        thread's connection to it closed (every other connection moves to the new file at its next use); a locked
        file keeps its connection."""
        if not (isinstance(error, sqlite3.DatabaseError)
                and (getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF in _BROKEN):
            logger.warning("decision cache: cannot %s %s (%s); the answers are %s", doing, self.path, error,
                           "decided without it" if doing == "read" else "not kept")
            return
        db = getattr(self._local, "db", None)
        if self._inode() == getattr(self._local, "inode", None):
            self._replace(error)  # still the file this connection found broken; another may have replaced it already
        if db is not None and getattr(self._local, "pid", None) == os.getpid():
            self._local.db = None
            db.close()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers do not wait for a writer
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                       "expires REAL NOT NULL)")
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'entries'").fetchone():
                db.execute("DROP TABLE IF EXISTS entries")  # the earlier layout (another process may drop it first)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def get(self, key: str):
        text = self.get_many([key])[0]
        return None if text is None else json.loads(text)

    def set(self, key: str, value, ttl_s: int) -> None:
        self.set_many({key: json.dumps(value)}, ttl_s)

    def get_many(self, keys: list[str]) -> list:
        """The values of ``keys`` as JSON text (None where missing or expired)."""
        digests = [_digest(key) for key in keys]
        found: dict[str, str] = {}
        try:
            db = self._db()
            found.update(db.execute("SELECT key, value FROM answers WHERE key IN (SELECT value FROM json_each(?)) "
                                    "AND expires > ?", (json.dumps(digests), time.time())))
        except (sqlite3.Error, OSError) as error:
            self._failed(error, "read")
        return [found.get(digest) for digest in digests]

    def set_many(self, items: dict, ttl_s: int) -> None:
        """Store every key's value, given as JSON text, in one transaction; the expired entries go every so often."""
        now = time.time()
        rows = json.dumps([(_digest(key), text) for key, text in items.items()])
        try:
            db = self._db()
            with db:  # BEGIN ... COMMIT (ROLLBACK on an error)
                db.execute("BEGIN")
                db.execute("INSERT OR REPLACE INTO answers (key, value, expires) "
                           "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), ? FROM json_each(?)",
                           (now + ttl_s, rows))
                # Counted per store, not per thread: a batch stores each chunk from a new thread.
                self.writes += len(items)
                if self.writes >= PURGE_EVERY:
                    self.writes = 0
                    db.execute("DELETE FROM answers WHERE expires <= ?", (now,))
        except (sqlite3.Error, OSError) as error:
            self._failed(error, "write")

    def clear(self) -> None:
        with self._db() as db:
            db.execute("BEGIN")
            db.execute("DELETE FROM answers")


#: A cache key that is itself a digest: ``DIGESTED`` and 32 hex digits of BLAKE2b (a batch's keys, one per context,
#: hash the rule set version with the values read). The file store keeps its digest instead of hashing it again.
DIGESTED = "agents:decision:#"
_DIGESTED_LENGTH = len(DIGESTED) + 32


def _digest(key: str) -> str:
    """The file store's key for a cache key: 128 bits of BLAKE2b, as hex."""
    if len(key) == _DIGESTED_LENGTH and key.startswith(DIGESTED):
        return key[len(DIGESTED):]
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


#: Entries a process writes to the file store between two removals of the expired ones.
PURGE_EVERY = 10_000
#: SQLite's result codes of a file that is no database, or no longer a sound one.
_BROKEN = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
#: SQLite connections a forked process inherited from its parent (see ``_FileCache._db``).
_INHERITED: list = []


@lru_cache(maxsize=1)
def decision_cache():
    """Return the process's decision cache (Redis when ``CACHE_URL`` names it, else a SQLite file under var/)."""
    url = settings.AGENTS_DECISION_CACHE_URL
    if url.startswith(("redis://", "rediss://")):
        return _RedisCache(url)
    return _FileCache(settings.VAR_DIR / "cache" / "decisions.sqlite3")
