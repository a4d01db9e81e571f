"""A process starts without the heavy libraries: they load where they are used (``agents.core.lazy``)."""
import json
import os
import subprocess
import sys
import zoneinfo

from agentsite.celery import WORKER_MODULES
from tests.conftest import PROJECT_DIR

DATA_LIBRARIES = ("pandas", "numpy", "pyarrow", "sklearn", "skops")
#: Also loaded on first use by agentsite itself; the API's own libraries (DRF, drf-spectacular) import them anyway.
HEAVY = (*DATA_LIBRARIES, "requests", "jsonschema", "redis", "cryptography")

LOADED_AFTER = """
import json, sys, django
django.setup()
{then}
print(json.dumps(sorted(name for name in {heavy!r} if name in sys.modules)))
"""


def loaded_after(then: str = "") -> list[str]:
    """The heavy libraries imported once the settings and app registry are loaded, and ``then`` has run."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "agentsite.settings"}
    code = LOADED_AFTER.format(then=then, heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_DIR, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_settings_and_app_registry_load_no_heavy_library():
    assert loaded_after() == []


def test_every_command_module_and_the_url_routes_load_no_data_library():
    then = """
from django.core.management import get_commands, load_command_class
from django.urls import get_resolver
get_resolver().url_patterns
for name, app in get_commands().items():
    load_command_class(app, name)
"""
    assert set(loaded_after(then)).isdisjoint(DATA_LIBRARIES)


def test_a_library_loads_where_it_is_used():
    then = "from agents.data.samples import customers_frame\ncustomers_frame()"
    assert {"pandas", "numpy"} <= set(loaded_after(then))


AREA_REGISTRATIONS = ("agents.orchestration.actions", "agents.workflows.actions", "agents.decisions.actions",
                      "agents.data.actions", "agents.monitoring.actions")


def areas_loaded_after(then: str, modules: tuple[str, ...] = AREA_REGISTRATIONS) -> list[str]:
    code = f"import json, sys, django\ndjango.setup()\n{then}\n" \
           f"print(json.dumps(sorted(name for name in {modules!r} if name in sys.modules)))"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "agentsite.settings"}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_DIR, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_asking_who_listens_for_events_loads_only_the_area_that_listens():
    then = "from agents.core.hooks import event_listeners\nassert event_listeners.names() == ['triggers']"
    assert areas_loaded_after(then) == ["agents.orchestration.actions"]


def test_a_lookup_of_an_action_loads_every_area_registrations():
    then = ("from agents.core.hooks import event_listeners\nevent_listeners.names()\n"
            "from agents.core.actions import actions\n"
            "assert {'sleep', 'decision.evaluate', 'message.send'} <= set(actions)")
    assert areas_loaded_after(then) == sorted(AREA_REGISTRATIONS)


def test_a_command_runs_with_garbage_collection_on():
    # manage.py turns it off while Django starts and the agents app turns it back on once every app is ready
    command = [sys.executable, "manage.py", "shell", "--no-imports", "-c", "import gc; print(gc.isenabled())"]
    result = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"



def test_a_task_sent_by_name_loads_its_own_module_not_every_area():
    """A command that sends one task (``data run --queue``) loads that task's module, whose declared options the
    message carries, and not every area's modules and tasks."""
    then = ("from agents.core.dispatch import task_signature\n"
            "assert task_signature('workers.decision.decisions_shadow_evaluate', 1).type.ignore_result is True")
    assert areas_loaded_after(then, (*AREA_REGISTRATIONS, *WORKER_MODULES)) == ["workers.decision"]


NATIVE_THREADS_AFTER_NUMPY = """
import os, django
django.setup()
before = len(os.listdir("/proc/self/task"))
import numpy
print(len(os.listdir("/proc/self/task")) - before)
"""


def test_loading_numpy_starts_no_idle_blas_threads():
    """numpy's OpenBLAS would start a thread per core beyond the first, each spinning on loading; an agentsite
    process starts none (on this project's two-core machines numpy alone starts one)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "GOTO_NUM_THREADS")}
    env["DJANGO_SETTINGS_MODULE"] = "agentsite.settings"
    result = subprocess.run([sys.executable, "-c", NATIVE_THREADS_AFTER_NUMPY], env=env, cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_the_environment_may_still_ask_for_more_blas_threads():
    code = "import os, django\ndjango.setup()\nprint(os.environ['OPENBLAS_NUM_THREADS'])"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "agentsite.settings", "OPENBLAS_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_DIR, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"


CRONTAB_ZONES_AFTER = """
import json, zoneinfo, django
listed = []
available = zoneinfo.available_timezones
zoneinfo.available_timezones = lambda: listed.append(1) or available()
django.setup()
from django_celery_beat.models import CrontabSchedule
field = CrontabSchedule._meta.get_field("timezone")
at_start = len(listed)
choices = [str(zone) for zone, _ in field.choices]
print(json.dumps({"listed_at_start": at_start, "choices": choices, "listed": len(listed)}))
"""


def test_the_crontab_time_zones_are_listed_when_read_not_at_start():
    # given a process that starts Django (any command, worker or the web app), counting the listings of the zones
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "agentsite.settings"}
    result = subprocess.run([sys.executable, "-c", CRONTAB_ZONES_AFTER], env=env, cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)

    # then its start lists no zone (it walked the zoneinfo tree twice and made ~600 ZoneInfo), and the crontab's
    # choices, once read, hold every zone the system has (but Factory), listed once, in the package's order
    assert seen["listed_at_start"] == 0
    expected = sorted(zoneinfo.available_timezones() - {"Factory"}, key=lambda name: name.translate(
        str.maketrans({"-": " ", "_": " "})))
    assert seen["choices"] == expected and len(expected) > 400
    assert seen["listed"] == 1
