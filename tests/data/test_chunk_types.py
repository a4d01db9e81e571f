"""A column with no value in the first chunk of a file and values later (pandas reads it as float64 there) does not
break a chunked run: the output and the failing-rows file take the type the later chunks give it."""
import pandas as pd
import pytest

from agents.data import services
from agents.models import Dataset
from tests.data.conftest import load

pytestmark = pytest.mark.django_db


def late_column_csv(root, rows: int = 40, first_value_at: int = 25):
    """A CSV whose ``note`` column is empty up to row ``first_value_at`` and text from there."""
    root.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({
        "id": range(rows),
        "note": [None if index < first_value_at else f"note {index}" for index in range(rows)],
        "amount": [float(index) if index % 7 else -1.0 for index in range(rows)],
    })
    frame.to_csv(root / "late.csv", index=False)
    return frame


def pipeline(name: str, checks: list[dict]) -> dict:
    return {"name": name, "source": {"kind": "file", "path": "late.csv"}, "key": ["id"], "chunk_rows": 10,
            "quality_checks": checks, "output": {"dataset": name.replace("-", "_")}}


def test_output_spanning_chunks_keeps_a_column_first_seen_empty_as_text(data_root):
    frame = late_column_csv(data_root)
    run = services.pipeline_run(pipeline=load(pipeline("late-note", [])).pipeline.name)

    assert run.status == "succeeded", run.error
    assert run.chunks == 4
    output = pd.read_parquet(data_root / Dataset.objects.get(run=run).path)
    assert output["note"].tolist() == frame["note"].tolist()
    assert {column["name"]: column["type"] for column in Dataset.objects.get(run=run).schema}["note"] in (
        "string", "large_string")


def test_failing_rows_of_later_chunks_are_written_with_the_type_they_give_the_column(data_root):
    frame = late_column_csv(data_root)
    # Rows 0 and 7 fail in the first chunk (no note yet), rows 28 and 35 in the last ones (with a note).
    checks = [{"type": "consistency", "expression": "amount >= 0 or note == 'none'", "severity": "warn",
               "failing_rows": True}]
    run = services.pipeline_run(pipeline=load(pipeline("late-failing", checks)).pipeline.name)

    assert run.status == "succeeded", run.error
    result = run.quality[0]
    failing = pd.read_parquet(data_root / result["failing_rows_path"])
    expected = frame[frame.amount < 0]
    assert result["unexpected_count"] == len(expected) == len(failing)
    assert failing["id"].tolist() == expected["id"].tolist()
    assert failing["note"].tolist() == expected["note"].tolist()  # nulls first, then text from row 25 on
