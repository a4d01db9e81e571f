"""The embedded broker (``filesystem://``) under faults: a consumer that dies holding a message, two consumers on one
folder, a corrupt file in the queue folder, priorities, and who may read a message file."""
import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Celery
from kombu import Connection, Exchange, Queue
from kombu.transport.virtual import BrokerState

from agentsite.celery import app  # noqa: F401  (the project's Celery app names the transports)
from tests.conftest import PROJECT_DIR, embedded_install

#: What a consumer in another process runs: take one message, say which, and hold it unacknowledged until killed.
HOLDER = """
import json, sys, time
from kombu import Connection, Exchange, Queue
from agents.core.broker import broker_transports_mended
broker_transports_mended()
options = json.loads(sys.argv[1])
with Connection("filesystem://localhost//", transport_options=options) as connection:
    queue = Queue("work", Exchange("work"), routing_key="work")
    with connection.SimpleQueue(queue) as simple:
        message = simple.get(timeout=30)
        print(json.dumps(message.payload), flush=True)
        time.sleep(600)
"""

#: What a broadcast listener in another process runs (as Flower listens to the workers' events): bind its own queue
#: to the fan-out exchange, consume it, and say so.
LISTENER = """
import json, sys, time
from kombu import Connection, Exchange, Queue
from agents.core.broker import broker_transports_mended
broker_transports_mended()
options = json.loads(sys.argv[1])
with Connection("filesystem://localhost//", transport_options=options) as connection:
    queue = Queue("listener.gone", Exchange("news", type="fanout"), auto_delete=True)
    with connection.Consumer(queue, callbacks=[lambda body, message: None], no_ack=True):
        print("listening", flush=True)
        time.sleep(600)
"""


@pytest.fixture
def options(tmp_path) -> dict:
    folder = tmp_path / "queue"
    folder.mkdir()
    (tmp_path / "processed").mkdir()
    return {"data_folder_in": str(folder), "data_folder_out": str(folder),
            "processed_folder": str(tmp_path / "processed"), "control_folder": str(tmp_path / "control"),
            "polling_interval": 0.01}


@pytest.fixture
def connect(options):
    """Open connections to the test's broker folder; each is closed after the test."""
    opened = []

    def connect_() -> Connection:
        connection = Connection("filesystem://localhost//", transport_options=options)
        # kombu remembers declared bindings in one state per process: a fresh control folder needs a fresh state.
        connection.transport.state = BrokerState()
        opened.append(connection)
        return connection

    yield connect_
    for connection in opened:
        connection.release()


WORK = Queue("work", Exchange("work"), routing_key="work")


def publish(connection: Connection, body: dict, **kwargs) -> None:
    with connection.Producer() as producer:
        producer.publish(body, exchange=WORK.exchange, routing_key="work", declare=[WORK], **kwargs)


def files_under(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


def test_a_message_held_by_a_consumer_that_dies_is_delivered_again(options, connect):
    """Late acknowledgement: a worker killed mid-task (SIGKILL, OOM, power) does not take its message with it."""
    publish(connect(), {"task": "charge"})
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, json.dumps(options)], cwd=PROJECT_DIR,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == '{"task": "charge"}', holder.stderr.read()
        with connect().SimpleQueue(WORK) as simple:
            with pytest.raises(simple.Empty):  # while its consumer lives, nobody else gets it
                simple.get(timeout=0.3)
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
            message = simple.get(timeout=10)
            assert message.payload == {"task": "charge"}
            assert message.delivery_info["redelivered"] is True  # as Redis marks it: a task can tell
            message.ack()
        # What the dead consumer left (its folder and lock) is gone with it.
        unacked = os.path.join(options["data_folder_in"], ".unacked")
        assert [name for name in os.listdir(unacked) if not name.startswith(f"{os.getpid()}-")] == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
        holder.stderr.close()


