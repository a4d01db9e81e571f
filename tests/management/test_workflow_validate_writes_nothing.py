"""`manage.py workflow validate FILE` and `data validate FILE` only read: no row is written, not even the
default team's."""
from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection

from agents.models import Team
from tests.conftest import PROJECT_DIR

pytestmark = pytest.mark.django_db(transaction=True)
EXAMPLES = PROJECT_DIR / "examples" / "workflows"


def row_counts() -> dict[str, int]:
    """Every table's row count."""
    with connection.cursor() as cursor:
        counts = {}
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")
            counts[table] = cursor.fetchone()[0]
    return counts


@pytest.fixture
def no_team():
    """A database with no team yet (a new install before anything was loaded)."""
    Team.objects.all().delete()
    Group.objects.all().delete()


def test_validate_on_a_database_without_teams_writes_no_row(no_team):
    # given a database with no team (a new install before anything was loaded)
    before = row_counts()

    # when a definition file is validated
    out = StringIO()
    call_command("workflow", "validate", str(EXAMPLES / "order_fulfilment.yaml"), stdout=out)

    # then it is valid, and there is still no team, nor any other new row
    assert "valid workflow 'order-fulfilment'" in out.getvalue()
    assert not Team.objects.exists() and not Group.objects.exists()
    assert row_counts() == before


def test_validate_of_a_workflow_starting_another_teams_workflow_writes_no_row(no_team, tmp_path):
    # given another team's workflow, and no default team yet
    call_command("teams", "add", "shop", stdout=StringIO())
    child = tmp_path / "child.yaml"
    child.write_text("name: child\nsteps: [{id: a, action: noop}]\n")
    call_command("workflow", "load", str(child), "--team", "shop", stdout=StringIO())
    parent = tmp_path / "parent.yaml"
    parent.write_text("name: parent\nsteps: [{id: a, action: workflow.run, params: {workflow: child}}]\n")
    before = row_counts()

    # when a definition naming it is validated (as the default team would load it)
    out = StringIO()
    call_command("workflow", "validate", str(parent), stdout=out)

    # then nothing is written: no default team appears
    assert "valid workflow 'parent'" in out.getvalue()
    assert list(Team.objects.values_list("group__name", flat=True)) == ["shop"]
    assert row_counts() == before


def test_data_validate_on_a_database_without_teams_writes_no_row(no_team, tmp_path):
    spec = tmp_path / "orders.yaml"
    spec.write_text("name: orders\nsource: {kind: dataset, dataset: raw-orders}\n")
    before = row_counts()

    out = StringIO()
    call_command("data", "validate", str(spec), stdout=out)

    assert "orders" in out.getvalue()
    assert not Team.objects.exists() and not Group.objects.exists()
    assert row_counts() == before
