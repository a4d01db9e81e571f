"""Fixtures for data tests: a data root of the test's own, generated orders with known defects, pipeline loading."""
import json
import shutil
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from agents.data import services
from agents.data.samples import customers_frame, orders_frame

ORDERS_ROWS = 3000


@pytest.fixture
def shared_folder():
    """A folder under the data root a worker process sees (its settings were fixed when it started)."""
    name = f"tests-{uuid.uuid4().hex[:10]}"
    folder = Path(django_settings.AGENTS_DATA_ROOT) / name
    folder.mkdir(parents=True)
    yield name
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def orders():
    """Orders with known defects (see agents/data/samples.py)."""
    return orders_frame(ORDERS_ROWS)


def write_orders(root: Path, orders, *, name: str = "orders.csv") -> Path:
    """Write orders and customers as CSV files under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    orders.to_csv(root / name, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    customers_frame().to_csv(root / "customers.csv", index=False)
    return root / name


def load(spec: dict):
    """Load a pipeline given as a dict; return its version."""
    return services.pipeline_load(text=json.dumps(spec), source="test")[0]


class WorkerKilled(BaseException):
    """A worker's process ending mid-task (SIGKILL): no handler of the task runs."""


def run_killed_after_publishing(run, monkeypatch) -> None:
    """Execute ``run`` (as task ``task-1``) up to its dataset's publication, its worker killed before it records
    the run's end."""
    record_end = services._transition

    def killed_before_the_end(run, to, **fields):
        if to == "succeeded":
            raise WorkerKilled
        return record_end(run, to, **fields)

    monkeypatch.setattr(services, "_transition", killed_before_the_end)
    try:
        services.data_run_execute(run_id=run.pk, task_id="task-1", worker="first")
    except WorkerKilled:
        pass
    else:
        raise AssertionError("the run ended: it was not killed before its end")
    finally:
        monkeypatch.setattr(services, "_transition", record_end)