def test_a_broadcast_reaches_living_listeners_and_nothing_piles_up_for_one_gone(options, connect):
    """A killed Flower (or any event listener) must not leave a queue that gathers every event for ever."""
    run_until_said_then_kill(LISTENER, options, "listening")
    news = Exchange("news", type="fanout")
    here = Queue("listener.here", news, auto_delete=True)
    heard = []
    listening = connect()
    with listening.Consumer(here, callbacks=[lambda body, message: heard.append(body["event"])], no_ack=True):
        with connect().Producer() as producer:
            for number in range(3):
                producer.publish({"event": number}, exchange=news, routing_key="", declare=[news])
        deadline = time.monotonic() + 10
        while len(heard) < 3 and time.monotonic() < deadline:
            try:
                listening.drain_events(timeout=0.5)
            except TimeoutError:
                pass
    assert heard == [0, 1, 2]

    assert [name for name in os.listdir(options["data_folder_in"]) if name.endswith(".msg")] == []


def run_until_said_then_kill(script: str, options, said: str) -> None:
    """Run ``script`` in another process until it prints ``said``, then kill it (a worker or Flower gone)."""
    child = subprocess.Popen([sys.executable, "-c", script, json.dumps(options)], cwd=PROJECT_DIR,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == said, child.stderr.read()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        child.stderr.close()


def bound_queues(options, exchange: str) -> list[str]:
    """The queues the embedded broker's table of ``exchange`` binds (what every message to it is routed by)."""
    table = json.loads((Path(options["control_folder"]) / f"{exchange}.exchange").read_text())
    return sorted(queue for _, _, queue in table)


def test_a_new_broadcast_binding_drops_those_of_listeners_gone_and_keeps_the_living(options, connect):
    """Every listener that came and went left a line in the broadcast table, which each broadcast reads."""
    news = Exchange("news", type="fanout")
    living = connect()
    with living.Consumer(Queue("listener.alive", news, auto_delete=True), callbacks=[lambda body, message: None],
                         no_ack=True):
        run_until_said_then_kill(LISTENER, options, "listening")
        assert bound_queues(options, "news") == ["listener.alive", "listener.gone"]

        Queue("listener.new", news, auto_delete=True)(connect().default_channel).declare()

        assert bound_queues(options, "news") == ["listener.alive", "listener.new"]


#: What a `celery inspect` client in another process does on the embedded broker: bind its own reply queue to the
#: mailbox's reply exchange (a direct one, routed by the client's id), consume it, and say so.
REPLY_CLIENT = """
import json, sys, time
from kombu import Connection, Exchange, Queue
from agents.core.broker import broker_transports_mended
broker_transports_mended()
options = json.loads(sys.argv[1])
with Connection("filesystem://localhost//", transport_options=options) as connection:
    queue = Queue("gone.reply.celery.pidbox", Exchange("reply.celery.pidbox", type="direct"), routing_key="gone",
                  auto_delete=True)
    with connection.Consumer(queue, callbacks=[lambda body, message: None], no_ack=True):
        print("inspecting", flush=True)
        time.sleep(600)
"""


def test_a_new_reply_binding_drops_those_of_inspect_clients_gone(options, connect):
    """Each `celery inspect` left a line in the reply exchange's table, read by every reply."""
    replies = Exchange("reply.celery.pidbox", type="direct")
    run_until_said_then_kill(REPLY_CLIENT, options, "inspecting")
    assert bound_queues(options, "reply.celery.pidbox") == ["gone.reply.celery.pidbox"]

    Queue("new.reply.celery.pidbox", replies, routing_key="new", auto_delete=True)(connect().default_channel).declare()

    assert bound_queues(options, "reply.celery.pidbox") == ["new.reply.celery.pidbox"]


def test_a_queue_whose_consumers_are_gone_stays_bound_to_a_direct_exchange(options, connect):
    """Tasks sent while every worker of a queue is stopped wait for the next one: their binding stays."""
    publish(connect(), {"task": "charge"})
    run_until_said_then_kill(HOLDER, options, '{"task": "charge"}')

    Queue("other", WORK.exchange, routing_key="other")(connect().default_channel).declare()
    publish(connect(), {"task": "refund"})

    assert bound_queues(options, "work") == ["other", "work"]
    with connect().SimpleQueue(WORK) as simple:
        assert sorted(simple.get(timeout=10).payload["task"] for _ in range(2)) == ["charge", "refund"]


def test_two_consumers_on_one_folder_each_message_is_delivered_once(connect):
    publish_to = connect()
    for number in range(20):
        publish(publish_to, {"n": number})
    first, second = connect().SimpleQueue(WORK), connect().SimpleQueue(WORK)
    taken = []
    try:
        deadline = time.monotonic() + 20
        while len(taken) < 20 and time.monotonic() < deadline:
            for simple in (first, second):
                try:
                    message = simple.get(timeout=0.05)
                except simple.Empty:
                    continue
                taken.append(message.payload["n"])
                message.ack()
    finally:
        first.close()
        second.close()

    assert sorted(taken) == list(range(20))


def test_a_rejected_message_comes_back_and_an_acknowledged_one_leaves_nothing_behind(options, connect):
    publish(connect(), {"task": "retry me"})
    with connect().SimpleQueue(WORK) as simple:
        first = simple.get(timeout=5)
        assert not first.delivery_info.get("redelivered")
        first.requeue()
        again = simple.get(timeout=5)
        assert (again.payload, again.delivery_info["redelivered"]) == ({"task": "retry me"}, True)
        again.ack()
        with pytest.raises(simple.Empty):
            simple.get(timeout=0.2)

    # No message file piles up: neither in the queue folder (nor its consumers' folders) nor in the processed folder.
    assert [name for name in files_under(options["data_folder_in"]) if ".msg" in name] == []
    assert files_under(options["processed_folder"]) == []


def test_a_message_held_at_shutdown_is_put_back_for_the_next_consumer(connect):
    publish(connect(), {"task": "eta"})
    with connect() as worker, worker.SimpleQueue(WORK) as simple:  # a worker stopping (Ctrl-C) closes its connection
        assert simple.get(timeout=5).payload == {"task": "eta"}  # not acknowledged: an ETA task waiting in a worker
    with connect().SimpleQueue(WORK) as simple:
        again = simple.get(timeout=5)
        assert (again.payload, again.delivery_info["redelivered"]) == ({"task": "eta"}, True)


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'"a string"', b"\xff\xfe", b'{"body": 1}'],
                         ids=["empty", "not-json", "a-list", "a-string", "not-utf8", "not-a-message"])
