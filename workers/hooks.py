"""The base of every task that ends what it was doing when the hard time limit kills its process.

Celery runs ``on_failure`` for such a task in the worker's main process, inside the pool's timeout handling,
before the stuck process is killed and the message acknowledged (``acks_late``: nothing delivers it again). So the
hook reads the database on a fresh connection (the one the main process kept may have died with a restart of
PostgreSQL), and never raises: an error is logged, the kill and the acknowledgement go on, and what the hook could
not end is left to the area's sweep (the reconciler, the reaper, the alert sweep)."""
import logging

from celery import Task
from celery.exceptions import TimeLimitExceeded
from django.db import connections

logger = logging.getLogger(__name__)


class HardLimitTask(Task):
    """A task whose ``hard_limit_killed`` ends what it was doing when the hard time limit kills its process."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        if not isinstance(exc, TimeLimitExceeded):
            return
        limit_s = float(exc.args[0]) if exc.args and isinstance(exc.args[0], (int, float)) else None
        _connections_close()
        try:
            self.hard_limit_killed(task_id, tuple(args or ()), dict(kwargs or {}), limit_s)
        except Exception:  # the kill and the acknowledgement must go on; the area's sweep ends what is left
            logger.exception("task %s[%s]: ending what the hard time limit killed failed", self.name, task_id)
        finally:
            _connections_close()

    def hard_limit_killed(self, task_id: str, args: tuple, kwargs: dict, limit_s: float | None) -> None:
        """End what the task was doing (its ``args`` and ``kwargs`` as sent); ``limit_s``: the limit, when known."""
        raise NotImplementedError


def killed_by(limit_s: float | None) -> str:
    """What a record ended by the hard time limit says first: ``killed by the hard time limit of 1.5 s``."""
    return "killed by the hard time limit" + (f" of {limit_s:g} s" if limit_s is not None else "")


def _connections_close() -> None:
    """Close this thread's database connections, but one inside a transaction (a caller's, which it would break)."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()
