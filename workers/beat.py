"""What runs inside the beat process: the watchdog, a thread started when beat starts (``beat_init``, whatever its
scheduler, embedded beat included) that calls ``watchdog_tick`` every ``AGENTS_MONITOR_WATCHDOG_S`` seconds (beside
beat and not as a task, because a task would wait for the very workers whose silence it is meant to notice); and
the moment beat fires a workflow schedule, added to the message it sends (``fired_at``)."""
import logging
import threading
import time

from celery.signals import beat_init, before_task_publish
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from agents.monitoring import watchdog
from agents.workflows.schedules import SCHEDULE_FIRE_TASK

logger = logging.getLogger(__name__)


class WatchdogThread(threading.Thread):
    """Looks every ``interval_s`` seconds; a failed look (database down) is logged and the next one tried."""

    def __init__(self, interval_s: float):
        super().__init__(name="monitoring-watchdog", daemon=True)
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self.started_at = timezone.now()
        self.last_sent: dict[str, float] = {}

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self.tick()
        connection.close()

    def tick(self) -> None:
        """One look: the watchdog's alert and the heartbeats due."""
        close_old_connections()  # a connection the database dropped since the last look is opened again
        try:
            done = watchdog.watchdog_tick(last_sent=self.last_sent, clock_s=time.monotonic(),
                                          started_at=self.started_at)
        except Exception:  # whatever one look hits, the watchdog must keep looking for beat's whole life
            logger.exception("monitoring watchdog look failed; trying again in %g s", self.interval_s)
            connection.close()
            return
        if done["problems"]:
            logger.warning("monitoring watchdog: %s", "; ".join(done["problems"]))


def watchdog_start(sender=None, **kwargs) -> WatchdogThread | None:
    """Start the watchdog thread in this beat process (``AGENTS_MONITOR_WATCHDOG_S`` of 0 turns it off)."""
    if settings.AGENTS_MONITOR_WATCHDOG_S <= 0:
        return None
    thread = WatchdogThread(settings.AGENTS_MONITOR_WATCHDOG_S)
    thread.start()
    return thread


beat_init.connect(watchdog_start, weak=False)


def schedule_fired_at_add(sender=None, body=None, headers=None, **kwargs) -> None:
    """Add ``fired_at`` (now, ISO 8601) to a schedule's message as beat publishes it (beat names its entry in the
    ``periodic_task_name`` header): the task then starts the slot beat fired for, not the newest slot at the time
    it runs, which is a later one when the message is delivered after the next slot's time. A message that has it
    already (sent again) keeps its own."""
    if sender != SCHEDULE_FIRE_TASK or not (headers or {}).get("periodic_task_name"):
        return
    # Protocol 2: the body is (args, kwargs, embed), published after this signal, so the kwargs are completed here.
    if isinstance(body, (tuple, list)) and len(body) > 1 and isinstance(body[1], dict):
        body[1].setdefault("fired_at", timezone.now().isoformat())


before_task_publish.connect(schedule_fired_at_add, weak=False)