def test_a_corrupt_file_in_the_queue_is_set_aside_and_named_in_the_log(options, connect, caplog, content):
    folder = options["data_folder_in"]
    bad = os.path.join(folder, "0-00000000000000000000-bad.work.msg")
    with open(bad, "wb") as handle:
        handle.write(content)
    publish(connect(), {"task": "after the bad one"})

    with caplog.at_level(logging.ERROR), connect().SimpleQueue(WORK) as simple:
        message = simple.get(timeout=5)
        assert message.payload == {"task": "after the bad one"}
        message.ack()

    assert "0-00000000000000000000-bad.work.msg" in caplog.text
    assert not os.path.exists(bad)
    rejected = os.path.join(options["processed_folder"], "rejected", "0-00000000000000000000-bad.work.msg")
    with open(rejected, "rb") as handle:
        assert handle.read() == content  # kept for a person to look at, out of the consumers' way


def test_a_folder_named_like_a_message_is_skipped(options, connect, caplog):
    os.mkdir(os.path.join(options["data_folder_in"], "0-0-stray.work.msg"))
    publish(connect(), {"task": "real"})
    with caplog.at_level(logging.ERROR), connect().SimpleQueue(WORK) as simple:
        assert simple.get(timeout=5).payload == {"task": "real"}
    assert "0-0-stray.work.msg" in caplog.text


def test_a_higher_priority_message_is_delivered_first_as_on_redis(connect):
    """Redis (priority steps 0-9) hands out priority 0 first; so does the embedded broker."""
    producer_side = connect()
    publish(producer_side, {"task": "low"}, priority=9)
    publish(producer_side, {"task": "middle"}, priority=5)
    publish(producer_side, {"task": "high"}, priority=0)
    publish(producer_side, {"task": "middle, later"}, priority=5)
    with connect().SimpleQueue(WORK) as simple:
        order = []
        for _ in range(4):
            message = simple.get(timeout=5)
            order.append(message.payload["task"])
            message.ack()

    assert order == ["high", "middle", "middle, later", "low"]


def test_a_message_file_is_readable_by_its_owner_only(options, connect):
    """Task arguments are in the file: another user of the machine must not read them."""
    previous = os.umask(0o022)  # the usual umask
    try:
        publish(connect(), {"task": "secret"})
    finally:
        os.umask(previous)

    names = os.listdir(options["data_folder_in"])
    modes = [stat.S_IMODE(os.stat(os.path.join(options["data_folder_in"], name)).st_mode) for name in names
             if name.endswith(".work.msg")]
    assert modes == [0o600]


