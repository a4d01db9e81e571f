"""The embedded decision cache (no ``CACHE_URL``): one SQLite file every process of the machine shares, read and
written a batch at a time."""
import logging
import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from agents.decisions import services
from agents.decisions.cache import decision_cache
from agents.models import Decision
from tests.conftest import PROJECT_DIR
from tests.decisions.conftest import LOANS, load

pytestmark = pytest.mark.django_db

APPLICANTS = [{"amount": 5000, "applicant": {"score": 720, "email": "a@example.com"}},
              {"amount": 50000, "applicant": {"score": 300}},
              {"amount": 5000, "applicant": {"score": 720, "email": "a@example.com"}}]


#: Another process counting the entries of the store's file.
ENTRIES = ("import sqlite3, sys\n"
           "print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM answers').fetchone()[0])")


@pytest.fixture
def file_store(settings, tmp_path):
    settings.AGENTS_DECISION_CACHE_URL = ""
    settings.VAR_DIR = tmp_path
    decision_cache.cache_clear()
    yield tmp_path / "cache" / "decisions.sqlite3"
    decision_cache.cache_clear()


def test_a_batch_is_answered_from_the_file_store_the_second_time(file_store):
    load(LOANS)

    first = services.decide_many(ruleset="loans", contexts=APPLICANTS * 100)
    second = services.decide_many(ruleset="loans", contexts=APPLICANTS * 100)

    assert [answer["cached"] for answer in first[:3]] == [False, False, True]  # the third repeats the first
    assert all(answer["cached"] for answer in second)
    assert [a["decision"] for a in second] == [a["decision"] for a in first] == ["approve", "reject", "approve"] * 100
    assert Decision.objects.filter(cached=True).count() == 298 + 300
    assert file_store.is_file()


def test_a_single_decision_is_cached_for_every_process_of_the_machine(file_store):
    load(LOANS)

    first = services.decide(ruleset="loans", context=APPLICANTS[0])
    again = services.decide(ruleset="loans", context=APPLICANTS[0])
    other = subprocess.run([sys.executable, "-c", ENTRIES, str(file_store)], cwd=PROJECT_DIR, capture_output=True,
                           text=True, timeout=30)

    assert (first["cached"], again["cached"]) == (False, True)
    assert again["decision"] == first["decision"] == "approve"
    assert other.stdout.strip() == "1", other.stderr


def test_an_expired_entry_is_a_miss(file_store):
    store = decision_cache()
    store.set_many({"agents:decision:a": '"kept"', "agents:decision:b": '"old"'}, 300)
    store.set_many({"agents:decision:b": '"old"'}, -1)

    assert store.get_many(["agents:decision:a", "agents:decision:b", "agents:decision:c"]) == ['"kept"', None, None]
    assert store.get("agents:decision:a") == "kept"


def test_a_broken_store_file_is_named_in_the_log_and_replaced(file_store, caplog):
    load(LOANS)
    file_store.parent.mkdir(parents=True, exist_ok=True)
    file_store.write_bytes(b"this is not a database" * 100)

    with caplog.at_level(logging.WARNING, logger="agents.decisions.cache"):
        first = services.decide(ruleset="loans", context=APPLICANTS[0])
        again = services.decide(ruleset="loans", context=APPLICANTS[0])
        batch = services.decide_many(ruleset="loans", contexts=APPLICANTS)

    assert (first["decision"], first["cached"], again["cached"]) == ("approve", False, True)
    assert [answer["decision"] for answer in batch] == ["approve", "reject", "approve"]
    assert f"{file_store} is broken" in caplog.text
    assert Decision.objects.count() == 5


