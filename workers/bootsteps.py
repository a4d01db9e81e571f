"""A worker bootstep that keeps the agent registry in step with the worker.

On start the worker registers one agent per agent-type queue it consumes; a
thread of its own then checks every ``AGENTS_STATUS_INTERVAL_S`` whether each agent
has a task in hand and writes only when busy/idle changed or a heartbeat is due, so
the hot path of a task never touches the database. The thread is not the worker's
timer: that one stops while the worker reconnects to a broker that went away, and a
live worker must keep heart-beating then, or it would look dead and its steps would be
re-dispatched. On a warm shutdown the agents go offline once the pool has finished the tasks in hand (they
heart-beat meanwhile); on a cold one, at once when no task is in hand (Celery cancels them first), else the offline
sweep finds them.

A disabled agent takes no new work: the worker does not consume the type queue of an agent
that is disabled when it starts, and each tick reads which of its agents are disabled, stops
consuming the queue of one just disabled and consumes again that of one enabled again.
"""
import logging
import os
import threading
import time
import uuid

from celery import bootsteps, signals
from celery.worker import state as worker_state
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from agents.orchestration.registry import agent_types_for_queues, agents_heartbeat, agents_register, agents_stop
from agents.orchestration.selectors import agent_types_disabled

logger = logging.getLogger(__name__)


