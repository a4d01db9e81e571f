"""The breaker state machine against the real Redis: closed, open, half-open, reset; concurrent workers; the file
store shared by processes; a store that cannot be reached."""
import subprocess
import sys
import threading
import time
import uuid

import pytest

from agents.core.breakers import breaker, breaker_reset, breaker_state, breakers_list, call, http_key, tcp_key
from agents.exceptions import BreakerStoreError, CircuitOpenError
from tests.breakers.conftest import COOLDOWN_S, FAILURES
from tests.conftest import PROJECT_DIR, embedded_env


def new_key() -> str:
    """A dependency key of the tests' own, so nothing real shares its breaker."""
    return f"test:{uuid.uuid4().hex[:12]}:80"


def refused():
    raise ConnectionRefusedError(111, "Connection refused")


def fail(key: str, times: int = 1) -> None:
    """Make ``times`` calls under the breaker of ``key`` that fail to connect."""
    for _ in range(times):
        with pytest.raises(ConnectionRefusedError):
            call(key, refused)


def wait_out_cooldown() -> None:
    time.sleep(COOLDOWN_S + 0.1)


def test_keys_name_the_host_and_port_of_a_dependency():
    assert http_key("https://API.example.com/v1?token=x") == "http:api.example.com:443"
    assert http_key("http://example.com/") == "http:example.com:80"
    assert http_key("http://127.0.0.1:8080/x") == "http:127.0.0.1:8080"
    assert http_key("http://[::1]:8080/") == "http:[::1]:8080"
    assert tcp_key("DB.internal", 5432) == "tcp:db.internal:5432"


def test_fewer_failures_than_the_threshold_keep_the_circuit_closed_and_a_success_forgets_them(fast_breakers):
    key = new_key()
    fail(key, FAILURES - 1)

    assert breaker_state(key)["state"] == "closed"
    assert breaker_state(key)["failures"] == FAILURES - 1
    assert call(key, lambda: "answered") == "answered"
    fail(key, FAILURES - 1)

    assert breaker_state(key) | {"last_failure_at": None} == {
        "key": key, "state": "closed", "failures": FAILURES - 1, "threshold": FAILURES, "cooldown_s": COOLDOWN_S,
        "opened_at": None, "retry_at": None, "trial_running": False, "last_error": "connection refused",
        "last_failure_at": None,
    }


def test_consecutive_failures_open_the_circuit_and_calls_then_fail_fast_without_running(fast_breakers):
    key = new_key()
    fail(key, FAILURES)
    ran = []

    with pytest.raises(CircuitOpenError) as caught:
        call(key, lambda: ran.append(1))

    assert ran == []
    message = str(caught.value)
    assert message.startswith(f"circuit open for {key} after {FAILURES} consecutive failures "
                              "(last: connection refused)")
    assert "calls fail fast until a trial call at" in message
    assert caught.value.key == key and caught.value.failures == FAILURES
    state = breaker_state(key)
    assert state["state"] == "open"
    assert caught.value.retry_at == state["retry_at"]
    assert (state["retry_at"] - state["opened_at"]).total_seconds() == pytest.approx(COOLDOWN_S)


def test_after_the_cooldown_one_trial_goes_through_and_its_success_closes_the_circuit(fast_breakers):
    key = new_key()
    fail(key, FAILURES)
    wait_out_cooldown()
    assert breaker_state(key)["state"] == "half_open"

    assert call(key, lambda: "recovered") == "recovered"

    assert breaker_state(key)["state"] == "closed"
    assert breaker_state(key)["failures"] == 0
    assert breakers_list() == []
    assert call(key, lambda: "again") == "again"


def test_a_failed_trial_opens_the_circuit_for_another_cooldown(fast_breakers):
    key = new_key()
    fail(key, FAILURES)
    first_opening = breaker_state(key)["opened_at"]
    wait_out_cooldown()

    fail(key)  # the trial call

    state = breaker_state(key)
    assert state["state"] == "open"
    assert state["failures"] == FAILURES + 1
    assert state["opened_at"] > first_opening
    with pytest.raises(CircuitOpenError, match=f"after {FAILURES + 1} consecutive failures"):
        call(key, lambda: "not called")


def test_while_the_trial_is_under_way_other_calls_fail_fast(fast_breakers):
    key = new_key()
    fail(key, FAILURES)
    wait_out_cooldown()

    with breaker(key):
        assert breaker_state(key)["trial_running"] is True
        with pytest.raises(CircuitOpenError, match="a trial call is under way now"):
            call(key, lambda: "not called")

    assert breaker_state(key)["state"] == "closed"


def test_a_5xx_answer_marked_failed_counts_and_a_4xx_answer_does_not(fast_breakers):
    key = new_key()
    for _ in range(FAILURES + 2):
        with breaker(key):
            pass  # a 404: the dependency answered

    assert breaker_state(key)["failures"] == 0
    for _ in range(FAILURES):
        with breaker(key) as attempt:
            attempt.failed("answered 503")

    assert breaker_state(key)["state"] == "open"
    assert breaker_state(key)["last_error"] == "answered 503"


