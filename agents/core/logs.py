"""Log records adjusted where a library calls a normal event an error: a chord whose step was revoked because its
run was cancelled is logged by Celery's result backends as ``Chord ... raised: TaskRevokedError`` with a
traceback. Cancelling is not an error; it becomes one INFO line."""
import logging

from celery.exceptions import ChordError, TaskRevokedError

#: The loggers that report a chord whose header failed.
CHORD_LOGGERS = ("django_celery_results.backends.database", "celery.backends.base", "celery.backends.redis",
                 "celery.app.builtins")


class CancelledChordFilter(logging.Filter):
    """Turns 'Chord X raised: TaskRevokedError' (a traceback at ERROR) into one INFO line without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        revoked = isinstance(error, TaskRevokedError) or (
            isinstance(error, ChordError) and "TaskRevokedError" in str(error))
        if revoked and str(record.msg).startswith("Chord"):
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.msg = "Chord %r stopped: one of its steps was revoked (its run was cancelled)"
            record.args = tuple(record.args or ())[:1]
            record.exc_info, record.exc_text = None, None
        return True


def cancelled_chords_quiet() -> None:
    """Attach the filter to the chord loggers (logger filters apply whatever handlers the worker sets up)."""
    for name in CHORD_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, CancelledChordFilter) for existing in logger.filters):
            logger.addFilter(CancelledChordFilter())
