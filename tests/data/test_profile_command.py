"""Profiles and drift with the real worker: a published dataset carries its profile, ``data profile`` prints it, the
admin page draws it, and a drift check refuses to publish a version whose numbers moved."""
import json
from io import StringIO

import numpy as np
import pandas as pd
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.urls import reverse

from agents.data import services
from agents.models import DataRun, Dataset
from tests.conftest import wait_for
from tests.data.conftest import load

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = 4_000


def sales(seed: int, *, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "sale_id": np.arange(1, ROWS + 1),
        "amount": np.round(rng.gamma(2.0, 30.0, ROWS) + shift, 2),
        "channel": np.asarray(["web", "shop", "phone"])[rng.integers(0, 3, ROWS)],
    })


def pipeline(folder: str) -> dict:
    return {
        "name": f"{folder}-sales",
        "source": {"kind": "file", "path": f"{folder}/sales.csv"},
        "quality_checks": [{"type": "drift", "columns": ["amount", "channel"], "psi_max": 0.2,
                            "p_value_min": 0.01}],
        "output": {"dataset": f"{folder}_sales"},
        "chunk_rows": 1_500,
    }


def publish(folder: str, frame: pd.DataFrame) -> DataRun:
    """Write the sales file and have a data agent run the pipeline on it; the finished run."""
    frame.to_csv(settings.AGENTS_DATA_ROOT / folder / "sales.csv", index=False)
    run = services.data_run_enqueue(version=load(pipeline(folder)))
    wait_for(lambda: DataRun.objects.get(pk=run.pk).status in ("succeeded", "failed"), timeout_s=60,
             what="the data run to finish")
    return DataRun.objects.get(pk=run.pk)


def test_a_published_dataset_is_profiled_shown_and_guarded_against_drift(worker, shared_folder, admin_client):
    first = sales(seed=1)
    run = publish(shared_folder, first)
    assert run.status == "succeeded", run.error
    drift = next(result for result in run.quality if result["type"] == "drift")
    assert drift["passed"] and drift["details"]["reference"] == "none (the first version)"

    # The profile was stored with the dataset, and the command prints it.
    out = StringIO()
    call_command("data", "profile", f"{shared_folder}_sales", "--json", stdout=out)
    profile = json.loads(out.getvalue())
    amount = next(column for column in profile["columns"] if column["name"] == "amount")
    assert (profile["number"], profile["rows"]) == (1, ROWS)
    assert (amount["count"], amount["min"], amount["max"]) == (ROWS, first.amount.min(), first.amount.max())
    assert amount["mean"] == pytest.approx(first.amount.mean())
    assert amount["quantiles"]["50%"] == pytest.approx(first.amount.median(), rel=0.01)
    out = StringIO()
    call_command("data", "profile", f"{shared_folder}_sales", "--version", "1", stdout=out)
    assert "channel (category): 4000 values, 0 null, 3 distinct" in out.getvalue()

    dataset = Dataset.objects.get(run=run)
    page = admin_client.get(reverse("admin:agents_dataset_change", args=[dataset.pk])).content.decode()
    assert 'aria-label="histogram of amount"' in page and 'aria-label="histogram of sale_id"' in page
    assert page.count("<rect ") == 2 * 20  # two numeric columns, 20 bins each; none for channel
    assert "Quantiles (5/25/50/75/95 %)" in page
    assert f"<td>{first.amount.mean():.4g}</td>" in page  # statistics rounded for reading, not 15 digits
    assert f"<td>{amount['mean']}</td>" not in page

    # A second version from the same population publishes; one whose amounts moved is refused.
    assert publish(shared_folder, sales(seed=2)).status == "succeeded"
    shifted = publish(shared_folder, sales(seed=3, shift=35.0))
    assert shifted.status == "failed"
    assert shifted.error == "quality check(s) failed: drift:amount,channel; the dataset was not published"
    drift = next(result for result in shifted.quality if result["type"] == "drift")
    assert drift["details"]["reference"] == f"{shared_folder}_sales #2"
    assert drift["details"]["drifted"] == ["amount"]
    assert Dataset.objects.filter(name=f"{shared_folder}_sales").count() == 2


def test_profile_of_an_unknown_dataset_or_version_is_a_clear_error(worker):
    with pytest.raises(CommandError, match="no dataset named 'nothing-here'"):
        call_command("data", "profile", "nothing-here", stdout=StringIO())
    with pytest.raises(CommandError, match="--version must be 1 or more"):
        call_command("data", "profile", "nothing-here", "--version", "0", stdout=StringIO())
