"""A dataset whose numbers hold +inf and -inf: its profile says so (min -inf, max inf, how many of each), keeps what
the finite values measure, stays storable JSON, and no numpy warning reaches the terminal."""
import json
import warnings
from io import StringIO

import numpy as np
import pandas as pd
import pytest
import yaml
from django.core.management import call_command

from agents.models import Dataset

pytestmark = pytest.mark.django_db

FINITE = 3000  # more distinct values than a chunk's sketch keeps whole: its points are interpolated


def data(*args) -> tuple[str, list]:
    """``manage.py data ARGS``' output, and the warnings it raised (numpy's would be printed on stderr)."""
    out = StringIO()
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        call_command("data", *args, stdout=out, stderr=StringIO())
    return out.getvalue(), [str(warning.message) for warning in raised if warning.category is RuntimeWarning]


@pytest.fixture
def published(data_root, tmp_path) -> pd.DataFrame:
    """Dataset ``measures`` published from a CSV whose columns hold infinities, read in chunks of 1,000 rows."""
    finite = np.arange(1, FINITE + 1, dtype="float64")
    frame = pd.DataFrame({
        "amount": np.concatenate([finite[:1000], [np.inf, -np.inf], finite[1000:], [np.inf]]),
        "ratio": np.concatenate([finite[:2000] / 10, [np.inf], finite[2000:] / 10, [np.nan, 1.5]]),
    })
    frame.to_csv(data_root / "measures.csv", index=False)
    spec = tmp_path / "measures.yaml"
    spec.write_text(yaml.safe_dump({"name": "measures", "source": {"kind": "file", "path": "measures.csv"},
                                    "output": {"dataset": "measures"}, "chunk_rows": 1000}))
    out, raised = data("run", str(spec))
    assert "succeeded" in out and raised == []
    return frame


@pytest.mark.parametrize("refresh", [[], ["--refresh"]], ids=["as published", "computed again"])
def test_infinities_show_as_inf_and_minus_inf_with_their_counts(published, refresh):
    # given a published dataset whose amounts hold two inf and one -inf, and whose ratios one inf

    # when its profile is asked for as JSON
    out, raised = data("profile", "measures", "--json", *refresh)

    # then min and max say -inf and inf, infinities are counted, the finite values are measured, no warning printed
    assert raised == []
    columns = {column["name"]: column for column in json.loads(out)["columns"]}
    amount, ratio = columns["amount"], columns["ratio"]
    finite = np.arange(1, FINITE + 1, dtype="float64")
    assert (amount["count"], amount["min"], amount["max"]) == (FINITE + 3, "-inf", "inf")
    assert amount["infinite"] == {"inf": 2, "-inf": 1}
    assert (amount["mean"], amount["std"]) == (None, None)  # inf - inf: no mean, no spread
    assert amount["finite"]["count"] == FINITE
    assert amount["finite"]["mean"] == pytest.approx(finite.mean())
    assert amount["finite"]["std"] == pytest.approx(finite.std(ddof=1))
    assert "mean undefined" in amount["note"]
    assert amount["quantiles"]["50%"] == pytest.approx(1501.5, abs=3)
    assert sum(amount["histogram"]["counts"]) == FINITE
    assert all(isinstance(edge, float) for edge in amount["histogram"]["edges"])
    assert amount["histogram"]["edges"][0] == 1.0 and amount["histogram"]["edges"][-1] == FINITE
    assert {"value": "inf", "count": 2} in amount["top"]

    assert (ratio["min"], ratio["max"], ratio["mean"], ratio["std"]) == (0.1, "inf", "inf", None)
    assert ratio["infinite"] == {"inf": 1, "-inf": 0} and ratio["nulls"] == 1
    assert ratio["finite"]["mean"] == pytest.approx(np.append(finite / 10, 1.5).mean())

    # and the profile stored in PostgreSQL is the same JSON (no NaN or Infinity, which it cannot hold)
    stored = Dataset.objects.get(name="measures").profile
    assert {column["name"]: column for column in stored["columns"]} == columns


def test_the_text_profile_says_how_many_values_are_infinite(published):
    out, raised = data("profile", "measures")

    assert raised == []
    assert "min -inf  max inf  mean None  std None" in out
    assert "infinite: 2 inf, 1 -inf; the 3000 finite values: mean 1500.5, std 866.17" in out
    assert "min 0.1  max inf  mean inf  std None" in out


def test_a_column_of_only_infinities_is_profiled_without_warnings(data_root, tmp_path):
    pd.DataFrame({"edge": [np.inf, -np.inf, np.inf]}).to_csv(data_root / "edges.csv", index=False)
    spec = tmp_path / "edges.yaml"
    spec.write_text(yaml.safe_dump({"name": "edges", "source": {"kind": "file", "path": "edges.csv"},
                                    "output": {"dataset": "edges"}}))
    assert data("run", str(spec))[1] == []

    out, raised = data("profile", "edges", "--json")

    assert raised == []
    edge = json.loads(out)["columns"][0]
    assert (edge["min"], edge["max"], edge["mean"], edge["std"]) == ("-inf", "inf", None, None)
    assert edge["infinite"] == {"inf": 2, "-inf": 1} and edge["finite"]["count"] == 0
    assert edge["quantiles"] == {"5%": "-inf", "25%": "-inf", "50%": "inf", "75%": "inf", "95%": "inf"}
