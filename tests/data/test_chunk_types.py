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


def numbers_then_text_csv(root, *, text_first: bool = False):
    """A CSV whose ``code`` column holds numbers (some with leading zeros) in its first 15 rows and text after
    (or the other way round); a whole read of it gives the text of every value."""
    root.mkdir(parents=True, exist_ok=True)
    codes = [f"{index:03d}" for index in range(15)] + [f"C-{index}" for index in range(15, 30)]
    if text_first:
        codes = codes[15:] + codes[:15]
    frame = pd.DataFrame({"id": range(30), "code": codes, "amount": [float(index) for index in range(30)]})
    frame.to_csv(root / "codes.csv", index=False)
    return frame


def codes_pipeline(name: str, transforms: list[dict], checks: list[dict] | None = None) -> dict:
    return {"name": name, "source": {"kind": "file", "path": "codes.csv"}, "key": ["id"], "chunk_rows": 10,
            "transforms": transforms, "quality_checks": checks or [], "output": {"dataset": name.replace("-", "_")}}


@pytest.mark.parametrize("text_first", [False, True], ids=["numbers-then-text", "text-then-numbers"])
@pytest.mark.parametrize("transforms", [
    [],
    [{"type": "filter", "expression": "amount >= 0"}],
    [{"type": "sort", "by": "id"}],
], ids=["as-read", "streamed", "global"])
def test_a_column_that_turns_from_numbers_to_text_is_text_in_every_row(data_root, text_first, transforms):
    # given a CSV read in chunks of 10 rows whose code column is numbers in some chunks and text in others
    frame = numbers_then_text_csv(data_root, text_first=text_first)

    # when a pipeline runs on it
    run = services.pipeline_run(pipeline=load(codes_pipeline("codes", transforms)).pipeline.name)

    # then it succeeds and every code is the text of the file, as a whole read gives it (leading zeros kept)
    assert run.status == "succeeded", run.error
    assert run.rows_in == 30 and run.chunks == 3
    dataset = Dataset.objects.get(run=run)
    output = pd.read_parquet(data_root / dataset.path)
    assert output["code"].tolist() == frame["code"].tolist() == pd.read_csv(data_root / "codes.csv")["code"].tolist()
    assert {column["name"]: column["type"] for column in dataset.schema}["code"] in ("string", "large_string")


def test_a_check_over_a_column_that_turns_to_text_sees_text_in_every_chunk(data_root):
    # given the CSV whose code column is numbers in its first chunks and text later
    numbers_then_text_csv(data_root)
    # a check that every code is text of at least three characters (a length check refuses a column of numbers)
    checks = [{"type": "validity", "column": "code", "length": {"min": 3}, "failing_rows": True}]

    # when a pipeline checks it
    run = services.pipeline_run(pipeline=load(codes_pipeline("codes-checked", [], checks)).pipeline.name)

    # then the check judged every row as text, and passed
    assert run.status == "succeeded", run.error
    assert run.quality[0]["passed"] is True and run.quality[0]["unexpected_count"] == 0
    assert run.quality[0]["element_count"] == 30
    assert pd.read_parquet(data_root / run.quality[0]["failing_rows_path"]).empty


def test_an_aggregate_over_a_column_that_turns_to_text_groups_by_its_text(data_root):
    # given the CSV whose code column is numbers in its first chunks and text later
    frame = numbers_then_text_csv(data_root)
    aggregate = {"type": "aggregate", "group_by": ["code"],
                 "aggregations": {"total": {"column": "amount", "function": "sum"}}}

    # when a pipeline sums the amount per code, chunk by chunk
    run = services.pipeline_run(pipeline=load(codes_pipeline("codes-summed", [aggregate])).pipeline.name)

    # then there is one group per code of the file, named by its text
    assert run.status == "succeeded", run.error
    output = pd.read_parquet(data_root / Dataset.objects.get(run=run).path)
    assert sorted(output["code"].tolist()) == sorted(frame["code"].tolist())
    assert output["total"].sum() == frame["amount"].sum()