class AgentRegistryStep(bootsteps.StartStopStep):
    """Registers the worker's agents, heartbeats, tracks busy/idle, marks them offline on stop."""

    # After the pool has forked, so no database connection is shared with a child.
    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.boot_id = uuid.uuid4().hex
        self.hostname = ""
        self.agent_types: list[str] = []
        self.queue_by_routing_key: dict[str, str] = {}
        self.capabilities: dict[str, list[str]] = {}
        self.written: dict[str, str] = {}
        self.last_heartbeat = 0.0
        self.registered = False
        #: The agent types whose queue this step stopped consuming because their agent is disabled.
        self.paused: set[str] = set()
        self.worker = worker
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, worker):
        """Register the agents and start the heartbeat thread."""
        queues = worker.app.amqp.queues.consume_from.values()
        self.hostname = worker.hostname
        self.queue_by_routing_key = {queue.routing_key or queue.name: queue.name for queue in queues}
        self.agent_types = agent_types_for_queues(queue.name for queue in queues)
        if not self.agent_types:
            return
        router = worker.app.amqp.router
        for name in sorted(worker.app.tasks):
            if name.startswith("celery."):
                continue
            queue = router.route({}, name).get("queue")
            queue_name = getattr(queue, "name", queue)
            self.capabilities.setdefault(queue_name, []).append(name)
        self._register()
        try:  # before the consumer starts (it starts last): a disabled agent's queue is never consumed
            self.paused = agent_types_disabled(hostname=self.hostname, agent_types=self.agent_types)
        except DatabaseError:
            logger.warning("could not read which agents of %s are disabled; next tick", self.hostname, exc_info=True)
        for agent_type in self.paused:
            worker.app.amqp.queues.deselect(agent_type)
        self.stopping.clear()
        self.thread = threading.Thread(target=self._loop, name="agent-heartbeat", daemon=True)
        self.thread.start()

    def stop(self, worker):
        """A warm shutdown. This step stops before the pool, which then waits for the tasks in hand: the agents keep
        heart-beating (busy) until it has (``worker_shutdown``), and only then go offline. A worker killed meanwhile
        (``docker stop`` after its grace period) is found by its lapsed heartbeat or its next start, which re-queue
        what it was running; marked offline now, nothing would."""
        if not self.agent_types:
            return
        if running := len(worker_state.active_requests):
            logger.warning("warm shutdown of %s: its agents stay online until the %d task(s) in hand end",
                           self.hostname, running)
        signals.worker_shutdown.connect(self._stopped, sender=worker, weak=False)

    def terminate(self, worker):
        """A cold shutdown (or an embedded worker's stop) kills the tasks in hand. Celery's own cancels them first,
        leaving their messages unacknowledged for the broker to hand out again, so none is in hand here and the agents
        go offline. Tasks still in hand (an embedded worker's stop) leave the agents to the offline sweep or the
        worker's next start, which re-queue what was killed."""
        self._heartbeat_stop()
        if not self.agent_types:
            return
        if running := len(worker_state.active_requests):
            logger.warning("cold shutdown of %s killed %d task(s) in hand: its agents are left for the offline "
                           "sweep or its next start to re-queue them", self.hostname, running)
            return
        self._offline()

    def _stopped(self, sender=None, **kwargs):
        """After a warm shutdown: the pool has finished the tasks in hand."""
        signals.worker_shutdown.disconnect(self._stopped, sender=sender)
        self._heartbeat_stop()
        self._offline()

    def _heartbeat_stop(self):
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=max(5.0, settings.AGENTS_STATUS_INTERVAL_S * 2))
            self.thread = None

    def _offline(self):
        try:
            close_old_connections()
            agents_stop(hostname=self.hostname, boot_id=self.boot_id)
        except DatabaseError:
            logger.exception("could not mark the agents of %s offline; the offline sweep will", self.hostname)
        finally:
            connection.close()

    def busy_types(self) -> set[str]:
        """Return the agent types that have a task running on this worker now."""
        busy = set()
        for request in list(worker_state.active_requests):
            routing_key = (request.delivery_info or {}).get("routing_key")
            queue = self.queue_by_routing_key.get(routing_key)
            if queue:
                busy.add(queue)
        return busy

    def _loop(self):
        """Tick until the worker stops; the thread's database connection is closed on the way out."""
        try:
            while not self.stopping.wait(settings.AGENTS_STATUS_INTERVAL_S):
                try:
                    self.tick()
                except Exception:  # a bug in one tick must not end the heartbeats for the worker's life
                    logger.exception("agent heartbeat tick of %s failed", self.hostname)
        finally:
            connection.close()

    def tick(self):
        """Write busy/idle when it changed, and the heartbeat when it is due."""
        self.consume_enabled()
        busy = self.busy_types()
        statuses = {agent_type: "busy" if agent_type in busy else "idle" for agent_type in self.agent_types}
        heartbeat_due = time.monotonic() - self.last_heartbeat >= settings.AGENTS_HEARTBEAT_INTERVAL_S
        if statuses == self.written and not heartbeat_due and self.registered:
            return
        try:
            close_old_connections()
            if not self.registered:
                self._register()
                return
            lost = agents_heartbeat(hostname=self.hostname, boot_id=self.boot_id, statuses=statuses)
        except DatabaseError:
            logger.warning("agent heartbeat of %s failed; retrying next tick", self.hostname, exc_info=True)
            return
        self.written = statuses
        self.last_heartbeat = time.monotonic()
        if lost:
            logger.info("agents %s of %s were missing from the registry; registering again", lost, self.hostname)
            self.registered = False

    def consume_enabled(self):
        """Consume the type queue of each enabled agent only: stop consuming that of an agent just disabled (what it
        took meanwhile is sent back by the task) and consume again that of one enabled again (or whose row is gone:
        it registers again enabled)."""
        try:
            close_old_connections()
            disabled = agent_types_disabled(hostname=self.hostname, agent_types=self.agent_types)
        except DatabaseError:
            logger.warning("could not read which agents of %s are disabled; next tick", self.hostname, exc_info=True)
            return
        consumer = getattr(self.worker, "consumer", None)
        if consumer is None:
            return
        # What it consumes now, not only what this step last asked for: a disabled agent's queue added back meanwhile
        # (a remote control's add_consumer) would have it take work and hand it back, every second.
        task_consumer = getattr(consumer, "task_consumer", None)
        cancel = (disabled - self.paused if task_consumer is None
                  else {agent_type for agent_type in disabled if task_consumer.consuming_from(agent_type)})
        # The consumer's own thread changes what it consumes (the kombu hub's call_soon is safe from this thread).
        for agent_type in sorted(cancel):
            logger.info("agent %s:%s is disabled; no longer consuming its queue", self.hostname, agent_type)
            consumer.call_soon(consumer.cancel_task_queue, agent_type)
        for agent_type in sorted(self.paused - disabled):
            logger.info("agent %s:%s is enabled; consuming its queue again", self.hostname, agent_type)
            consumer.call_soon(consumer.add_task_queue, agent_type)
        self.paused = disabled

    def _register(self):
        try:
            close_old_connections()
            agents_register(
                hostname=self.hostname,
                queues=self.agent_types,
                boot_id=self.boot_id,
                pid=os.getpid(),
                capabilities=self.capabilities,
            )
        except DatabaseError:
            logger.warning("could not register the agents of %s; retrying next tick", self.hostname, exc_info=True)
            return
        self.registered = True
        self.written = {agent_type: "idle" for agent_type in self.agent_types}
        self.last_heartbeat = time.monotonic()
        logger.info("registered agents %s for %s", ", ".join(self.agent_types), self.hostname)
