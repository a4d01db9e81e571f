"""Trace ids: started at each entry point, carried through tasks, chains, chords and retries, on every log line."""
import io
import json
import logging
import os
import sys

import pytest
from celery import chain, chord, shared_task
from celery.beat import ScheduleEntry, Scheduler
from django.conf import settings

from agents.core.tracing import (
    JsonFormatter, TraceIdFilter, trace, trace_id_ensure, trace_id_get, trace_id_valid,
)
from agentsite.celery import app as celery_app
from tests.conftest import manage
from workers.registry import trace_echo


@shared_task(bind=True, name="tests.test_tracing.trace_echo_after_retry")
def trace_echo_after_retry(self) -> dict:
    """Retry once, then answer with the trace id and the number of retries. Not at once: the retry's own success can
    be stored before the first attempt's RETRY state, which the database result backend then writes over it (it
    keeps no finished state, unlike Celery's key-value backends), and the caller waits for a result forever."""
    if self.request.retries == 0:
        raise self.retry(countdown=1)
    return {"trace_id": trace_id_get(), "retries": self.request.retries}


def test_trace_nests_into_the_current_trace_and_restores_the_previous_one():
    with trace() as outer:
        with trace() as inner:
            assert inner == outer
        with trace("ab" * 16) as given:
            assert trace_id_get() == given == "ab" * 16
        assert trace_id_get() == outer
    assert trace_id_get() == ""
    with pytest.raises(ValueError):
        with trace("not-a-trace-id"):
            pass


def test_trace_id_ensure_starts_a_trace_only_when_there_is_none():
    with trace("ab" * 16):
        assert trace_id_ensure() == "ab" * 16
    started = trace_id_ensure()
    assert trace_id_valid(started) and trace_id_get() == started


def test_a_task_sent_inside_a_trace_runs_under_that_trace(worker):
    with trace("ab" * 16):
        answer = trace_echo.delay().get(timeout=10)

    assert answer["trace_id"] == "ab" * 16


def test_tasks_sent_outside_any_trace_each_start_their_own(worker):
    first = trace_echo.delay().get(timeout=10)
    second = trace_echo.delay().get(timeout=10)

    assert trace_id_valid(first["trace_id"]) and trace_id_valid(second["trace_id"])
    assert first["trace_id"] != second["trace_id"]
    assert trace_id_get() == "", "sending a task must not leave a trace behind in the sender"


def test_each_beat_dispatch_starts_a_fresh_trace(worker):
    scheduler = Scheduler(app=celery_app, lazy=True)
    entry = ScheduleEntry(name="trace-echo", task="workers.registry.trace_echo", schedule=60.0, app=celery_app)

    answers = [scheduler.apply_async(entry).get(timeout=10) for _ in range(2)]

    assert all(trace_id_valid(answer["trace_id"]) for answer in answers)
    assert answers[0]["trace_id"] != answers[1]["trace_id"]


def test_a_chain_keeps_its_trace_from_task_to_task(worker):
    result = chain(trace_echo.si(), trace_echo.si()).apply_async()

    second = result.get(timeout=10)
    first = result.parent.get(timeout=10)
    assert first["task_id"] != second["task_id"]
    assert trace_id_valid(first["trace_id"]) and second["trace_id"] == first["trace_id"]


def test_a_chord_callback_keeps_the_trace_of_its_header(worker):
    with trace("cd" * 16):
        result = chord([trace_echo.si(), trace_echo.si()], trace_echo.si()).apply_async()

    assert result.get(timeout=10)["trace_id"] == "cd" * 16
    assert [answer["trace_id"] for answer in result.parent.get(timeout=10)] == ["cd" * 16] * 2


def test_a_retried_task_keeps_its_trace(worker):
    with trace("ef" * 16):
        answer = trace_echo_after_retry.delay().get(timeout=10)

    assert answer == {"trace_id": "ef" * 16, "retries": 1}


def test_log_lines_name_their_trace():
    console = next(
        handler for handler in logging.getLogger().handlers
        if any(isinstance(log_filter, TraceIdFilter) for log_filter in handler.filters)
    )
    stream = console.setStream(io.StringIO())
    try:
        with trace("ab" * 16):
            logging.getLogger("tests.tracing").warning("inside a trace")
        logging.getLogger("tests.tracing").warning("outside any trace")
        lines = console.stream.getvalue().splitlines()
    finally:
        console.setStream(stream)

    assert "[" + "ab" * 16 + "] inside a trace" in lines[0]
    assert "[-] outside any trace" in lines[1]


def test_json_log_lines_carry_the_trace_and_the_exception():
    try:
        raise RuntimeError("the disk is full")
    except RuntimeError:
        record = logging.LogRecord("agents.data", logging.ERROR, __file__, 1, "write of %s failed", ("x.csv",), sys.exc_info())
    with trace("ab" * 16):
        TraceIdFilter().filter(record)

    line = json.loads(JsonFormatter().format(record))

    assert (line["level"], line["logger"], line["message"]) == ("ERROR", "agents.data", "write of x.csv failed")
    assert line["trace_id"] == "ab" * 16
    assert line["time"].endswith("+00:00")
    assert "RuntimeError: the disk is full" in line["exception"]


@pytest.mark.django_db
def test_every_request_runs_in_a_trace_named_in_the_response(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert trace_id_valid(response["X-Trace-Id"])


@pytest.mark.django_db
def test_a_request_continues_the_trace_its_caller_names(client):
    response = client.get("/healthz", headers={"X-Trace-Id": "ab" * 16})

    assert response["X-Trace-Id"] == "ab" * 16


@pytest.mark.django_db
def test_a_malformed_incoming_trace_id_is_replaced(client):
    response = client.get("/healthz", headers={"X-Trace-Id": "zz" * 16 + "\r\nX-Evil: 1"})

    assert trace_id_valid(response["X-Trace-Id"])


@pytest.mark.django_db(transaction=True)
def test_a_management_command_logs_json_lines_naming_its_trace(tmp_path):
    rules = tmp_path / "logged.yaml"
    # JsonLogic's "log" operation logs its value (agents.expressions.jsonlogic, INFO).
    rules.write_text('name: logged\nrules:\n  - {id: log, jsonlogic: {"log": true}, decision: yes}\n')
    database = settings.DATABASES["default"]
    url = f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"}
    assert manage("rules", "load", str(rules), "--activate", env=env).returncode == 0

    result = manage("decide", "logged", "--context", "{}", "--no-cache", "--json", env=env)

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["message"] for line in lines] == ["JsonLogic log: True"]
    assert lines[0]["logger"] == "agents.expressions.jsonlogic" and trace_id_valid(lines[0]["trace_id"])
