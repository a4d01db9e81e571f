"""Write a batch's decision audit rows as they are made: one PostgreSQL COPY stream (psycopg 3's ``cursor.copy``),
elsewhere bulk INSERTs.

The audit stays append-only: COPY only inserts, and the database trigger that refuses UPDATE and DELETE of a
decision is untouched. The rows stream while the batch goes on: a thread sends each chunk as one COPY statement on
the batch's own connection and transaction, so the database stores (and checks the foreign keys of) one chunk while
the next is evaluated; the columns every decision with the same outcome shares are encoded once per outcome.
"""
import json
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from django.db import connection, transaction
from django.utils import timezone

from agents.models import Decision

#: The columns a COPY row holds, in order.
COLUMNS = ("decision_id", "ruleset_id", "trace_id", "version_id", "model_version_id", "context", "decision",
           "confidence", "engine", "rule_ids", "reasoning", "needs_review", "error", "cached", "latency_ms",
           "created_at")
#: Bytes of rows per COPY statement: enough to amortise the statement, small enough that the database stores and
#: checks one while the next is built.
_COPY_CHUNK = 1 << 20
#: COPY statements waiting for the thread at most: the batch waits for the database beyond that.
_COPY_QUEUED = 8
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass(frozen=True)
class AuditOutcome:
    """The audited columns an outcome gives every decision that has it: decision and rule ids as JSON text."""

    decision_json: str
    confidence: float
    engine: str
    rule_ids_json: str
    reasoning: str
    needs_review: bool


def _text(value: str) -> str:
    """``value`` escaped for COPY's text format."""
    return value.translate(_ESCAPES)


def _json(text: str) -> str:
    """JSON text escaped for COPY's text format: JSON holds no raw tab or newline, only backslashes to double."""
    return text.replace("\\", "\\\\") if "\\" in text else text


class _CopyWriter:
    """Rows to COPY text in the caller's thread; each chunk sent as one COPY statement by a thread of its own on the
    same connection (psycopg's connections are thread-safe), which the caller leaves alone until ``close``."""

    def __init__(self, raw_connection, statement: str, head: str, stamp: str):
        self.raw, self.statement, self.head, self.stamp = raw_connection, statement, head, stamp
        self.segments: dict[int, tuple[AuditOutcome, str]] = {}
        self.written = 0
        self.lines: list[str] = []
        self.size = 0
        # The first statements are small, so the database starts early; they grow to _COPY_CHUNK.
        self.limit = _COPY_CHUNK // 16
        self.pending: queue.Queue = queue.Queue(maxsize=_COPY_QUEUED)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self.send, name="decision-audit-copy", daemon=True)
        self.thread.start()

    def segment(self, outcome: AuditOutcome) -> str:
        known = self.segments.get(id(outcome))
        if known is None or known[0] is not outcome:
            text = "\t".join((_json(outcome.decision_json), repr(float(outcome.confidence)), _text(outcome.engine),
                              _json(outcome.rule_ids_json), _text(outcome.reasoning),
                              "t" if outcome.needs_review else "f"))
            known = self.segments[id(outcome)] = (outcome, text)
        return known[1]

    def write(self, rows: list[tuple]) -> None:
        if self.failure is not None:
            raise self.failure
        head, stamp, segment = self.head, self.stamp, self.segment
        lines, size = self.lines, self.size
        for decision_id, context_json, outcome, error, cached, latency_ms in rows:
            line = (f"{decision_id}\t{head}\t{_json(context_json)}\t{segment(outcome)}\t{_text(error)}\t"
                    f"{'t' if cached else 'f'}\t{latency_ms!r}\t{stamp}\n")
            lines.append(line)
            size += len(line)
            if size >= self.limit:
                self.pending.put("".join(lines))
                lines, size = [], 0
                self.limit = min(_COPY_CHUNK, self.limit * 2)
        self.lines, self.size = lines, size
        self.written += len(rows)

    def send(self) -> None:
        """The thread: one COPY statement per chunk until ``None``; after a failure, drain the queue."""
        with self.raw.cursor() as cursor:
            while (text := self.pending.get()) is not None:
                if self.failure is None:
                    try:
                        with cursor.copy(self.statement) as copy:
                            copy.write(text)
                    except BaseException as failure:  # the caller raises it, in its transaction
                        self.failure = failure

    def close(self, *, completed: bool) -> None:
        """Send what is left (when ``completed``) and wait for the thread; raise what the database refused."""
        if completed and self.lines:
            self.pending.put("".join(self.lines))
        self.lines = []
        self.pending.put(None)
        self.thread.join()
        if completed and self.failure is not None:
            raise self.failure


class _BulkWriter:
    def __init__(self, fixed: dict, created, batch: int):
        self.fixed, self.created, self.batch = fixed, created, batch
        self.written = 0

    def write(self, rows: list[tuple]) -> None:
        objects = [
            Decision(decision_id=decision_id, context=json.loads(context_json),
                     decision=json.loads(outcome.decision_json), confidence=outcome.confidence, engine=outcome.engine,
                     rule_ids=json.loads(outcome.rule_ids_json), reasoning=outcome.reasoning,
                     needs_review=outcome.needs_review, error=error, cached=cached, latency_ms=latency_ms,
                     created_at=self.created, **self.fixed)
            for decision_id, context_json, outcome, error, cached, latency_ms in rows
        ]
        Decision.objects.bulk_create(objects, batch_size=self.batch)
        self.written += len(rows)


@contextmanager
def decisions_writer(*, ruleset_id: int, version_id: int, trace_id: str, model_version_id: int | None = None,
                     batch: int) -> Iterator:
    """A writer of audit rows for one rule set version, inside one transaction: ``write(rows)`` takes tuples of
    (decision_id, context as JSON text, AuditOutcome, error, cached, latency_ms). COPY on PostgreSQL; bulk INSERTs
    of ``batch`` rows elsewhere. Nothing else may use the database connection while the writer is open."""
    created = timezone.now()
    with transaction.atomic():
        if connection.vendor != "postgresql":
            yield _BulkWriter({"ruleset_id": ruleset_id, "version_id": version_id, "trace_id": trace_id,
                               "model_version_id": model_version_id}, created, batch)
            return
        meta = Decision._meta
        quote = connection.ops.quote_name
        statement = (f"COPY {quote(meta.db_table)} "
                     f"({', '.join(quote(meta.get_field(name).column) for name in COLUMNS)}) FROM STDIN")
        head = "\t".join((str(ruleset_id), _text(trace_id), str(version_id),
                          "\\N" if model_version_id is None else str(model_version_id)))
        keys = ", ".join(quote(name) for name in _foreign_keys())
        with connection.cursor() as cursor:
            # Checked as each COPY statement ends (in the thread, while the batch goes on), not all at commit.
            if keys:
                cursor.execute(f"SET CONSTRAINTS {keys} IMMEDIATE")
            writer = _CopyWriter(connection.connection, statement, head, created.isoformat())
            completed = False
            try:
                yield writer
                completed = True
            finally:
                writer.close(completed=completed)
            if keys:
                cursor.execute(f"SET CONSTRAINTS {keys} DEFERRED")


@lru_cache(maxsize=1)
def _foreign_keys() -> tuple[str, ...]:
    """The names of the decision table's deferrable foreign keys (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f' "
                       "AND condeferrable ORDER BY conname", [Decision._meta.db_table])
        return tuple(row[0] for row in cursor.fetchall())
