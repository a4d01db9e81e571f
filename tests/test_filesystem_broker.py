"""The embedded broker (``filesystem://``) hands a worker whole messages only: a message being written is not
taken (kombu's own transport let a worker take the empty file and stop with "Unrecoverable error")."""
import json
import os
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue
from kombu.transport.virtual import BrokerState

from agentsite.celery import app  # noqa: F401  (the project's Celery app names the transports)
from agents.core import filesystem_transport
from agents.core.filesystem_transport import WRITING_SUFFIX


@pytest.fixture
def broker(tmp_path):
    folder = tmp_path / "queue"
    folder.mkdir()
    # The exchange tables too, under this test's folder (kombu's default is ./control, in the working directory).
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "processed_folder": str(tmp_path),
               "control_folder": str(tmp_path / "control")}
    with Connection("filesystem://localhost//", transport_options=options) as connection:
        # kombu's filesystem transport remembers the bindings it declared in one state per process, and does not
        # write the exchange table of a binding it remembers: a fresh control folder needs a fresh state.
        connection.transport.state = BrokerState()
        yield connection, folder


def test_a_message_is_published_whole_and_read_back(broker):
    connection, folder = broker
    queue = Queue("work", Exchange("work"), routing_key="work")
    with connection.Producer() as producer:
        producer.publish({"task": "one"}, exchange=queue.exchange, routing_key="work", declare=[queue])

    assert [name for name in os.listdir(folder) if name.endswith(WRITING_SUFFIX)] == []  # renamed into place
    assert type(connection.transport).__module__ == "agents.core.filesystem_transport"
    with connection.SimpleQueue(queue) as simple:
        assert simple.get(timeout=5).payload == {"task": "one"}


def test_a_message_still_being_written_is_left_until_it_is_whole(broker):
    connection, folder = broker
    queue = Queue("work", Exchange("work"), routing_key="work")
    # What a producer leaves while it writes: the start of the message, under the name it has until renamed.
    (folder / f"1_00000000-0000-4000-8000-000000000000.work.msg{WRITING_SUFFIX}").write_bytes(b'{"body": "')
    with connection.Producer() as producer:
        producer.publish({"task": "whole"}, exchange=queue.exchange, routing_key="work", declare=[queue])

    with connection.SimpleQueue(queue) as simple:
        assert simple.get(timeout=5).payload == {"task": "whole"}
        with pytest.raises(simple.Empty):
            simple.get(timeout=0.2)
    assert len([name for name in os.listdir(folder) if name.endswith(WRITING_SUFFIX)]) == 1  # not taken


def test_a_message_appears_under_its_name_only_once_it_is_whole(broker, monkeypatch):
    """What a consumer listing the folder can see: never the message's name before its last byte is written."""
    connection, folder = broker
    queue = Queue("work", Exchange("work"), routing_key="work")
    seen = []
    replace = os.replace

    def watched(source, target):
        seen.append((os.path.exists(target), json.loads(Path(source).read_bytes())["body"] is not None))
        replace(source, target)

    monkeypatch.setattr(filesystem_transport.os, "replace", watched)
    with connection.Producer() as producer:
        producer.publish({"task": "one"}, exchange=queue.exchange, routing_key="work", declare=[queue])

    assert seen == [(False, True)]  # not there while written; whole when it appeared
