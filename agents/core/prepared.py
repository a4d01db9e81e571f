"""Cursors whose statements PostgreSQL parses and plans once per connection: for the few statements every
workflow step sends (claim and finish), planning cost more than running them (0.15 ms against 0.02 ms for the
claim).

Django's PostgreSQL cursors bind parameters on the client (the statement text changes with every value), so the
server plans each execution anew. A cursor from ``prepared_cursor`` binds them on the server and prepares each
statement on its first execution on a connection (psycopg keeps the last 100 of a connection), reusing the plan
from then on. The statements keep Django's
error translation (``django.db`` errors, so tasks retry on ``OperationalError``) and execute wrappers.
``AGENTS_DB_PREPARED_STATEMENTS=false`` turns it off, for a pooler in transaction mode that does not keep
prepared statements (PgBouncer before 1.21).
"""
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from django.conf import settings
from django.db import connection


@contextmanager
def prepared_cursor() -> Iterator:
    """A cursor of the default database binding parameters on the server (PostgreSQL with psycopg 3), else
    Django's own."""
    if connection.vendor != "postgresql" or not settings.AGENTS_DB_PREPARED_STATEMENTS:
        with connection.cursor() as cursor:
            yield cursor
        return
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:  # Django turns psycopg's preparing off; ``PreparingCursor`` asks for it
        raw.prepare_threshold = _PSYCOPG_DEFAULT_THRESHOLD
    with connection.wrap_database_errors:
        cursor = connection._prepare_cursor(_preparing_cursor_class()(raw))
    with cursor:
        yield cursor


#: psycopg's own default: a statement executed this often by a server-side binding cursor that does not say
#: ``prepare`` is prepared too (Django's cursors bind on the client and never are).
_PSYCOPG_DEFAULT_THRESHOLD = 5


@lru_cache(maxsize=1)
def _preparing_cursor_class() -> type:
    """psycopg's server-side binding cursor, preparing every statement it executes (Django leaves psycopg's
    automatic preparing off, and its cursor wrapper passes no ``prepare``)."""
    import psycopg  # already loaded by Django's PostgreSQL backend

    class PreparingCursor(psycopg.Cursor):
        def execute(self, query, params=None, *, prepare=None, binary=None):
            return super().execute(query, params, prepare=True if prepare is None else prepare, binary=binary)

        def _convert_query(self, query, params=None):
            # Kept, as psycopg's client-side cursor keeps it: Django's query log (DEBUG, CaptureQueriesContext)
            # reads the statement sent from it (here with $1, $2 ...; the log shows the parameters beside it).
            self._query = super()._convert_query(query, params)
            return self._query

    return PreparingCursor
