"""Decision ids are version 7 UUIDs (RFC 9562): time-ordered, unique and increasing within a process."""
import os
import signal
import time
import uuid

from agents.models import ids


def test_uuid7_is_a_version_7_uuid_that_starts_with_the_time_in_milliseconds():
    before = time.time_ns() // 1_000_000
    made = ids.uuid7()
    after = time.time_ns() // 1_000_000

    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after


def test_a_batch_of_ids_is_increasing_unique_and_written_as_str_writes_them():
    texts = list(ids.uuid7_texts(10_000)) + [str(ids.uuid7())] + list(ids.uuid7_texts(3))

    assert len(set(texts)) == len(texts)
    assert texts == sorted(texts)  # ids made within one millisecond too
    for text in texts:
        made = uuid.UUID(text)
        assert str(made) == text and made.version == 7 and made.variant == uuid.RFC_4122


def test_ids_keep_increasing_when_the_clock_steps_back(monkeypatch):
    first = ids.uuid7()
    monkeypatch.setattr(ids.time, "time_ns", lambda: (first.int >> 80) * 1_000_000 - 60_000_000_000)  # 1 min back

    later = [ids.uuid7() for _ in range(3)] + [uuid.UUID(text) for text in ids.uuid7_texts(3)]

    assert [first, *later] == sorted([first, *later]) and len(set(later)) == len(later)


def test_a_full_counter_borrows_the_next_millisecond_rather_than_wrapping(monkeypatch):
    now = time.time_ns() // 1_000_000 + 10_000  # later than any id made so far by this process
    monkeypatch.setattr(ids.time, "time_ns", lambda: now * 1_000_000)
    monkeypatch.setattr(ids, "_last", [now, (1 << ids._COUNTER_BITS) - 2])

    made = [uuid.UUID(text) for text in ids.uuid7_texts(4)]

    assert made == sorted(made) and made[0].int >> 80 == now + 1


def test_a_child_forked_while_another_thread_makes_an_id_can_make_its_own():
    with ids._lock:  # as if a thread of the parent were making an id at the fork
        child = os.fork()
        if child == 0:
            try:
                signal.alarm(10)  # without a new lock in the child, uuid7() would wait forever
                made = ids.uuid7()
                os._exit(0 if made.version == 7 else 1)
            finally:
                os._exit(2)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
