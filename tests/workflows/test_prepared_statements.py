"""The statements every step sends are prepared on the server once per connection (``agents.core.prepared``)."""
import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from agents.core.prepared import prepared_cursor

pytestmark = pytest.mark.django_db

def prepared_count(statement: str) -> int:
    """How many times this connection's session holds ``statement`` prepared (with PostgreSQL's placeholders)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement = %s",
                       [statement.replace("%s", "$1")])
        return cursor.fetchone()[0]


def test_a_statement_run_again_and_again_is_planned_once_and_answers_as_before():
    statement = "SELECT %s::int + 1"
    answers = []
    with CaptureQueriesContext(connection) as logged:
        for value in range(8):
            with prepared_cursor() as cursor:
                cursor.execute(statement, [value])
                answers.append(cursor.fetchone()[0])

    assert answers == list(range(1, 9))
    assert prepared_count(statement) == 1
    assert [query["sql"] for query in logged.captured_queries] == ["SELECT $1::int + 1"] * 8  # Django's query log


def test_without_prepared_statements_nothing_is_prepared(settings):
    settings.AGENTS_DB_PREPARED_STATEMENTS = False
    statement = "SELECT %s::int + 2"
    for value in range(8):
        with prepared_cursor() as cursor:
            cursor.execute(statement, [value])
            assert cursor.fetchone()[0] == value + 2

    assert prepared_count(statement) == 0


def test_a_refused_statement_raises_djangos_error_so_tasks_retry_as_they_would():
    with pytest.raises(IntegrityError), transaction.atomic(), prepared_cursor() as cursor:
        cursor.execute("INSERT INTO agents_steprun (id) VALUES (%s)", [None])
