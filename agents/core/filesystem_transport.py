"""kombu's filesystem transport (the embedded broker under ``var/broker``) made safe for Celery workers (kombu 5.7.0,
celery 5.7.0): see ``agents.core.broker``.

What kombu's own transport gets wrong, and what this one does instead:

- A message's file is created under its final name, then written: a worker listing the folder in between took the
  empty file and stopped with "Unrecoverable error: JSONDecodeError" (kombu issue 1551). Here a message is written
  under a name no consumer takes, then renamed into the queue whole.
- A worker took a message by moving it to the system's temporary folder and deleting it: a worker killed mid-task
  (SIGKILL, out of memory, power) lost it, whatever ``task_acks_late`` promised. Here a message handed to a
  consumer waits in that process's folder under ``<queue folder>/.unacked/`` until it is acknowledged (deleted),
  rejected or put back (renamed into the queue again). The process holds a lock on that folder while it lives; any
  consumer finding the lock free (its process died) puts the messages back, so they are delivered again.
- A file in the queue folder that is not a message (empty, cut short, not JSON, a folder) stopped the worker. Here it
  is moved to ``<processed folder>/rejected/`` and named in the log, and the next message is delivered.
- Priorities were ignored. Here, as on Redis with priority steps 0-9, priority 0 is delivered first, and within a
  priority the older message first (the name starts with the priority and the wall-clock time in nanoseconds).
- A broadcast (fanout: Celery's events, its control commands) was written for every queue ever bound, also those
  of consumers long gone (kombu never deletes an auto-delete queue here): a stopped Flower's event queue gained a
  file every two seconds, for ever. Here, as on Redis, a broadcast reaches only queues a living process consumes,
  and binding a queue to a broadcast exchange drops the exchange's bindings that no living process holds (its
  table, read on every broadcast, gained a line with each listener that came and went).
- Message files were readable by every user of the machine; here only by their owner (mode 0600).
- A message put back (rejected to requeue, a worker's pool process lost, its consumer dead) came back as it was
  first sent. Here, as on Redis, it comes back marked redelivered (``delivery_info["redelivered"]``): what a task
  does on a second delivery of the same message (count the death of the process that ran it) it does here too.
"""
import fcntl
import logging
import os
import shutil
import threading
import time
import uuid
from queue import Empty

from kombu.exceptions import ChannelError
from kombu.transport import filesystem as kombu_filesystem
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

#: Appended to the final name while the message is written: a consumer takes only names ending in ``.msg``.
WRITING_SUFFIX = ".writing"
#: Under the queue folder (so on its file system, where a rename is atomic): one folder per consuming process holding
#: the messages it was handed and has not acknowledged, beside the lock file (``<folder>.lock``) it holds while alive.
UNACKED_FOLDER = ".unacked"
#: Under the processed folder: files found in the queue folder that are not messages, kept for a person to look at.
REJECTED_FOLDER = "rejected"
#: Seconds between two looks for messages held by a consumer that died.
ORPHANS_RESTORE_INTERVAL_S = 1.0
LOCK_SUFFIX = ".lock"
#: Beside a holder's lock: the queues its process consumes and those it bound (``{"consumed": [...], "bound":
#: [...]}``), so a broadcast reaches live consumers only and a broadcast exchange keeps the bindings of the living.
QUEUES_SUFFIX = ".queues"


