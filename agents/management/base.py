"""The base of every agentsite command: ``--json`` output, subcommands, errors as ``CommandError``, and a quiet stop
when whoever reads stdout stops reading (``manage.py ... | head -1``)."""
import argparse
import datetime
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, OperationalError, ProgrammingError, connection

from agents.core.definitions import refuse_json_constant
from agents.core.jsonable import UNSTORABLE, json_problem
from agents.core.teams import team_named
from agents.exceptions import AgentsError, SpecError
from agents.models import Team

#: The longest name ``--user`` may give (Django's user names are at most this long).
MAX_ACTOR_NAME = 150
#: The most rows a ``--limit`` may ask for.
MAX_LIMIT = 1_000_000
#: The most characters of an argument an error message echoes: a longer one (a 100,000-character name) is cut there.
ECHOED_CHARS = 100
#: How a definition file's name ends: an argument ending so (or holding a '/', which no name may) is a file's path.
DEFINITION_FILE_SUFFIXES = (".yaml", ".yml", ".json")
#: The exit status of a process that wrote to a pipe nobody reads any more: 128 + SIGPIPE, as ``yes | head`` has.
BROKEN_PIPE_STATUS = 141


def _json_default(value: Any) -> str:
    """What JSON holds for a value it has no type for: a time (or date) as ISO 8601 text, anything else (a decimal, a
    UUID) as its ``str``."""
    return value.isoformat() if isinstance(value, (datetime.date, datetime.time)) else str(value)


