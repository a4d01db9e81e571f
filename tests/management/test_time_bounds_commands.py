"""A command given a time whose offset puts it before year 1 or after 9999 in UTC names the option and stores
nothing (before, ``workflow backfill`` committed a backfill PostgreSQL could not read back, then failed with a
database error's traceback)."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.models import WorkflowBackfill, WorkflowRun
from tests.conftest import PROJECT_DIR

pytestmark = pytest.mark.django_db
NIGHTLY = PROJECT_DIR / "examples" / "workflows" / "nightly_orders.yaml"


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.parametrize("start, end, message", [
    ("0001-01-01T00:00:00+14:00", "0001-01-03T00:00:00Z",
     "--from: 0001-01-01T00:00:00+14:00 is before year 1 in UTC; give a time within the years 1-9999"),
    ("2024-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00",
     "--to: 9999-12-31T23:59:59-14:00 is after year 9999 in UTC; give a time within the years 1-9999"),
])
@pytest.mark.parametrize("dry_run", [(), ("--dry-run",)])
def test_a_backfill_time_outside_the_calendar_in_utc_is_refused_by_option(start, end, message, dry_run):
    run("workflow", "load", str(NIGHTLY))

    with pytest.raises(CommandError) as refused:
        run("workflow", "backfill", "nightly-orders", "--from", start, "--to", end, *dry_run)

    assert str(refused.value) == message
    assert not WorkflowBackfill.objects.exists() and not WorkflowRun.objects.exists()
    assert run("workflow", "backfills", "nightly-orders") == "nightly-orders: no backfills\n"
