"""Settings come from the environment, with an embedded default when none is set."""
import json
import subprocess
import sys

import pytest
from django.conf import settings

from agentsite.celery import app as celery_app
from tests.conftest import PROJECT_DIR, embedded_env

PRINT_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
from agentsite.celery import app
db = settings.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"], "name": str(db["NAME"]), "host": db.get("HOST", ""),
    "broker": app.conf.broker_url, "backend": app.conf.result_backend,
    "secret_key": settings.SECRET_KEY, "debug": settings.DEBUG, "allowed_hosts": settings.ALLOWED_HOSTS,
    "flower_basic_auth": settings.FLOWER_BASIC_AUTH, "num_proxies": settings.REST_FRAMEWORK.get("NUM_PROXIES"),
    "accept": app.conf.accept_content, "serializer": app.conf.task_serializer,
    "acks_late": app.conf.task_acks_late, "reject_on_worker_lost": app.conf.task_reject_on_worker_lost,
    "prefetch": app.conf.worker_prefetch_multiplier, "events": app.conf.worker_send_task_events,
    "soft_limit": app.conf.task_soft_time_limit, "hard_limit": app.conf.task_time_limit,
    "visibility_timeout": app.conf.broker_transport_options.get("visibility_timeout"),
    "queues": sorted(q.name for q in app.conf.task_queues),
    "beat_scheduler": app.conf.beat_scheduler,
    "route_workflow": app.amqp.router.route({}, "workers.workflow.step_run")["queue"].name,
    "route_registry": app.amqp.router.route({}, "workers.registry.agents_mark_offline")["queue"].name,
}))
"""


def read_settings(env: dict) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS], env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_with_no_environment_everything_is_embedded_under_var(tmp_path):
    seen = read_settings(embedded_env(tmp_path))

    assert seen["engine"] == "django.db.backends.sqlite3"
    assert seen["name"] == str(tmp_path / "agentsite.sqlite3")
    assert seen["broker"] == "filesystem://localhost//"
    assert (tmp_path / "broker" / "queue").is_dir()
    assert seen["backend"] == "django-db"
    assert seen["debug"] is False
    assert seen["allowed_hosts"] == ["localhost", "127.0.0.1", "[::1]"]
    assert seen["num_proxies"] is None  # no proxy: REMOTE_ADDR is the client, X-Forwarded-For is ignored


def test_without_secret_key_one_is_generated_once_and_kept_private(tmp_path):
    first = read_settings(embedded_env(tmp_path))
    second = read_settings(embedded_env(tmp_path))

    assert len(first["secret_key"]) >= 50
    assert first["secret_key"] == second["secret_key"]
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert first["secret_key"] != read_settings(embedded_env(tmp_path / "other"))["secret_key"]


def test_environment_names_the_real_services(tmp_path):
    env = embedded_env(
        tmp_path,
        DATABASE_URL="postgres://agent:pw@db.example:5433/agentsite",
        CELERY_BROKER_URL="redis://cache.example:6380/2",
        CELERY_RESULT_BACKEND="redis://cache.example:6380/3",
        SECRET_KEY="from-the-environment",
        DEBUG="true",
        ALLOWED_HOSTS="agents.example.com,.internal",
        FLOWER_BASIC_AUTH="ops:secret",
        AGENTS_NUM_PROXIES="1",
    )
    seen = read_settings(env)

    assert seen["engine"] == "django.db.backends.postgresql"
    assert (seen["name"], seen["host"]) == ("agentsite", "db.example")
    assert seen["broker"] == "redis://cache.example:6380/2"
    assert seen["backend"] == "redis://cache.example:6380/3"
    assert seen["secret_key"] == "from-the-environment"
    assert seen["debug"] is True
    assert seen["allowed_hosts"] == ["agents.example.com", ".internal"]
    assert seen["flower_basic_auth"] == "ops:secret"
    assert seen["num_proxies"] == 1
    assert seen["visibility_timeout"] == 3600
    assert not (tmp_path / "secret_key").exists()


def test_celery_is_configured_for_safe_redelivery_and_flower(tmp_path):
    seen = read_settings(embedded_env(tmp_path))

    assert seen["accept"] == ["json"] and seen["serializer"] == "json"
    assert seen["acks_late"] and seen["reject_on_worker_lost"]
    assert seen["prefetch"] == 1
    assert seen["events"] is True
    assert 0 < seen["soft_limit"] < seen["hard_limit"]
    assert seen["queues"] == ["data", "decision", "default", "monitoring", "workflow"]
    assert seen["route_workflow"] == "workflow"
    assert seen["route_registry"] == "default"
    assert seen["beat_scheduler"] == "django_celery_beat.schedulers:DatabaseScheduler"


def test_a_beat_sweep_set_to_a_fraction_of_a_second_runs_every_whole_second(tmp_path):
    # beat's database scheduler keeps whole seconds: 0.5 s would be kept as 0, an entry always due
    code = ("import json, django; django.setup(); from django.conf import settings; print(json.dumps("
            "[settings.AGENTS_OFFLINE_SWEEP_S, settings.CELERY_BEAT_SCHEDULE['agents-mark-offline']]))")
    env = {**embedded_env(tmp_path), "AGENTS_OFFLINE_SWEEP_S": "0.5"}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_DIR, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    seconds, entry = json.loads(result.stdout)
    assert seconds == 1 and entry["schedule"] == 1 and entry["options"] == {"expire_seconds": 1}


@pytest.mark.parametrize(("name", "value", "said"), [
    ("AGENTS_MONITOR_SWEEP_S", "abc", "AGENTS_MONITOR_SWEEP_S: 'abc' is not a number"),
    ("AGENTS_MONITOR_BATCH_SIZE", "ten", "AGENTS_MONITOR_BATCH_SIZE: 'ten' is not a whole number"),
])
def test_a_setting_that_is_not_of_its_type_is_refused_naming_the_variable(tmp_path, name, value, said):
    env = {**embedded_env(tmp_path), name: value}

    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode != 0 and said in result.stderr


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_resolve_timeout_that_would_resolve_every_posted_alert_at_once_is_refused(tmp_path, value):
    env = {**embedded_env(tmp_path), "AGENTS_MONITOR_RESOLVE_TIMEOUT_S": value}

    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert "AGENTS_MONITOR_RESOLVE_TIMEOUT_S must be a number of seconds above 0" in result.stderr


@pytest.mark.django_db
def test_the_sweeps_beat_sends_expire_when_no_worker_takes_them_in_time():
    # as beat installs its entries into the database scheduler's tables at start: each sweep's message expires after
    # its interval, so sweeps sent while no worker runs do not pile up and all run when one starts
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import ModelEntry

    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        ModelEntry.from_entry(name, app=celery_app, **entry)

    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        model = PeriodicTask.objects.get(name=name)
        assert model.interval.every == entry["schedule"] and model.interval.period == "seconds"
        assert 1 <= model.expire_seconds == entry["options"]["expire_seconds"]
        assert ModelEntry(model, app=celery_app).options["expires"] == model.expire_seconds
