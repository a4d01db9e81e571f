"""`manage.py data run` with --wait or --timeout but no --queue (or no --wait): refused, nothing run or stored."""
from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command

from agents.data.samples import orders_frame
from agents.models import DataRun, Dataset, Pipeline
from tests.data.conftest import write_orders

pytestmark = pytest.mark.django_db


@pytest.fixture
def pipeline_file(data_root, tmp_path) -> str:
    """A pipeline that would run and publish a dataset if it were run."""
    write_orders(data_root, orders_frame(100))
    path = tmp_path / "orders.yaml"
    path.write_text(yaml.safe_dump({"name": "orders", "source": {"kind": "file", "path": "orders.csv"},
                                    "output": {"dataset": "orders_copy"}}))
    return str(path)


@pytest.mark.parametrize(("options", "message"), [
    (["--wait"], "--wait: only with --queue (without it the run happens in this command, which ends with it)"),
    (["--wait", "--timeout", "5"], "--wait: only with --queue"),
    (["--timeout", "5"], "--timeout: only with --queue --wait (it is how long --wait waits)"),
    (["--queue", "--timeout", "5"], "--timeout: only with --queue --wait (it is how long --wait waits)"),
])
def test_waiting_on_a_run_that_is_not_queued_is_refused_before_anything_runs(pipeline_file, options, message):
    # given a pipeline file that would run and publish

    # when a user asks to wait (or for how long) without sending the run to the queue, or without waiting
    with pytest.raises(CommandError) as refused:
        call_command("data", "run", pipeline_file, *options, stdout=StringIO())

    # then the command says which option needs which, and nothing was loaded, run, queued or published
    assert str(refused.value).startswith(message)
    assert not Pipeline.objects.exists()
    assert not DataRun.objects.exists()
    assert not Dataset.objects.exists()


def test_a_run_by_name_without_wait_options_still_runs_here(pipeline_file):
    # given a loaded pipeline
    call_command("data", "load", pipeline_file, stdout=StringIO())

    # when it is run without --queue and without --wait
    out = StringIO()
    call_command("data", "run", "orders", stdout=out)

    # then it ran in this command and published its dataset
    assert "succeeded" in out.getvalue()
    assert Dataset.objects.filter(name="orders_copy").count() == 1
