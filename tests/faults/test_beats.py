"""Workflow schedules under real ``celery beat`` processes with django-celery-beat's database scheduler (as ``make
run`` starts it): two beats firing the same slot start one run, and a beat back after being down starts the slots
it missed, oldest first.

Beat fires an entry at once when its last firing (``last_run_at``, which beat keeps in the database) is a slot or
more ago; the tests set it as a beat that ran until then would have left it, instead of waiting for the clock."""
import json
import textwrap
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from tests.faults.processes import manage, poll

pytestmark = pytest.mark.slow

FIRE_TIMEOUT_S = 60


def _load(cluster, name: str, *, catchup: bool) -> None:
    path = cluster.directory / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""
        name: {name}
        schedule: {{name: minutely, cron: "* * * * *", timezone: UTC, catchup: {str(catchup).lower()},
                    max_catchup_runs: 10}}
        steps:
          - {{id: only, action: echo, params: {{value: "${{ params.logical_time }}"}}}}
        """))
    manage("workflow", "load", str(path), env=cluster.env)


def _beat_last_fired(cluster, name: str, when: datetime) -> None:
    """Record that beat last fired the workflow's schedule entry at ``when`` (what a beat stopped then leaves)."""
    with psycopg.connect(cluster.database_url, autocommit=True) as connection:
        updated = connection.execute("UPDATE django_celery_beat_periodictask SET last_run_at = %s WHERE name = %s",
                                     [when, f"workflow {name} schedule minutely"]).rowcount
    assert updated == 1


def _slots(cluster, name: str) -> list[datetime]:
    """The logical times of the schedule's runs, in the order the runs were created."""
    rows = cluster.query("SELECT logical_time FROM agents_workflowrun WHERE schedule_key = %s ORDER BY id",
                         [f"{name}:minutely"])
    return [row[0] for row in rows or []]


def _minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def test_two_beats_firing_the_same_slot_start_one_run(cluster):
    worker = cluster.worker("w1@faults")
    cluster.ready(worker)
    _load(cluster, "twobeats", catchup=False)
    _beat_last_fired(cluster, "twobeats", datetime.now(timezone.utc) - timedelta(minutes=2))

    cluster.extra_env["AGENTS_OFFLINE_SWEEP_S"] = "0.5"  # a fraction of a second: beat keeps whole seconds
    started = time.monotonic()
    beats = [cluster.beat(f"beat{number}", database_scheduler=True, loglevel="INFO") for number in (1, 2)]
    sent = "Sending due task workflow twobeats schedule minutely"
    poll(lambda: all(sent in beat.log.read_text() for beat in beats), timeout_s=FIRE_TIMEOUT_S,
         what="both beats to send the schedule's task")
    fired = poll(lambda: cluster.query("SELECT count(*) FROM agents_workflowrun WHERE schedule_key = %s"
                                       " AND status = 'succeeded'", ["twobeats:minutely"])[0][0] or None,
                 timeout_s=FIRE_TIMEOUT_S, what="the scheduled run to finish")

    slots = _slots(cluster, "twobeats")
    assert fired >= 1 and len(slots) == len(set(slots))  # both beats fired; each slot has one run
    assert all(slot == _minute(slot) for slot in slots)
    assert all(beat.alive() for beat in beats)
    # the offline sweep, set to every 0.5 s, is sent about once a second by each beat (rounded up to whole seconds),
    # not in a loop that starved the workflow's entry (0.5 s was stored as 0 s: always due)
    seconds = time.monotonic() - started
    sweeps = [beat.log.read_text().count("Sending due task agents-mark-offline") for beat in beats]
    assert all(count <= seconds + 3 for count in sweeps), (sweeps, seconds)


def test_a_beat_back_after_five_missed_minutes_starts_them_oldest_first(cluster):
    worker = cluster.worker("w1@faults")
    cluster.ready(worker)
    _load(cluster, "catchup", catchup=True)
    # given the schedule's run for the slot five minutes ago, after which beat stopped
    before = _minute(datetime.now(timezone.utc)) - timedelta(minutes=5)
    done = json.loads(manage("workflow", "backfill", "catchup", "--from", before.isoformat(), "--to",
                             before.isoformat(), "--json", env=cluster.env))
    assert done["started"] == 1
    _beat_last_fired(cluster, "catchup", before)

    cluster.beat("beat1", database_scheduler=True)
    slots = poll(lambda: (found := _slots(cluster, "catchup")) and len(found) >= 6 and found,
                 timeout_s=FIRE_TIMEOUT_S, what="beat to start the missed slots")

    # the slot before the stop, then every minute since, each once and oldest first
    assert slots[0] == before
    assert slots == [before + timedelta(minutes=offset) for offset in range(len(slots))]
    assert 6 <= len(slots) <= 7  # seven when the minute turned while beat started
    poll(lambda: cluster.query("SELECT count(*) FROM agents_workflowrun WHERE schedule_key = %s AND status <>"
                               " 'succeeded'", ["catchup:minutely"])[0][0] == 0,
         timeout_s=FIRE_TIMEOUT_S, what="the caught-up runs to finish")