# --- A real Celery worker on an embedded install (SQLite, filesystem broker under var/), in another process. ---

#: Seconds after sending that the countdown task is due: longer than taking it and killing its worker takes.
COUNTDOWN_S = 8


def worker_start(env: dict, log_path) -> subprocess.Popen:
    """Start ``celery worker`` on the default queue as ``make run`` does, in a session of its own (to kill it whole)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "agentsite", "worker", "-Q", "default", "--concurrency", "1",
             "-n", f"faults-{os.getpid()}-{time.monotonic_ns()}@localhost", "--loglevel", "INFO",
             "--without-mingle", "--without-gossip"],
            env=env, cwd=PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def worker_kill(worker: subprocess.Popen) -> None:
    """Kill the worker and its pool at once, as a power cut or the out-of-memory killer would."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)


def wait_until(predicate, *, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)
    return value


def task_outcome(database, task_id: str) -> str | None:
    """The task's final state as its worker stored it (``SUCCESS``, ``FAILURE``), or None while it has none."""
    with sqlite3.connect(database, timeout=10) as db:
        row = db.execute("SELECT status FROM django_celery_results_taskresult WHERE task_id = ?", (task_id,)).fetchone()
    db.close()
    return row[0] if row and row[0] in {"SUCCESS", "FAILURE", "REVOKED"} else None


@pytest.fixture
def embedded(tmp_path, embedded_migrated):
    """An embedded install rooted at ``tmp_path/var``, a Celery app sending to its broker, and its workers' log."""
    var_dir = tmp_path / "var"
    env = embedded_install(var_dir, embedded_migrated)
    broker_dir = var_dir / "broker"
    for sub in ("queue", "control", "processed"):
        (broker_dir / sub).mkdir(parents=True, exist_ok=True)
    # The test's own process is configured for Redis (CELERY_BROKER_URL wins over any app's setting): messages go
    # through a producer on the install's broker folder, the one its workers read.
    sender = Celery("faults", set_as_current=False)
    connection = Connection("filesystem://localhost//", transport_options={
        "data_folder_in": str(broker_dir / "queue"), "data_folder_out": str(broker_dir / "queue"),
        "control_folder": str(broker_dir / "control"), "processed_folder": str(broker_dir / "processed"),
    })
    connection.transport.state = BrokerState()

    def ping(**options):
        return sender.send_task("workers.registry.agent_ping", queue="default", producer=connection.Producer(),
                                **options)

    workers = []
    log_path = tmp_path / "worker.log"

    def start() -> subprocess.Popen:
        workers.append(worker_start(env, log_path))
        return workers[-1]

    yield SimpleNamespace(var_dir=var_dir, queue=broker_dir / "queue", ping=ping, start=start, log=log_path,
                          database=var_dir / "agentsite.sqlite3")
    for worker in workers:
        worker_kill(worker)
    connection.release()
    sender.close()


def test_a_countdown_task_survives_its_worker_being_killed(embedded):
    first = embedded.start()
    sent = time.monotonic()
    result = embedded.ping(countdown=COUNTDOWN_S)
    wait_until(lambda: not [name for name in os.listdir(embedded.queue) if name.endswith(".msg")] or first.poll(),
               timeout_s=60, what=f"the worker to take the task (log: {embedded.log})")
    worker_kill(first)
    assert time.monotonic() - sent < COUNTDOWN_S, "the task was due before its worker could be killed: too slow a run"

    embedded.start()
    status = wait_until(lambda: task_outcome(embedded.database, result.id), timeout_s=90,
                        what=f"the task to run on the second worker (log: {embedded.log})")
    assert status == "SUCCESS"


def test_a_worker_skips_an_empty_file_in_the_queue_folder_and_keeps_working(embedded):
    (embedded.queue / "0-0-left-by-a-crash.default.msg").write_bytes(b"")
    worker = embedded.start()
    result = embedded.ping()

    status = wait_until(lambda: task_outcome(embedded.database, result.id) or worker.poll() is not None, timeout_s=90,
                        what=f"the task to run (log: {embedded.log})")
    assert status == "SUCCESS", embedded.log.read_text()[-3000:]
    assert worker.poll() is None  # still running
    assert "0-0-left-by-a-crash.default.msg" in embedded.log.read_text()