def json_text(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """``value`` as JSON text (one line unless ``indent``); a time as ISO 8601 text, another value JSON has no type for
    (a decimal) as its ``str``."""
    return json.dumps(value, indent=indent, sort_keys=sort_keys, default=_json_default)


def plain_text(value: Any) -> str:
    """``value`` as a command's text output shows it: text as it is, anything else (a mapping, a list, a number, a
    truth value, None, a time) as JSON text, never Python's repr."""
    return value if isinstance(value, str) else json_text(value)


def _finite_float(text: str) -> float:
    """``json.loads``'s ``parse_float``: a number too large for a double (``1e999``) is infinity, not JSON."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is too large a number to store")
    return number


def _json_loads(text: str) -> Any:
    """JSON that a database can store as parsed: NaN and infinity (``NaN``, ``1e999``) are refused (ValueError)."""
    return json.loads(text, parse_constant=refuse_json_constant, parse_float=_finite_float)


def json_option(text: str, option: str) -> Any:
    """The JSON value of a command-line option (``--payload``, ``--config``); ``CommandError`` naming ``option``
    when it is not JSON, holds NaN or infinity, or holds what PostgreSQL cannot store (NUL characters, lone
    surrogates, deeper nesting than an API request may have)."""
    try:
        value = _json_loads(text)
    except ValueError as error:
        raise CommandError(f"{option}: not valid JSON: {error}") from None
    except RecursionError:
        raise CommandError(f"{option}: not valid JSON: nested too deeply") from None
    if problem := json_problem(value):
        raise CommandError(f"{option}: {problem}")
    return value


def parse_param(text: str) -> tuple[str, object]:
    """Parse ``--param key=value``; the value is JSON when it parses as JSON, else text."""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise CommandError(f"--param {text!r}: expected key=value")
    try:
        # NaN and infinity (also 1e999) are not JSON a database stores: they stay text.
        parsed = _json_loads(value)
    except (ValueError, RecursionError):  # not JSON (or nested too deeply for it): the text itself
        parsed = value
    if problem := json_problem({key: parsed}):
        raise CommandError(f"--param {key[:100]!r}: {problem}")
    return key, parsed


def echoed(text: str) -> str:
    """``text`` as an error message echoes it: whole up to ``ECHOED_CHARS`` characters, else cut there with an
    ellipsis; a path (it holds a '/', which no name may) keeps its last ``ECHOED_CHARS`` characters instead, which
    name the file."""
    if len(text) <= ECHOED_CHARS:
        return text
    return "…" + text[-ECHOED_CHARS:] if "/" in text else text[:ECHOED_CHARS] + "…"


def names_a_path(text: str) -> bool:
    """Whether ``text`` is meant as a definition file's path: it holds a '/' or ends as such a file's name does."""
    return "/" in text or text.lower().endswith(DEFINITION_FILE_SUFFIXES)


def unstored_path_refuse(argument: str, *, stored: bool) -> None:
    """For a command taking a stored definition's name or a file's path: ``file_missing_refuse`` when ``argument``,
    neither a file nor ``stored``, reads as a path (the file is what is missing, not a definition of that name)."""
    if not stored and names_a_path(argument):
        file_missing_refuse(argument)


def file_missing_refuse(path: str) -> None:
    """``CommandError`` naming ``path`` when nothing is there (``PATH: cannot read: no such file``); a directory, a
    pipe or a file that cannot be read is for whoever reads it to say why."""
    if not os.path.exists(path):
        raise CommandError(f"{echoed(path)}: cannot read: no such file")


def is_file(path: str) -> bool:
    """Whether ``path`` names a file (a name too long for the file system names none)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def actor_name(text: str) -> str:
    """An argparse type for ``--user`` naming who acts (recorded beside what they did): 1-150 characters, as a
    user name has at most (text PostgreSQL cannot store is refused for every option, see ``AgentsCommand.execute``)."""
    if not 1 <= len(text) <= MAX_ACTOR_NAME:
        raise argparse.ArgumentTypeError(f"must be 1-{MAX_ACTOR_NAME} characters, got {len(text)}")
    return text


def filter_name(text: str) -> str:
    """An argparse type for an option naming what to list (``--pipeline``, ``--trigger``): not empty (an empty name
    filtered nothing, so ``--pipeline ''`` listed every run)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a name, got nothing")
    return text


def row_limit(text: str) -> int:
    """An argparse type for ``--limit``: a whole number from 1 to ``MAX_LIMIT``."""
    try:
        limit = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {echoed(text)!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_LIMIT:,}, got {echoed(text)}")
    return limit


def wait_seconds(text: str) -> float:
    """An argparse type for how long to wait: a finite number of seconds above 0 (NaN never ended a wait)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {echoed(text)!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds above 0, got {echoed(text)!r}")
    return seconds


def wait_until(finished: Callable[[], bool], *, timeout: float, first_s: float = 0.01, most_s: float = 0.2,
               share: float = 0.125, pause: Callable[[float], object] | None = None) -> bool:
    """Ask ``finished()`` until it says yes or ``timeout`` seconds have passed; whether it said yes. The pause between
    two asks is ``share`` (an eighth) of the time waited so far, at least ``first_s`` and at most ``most_s``: a job
    done in a few milliseconds is seen done within milliseconds, one of half a second within a sixteenth of a second
    more (pauses doubling from 0.01 s to 0.2 s saw it up to 0.2 s late, a fixed 0.2 s pause any job), and a long one
    costs a query per ``most_s``. ``pause(seconds)``, when given, pauses instead of ``time.sleep`` and may end early
    (``wait_for_status``: when the awaited change is announced)."""
    started = time.monotonic()
    deadline = started + timeout
    while not finished():
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            return False
        (pause or time.sleep)(min(max(first_s, (now - started) * share), most_s, left))
    return True


#: The channel a change of a data run's, workflow run's or agent task's status is announced on (PostgreSQL,
#: migration 0025), as ``TABLE:ID``.
STATUS_CHANNEL = "agents_status"


def wait_for_status(instance: Any, finished: tuple, *, timeout: float, **pauses: float) -> bool:
    """``wait_until`` a model instance's ``status`` is one of ``finished``, its row read again at each look (the
    instance then holds it); whether it got there within ``timeout`` seconds. On PostgreSQL a pause ends as soon as
    a change of the instance's status is announced, so the wait ends when the change commits, not at the next look
    (the looks go on, in case an announcement is lost: a pooler that drops LISTEN, a connection that reconnects)."""

    def ended() -> bool:
        if instance.status not in finished:
            instance.refresh_from_db()
        return instance.status in finished

    with _status_announcements(f"{instance._meta.db_table}:{instance.pk}") as pause:
        return wait_until(ended, timeout=timeout, pause=pause, **pauses)


@contextmanager
def _status_announcements(mine: str) -> Iterator[Callable[[float], bool] | None]:
    """A pause that ends early when a status change named ``mine`` (``TABLE:ID``) is announced, while this
    connection listens on ``STATUS_CHANNEL``; None where nothing is announced (SQLite), where a notice would come
    only at the end of the transaction the caller is in, or where listening is turned off (``AGENTS_DB_LISTEN``)."""
    if connection.vendor != "postgresql" or connection.in_atomic_block or not settings.AGENTS_DB_LISTEN:
        yield None
        return
    with connection.cursor() as cursor:
        cursor.execute(f"LISTEN {STATUS_CHANNEL}")
    listening = connection.connection
    from psycopg import Error as ConnectionFailed  # the backend's own driver: loaded with the connection

    def pause(seconds: float) -> bool:
        """Pause at most ``seconds``; whether the change was announced."""
        try:
            for notice in listening.notifies(timeout=seconds):
                if notice.payload == mine:
                    return True
        except ConnectionFailed:  # the next look reports a lost connection as every query does
            time.sleep(seconds)
        return False

    try:
        yield pause
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"UNLISTEN {STATUS_CHANNEL}")
        except DatabaseError:  # the connection is gone, and its LISTEN with it
            pass


def _stdout_discard() -> None:
    """Point stdout at the null device, so Python's last flush at exit cannot fail again on the closed pipe (what the
    Python docs advise for SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _database_unready() -> str | None:
    """After a database error: what an operator must do when the database cannot be reached or has not been migrated
    (a new install, a new database); None when it is there and migrated. Names the database, never its password."""
    from django.db.migrations.executor import MigrationExecutor

    named = connection.settings_dict
    where = str(named["NAME"]) if connection.vendor == "sqlite" else \
        f"{named.get('HOST') or 'localhost'}:{named.get('PORT') or 'default port'}/{named['NAME']}"
    try:
        executor = MigrationExecutor(connection)
        unapplied = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as failure:
        reason = (str(failure).strip().splitlines() or [type(failure).__name__])[0]
        return f"the database ({where}) cannot be reached: {reason}"
    if unapplied:
        return (f"the database ({where}) is not migrated: {len(unapplied)} migration(s) not applied; run "
                "`python manage.py migrate` first")
    return None


def _unstorable_options_refuse(command: BaseCommand, args: tuple, options: dict) -> None:
    """``CommandError`` naming the first argument or option holding text PostgreSQL cannot store: bytes that are not
    UTF-8 arrive from the command line as lone surrogates (a file name too: its name would be stored as the
    definition's source), and ``call_command`` may pass a NUL."""
    given = [(None, value) for value in args] + list(options.items())
    unshown = getattr(command, "unshown_options", ())  # a secret typed where it should not be is not echoed
    for name, value in given:
        for text in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(text, str) and UNSTORABLE.search(text):
                shown = "the value (not shown)" if name in unshown else repr(text)
                raise CommandError(f"{_option_label(command, name, options)}: {shown} holds bytes that are not "
                                   "UTF-8 text (or a NUL character), which cannot be stored; give it as UTF-8 (rename "
                                   "such a file)")


def _option_label(command: BaseCommand, dest: str | None, options: dict) -> str:
    """How the command line writes the argument stored under ``dest``: ``--check``, or ``FILE`` for a positional
    (of the subcommand ``options`` chose)."""
    return _given_label(command, dest, options) or dest or "an argument"


def _given_label(command: BaseCommand, dest: str | None, options: dict, *, typed: bool = False) -> str | None:
    """``_option_label`` of ``dest``; None when the command (or the subcommand ``options`` chose) has no such
    argument, or, with ``typed``, when it is an option left out (its value None or its default)."""
    pending = [command.create_parser("manage.py", command.__module__.rsplit(".", 1)[-1])]
    while pending:
        for action in pending.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                if options.get(action.dest) in action.choices:
                    pending.append(action.choices[options[action.dest]])
            elif dest is not None and action.dest == dest:
                if action.option_strings:
                    if typed and options.get(dest) in (None, action.default):
                        return None
                    return max(action.option_strings, key=len)
                return (action.metavar or dest).upper()
    return None


#: A problem that names a field first (``slots: ...``, ``from/to: ...``).
_FIELD_FIRST = re.compile(r"([a-z][a-z_]*(?:/[a-z][a-z_]*)?): ")
#: A quoted text long enough to be cut when it is (a piece of) an argument given.
_LONG_QUOTED = re.compile(r"'([^'\n]{%d,})'" % (ECHOED_CHARS + 1))


def _field_named_as_given(command: "AgentsCommand", problem: str, options: dict) -> str:
    """``problem`` naming the option the user typed where it names the field a service knows it by: ``--slots: ...``
    for ``slots: ...`` (the option stored under that name, or ``field_options``' alias). A positional argument keeps
    its name, as the usage line writes it, and so does a field whose option was not typed (``schedule:`` of the
    workflow's own schedules when ``--schedule`` was left out)."""
    found = _FIELD_FIRST.match(problem)
    if found is None:
        return problem
    aliases = command.field_options.get(options.get("subcommand"), {})
    labels = [aliases.get(field) or _given_label(command, field, options, typed=True)
              for field in found[1].split("/")]
    if not all(label and label.startswith("--") for label in labels):
        return problem
    return "/".join(labels) + problem[len(found[1]):]


def _echoes_cut(message: str, args: tuple, options: dict) -> str:
    """``message`` with each argument longer than ``ECHOED_CHARS`` that it echoes cut there (``echoed``): whole, as
    its repr, or a quoted piece of it (an action named inside a JSON option); a path keeps its end, which names the
    file."""
    given = [*args, *options.values()]
    long = {text for value in given for text in (value if isinstance(value, (list, tuple)) else [value])
            if isinstance(text, str) and len(text) > ECHOED_CHARS}
    for text in sorted(long, key=len, reverse=True):
        message = message.replace(repr(text), repr(echoed(text))).replace(text, echoed(text))
    return _LONG_QUOTED.sub(lambda quoted: f"'{echoed(quoted[1])}'" if any(quoted[1] in text for text in long)
                            else quoted[0], message) if long else message


class AgentsCommand(BaseCommand):
    """A command of agentsite.

    A command with subcommands adds them with ``dest="subcommand"`` and implements ``handle_<subcommand>``; a command
    without overrides ``handle``. An ``AgentsError`` (or another of ``translated_errors``) becomes a
    ``CommandError`` with its message; a ``spec_error`` lists its problems one a line under ``spec_error_title``.
    """

    #: Django's system checks are not run before each command: they load every URL route (the whole API) and take
    #: longer than most commands; ``manage.py check`` and ``migrate`` (which ``make run`` runs first) run them.
    requires_system_checks: list[str] = []
    #: Whether ``--json`` output sorts the keys of objects.
    json_sort_keys = False
    #: Errors whose message is the command's error message (exit status 1, no traceback).
    translated_errors: tuple[type[Exception], ...] = (AgentsError,)
    #: The definition error whose problems are listed one a line, e.g. ``WorkflowSpecError``.
    spec_error: type[SpecError] | None = None
    #: The line above those problems, e.g. ``"invalid workflow"``.
    spec_error_title = ""
    #: The subcommands whose ``spec_error`` is about a definition they read (``spec_error_title`` heads it); None: all.
    spec_error_subcommands: tuple[str, ...] | None = None
    #: Per subcommand, the option a field is typed as where its argument is stored under another name
    #: (``{"backfill": {"from": "--from"}}``); a field named as an argument is stored (``slots``) needs none.
    field_options: dict[str, dict[str, str]] = {}

    @staticmethod
    def json_argument_add(parser, help: str = "Print JSON instead of text.") -> None:
        """Add the ``--json`` flag (``options["json"]``) to ``parser`` or a subcommand's parser."""
        parser.add_argument("--json", action="store_true", help=help)

    @staticmethod
    def team_argument_add(parser, help: str = "The team a new definition belongs to (default: the default team); "
                                              "an existing one of another team is refused.") -> None:
        """Add ``--team NAME`` (``options["team"]``) to ``parser`` or a subcommand's parser."""
        parser.add_argument("--team", metavar="NAME", help=help)

    @staticmethod
    def team_of(name: str | None) -> Team | None:
        """The team ``--team`` names (None when not given); an unknown name is the command's error."""
        return team_named(name) if name else None

    def json_write(self, value: Any, *, indent: int | None = 2) -> None:
        """Write ``value`` as JSON: indented, or on one line with ``indent=None`` (a JSON-lines record)."""
        self.stdout.write(json_text(value, indent=indent, sort_keys=self.json_sort_keys))

    def handle(self, *args, subcommand: str, **options):
        """Run ``handle_<subcommand>`` with the options (``backfill-stop``: ``handle_backfill_stop``)."""
        self.subcommand = subcommand
        return getattr(self, f"handle_{subcommand.replace('-', '_')}")(**options)

    def error_message(self, error: Exception, options: dict | None = None) -> str:
        """What the user reads for ``error``: its message, or the title and each problem of a ``spec_error``; the
        title only where the subcommand reads a definition (``spec_error_subcommands``), else the problems alone. A
        problem naming a field names the option typed for it (``--slots: ...``, not ``slots: ...``)."""
        options = options or {}
        if not isinstance(error, SpecError):
            problems = getattr(error, "errors", None) or [str(error)]  # an ``AgentsError.of`` lists its problems
            return "; ".join(_field_named_as_given(self, str(problem), options) for problem in problems)
        if self.spec_error is not None and isinstance(error, self.spec_error):
            subcommand = getattr(self, "subcommand", None)
            if self.spec_error_subcommands is None or subcommand in self.spec_error_subcommands:
                # The definition's problems: a field named is the definition's own, not an option.
                return f"{self.spec_error_title}:\n  - " + "\n  - ".join(error.errors)
            return "\n".join(_field_named_as_given(self, problem, options) for problem in error.errors)
        return "; ".join(_field_named_as_given(self, problem, options) for problem in error.errors)

    def execute(self, *args, **options):
        try:
            return self._execute(*args, **options)
        except CommandError as error:
            # What a service says of a 100,000-character name echoes it whole: a message a user reads is cut.
            error.args = (_echoes_cut(str(error), args, options), *error.args[1:])
            raise

    def _execute(self, *args, **options):
        # Here rather than in run_from_argv: call_command() (tests, other commands) gets a CommandError too.
        _unstorable_options_refuse(self, args, options)
        try:
            return super().execute(*args, **options)
        except self.translated_errors as error:
            raise CommandError(self.error_message(error, options)) from error
        except (OperationalError, ProgrammingError) as error:
            # Inside a caller's transaction (call_command in a test) the failed one cannot be looked past to ask.
            told = None if connection.in_atomic_block else _database_unready()
            if told is None:  # the database is there and migrated: a defect, shown whole
                raise
            raise CommandError(told) from error

    def run_from_argv(self, argv):
        """Run as ``manage.py`` does; when stdout's reader has gone (``| head -1``), stop quietly with status 141."""
        try:
            super().run_from_argv(argv)
            sys.stdout.flush()  # what stdout still buffers meets a closed pipe here, not in Python's exit
        except BrokenPipeError:
            _stdout_discard()
            sys.exit(BROKEN_PIPE_STATUS)
        except SystemExit:
            # A failure's exit (its message is on stderr) keeps its status; what stdout still buffers may meet a
            # closed pipe as well.
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                _stdout_discard()
            raise