def test_an_error_of_the_caller_neither_counts_nor_uses_up_the_trial(fast_breakers):
    key = new_key()
    for _ in range(FAILURES + 2):
        with pytest.raises(ValueError):
            call(key, lambda: int("not a number"))
    assert breaker_state(key)["failures"] == 0

    fail(key, FAILURES)
    wait_out_cooldown()
    with pytest.raises(KeyError):
        call(key, lambda: {}["missing"])  # the trial ended without an answer: the next caller may try

    assert call(key, lambda: "answered") == "answered"
    assert breaker_state(key)["state"] == "closed"


def test_reset_closes_an_open_circuit_at_once_and_reports_what_it_was(fast_breakers):
    key = new_key()
    fail(key, FAILURES)

    before = breaker_reset(key)

    assert (before["state"], before["failures"]) == ("open", FAILURES)
    assert breaker_state(key)["state"] == "closed"
    assert call(key, lambda: "through") == "through"


def test_the_list_shows_open_breakers_first(fast_breakers):
    failing, troubled = new_key(), new_key()
    fail(failing, FAILURES)
    fail(troubled, 1)

    listed = [(state["key"], state["state"], state["failures"]) for state in breakers_list()]

    assert listed == [(failing, "open", FAILURES), (troubled, "closed", 1)]


def test_concurrent_failures_are_counted_exactly_and_open_the_circuit_once(fast_breakers):
    key, workers = new_key(), 24
    fast_breakers.AGENTS_BREAKER_FAILURES = 5
    inside = threading.Barrier(workers)
    errors = []

    def worker():
        try:
            with breaker(key):
                inside.wait(timeout=10)  # every call was let through while the circuit was closed
                refused()
        except ConnectionRefusedError:
            pass
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    state = breaker_state(key)
    assert (state["state"], state["failures"]) == ("open", workers)


def test_in_half_open_only_one_of_many_concurrent_callers_makes_the_trial(fast_breakers):
    key, callers = new_key(), 16
    fail(key, FAILURES)
    wait_out_cooldown()
    start = threading.Barrier(callers)
    made, refused_fast, lock = [], [], threading.Lock()

    def trial():
        time.sleep(0.3)  # long enough for every other caller to ask while it runs
        with lock:
            made.append(1)
        return "recovered"

    def caller():
        start.wait(timeout=10)
        try:
            call(key, trial)
        except CircuitOpenError:
            with lock:
                refused_fast.append(1)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(made) == 1
    assert len(refused_fast) == callers - 1
    assert breaker_state(key)["state"] == "closed"


def test_an_unreachable_store_lets_calls_through_and_says_so_when_read(settings):
    settings.AGENTS_BREAKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.AGENTS_BREAKER_FAILURES = 1
    key = new_key()
    fail(key, 3)

    assert call(key, lambda: "through") == "through"
    with pytest.raises(BreakerStoreError, match="circuit breaker store \\(Redis\\) cannot be read"):
        breaker_state(key)


FILE_STORE_WORKER = """
import django
django.setup()
from agents.core.breakers import breaker
for _ in range({failures}):
    try:
        with breaker({key!r}):
            raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError:
        pass
"""


def test_without_redis_the_file_store_counts_failures_of_many_processes_exactly(settings, tmp_path):
    """The embedded default: no Redis, one file under var/ shared by every process of the machine."""
    key, processes, failures = new_key(), 4, 15
    # The circuit opens at the very last failure only if none was lost.
    env = embedded_env(tmp_path, CACHE_URL="", AGENTS_BREAKER_URL="",
                       AGENTS_BREAKER_FAILURES=str(processes * failures))
    script = FILE_STORE_WORKER.format(failures=failures, key=key)
    running = [subprocess.Popen([sys.executable, "-c", script], env=env, cwd=PROJECT_DIR, stderr=subprocess.PIPE,
                                text=True) for _ in range(processes)]
    outcomes = [(process.wait(timeout=120), process.stderr.read()) for process in running]
    settings.AGENTS_BREAKER_URL = ""
    settings.VAR_DIR = tmp_path
    settings.AGENTS_BREAKER_FAILURES = processes * failures

    assert [code for code, _ in outcomes] == [0] * processes, outcomes
    assert sum("circuit open for" in errors for _, errors in outcomes) == 1  # opened once, by the last failure
    state = breaker_state(key)
    assert (state["state"], state["failures"]) == ("open", processes * failures)
    assert (tmp_path / "breakers" / "breakers.json").exists()
    with pytest.raises(CircuitOpenError):
        call(key, lambda: "not called")
    breaker_reset(key)
    assert breakers_list() == []
