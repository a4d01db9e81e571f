"""The database connection of a process after long work done without it."""
import select

from django.db import connection


def connection_checked() -> None:
    """Open the connection again if the database dropped it while this process worked without it (it restarted,
    failed over, or ended the session). An idle connection has nothing to read until the server says something: so
    only one on which it did (it closed it, or sent a notice) is tried with a round trip (``SELECT 1``), and the usual
    check costs one ``select`` call, cheap enough for every workflow step. A connection dropped without a word (a
    firewall reaping it) is not seen. Not inside a transaction, whose work a new connection would not hold."""
    raw = connection.connection
    if raw is None or connection.in_atomic_block or not hasattr(raw, "fileno"):  # (SQLite: a file, no server)
        return
    if connection.errors_occurred:  # a query failed on it meanwhile (it may have found it dropped): a new one
        connection.close()
        return
    try:
        said = bool(select.select([raw.fileno()], [], [], 0)[0])
    except Exception:  # known lost or closed on this side already (psycopg raises its own error then)
        said = True
    if said and not connection.is_usable():
        connection.close()
