"""What the code under test handed to the real broker, read back from it.

``held(queue)``: the session worker stops taking messages from ``queue`` for the block (a remote control's
``cancel_consumer``, as when no agent of that type is up), so the test reads or takes what was sent there meanwhile;
what is left of it when the block ends is removed, so no worker runs it after. kombu's Redis transport keeps a queue
as Redis lists, one a priority step (``<queue>``, ``<queue>:1``, ...: ``sep`` and ``priority_steps`` of
``CELERY_BROKER_TRANSPORT_OPTIONS``): each message JSON, its body base64.
``queued(queue, url=...)`` reads those of any Redis (a private one a test started)."""
import base64
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from django.conf import settings

from agentsite.celery import app as celery_app
from tests.conftest import wait_for

SESSION_WORKER = "tests@localhost"


@dataclass(frozen=True)
class Sent:
    """A task message as the broker holds it: the task's name, id, arguments and Celery's headers (``eta``,
    ``argsrepr``, ``timelimit``...); ``key`` and ``raw`` are where and how it is stored."""
    task: str
    id: str
    args: list
    kwargs: dict
    headers: dict
    key: str
    raw: bytes


def _decoded(key: str, raw: bytes) -> Sent | None:
    payload = json.loads(raw)
    headers = payload.get("headers") or {}
    if "task" not in headers:  # not a task message (the marker ``held`` sends)
        return None
    body = payload["body"]
    if payload.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _embed = json.loads(body)
    return Sent(task=headers["task"], id=headers["id"], args=args, kwargs=kwargs, headers=headers, key=key, raw=raw)


def _keys(queue: str) -> list[str]:
    """The Redis lists of ``queue``: kombu's, one a priority step, priority 0 (the highest) under its name."""
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    steps, sep = options.get("priority_steps", [0, 3, 6, 9]), options.get("sep", "\x06\x16")
    return [f"{queue}{sep}{step}" if step else queue for step in steps]


def _entries(client: redis.Redis, queue: str) -> list[tuple[str, bytes]]:
    """Every message stored for ``queue``, the oldest first within each priority (kombu pushes on the left)."""
    keys, pipeline = _keys(queue), client.pipeline(transaction=False)
    for key in keys:
        pipeline.lrange(key, 0, -1)
    return [(key, raw) for key, stored in zip(keys, pipeline.execute()) for raw in reversed(stored)]


def queued(queue: str, *, url: str | None = None, task: str | None = None) -> list[Sent]:
    """The task messages (of ``task``, if given) waiting in ``queue`` of the Redis at ``url`` (the test broker)."""
    client = redis.Redis.from_url(url or settings.CELERY_BROKER_URL)
    sent = [_decoded(key, raw) for key, raw in _entries(client, queue)]
    return [message for message in sent if message is not None and task in (None, message.task)]


class HeldQueue:
    """A queue no worker takes from: what was sent to it since the hold began."""

    def __init__(self, queue: str, client: redis.Redis, before: set[bytes]):
        self.queue, self.client, self.before = queue, client, before

    def queued(self, task: str | None = None) -> list[Sent]:
        """The task messages (of ``task``, if given) sent to the queue since the hold began, still there."""
        return [message for message in queued(self.queue, task=task) if message.raw not in self.before]

    def take(self, task: str | None = None) -> list[Sent]:
        """Remove and return those messages, as a worker taking them would."""
        return [message for message in self.queued(task) if self.client.lrem(message.key, 1, message.raw)]


@contextmanager
def held(queue: str) -> Iterator[HeldQueue]:
    """The session worker (the ``worker`` fixture) stops consuming ``queue`` for the block; the messages sent to it
    during the block and left there are removed when it ends, before the worker consumes the queue again."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    before = {raw for _key, raw in _entries(client, queue)}
    replies = celery_app.control.cancel_consumer(queue, destination=[SESSION_WORKER], reply=True, timeout=5)
    assert replies, f"the session worker did not confirm it stopped consuming {queue!r}"
    hold = HeldQueue(queue, client, before)
    try:
        _read_in_flight_ended(client, queue)
        yield hold
    finally:
        hold.take()
        celery_app.control.add_consumer(queue, destination=[SESSION_WORKER], reply=True, timeout=5)


def _read_in_flight_ended(client: redis.Redis, queue: str) -> None:
    """Wait until no read of the worker begun before it stopped consuming ``queue`` can still take a message from it.
    Such a read (a BRPOP blocked on the queue, for up to a second) hands what it takes back to the queue (kombu finds
    no consumer for it): a marker is sent there and waited for. Found, it was not taken, or was handed back, so that
    read is over; the reads after it leave the queue alone. The marker is then removed."""
    marker = uuid.uuid4().hex
    declared = celery_app.amqp.queues[queue]
    with celery_app.producer_or_acquire() as producer:
        producer.publish({"marker": marker}, exchange=declared.exchange, routing_key=declared.routing_key,
                         declare=[declared], serializer="json", headers={"marker": marker}, retry=True)

    def found() -> tuple[str, bytes] | None:
        return next(((key, raw) for key, raw in _entries(client, queue)
                     if (json.loads(raw).get("headers") or {}).get("marker") == marker), None)

    key, raw = wait_for(found, timeout_s=10, what=f"the marker sent to {queue!r} to be in the queue")
    client.lrem(key, 1, raw)


@contextmanager
def unconsumed(queue: str) -> Iterator[HeldQueue]:
    """A queue no worker consumes (the direct queue of a worker that is not running): the test reads or takes what
    was sent to it during the block; what is left of that when the block ends is removed."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    hold = HeldQueue(queue, client, {raw for _key, raw in _entries(client, queue)})
    try:
        yield hold
    finally:
        hold.take()