def test_a_forked_child_uses_its_own_connection_and_the_parent_goes_on(file_store):
    store = decision_cache()
    store.set_many({"agents:decision:parent": '"before"'}, 300)  # the parent's connection is open
    inherited = store._local.db

    child = os.fork()
    if child == 0:  # as a prefork worker's pool process: store an answer, then end without cleaning up
        try:
            store.set_many({"agents:decision:child": '"from the child"'}, 300)
            os._exit(0 if store._local.db is not inherited else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    store.set_many({"agents:decision:parent": '"after"'}, 300)

    assert os.waitstatus_to_exitcode(status) == 0
    assert store._local.db is inherited
    assert store.get_many(["agents:decision:parent", "agents:decision:child"]) == ['"after"', '"from the child"']


def test_expired_entries_are_removed_though_each_chunk_is_stored_from_a_new_thread(file_store, monkeypatch):
    monkeypatch.setattr("agents.decisions.cache.PURGE_EVERY", 10)
    store = decision_cache()
    for chunk in range(3):  # as a batch stores its chunks: each from a thread of its own, each below PURGE_EVERY
        thread = threading.Thread(target=store.set_many,
                                  args=({f"agents:decision:{chunk}-{row}": '"old"' for row in range(6)}, -1))
        thread.start()
        thread.join()
    store.set_many({"agents:decision:fresh": '"new"'}, 300)

    other = subprocess.run([sys.executable, "-c", ENTRIES, str(file_store)], capture_output=True, text=True,
                           timeout=30)
    # the second chunk brought the count to 12: all 12 expired entries went; the third chunk's 6 and the fresh one stay
    assert other.stdout.strip() == "7", other.stderr


def test_a_store_file_broken_while_open_is_replaced_and_caches_again(file_store, caplog):
    store = decision_cache()
    store.set_many({f"agents:decision:{row}": '"kept"' * 100 for row in range(3000)}, 300)
    opened = store._local.db  # the process's connection, open on the file
    opened.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the entries in the file itself, none in the log
    opened.execute("PRAGMA cache_size=1")  # none in the connection's memory: a read goes to the file
    file_store.write_bytes(b"this is not a database" * (file_store.stat().st_size // 22))  # broken in place

    with caplog.at_level(logging.WARNING, logger="agents.decisions.cache"):
        missed = store.get_many(["agents:decision:2500"])
    store.set_many({"agents:decision:new": '"new"'}, 300)

    assert missed == [None] and f"{file_store} is broken" in caplog.text
    assert store.get_many(["agents:decision:2500", "agents:decision:new"]) == [None, '"new"']
    other = subprocess.run([sys.executable, "-c", ENTRIES, str(file_store)], capture_output=True, text=True, timeout=30)
    assert other.stdout.strip() == "1", other.stderr  # written to the new file, where every process looks


def test_a_process_whose_file_another_replaced_moves_to_the_new_file(file_store):
    store = decision_cache()
    store.set_many({"agents:decision:a": '"old file"'}, 300)  # the connection is open
    replaced = ("import sqlite3, sys, pathlib\n"  # as another process that found the file broken does
                "path = pathlib.Path(sys.argv[1])\n"
                "for name in (path.name, path.name + '-wal', path.name + '-shm'):\n"
                "    path.with_name(name).unlink(missing_ok=True)\n"
                "db = sqlite3.connect(path)\n"
                "db.execute('CREATE TABLE answers (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL)')\n"
                "db.commit()\n")
    done = subprocess.run([sys.executable, "-c", replaced, str(file_store)], capture_output=True, text=True, timeout=30)

    store.set_many({"agents:decision:b": '"new file"'}, 300)

    assert done.returncode == 0, done.stderr
    other = subprocess.run([sys.executable, "-c", ENTRIES, str(file_store)], capture_output=True, text=True, timeout=30)
    assert other.stdout.strip() == "1", other.stderr
    assert store.get_many(["agents:decision:a", "agents:decision:b"]) == [None, '"new file"']


def test_a_store_file_of_the_earlier_layout_is_taken_over(file_store):
    file_store.parent.mkdir(parents=True, exist_ok=True)
    earlier = sqlite3.connect(file_store)  # keyed by the whole key, WITHOUT ROWID, as before version 7 decision ids
    earlier.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL) "
                    "WITHOUT ROWID")
    earlier.execute("INSERT INTO entries VALUES ('agents:decision:a', '\"earlier\"', 1e12)")
    earlier.commit()
    earlier.close()
    store = decision_cache()

    store.set_many({"agents:decision:b": '"now"'}, 300)

    assert store.get_many(["agents:decision:a", "agents:decision:b"]) == [None, '"now"']
    tables = sqlite3.connect(file_store).execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("answers",)]