class _Holder:
    """This process's folder of unacknowledged messages, and the lock on it this process holds while it lives."""

    def __init__(self, root: str):
        os.makedirs(root, mode=0o700, exist_ok=True)
        name = f"{os.getpid()}-{uuid.uuid4().hex}"
        self.folder = os.path.join(root, name)
        os.mkdir(self.folder, mode=0o700)
        # Locked before it appears under the name consumers look for: nobody sees it unlocked while this process lives.
        starting = os.path.join(root, name + ".starting")
        self.lock_fd = os.open(starting, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        os.rename(starting, self.folder + LOCK_SUFFIX)
        #: Queue -> how many of this process's consumers read it; written to ``<folder>.queues`` on each change.
        self.consumed: dict[str, int] = {}
        #: The queues this process bound to a broadcast exchange, also written there.
        self.bound: set[str] = set()
        self.consumed_lock = threading.Lock()

    def consuming(self, queue: str, change: int) -> None:
        """Count one more (``change`` 1) or one fewer (-1) consumer of ``queue`` here, and write down the queues."""
        with self.consumed_lock:
            count = self.consumed.get(queue, 0) + change
            if count > 0:
                self.consumed[queue] = count
            else:
                self.consumed.pop(queue, None)
            self._queues_write()

    def binding(self, queue: str) -> None:
        """Write down that this process binds ``queue`` to a broadcast exchange (before it writes the binding)."""
        with self.consumed_lock:
            if queue not in self.bound:
                self.bound.add(queue)
                self._queues_write()

    def _queues_write(self) -> None:
        writing = f"{self.folder}{QUEUES_SUFFIX}.{uuid.uuid4().hex}{WRITING_SUFFIX}"
        fd = os.open(writing, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as handle:
            handle.write(str_to_bytes(dumps({"consumed": sorted(self.consumed), "bound": sorted(self.bound)})))
        os.replace(writing, self.folder + QUEUES_SUFFIX)


_holders: dict[str, _Holder] = {}
_holders_lock = threading.Lock()


def _holder(root: str) -> _Holder:
    """This process's holder under ``root``, made on first use."""
    with _holders_lock:
        holder = _holders.get(root)
        if holder is None:
            holder = _holders[root] = _Holder(root)
        return holder


def _holders_forget_in_child() -> None:
    """A forked child (a pool process) does not hold its parent's messages: when the parent dies, they come back."""
    for holder in _holders.values():
        try:
            os.close(holder.lock_fd)
        except OSError:
            pass
    _holders.clear()
    global _holders_lock
    _holders_lock = threading.Lock()


os.register_at_fork(after_in_child=_holders_forget_in_child)


def _is_reply_exchange(exchange: str) -> bool:
    """Whether ``exchange`` carries the replies of a mailbox (kombu's pidbox: ``reply.celery.pidbox``), each client
    binding a queue of its own to it."""
    return exchange.startswith("reply.") and exchange.endswith(".pidbox")


def _redelivered(held: str, queue_folder: str) -> None:
    """Put the message ``held`` (a consumer's file) back into ``queue_folder`` under its own name, marked redelivered
    as Redis marks it: rewritten in place first (a crash in between leaves it held, to be put back again), then
    renamed into the queue whole. A file that is not a message goes back as it is, for a consumer to set aside."""
    try:
        with open(held, "rb") as handle:
            payload = loads(bytes_to_str(handle.read()))
        payload["properties"]["delivery_info"]["redelivered"] = True
        payload.setdefault("headers", {})["redelivered"] = True
    except (ValueError, TypeError, KeyError, AttributeError, IsADirectoryError):
        pass
    else:
        writing = held + WRITING_SUFFIX
        fd = os.open(writing, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb", buffering=0) as handle:
            handle.write(str_to_bytes(dumps(payload)))
        os.replace(writing, held)
    os.rename(held, os.path.join(queue_folder, os.path.basename(held)))


def orphans_restore(root: str, queue_folder: str) -> int:
    """Put back into ``queue_folder`` the messages held under ``root`` by processes that died; return how many."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return 0
    restored = 0
    for name in names:
        if not name.endswith(LOCK_SUFFIX):
            continue
        lock_path = os.path.join(root, name)
        try:
            lock_fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # another consumer has just put these back
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process lives
            if not os.path.exists(lock_path):
                continue  # put back by another consumer between our open and our lock
            folder = lock_path[: -len(LOCK_SUFFIX)]
            try:
                held = sorted(os.listdir(folder))
            except FileNotFoundError:
                held = []
            for message in held:
                try:
                    if message.endswith(WRITING_SUFFIX):  # its process died marking it: the message is beside it
                        os.unlink(os.path.join(folder, message))
                        continue
                    _redelivered(os.path.join(folder, message), queue_folder)
                except FileNotFoundError:
                    continue
                restored += 1
                logger.warning("Broker message %s was held by a consumer that died: put back into %s",
                               message, queue_folder)
            try:
                os.rmdir(folder)
            except OSError:
                pass
            try:
                os.unlink(folder + QUEUES_SUFFIX)
            except FileNotFoundError:
                pass
            os.unlink(lock_path)
        finally:
            os.close(lock_fd)
    return restored


def live_queues(root: str, *, bound: bool = False) -> set[str]:
    """The queues some living process under ``root`` consumes (and, with ``bound``, those one bound)."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return set()
    queues = set()
    for name in names:
        if not name.endswith(QUEUES_SUFFIX):
            continue
        folder = os.path.join(root, name[: -len(QUEUES_SUFFIX)])
        try:
            lock_fd = os.open(folder + LOCK_SUFFIX, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its process lives
            try:
                with open(folder + QUEUES_SUFFIX, "rb") as handle:
                    held = loads(bytes_to_str(handle.read()))
            except (OSError, ValueError):
                continue
            if isinstance(held, list):  # written before bound queues were
                held = {"consumed": held}
            if isinstance(held, dict):
                for kind in ("consumed", "bound") if bound else ("consumed",):
                    if isinstance(held.get(kind), list):
                        queues.update(queue for queue in held[kind] if isinstance(queue, str))
        finally:
            os.close(lock_fd)
    return queues


def message_problem(payload) -> str | None:
    """What keeps ``payload`` (a decoded message file) from being a kombu message, or None when nothing does."""
    if not isinstance(payload, dict):
        return f"a JSON {type(payload).__name__}, not an object"
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        return "no 'properties' object"
    if not isinstance(properties.get("delivery_info"), dict):
        return "no 'properties.delivery_info' object"
    if not isinstance(properties.get("delivery_tag"), str):
        return "no 'properties.delivery_tag' string"
    return None


class QoS(virtual.QoS):
    """Acknowledging a message deletes its file; rejecting it deletes it or, to requeue, puts it back."""

    def ack(self, delivery_tag):
        self.channel.unacked_forget(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        if not requeue:
            self.channel.unacked_forget(delivery_tag)
        super().reject(delivery_tag, requeue=requeue)


class Channel(kombu_filesystem.Channel):
    """A channel whose messages appear whole, in priority order, and stay on disk until acknowledged."""

    QoS = QoS

    def __init__(self, connection, **kwargs):
        super().__init__(connection, **kwargs)
        #: Delivery tag -> the file of a message handed out and not yet acknowledged.
        self._unacked_paths: dict[str, str] = {}
        self._orphans_restore_due = 0.0

    @property
    def unacked_root(self) -> str:
        return os.path.join(self.data_folder_in, UNACKED_FOLDER)

    def _put(self, queue, payload, **kwargs):
        """Put ``payload`` onto ``queue``: written beside it under a name no consumer takes, then renamed."""
        priority = self._get_message_priority(payload)
        name = f"{priority}-{time.time_ns():020d}-{uuid.uuid4().hex}.{queue}.msg"
        filename = os.path.join(self.data_folder_out, name)
        writing = filename + WRITING_SUFFIX
        try:
            fd = os.open(writing, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with open(fd, "wb", buffering=0) as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(writing, filename)
        except OSError as exc:
            try:
                os.unlink(writing)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {filename!r} to directory") from exc

    def _get(self, queue):
        """Hand out the first message of ``queue``: moved into this process's folder until it is acknowledged."""
        if time.monotonic() >= self._orphans_restore_due:
            self._orphans_restore_due = time.monotonic() + ORPHANS_RESTORE_INTERVAL_S
            orphans_restore(self.unacked_root, self.data_folder_in)
        wanted = f"{queue}.msg"
        names = sorted(name for name in os.listdir(self.data_folder_in) if name.partition(".")[2] == wanted)
        if not names:
            raise Empty()
        holder = _holder(self.unacked_root)
        for name in names:
            taken = os.path.join(holder.folder, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), taken)
            except OSError:
                continue  # another consumer took it first
            payload = self._message_read(taken, name)
            if payload is not None:
                self._unacked_paths[payload["properties"]["delivery_tag"]] = taken
                return payload
        raise Empty()

    def _message_read(self, path: str, name: str):
        """The message in ``path``; None when it is not one (it is set aside, and the log says why)."""
        try:
            with open(path, "rb") as handle:
                payload = loads(bytes_to_str(handle.read()))
            problem = message_problem(payload)
            if problem is None:
                properties = payload["properties"]
                self.decode_body(payload.get("body"), properties.get("body_encoding"))
        except IsADirectoryError:
            problem = "a folder, not a file"
        except (OSError, ValueError, TypeError, KeyError) as error:
            problem = f"{type(error).__name__}: {error}"
        if problem is None:
            return payload
        self._message_set_aside(path, name, problem)
        return None

    def _message_set_aside(self, path: str, name: str, problem: str) -> None:
        """Move a file that is not a message out of every consumer's way, naming it in the log."""
        original = os.path.join(self.data_folder_in, name)
        rejected = os.path.join(self.processed_folder, REJECTED_FOLDER)
        try:
            os.makedirs(rejected, mode=0o700, exist_ok=True)
            shutil.move(path, os.path.join(rejected, name))
        except OSError as error:
            logger.error("Broker file %s is not a message (%s) and could not be moved to %s (%s): deleted it",
                         original, problem, rejected, error)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
            return
        logger.error("Broker file %s is not a message (%s): skipped it and moved it to %s",
                     original, problem, os.path.join(rejected, name))

    def unacked_forget(self, delivery_tag) -> None:
        """The message ``delivery_tag`` is done with: delete its file."""
        path = self._unacked_paths.pop(delivery_tag, None)
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _restore(self, message):
        """Put a message handed out back into its queue, under its own name (so in its place)."""
        path = self._unacked_paths.pop(message.delivery_tag, None)
        if path is not None:
            try:
                _redelivered(path, self.data_folder_in)
                return
            except FileNotFoundError:
                pass  # its file is gone: publish it again from memory
        message.delivery_info["redelivered"] = True  # the properties' own: what is published again
        super()._restore(message)

    def _put_fanout(self, exchange, payload, routing_key, **kwargs):
        """Put ``payload`` onto each queue bound to ``exchange`` that a living process consumes.

        As on Redis (publish/subscribe), a broadcast reaches the consumers there are: a queue whose consumer went away
        without unbinding (kombu never deletes an auto-delete queue here: a stopped Flower's event queue, a former
        worker's control queue) would otherwise collect every event and broadcast in the queue folder, for ever."""
        live = live_queues(self.unacked_root)
        for bound in self.get_table(exchange):
            if bound.queue in live:
                self._put(bound.queue, payload, **kwargs)

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        """Bind ``queue`` to ``exchange`` in its table; for a broadcast exchange or a reply exchange, also drop the
        bindings no living process holds (neither consumes nor bound), which only grew the table every message to
        it reads.

        Only those tables: a broadcast already skips the queues nobody consumes, and a reply queue is its client's
        alone (``celery inspect``: ``<id>.reply.celery.pidbox``), so replies to a client gone are for nobody; while
        a task's direct exchange routes to a queue whose workers are all stopped, which must keep its messages for
        them. A process writes down the queue it binds before it takes the table's lock, and the queues are read
        under that lock, so a binding being made by another process is never dropped."""
        if self.typeof(exchange).type != "fanout" and not _is_reply_exchange(exchange):
            super()._queue_bind(exchange, routing_key, pattern, queue)
            return
        _holder(self.unacked_root).binding(queue)
        super()._queue_bind(exchange, routing_key, pattern, queue)
        file = self._exchange_file(exchange)
        try:
            with file.open("rb+", buffering=0) as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                try:
                    table = loads(bytes_to_str(handle.read()))
                    held = live_queues(self.unacked_root, bound=True)
                    kept = [binding for binding in table if binding[2] in held]
                    if len(kept) < len(table):
                        handle.seek(0)
                        handle.write(str_to_bytes(dumps(kept)))
                        handle.truncate()
                finally:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        except (OSError, ValueError, TypeError, IndexError) as error:
            logger.warning("Broker exchange table %s: could not drop the bindings of queues gone (%s)", file, error)

    def basic_consume(self, queue, no_ack, callback, consumer_tag, **kwargs):
        """Consume from ``queue``; a message needing no acknowledgement (events, control replies) is deleted at once."""
        if no_ack:
            given = callback

            def callback(message):
                self.unacked_forget(message.delivery_tag)
                return given(message)

        _holder(self.unacked_root).consuming(queue, 1)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_cancel(self, consumer_tag):
        queue = self._tag_to_queue.get(consumer_tag) if consumer_tag in self._consumers else None
        super().basic_cancel(consumer_tag)
        if queue is not None:
            _holder(self.unacked_root).consuming(queue, -1)

    def basic_get(self, queue, no_ack=False, **kwargs):
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self.unacked_forget(message.delivery_tag)
        return message


class Transport(kombu_filesystem.Transport):
    """kombu's filesystem transport, with the channel above."""

    Channel = Channel
