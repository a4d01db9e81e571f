"""Sources read as pandas reads them directly: files under the data root, the real PostgreSQL (read-only, bound
parameters), sqlite, a local JSON API (pages, cursors, retries, redirects, secrets from the environment) and
published datasets (checksum checked); every refusal names its culprit."""
import hashlib
import json
import os
import socket
import sqlite3
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
from django.db import connection

from agents.data.paths import data_path_relative, data_path_resolve
from agents.data.sources import (
    ColumnTypesError, source_consume, source_describe, source_frame, source_read, source_read_stop, source_validate,
)
from agents.data.services import pipeline_run
from agents.exceptions import ColumnError, DataPathError, DataSourceError, PipelineSpecError
from agents.models import Dataset
from tests.data.conftest import load

ORDERS = pd.DataFrame({
    "order_id": list(range(1, 11)),
    "region": ["north", "south", "north", "east", "south", "north", "west", "east", "north", "south"],
    "amount": [10.5, 20.0, 7.25, 100.0, 3.5, 42.0, 8.75, 15.0, 60.0, 1.0],
    "day": [f"2024-01-{day:02d}" for day in range(1, 11)],
})


@pytest.fixture
def root(settings, tmp_path):
    """A fresh data root holding the orders as csv, jsonl and parquet under in/."""
    settings.AGENTS_DATA_ROOT = tmp_path / "data"
    folder = tmp_path / "data" / "in"
    folder.mkdir(parents=True)
    ORDERS.to_csv(folder / "orders.csv", index=False)
    ORDERS.to_json(folder / "orders.jsonl", orient="records", lines=True)
    ORDERS.to_parquet(folder / "orders.parquet", index=False)
    return tmp_path / "data"


def direct(root, name: str, **options) -> pd.DataFrame:
    """The file read by pandas itself: what a source must give back."""
    path = root / "in" / name
    if name.endswith(".csv"):
        return pd.read_csv(path, **options)
    if name.endswith(".jsonl"):
        return pd.read_json(path, lines=True, **options)
    return pd.read_parquet(path, **options)


def chunks(spec: dict, chunk_rows: int, **options) -> list[pd.DataFrame]:
    return list(source_read(spec, chunk_rows=chunk_rows, **options))


def joined(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True)


# --- files ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["orders.csv", "orders.jsonl", "orders.parquet"])
def test_a_file_reads_whole_as_pandas_reads_it(root, name):
    frame = source_frame({"kind": "file", "path": f"in/{name}"})

    pd.testing.assert_frame_equal(frame, direct(root, name))


@pytest.mark.parametrize("name", ["orders.csv", "orders.jsonl", "orders.parquet"])
def test_a_file_read_in_chunks_gives_the_same_rows_in_chunks_of_the_asked_size(root, name):
    spec = {"kind": "file", "path": f"in/{name}"}

    frames = chunks(spec, 3)

    assert [len(frame) for frame in frames] == [3, 3, 3, 1]
    pd.testing.assert_frame_equal(joined(frames), source_frame(spec))


@pytest.mark.parametrize("name", ["orders.csv", "orders.jsonl", "orders.parquet"])
def test_only_the_asked_columns_come_back_in_the_asked_order(root, name):
    spec = {"kind": "file", "path": f"in/{name}"}

    whole = source_frame(spec, columns=["amount", "order_id"])
    chunked = chunks(spec, 4, columns=["amount", "order_id"])

    assert list(whole.columns) == ["amount", "order_id"]
    assert all(list(frame.columns) == ["amount", "order_id"] for frame in chunked)
    pd.testing.assert_frame_equal(whole, direct(root, name)[["amount", "order_id"]])
    pd.testing.assert_frame_equal(joined(chunked), whole)


@pytest.mark.filterwarnings("ignore:Could not infer format")
def test_parse_dates_applies_to_the_columns_read(root):
    (root / "in" / "mixed.csv").write_text("a,b\n1,not a date\n3,nor this\n")
    spec = {"kind": "file", "path": "in/mixed.csv", "parse_dates": ["b"]}

    frame = source_frame(spec, columns=["a"])

    assert frame.to_dict("list") == {"a": [1, 3]}
    with pytest.raises(DataSourceError, match="'in/mixed.csv'.*column 'b' is not a date"):
        source_frame(spec)


@pytest.mark.parametrize("name", ["orders.csv", "orders.jsonl", "orders.parquet"])
def test_a_missing_column_is_named_with_the_columns_that_exist(root, name):
    with pytest.raises(ColumnError) as caught:
        source_frame({"kind": "file", "path": f"in/{name}"}, columns=["order_id", "colour"])

    message = str(caught.value)
    assert "'colour'" in message
    assert "'order_id', 'region', 'amount', 'day'" in message


def test_parse_dates_turns_the_named_columns_into_dates(root):
    frame = source_frame({"kind": "file", "path": "in/orders.csv", "parse_dates": ["day"]})

    assert pd.api.types.is_datetime64_any_dtype(frame["day"])
    assert list(frame["day"]) == list(pd.to_datetime(ORDERS["day"]))


#: Times in a zone whose offset changes in between (summer time begins on 2024-03-31 in Europe).
ACROSS_SUMMER_TIME = "at,amount\n2024-03-30T12:00:00+01:00,1\n2024-03-31T12:00:00+02:00,2\n2024-04-01T12:00:00+02:00,3\n"


def test_dates_whose_offsets_differ_are_read_as_the_same_instants_in_utc_whole_and_in_chunks(root):
    (root / "in" / "summer.csv").write_text(ACROSS_SUMMER_TIME)
    spec = {"kind": "file", "path": "in/summer.csv", "parse_dates": ["at"]}

    whole = source_frame(spec)

    assert str(whole["at"].dt.tz) == "UTC"
    assert [value.isoformat() for value in whole["at"]] == [
        "2024-03-30T11:00:00+00:00", "2024-03-31T10:00:00+00:00", "2024-04-01T10:00:00+00:00"]
    # Each chunk holds one offset only: still one type, so the chunks join (and publish) as one column.
    pd.testing.assert_frame_equal(joined(chunks(spec, 1)), whole)


@pytest.mark.django_db
def test_a_pipeline_over_dates_whose_offsets_differ_publishes_them_in_chunks(root):
    (root / "in" / "summer.csv").write_text(ACROSS_SUMMER_TIME)
    version = load({"name": "summer", "source": {"kind": "file", "path": "in/summer.csv", "parse_dates": ["at"]},
                    "chunk_rows": 1, "output": {"dataset": "summer"}})

    run = pipeline_run(pipeline=version.pipeline.name)

    assert run.status == "succeeded", run.error
    published = pd.read_parquet(root / Dataset.objects.get(run=run).path)
    assert published["at"].tolist() == list(pd.to_datetime(
        ["2024-03-30T11:00:00Z", "2024-03-31T10:00:00Z", "2024-04-01T10:00:00Z"]))


@pytest.mark.django_db
@pytest.mark.parametrize("chunk_rows", [None, 1])
def test_a_parquet_decimal_column_is_published_with_its_own_precision_and_scale(root, chunk_rows):
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    amounts = pa.array([decimal.Decimal("1.00"), decimal.Decimal("12345.67"), None], pa.decimal128(10, 2))
    pq.write_table(pa.table({"id": [1, 2, 3], "amount": amounts}), root / "in" / "money.parquet")
    spec = {"name": "money", "source": {"kind": "file", "path": "in/money.parquet"},
            "transforms": [{"type": "filter", "expression": "id >= 2"}], "output": {"dataset": "money"}}
    if chunk_rows:
        spec["chunk_rows"] = chunk_rows

    run = pipeline_run(pipeline=load(spec).pipeline.name)

    assert run.status == "succeeded", run.error
    published = pq.read_table(root / Dataset.objects.get(run=run).path)
    # As Python decimals, the precision was guessed from the values again (decimal128(7, 2) here).
    assert published.schema.field("amount").type == pa.decimal128(10, 2)
    assert published.column("amount").to_pylist() == [decimal.Decimal("12345.67"), None]


@pytest.mark.django_db
@pytest.mark.parametrize("chunk_rows", [None, 1])
def test_a_parquet_map_column_is_published_and_profiled(root, chunk_rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tags = pa.array([[("colour", 1)], None, [("size", 2), ("colour", 3)]], pa.map_(pa.string(), pa.int64()))
    pq.write_table(pa.table({"id": [1, 2, 3], "tags": tags}), root / "in" / "tags.parquet")
    spec = {"name": "tags", "source": {"kind": "file", "path": "in/tags.parquet"}, "output": {"dataset": "tags"}}
    if chunk_rows:
        spec["chunk_rows"] = chunk_rows

    run = pipeline_run(pipeline=load(spec).pipeline.name)

    # A map column could not be written back at all ("Expected bytes, got a 'int' object").
    assert run.status == "succeeded", run.error
    published = pq.read_table(root / Dataset.objects.get(run=run).path)
    assert pa.types.is_map(published.schema.field("tags").type)
    assert published.column("tags").to_pylist() == tags.to_pylist()
    profiled = {column["name"]: column for column in Dataset.objects.get(run=run).profile["columns"]}
    assert (profiled["tags"]["count"], profiled["tags"]["nulls"], profiled["tags"]["distinct"]) == (2, 1, 2)


@pytest.mark.django_db
@pytest.mark.parametrize("chunk_rows", [None, 1])
def test_parquet_struct_and_list_columns_keep_their_integers_and_nulls(root, chunk_rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    point = pa.struct([("x", pa.int64()), ("label", pa.string())])
    places = pa.array([{"x": 1, "label": "a"}, None, {"x": None, "label": "c"}], point)
    sizes = pa.array([[1, 2], None, [3, None]], pa.list_(pa.int64()))
    table = pa.table({"id": [1, 2, 3], "place": places, "sizes": sizes})
    pq.write_table(pa.concat_tables([table, table]), root / "in" / "nested.parquet")
    spec = {"name": "nested", "source": {"kind": "file", "path": "in/nested.parquet"},
            "transforms": [{"type": "deduplicate"}], "output": {"dataset": "nested"}}
    if chunk_rows:
        spec["chunk_rows"] = chunk_rows

    run = pipeline_run(pipeline=load(spec).pipeline.name)

    assert run.status == "succeeded", run.error
    published = pq.read_table(root / Dataset.objects.get(run=run).path)
    # A null anywhere in a nested column made its integers floats (1.0) and a null inside a list NaN.
    assert published.schema.field("place").type == point
    assert published.schema.field("sizes").type == pa.list_(pa.int64())
    assert published.column("place").to_pylist() == places.to_pylist()
    assert published.column("sizes").to_pylist() == sizes.to_pylist()
    profiled = {column["name"]: column for column in Dataset.objects.get(run=run).profile["columns"]}
    assert (profiled["sizes"]["count"], profiled["sizes"]["nulls"], profiled["sizes"]["distinct"]) == (2, 1, 2)


def test_a_date_column_mixing_times_with_and_without_an_offset_is_not_a_date_column(root):
    (root / "in" / "mixed.csv").write_text("at\n2024-03-30T12:00:00+01:00\n2024-04-01T12:00:00\n")

    with pytest.raises(DataSourceError, match="'in/mixed.csv': column 'at' is not a date"):
        source_frame({"kind": "file", "path": "in/mixed.csv", "parse_dates": ["at"]})


def test_a_delimiter_and_an_encoding_are_honoured(root):
    (root / "in" / "latin.csv").write_bytes("name;city\nRen\xe9;K\xf6ln\n".encode("latin-1"))

    frame = source_frame({"kind": "file", "path": "in/latin.csv", "delimiter": ";", "encoding": "latin-1"})

    assert frame.to_dict("records") == [{"name": "René", "city": "Köln"}]


def test_an_empty_file_keeps_its_columns(root):
    (root / "in" / "empty.csv").write_text("a,b\n")
    ORDERS.iloc[:0].to_parquet(root / "in" / "empty.parquet", index=False)

    csv_frames = chunks({"kind": "file", "path": "in/empty.csv"}, 5)
    parquet_frames = chunks({"kind": "file", "path": "in/empty.parquet"}, 5)

    assert [(len(f), list(f.columns)) for f in csv_frames] == [(0, ["a", "b"])]
    assert [(len(f), list(f.columns)) for f in parquet_frames] == [(0, list(ORDERS.columns))]


@pytest.mark.parametrize(("name", "content", "spec"), [
    ("broken.parquet", b"this is not parquet", {}),
    ("broken.jsonl", b'{"a": 1}\nnot json\n', {}),
    ("latin.csv", "a\nRen\xe9\n".encode("latin-1"), {}),
    ("orders.data", b"a,b\n1,2\n", {"format": "parquet"}),
])
def test_an_unreadable_file_is_a_source_error_naming_the_file_and_reason(root, name, content, spec):
    (root / "in" / name).write_bytes(content)

    with pytest.raises(DataSourceError) as caught:
        source_frame({"kind": "file", "path": f"in/{name}", **spec})

    message = str(caught.value)
    assert f"in/{name}" in message
    assert "cannot be read as" in message
    assert "Traceback" not in message


#: JSON records whose strings look like numbers: each value must come back as the file has it.
TYPED = [
    {"code": "0012", "sci": "1e3", "agent": "007", "count": 12, "price": 1.5, "created_at": "2024-01-02"},
    {"code": "0100", "sci": "2.50", "agent": "042", "count": 7, "price": 3.0, "created_at": "2024-01-03"},
    {"code": "1", "sci": "-0", "agent": "700", "count": 0, "price": -2.25, "created_at": "2024-01-04"},
]


def typed_json(orient: str) -> str:
    """``TYPED`` as a JSON lines file (orient ``lines``) or a JSON document in pandas' layout ``orient``."""
    columns = list(TYPED[0])
    layouts = {
        "lines": lambda: "".join(json.dumps(record) + "\n" for record in TYPED),
        "records": lambda: json.dumps(TYPED),
        "columns": lambda: json.dumps({column: {str(index): record[column] for index, record in enumerate(TYPED)}
                                       for column in columns}),
        "index": lambda: json.dumps({str(index): record for index, record in enumerate(TYPED)}),
        "split": lambda: json.dumps({"columns": columns, "index": list(range(len(TYPED))),
                                     "data": [list(record.values()) for record in TYPED]}),
    }
    return layouts[orient]()


@pytest.mark.parametrize("orient", ["lines", "records", "columns", "index", "split"])
@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_json_strings_stay_strings_and_numbers_stay_numbers(root, orient, chunk_rows):
    # given JSON whose strings "0012", "1e3" and "007" would each pass for a number
    name = "typed.jsonl" if orient == "lines" else "typed.json"
    (root / "in" / name).write_text(typed_json(orient))
    spec = {"kind": "file", "path": f"in/{name}"} | ({} if orient in ("lines", "records") else {"orient": orient})

    # when the source is read whole or in chunks
    frame = joined(chunks(spec, chunk_rows)) if chunk_rows else source_frame(spec)

    # then every value is the file's own: text with its leading zeros, numbers as numbers
    assert frame.to_dict("records") == TYPED
    assert [type(value) for value in frame.to_dict("records")[0].values()] == [str, str, str, int, float, str]


def test_a_json_date_column_named_in_parse_dates_is_read_as_dates(root):
    (root / "in" / "typed.jsonl").write_text(typed_json("lines"))

    frame = source_frame({"kind": "file", "path": "in/typed.jsonl", "parse_dates": ["created_at"]})

    assert list(frame["created_at"]) == list(pd.to_datetime([record["created_at"] for record in TYPED]))
    assert frame["code"].tolist() == ["0012", "0100", "1"]


RAGGED = b"id,name,amount\n1,ann,10\n2,bob,20,extra\n3,cy\n4,dee,40\n\n5,eve,50\n"


def test_a_ragged_csv_is_refused_naming_each_bad_line(root):
    (root / "in" / "ragged.csv").write_bytes(RAGGED)

    with pytest.raises(DataSourceError) as caught:
        source_frame({"kind": "file", "path": "in/ragged.csv"})

    assert str(caught.value) == (
        "file 'in/ragged.csv': 2 row(s) do not have the header's 3 fields: line 3 (4 fields), line 4 (2 fields); "
        "fix the file, or set on_bad_lines: skip to leave such rows out")


RAGGED_MESSAGE = ("file 'in/ragged.csv': 2 row(s) do not have the header's 3 fields: line 3 (4 fields), line 4 "
                  "(2 fields); fix the file, or set on_bad_lines: skip to leave such rows out")


@pytest.mark.parametrize("columns", [["id", "amount"], ["id", "price"]])
def test_a_ragged_csv_is_refused_first_even_when_asked_for_a_missing_column_or_left_after_one_chunk(root, columns):
    # given a ragged file, which the check (run beside the parse) finds while or after the first chunk is read
    (root / "in" / "ragged.csv").write_bytes(RAGGED)

    # when a reader asks for columns (one missing) and stops after the first chunk
    with pytest.raises(DataSourceError) as caught:
        frames = source_read({"kind": "file", "path": "in/ragged.csv"}, columns=columns, chunk_rows=1)
        next(frames)
        source_read_stop(frames)

    # then the bad rows are what it is told, as when the whole file is read
    assert str(caught.value) == RAGGED_MESSAGE


def test_a_parse_error_in_a_later_chunk_comes_after_the_chunks_before_it(root):
    # given a csv whose last row opens a quote it never closes (chunks are parsed one ahead, on a thread)
    (root / "in" / "quote.csv").write_bytes(b'id,name\n1,a\n2,b\n3,c\n4,d\n5,"e\n')
    read = []

    # when it is read two rows at a time
    with pytest.raises(DataSourceError) as caught:
        for frame in source_read({"kind": "file", "path": "in/quote.csv"}, chunk_rows=2):
            read.append(frame["id"].tolist())

    # then the good chunks arrive in order, and the parser's complaint names the file where the bad chunk would be
    assert read == [[1, 2], [3, 4]]
    assert str(caught.value) == ("file 'in/quote.csv' cannot be read as csv: Error tokenizing data. C error: "
                                 "EOF inside string starting at row 5")


def _open_paths() -> set[str]:
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # closed meanwhile
    return paths


@pytest.mark.parametrize("leave", ["stop", "drop"])
def test_a_csv_left_after_one_chunk_is_read_no_further_and_closed(root, leave):
    # given a csv of many chunks, read one chunk ahead on a thread
    path = root / "in" / "long.csv"
    pd.DataFrame({"id": range(20_000), "name": ["x"] * 20_000}).to_csv(path, index=False)
    before = set(threading.enumerate())
    frames = source_read({"kind": "file", "path": "in/long.csv"}, chunk_rows=100)
    assert next(frames)["id"].tolist() == list(range(100))

    # when the reader stops after the first chunk, or drops the reader unread
    if leave == "stop":
        source_read_stop(frames)
    else:
        del frames

    # then nothing reads the file on behind its back (neither the parse ahead nor the row check), and it is closed
    assert [thread.name for thread in set(threading.enumerate()) - before if thread.is_alive()] == []
    assert str(path) not in _open_paths()


NUMBERS_THEN_TEXT = b"id,code,flag\n1,007,true\n2,12,false\n3,A-3,true\n4,0.50,false\n"


def test_a_csv_column_turning_from_numbers_to_text_in_a_later_chunk_is_named_with_its_rows(root):
    # given a csv whose code column is numbers in its first two rows and text after
    (root / "in" / "codes.csv").write_bytes(NUMBERS_THEN_TEXT)
    read = []

    # when it is read two rows at a time, as it comes
    with pytest.raises(ColumnTypesError) as caught:
        for frame in source_read({"kind": "file", "path": "in/codes.csv"}, chunk_rows=2):
            read.append(frame)

    # then the chunk of numbers came, and the error names the column and the rows of each type
    assert [frame["id"].tolist() for frame in read] == [[1, 2]]
    assert str(caught.value) == ("file 'in/codes.csv': column 'code' holds numbers in rows 1-2 and text in rows 3-4 "
                                 "(pandas types each chunk of a csv by itself); read it as text")
    assert caught.value.columns == ["code"]


@pytest.mark.parametrize("error, told", [(ValueError("a length check on numbers"), ColumnTypesError),
                                         (MemoryError(), None)])
def test_a_consumer_failing_on_an_early_chunk_hears_of_a_later_type_change_only_if_its_error_could_come_of_it(
        root, error, told):
    # given a csv whose code column is numbers in its first two rows and text after, read two rows at a time
    (root / "in" / "codes.csv").write_bytes(NUMBERS_THEN_TEXT)
    frames = source_read({"kind": "file", "path": "in/codes.csv"}, chunk_rows=2)
    next(frames)

    # when the consumer stops on its first chunk with an error a column's type may cause, or one it cannot (memory
    # running out, a time limit: no time to parse the rest of a large file)
    # then only the first is told the type changes further on (the consumer's own error stands for the other),
    # and nothing more is read
    if told is None:
        source_read_stop(frames, failed=error)
    else:
        with pytest.raises(told, match="column 'code' holds numbers in rows 1-2 and text in rows 3-4"):
            source_read_stop(frames, failed=error)
    assert list(frames) == []


@pytest.mark.parametrize("chunk_rows", [1, 2, None])
def test_a_csv_column_of_numbers_and_text_is_read_as_the_text_of_the_file_in_every_chunk(root, chunk_rows):
    (root / "in" / "codes.csv").write_bytes(NUMBERS_THEN_TEXT)

    frame = source_consume({"kind": "file", "path": "in/codes.csv"},
                           lambda frames, _: joined(list(frames)), chunk_rows=chunk_rows)

    assert frame["code"].tolist() == ["007", "12", "A-3", "0.50"]  # as in the file: no number made of "007"
    assert frame["id"].tolist() == [1, 2, 3, 4] and frame["flag"].tolist() == [True, False, True, False]


def test_a_large_csv_whose_column_turns_to_text_is_read_whole_as_text(root):
    # given a csv long enough for pandas to parse it in blocks, whose code column is numbers until its last rows
    rows = 300_000
    path = root / "in" / "long.csv"
    pd.DataFrame({"id": range(rows), "code": [str(index) for index in range(rows - 2)] + ["x", "y"]}).to_csv(
        path, index=False)

    # when it is read whole, as a join's other side or a reference is
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        frame = source_frame({"kind": "file", "path": "in/long.csv"})

    # then every code is text, not numbers in the first rows and text in the last (which Parquet cannot hold), and
    # nothing is printed about it (pandas' DtypeWarning, which told the user to set an option they cannot set)
    assert frame["code"].tolist()[:2] + frame["code"].tolist()[-2:] == ["0", "1", "x", "y"]
    assert pd.api.types.infer_dtype(frame["code"], skipna=True) == "string"
    assert [str(warning.message) for warning in warned] == []


BLANK_THEN_RAGGED = b"id,name,amount\n1,ann,10\n\n2,bob,20\n3,cy\n4,dee,40,extra\n5,eve,50\n"


@pytest.mark.parametrize("chunk_rows", [None, 2])
@pytest.mark.parametrize("content, kept", [
    (RAGGED, {"id": [1, 4, 5], "name": ["ann", "dee", "eve"], "amount": [10, 40, 50]}),
    # a blank line before the ragged rows (lines 5 and 6): they are left out, not their neighbours
    (BLANK_THEN_RAGGED, {"id": [1, 2, 5], "name": ["ann", "bob", "eve"], "amount": [10, 20, 50]}),
], ids=["ragged", "blank-line-before"])
def test_on_bad_lines_skip_leaves_the_ragged_rows_out_and_keeps_every_other_value(root, chunk_rows, content, kept):
    (root / "in" / "ragged.csv").write_bytes(content)
    source = {"kind": "file", "path": "in/ragged.csv", "on_bad_lines": "skip"}

    frame = pd.concat(list(source_read(source, chunk_rows=chunk_rows)), ignore_index=True)

    # no row padded with a missing value
    assert frame.to_dict("list") == kept


def test_a_ragged_csv_after_a_blank_line_is_refused_naming_the_lines_of_the_file(root):
    (root / "in" / "blank.csv").write_bytes(BLANK_THEN_RAGGED)

    with pytest.raises(DataSourceError) as caught:
        source_frame({"kind": "file", "path": "in/blank.csv"})

    assert "2 row(s) do not have the header's 3 fields: line 5 (2 fields), line 6 (4 fields);" in str(caught.value)


# A quoted value over lines 2-3 and another over lines 6-8: the rows with too few or too many fields are on lines 4
# and 9 of the file (records 3 and 6).
MULTILINE_THEN_RAGGED = b'id,name,amount\n1,"ann\nsmith",10\n2,bob,20,extra\n3,cy,30\n4,"x\ny\nz",5\n5,dee\n6,e,6\n'


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_a_ragged_row_after_a_value_over_several_lines_is_named_by_the_line_an_editor_shows(root, chunk_rows):
    (root / "in" / "multiline.csv").write_bytes(MULTILINE_THEN_RAGGED)

    with pytest.raises(DataSourceError) as caught:
        list(source_read({"kind": "file", "path": "in/multiline.csv"}, chunk_rows=chunk_rows))

    assert str(caught.value) == (
        "file 'in/multiline.csv': 2 row(s) do not have the header's 3 fields: line 4 (4 fields), line 9 (2 fields); "
        "fix the file, or set on_bad_lines: skip to leave such rows out")


def test_a_ragged_row_inside_a_value_over_several_lines_is_named_by_the_line_it_starts_on(root):
    (root / "in" / "multiline.csv").write_bytes(b'id,name,amount\n1,ann,10\n2,"bob\nby",20,extra\n3,"cy\n",30\n')

    with pytest.raises(DataSourceError, match=r"1 row\(s\) do not have the header's 3 fields: line 3 \(4 fields\);"):
        source_frame({"kind": "file", "path": "in/multiline.csv"})


def test_a_ragged_row_whose_line_cannot_be_counted_is_named_as_a_record(root):
    # given a value over lines 2-3, then a value longer than Python's csv reads (line 4), then a short row (line 5)
    (root / "in" / "long.csv").write_bytes(b'id,name,amount\n1,"a\nb",10,x\n2,' + b"x" * 200_000 + b",10\n3,c\n")

    with pytest.raises(DataSourceError) as caught:
        source_frame({"kind": "file", "path": "in/long.csv"})

    # then the row past the long value is named by its record, saying so, not by a line it is not on
    assert str(caught.value) == (
        "file 'in/long.csv': 2 row(s) do not have the header's 3 fields: line 2 (4 fields), record 4 (2 fields) "
        "(records counted from the header, record 1: a value over several lines puts one below its line); "
        "fix the file, or set on_bad_lines: skip to leave such rows out")


def test_on_bad_lines_skip_after_a_value_over_several_lines_leaves_out_the_ragged_rows_only(root):
    (root / "in" / "multiline.csv").write_bytes(MULTILINE_THEN_RAGGED)

    frame = source_frame({"kind": "file", "path": "in/multiline.csv", "on_bad_lines": "skip"})

    assert frame.to_dict("list") == {"id": [1, 3, 4, 6], "name": ["ann\nsmith", "cy", "x\ny\nz", "e"],
                                     "amount": [10, 30, 5, 6]}


def test_on_bad_lines_is_validated_and_applies_to_csv_only():
    assert source_validate({"kind": "file", "path": "a.csv", "on_bad_lines": "drop"}, where="s")[1] == [
        "s.on_bad_lines: must be one of error, skip, got 'drop'"]
    assert source_validate({"kind": "file", "path": "a.parquet", "on_bad_lines": "skip"}, where="s")[1] == [
        "s.on_bad_lines: applies to csv files only"]


# --- paths ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "reason"), [
    ("OUTSIDE", "absolute"),
    ("../x.csv", "'..'"),
    ("a/../../x.csv", "'..'"),
    ("in/../in/orders.csv", "'..'"),
    ("", "non-empty"),
])
def test_a_path_that_is_absolute_or_climbs_is_refused_naming_where_and_the_path(root, tmp_path, path, reason):
    (tmp_path / "x.csv").write_text("a\n1\n")
    path = str(tmp_path / "x.csv") if path == "OUTSIDE" else path

    with pytest.raises(DataPathError) as caught:
        data_path_resolve(path, where="orders source")

    message = str(caught.value)
    assert message.startswith("orders source:")
    assert repr(path) in message
    assert reason in message


def test_a_link_inside_the_root_that_leads_outside_is_refused(root, tmp_path):
    (tmp_path / "secret.csv").write_text("password\nhunter2\n")
    os.symlink(tmp_path / "secret.csv", root / "in" / "innocent.csv")
    os.symlink(tmp_path, root / "in" / "escape")

    with pytest.raises(DataPathError) as file_link:
        source_frame({"kind": "file", "path": "in/innocent.csv"})
    with pytest.raises(DataPathError) as folder_link:
        source_frame({"kind": "file", "path": "in/escape/secret.csv"})

    assert "outside the data root" in str(file_link.value)
    assert "'in/innocent.csv'" in str(file_link.value)
    assert "outside the data root" in str(folder_link.value)


def test_a_link_that_stays_inside_the_root_is_followed(root):
    os.symlink(root / "in" / "orders.csv", root / "in" / "latest.csv")

    frame = source_frame({"kind": "file", "path": "in/latest.csv"})

    pd.testing.assert_frame_equal(frame, direct(root, "orders.csv"))


MANAGED = "is under {}/, where pipelines publish: read a published dataset with {{kind: dataset, name: ...}}"


@pytest.mark.django_db
def test_a_file_source_may_not_read_the_folders_pipelines_publish_to_and_a_pipeline_naming_one_is_refused(root):
    # given another team's published dataset (its path is predictable) and its failing rows
    (root / "datasets" / "payroll").mkdir(parents=True)
    ORDERS.to_parquet(root / "datasets" / "payroll" / "run-1.parquet", index=False)
    (root / "quality" / "run-1").mkdir(parents=True)
    ORDERS.to_csv(root / "quality" / "run-1" / "1-uniqueness.csv", index=False)

    # when a source, or a pipeline, names them by path (or through a link that leads there)
    os.symlink(root / "datasets" / "payroll" / "run-1.parquet", root / "in" / "innocent.parquet")
    refused = {}
    for path in ("datasets/payroll/run-1.parquet", "./quality/run-1/1-uniqueness.csv", "in/innocent.parquet"):
        with pytest.raises((DataPathError, DataSourceError)) as caught:  # by its text, or where its link leads
            source_frame({"kind": "file", "path": path})
        refused[path] = str(caught.value)
    with pytest.raises(PipelineSpecError) as refused_load:
        load({"name": "steal", "source": {"kind": "file", "path": "datasets/payroll/run-1.parquet"},
              "output": {"dataset": "stolen"}})

    # then each is refused saying where to read a dataset from; nothing is read
    assert refused == {
        "datasets/payroll/run-1.parquet": "source.path: 'datasets/payroll/run-1.parquet' is refused: it "
                                          + MANAGED.format("datasets") + ", which checks its team and checksum",
        "./quality/run-1/1-uniqueness.csv": "source.path: './quality/run-1/1-uniqueness.csv' is refused: it "
                                            + MANAGED.format("quality") + ", which checks its team and checksum",
        "in/innocent.parquet": "file source: 'in/innocent.parquet' is refused: it " + MANAGED.format("datasets")
                               + ", which checks its team and checksum",
    }
    assert f"source.path: 'datasets/payroll/run-1.parquet' is refused: it {MANAGED.format('datasets')}" in str(
        refused_load.value)


def test_a_missing_file_is_not_found_under_the_data_root(root):
    with pytest.raises(DataPathError) as caught:
        source_frame({"kind": "file", "path": "in/nope.csv"})

    assert "'in/nope.csv' not found under the data root" in str(caught.value)


def test_a_path_for_writing_need_not_exist_and_is_stored_relative(root):
    path = data_path_resolve("out/new.parquet", where="output", must_exist=False)

    assert path == root.resolve() / "out" / "new.parquet"
    assert data_path_relative(path) == "out/new.parquet"
    with pytest.raises(DataPathError):
        data_path_relative(root.parent / "elsewhere.parquet")


# --- PostgreSQL -----------------------------------------------------------------------------------------------


@pytest.fixture
def pg(settings, transactional_db):
    """A table of orders in the test database, and a connection named 'pg' to that database."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE source_orders (order_id int, region text, amount double precision)")
        cursor.execute("CREATE SEQUENCE source_orders_seq")
        for row in ORDERS[["order_id", "region", "amount"]].itertuples(index=False):
            cursor.execute("INSERT INTO source_orders VALUES (%s, %s, %s)", list(row))
    settings.AGENTS_DATA_DATABASES = {"pg": "postgres://postgres@127.0.0.1:5432/" + connection.settings_dict["NAME"]}
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS source_orders")
        cursor.execute("DROP SEQUENCE IF EXISTS source_orders_seq")


def order_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM source_orders")
        return cursor.fetchone()[0]


def pg_source(query: str, **params) -> dict:
    return {"kind": "database", "connection": "pg", "query": query, "params": params}


def test_a_query_reads_rows_with_its_parameter_bound(pg):
    frame = source_frame(pg_source("SELECT order_id, region FROM source_orders WHERE region = :region "
                                   "ORDER BY order_id", region="north"))

    expected = ORDERS[ORDERS["region"] == "north"][["order_id", "region"]].reset_index(drop=True)
    assert frame.to_dict("list") == expected.to_dict("list")


def test_run_parameters_overlay_the_source_parameters(pg):
    spec = pg_source("SELECT order_id FROM source_orders WHERE region = :region ORDER BY order_id", region="north")

    frame = source_frame(spec, params={"region": "south"})

    assert frame["order_id"].tolist() == [2, 5, 10]


def test_a_parameter_value_is_data_never_sql(pg):
    spec = pg_source("SELECT order_id, region FROM source_orders WHERE region = :region",
                     region="x'; DROP TABLE source_orders; --")

    frame = source_frame(spec)

    assert len(frame) == 0
    assert list(frame.columns) == ["order_id", "region"]
    assert order_rows() == 10


def test_casts_percent_signs_and_colons_in_strings_are_left_alone(pg):
    spec = pg_source("SELECT order_id, :bonus::int + 1 AS bonus, '100%' AS share, ':region' AS label "
                     "FROM source_orders WHERE order_id <= :top::int ORDER BY order_id -- :comment",
                     bonus="41", top="2")

    frame = source_frame(spec)

    assert frame.to_dict("records") == [
        {"order_id": 1, "bonus": 42, "share": "100%", "label": ":region"},
        {"order_id": 2, "bonus": 42, "share": "100%", "label": ":region"},
    ]


def test_a_query_streams_in_chunks_that_add_up_to_the_whole(pg):
    spec = pg_source("SELECT * FROM source_orders ORDER BY order_id")

    frames = chunks(spec, 3)

    assert [len(frame) for frame in frames] == [3, 3, 3, 1]
    pd.testing.assert_frame_equal(joined(frames), source_frame(spec))
    assert joined(frames)["amount"].tolist() == ORDERS["amount"].tolist()


def test_an_empty_result_still_has_its_columns(pg):
    frames = chunks(pg_source("SELECT order_id, amount FROM source_orders WHERE false"), 3)

    assert [(len(f), list(f.columns)) for f in frames] == [(0, ["order_id", "amount"])]


def test_columns_are_picked_from_the_result_and_a_missing_one_is_named(pg):
    spec = pg_source("SELECT order_id, region FROM source_orders ORDER BY order_id")

    assert list(source_frame(spec, columns=["region"]).columns) == ["region"]
    with pytest.raises(ColumnError, match="'amount'.*'order_id', 'region'"):
        source_frame(spec, columns=["amount"])


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_a_query_that_writes_is_refused_as_read_only_and_nothing_changes(pg, chunk_rows):
    spec = pg_source("WITH d AS (DELETE FROM source_orders RETURNING *) SELECT * FROM d")

    with pytest.raises(DataSourceError, match="'pg' is read-only"):
        list(source_read(spec, chunk_rows=chunk_rows))

    assert order_rows() == 10


def test_a_function_that_writes_is_refused_by_the_read_only_transaction(pg):
    with pytest.raises(DataSourceError, match="'pg' is read-only.*nextval"):
        source_frame(pg_source("SELECT nextval('source_orders_seq') AS n"))


def test_an_unknown_connection_lists_the_configured_ones(pg):
    with pytest.raises(DataSourceError, match=r"no connection named 'warehouse'.*\(configured: pg\)"):
        source_frame({"kind": "database", "connection": "warehouse", "query": "SELECT 1"})


@pytest.mark.parametrize(("query", "function"), [
    ("SELECT pg_read_file('/etc/hostname')", "pg_read_file"),
    ("SELECT order_id FROM source_orders, pg_catalog.pg_sleep(5)", "pg_sleep"),
    ('SELECT "pg_ls_dir"(\'.\')', "pg_ls_dir"),
    ("WITH x AS (SELECT 1) SELECT lo_export(1, '/tmp/x') FROM x", "lo_export"),
    # SQL given as text is not read by the check: it read the file all the same
    ("SELECT query_to_xml('select pg_read_file(''/etc/hostname'') as f', true, false, '') AS x", "query_to_xml"),
    ("SELECT set_config('statement_timeout', '0', false)", "set_config"),
])
def test_a_query_calling_a_server_file_or_sleep_function_is_refused(query, function):
    with pytest.raises(DataSourceError) as caught:
        source_frame(pg_source(query))

    assert str(caught.value) == (f"source.query: calls {function}(), which reads or lists server files, reaches "
                                 "another server, sleeps or runs SQL given as text; refused "
                                 "(AGENTS_DATA_REFUSED_FUNCTIONS)")


def test_a_unicode_escaped_name_is_refused():
    with pytest.raises(DataSourceError, match="a U&\"...\" name may hide which function it calls"):
        source_frame(pg_source('SELECT U&"pg\\005fsleep"(1)'))


def test_a_function_name_inside_a_string_or_comment_is_not_a_call(pg):
    frame = source_frame(pg_source("SELECT 'pg_sleep(5)' AS note -- pg_read_file('/x')\nFROM source_orders LIMIT 1"))

    assert frame["note"].tolist() == ["pg_sleep(5)"]


def test_a_query_past_the_statement_timeout_is_cancelled_with_a_clear_message(pg, settings):
    settings.AGENTS_DATA_STATEMENT_TIMEOUT_S = 0.2
    slow = ("SELECT count(*) FROM generate_series(1, 100000000) a")

    with pytest.raises(DataSourceError) as caught:
        source_frame(pg_source(slow))

    assert str(caught.value) == ("the query on database connection 'pg' was cancelled after 0.2 s "
                                 "(AGENTS_DATA_STATEMENT_TIMEOUT_S)")


def test_an_unreachable_database_names_the_connection_but_not_the_password(settings):
    settings.AGENTS_DATA_DATABASES = {"down": "postgres://reader:s3cret-pw@127.0.0.1:1/x"}

    with pytest.raises(DataSourceError) as caught:
        source_frame({"kind": "database", "connection": "down", "query": "SELECT 1"})

    assert "'down' cannot be reached" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)


def test_a_parameter_without_a_value_is_named(pg):
    with pytest.raises(DataSourceError, match=":region"):
        source_frame(pg_source("SELECT * FROM source_orders WHERE region = :region"))


@pytest.fixture
def lite(settings, tmp_path):
    """A sqlite file of orders, configured as connection 'lite'."""
    path = tmp_path / "orders.db"
    with sqlite3.connect(path) as database:
        database.execute("CREATE TABLE orders (order_id integer, region text, amount real)")
        database.executemany("INSERT INTO orders VALUES (?, ?, ?)",
                             ORDERS[["order_id", "region", "amount"]].itertuples(index=False))
    database.close()
    settings.AGENTS_DATA_DATABASES = {"lite": f"sqlite://{path}"}  # sqlite:///abs/path.db
    return path


def test_a_sqlite_query_past_the_statement_timeout_is_cancelled(lite, settings):
    settings.AGENTS_DATA_STATEMENT_TIMEOUT_S = 0.2
    slow = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000) "
            "SELECT count(*) FROM n")

    with pytest.raises(DataSourceError) as caught:
        source_frame({"kind": "database", "connection": "lite", "query": slow})

    assert str(caught.value) == ("the query on database connection 'lite' was cancelled after 0.2 s "
                                 "(AGENTS_DATA_STATEMENT_TIMEOUT_S)")


def test_sqlite_binds_parameters_and_streams(lite):
    spec = {"kind": "database", "connection": "lite",
            "query": "SELECT order_id, amount FROM orders WHERE region = :region ORDER BY order_id",
            "params": {"region": "north"}}

    whole = source_frame(spec)
    frames = chunks(spec, 3)
    hostile = source_frame(spec, params={"region": "x'; DROP TABLE orders; --"})

    assert whole["order_id"].tolist() == [1, 3, 6, 9]
    assert [len(frame) for frame in frames] == [3, 1]
    pd.testing.assert_frame_equal(joined(frames), whole)
    assert len(hostile) == 0
    with sqlite3.connect(lite) as database:
        assert database.execute("SELECT count(*) FROM orders").fetchone() == (10,)
    database.close()


def test_sqlite_is_opened_read_only(lite, settings):
    # sqlite refuses a data-modifying WITH; read-only mode is proven by a file that does not exist being refused
    # rather than created.
    settings.AGENTS_DATA_DATABASES = {"lite": f"sqlite://{lite.parent / 'absent.db'}"}

    with pytest.raises(DataSourceError, match="'lite' cannot be opened"):
        source_frame({"kind": "database", "connection": "lite", "query": "SELECT 1"})

    assert not (lite.parent / "absent.db").exists()


# --- JSON API -------------------------------------------------------------------------------------------------

RECORDS = [{"id": n, "customer": {"name": f"c{n}", "tier": "gold" if n % 2 else "basic"}} for n in range(1, 8)]


class ApiHandler(BaseHTTPRequestHandler):
    """A small JSON API; every request is recorded on the server for the test to inspect."""

    def _answer(self, status: int, body, content_type: str = "application/json", headers: dict | None = None):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, body=None):
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        seen = self.server.seen
        seen.append({"method": self.command, "path": parts.path, "query": query, "headers": dict(self.headers),
                     "body": body})
        calls = sum(1 for request in seen if request["path"] == parts.path)
        port = self.server.server_address[1]
        if parts.path == "/orders":
            return self._answer(200, {"data": {"items": RECORDS[:3]}, "meta": {"count": 3}})
        if parts.path == "/list":
            return self._answer(200, RECORDS[:2])
        if parts.path == "/paged":
            page, size = int(query["page"]), int(query.get("per_page", 3))
            return self._answer(200, {"items": RECORDS[(page - 1) * size:page * size]})
        if parts.path == "/cursor":
            start = int(query.get("cursor", 0))
            following = start + 3 if start + 3 < len(RECORDS) else None
            return self._answer(200, {"items": RECORDS[start:start + 3], "meta": {"next": following}})
        if parts.path == "/search":
            return self._answer(200, {"items": [{"query": body["q"], "limit": body["limit"]}]})
        if parts.path == "/flaky":
            if calls <= 2:
                return self._answer(429 if calls == 1 else 503, {"error": "busy"})
            return self._answer(200, {"items": RECORDS[:1]})
        if parts.path == "/down":
            return self._answer(503, {"error": "down"})
        if parts.path == "/html":
            return self._answer(200, "<html>maintenance</html>", content_type="text/html")
        if parts.path == "/moved":
            return self._answer(302, "", headers={"Location": f"http://127.0.0.1:{port}/orders?token=abc"})
        if parts.path == "/whoami":
            return self._answer(200, [{"key": self.headers.get("X-Api-Key")}])
        if parts.path == "/not-a-list":
            return self._answer(200, {"data": {"items": {"id": 1}}})
        return self._answer(404, {"error": "no such page"})

    def do_GET(self):
        self._route()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        self._route(json.loads(self.rfile.read(length) or b"null"))

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def api_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ApiHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(api_server, settings):
    """The API's base URL, with 127.0.0.1 allowed and the request log emptied."""
    settings.AGENTS_DATA_API_ALLOWED_HOSTS = ["127.0.0.1"]
    api_server.seen.clear()
    api_server.base = f"http://127.0.0.1:{api_server.server_address[1]}"
    return api_server


def api_source(api, path: str, **options) -> dict:
    return {"kind": "api", "url": api.base + path, "backoff_s": 0, **options}


def test_records_are_found_at_their_path_and_nested_objects_flattened(api):
    frame = source_frame(api_source(api, "/orders", records="data.items"))

    pd.testing.assert_frame_equal(frame, pd.json_normalize(RECORDS[:3]))
    assert list(frame.columns) == ["id", "customer.name", "customer.tier"]


def test_an_empty_records_path_takes_the_response_itself(api):
    frame = source_frame(api_source(api, "/list"), columns=["id"])

    assert frame.to_dict("list") == {"id": [1, 2]}


def test_a_records_path_step_that_only_looks_like_a_number_is_not_found_by_name(api):
    # "²".isdigit() is true, and int("²") a ValueError
    with pytest.raises(DataSourceError, match="the response has no records at '²' \\(stopped at '²'\\)"):
        source_frame(api_source(api, "/list", records="²"))


def test_page_pagination_stops_at_a_short_page_and_sends_the_page_size(api):
    spec = api_source(api, "/paged", records="items",
                      pagination={"type": "page", "param": "page", "size_param": "per_page", "size": 3})

    frame = source_frame(spec)

    assert frame["id"].tolist() == list(range(1, 8))
    assert [(r["query"]["page"], r["query"]["per_page"]) for r in api.seen] == [("1", "3"), ("2", "3"), ("3", "3")]


def test_page_pagination_without_a_size_stops_at_an_empty_page(api):
    spec = api_source(api, "/paged", records="items", pagination={"type": "page", "start": 1})

    frames = chunks(spec, 2)

    assert [len(frame) for frame in frames] == [2, 2, 2, 1]
    assert joined(frames)["id"].tolist() == list(range(1, 8))
    assert [r["query"]["page"] for r in api.seen] == ["1", "2", "3", "4"]


def test_more_pages_than_max_pages_is_an_error_not_a_silent_cut(api):
    spec = api_source(api, "/paged", records="items", pagination={"type": "page", "max_pages": 2})

    with pytest.raises(DataSourceError, match="max_pages=2"):
        source_frame(spec)


def test_cursor_pagination_follows_the_cursor_until_it_is_null(api):
    spec = api_source(api, "/cursor", records="items",
                      pagination={"type": "cursor", "param": "cursor", "cursor_path": "meta.next"})

    frame = source_frame(spec)

    assert frame["id"].tolist() == list(range(1, 8))
    assert [r["query"].get("cursor") for r in api.seen] == [None, "3", "6"]


def test_post_sends_its_json_body(api):
    spec = api_source(api, "/search", method="POST", body={"q": "gold", "limit": 5}, records="items")

    frame = source_frame(spec)

    assert frame.to_dict("records") == [{"query": "gold", "limit": 5}]
    assert api.seen[0]["method"] == "POST"


def test_transient_failures_are_retried_until_the_api_answers(api):
    frame = source_frame(api_source(api, "/flaky", records="items", retries=3))

    assert frame["id"].tolist() == [1]
    assert len(api.seen) == 3


def test_a_client_error_is_not_retried(api):
    with pytest.raises(DataSourceError, match="answered 404"):
        source_frame(api_source(api, "/nowhere", retries=3))

    assert len(api.seen) == 1


def test_exhausted_retries_name_the_url_without_its_query(api):
    with pytest.raises(DataSourceError) as caught:
        source_frame(api_source(api, "/down?api_key=topsecret", retries=2))

    assert len(api.seen) == 3
    assert f"GET {api.base}/down: failed after 3 attempts: answered 503" in str(caught.value)
    assert "topsecret" not in str(caught.value)


def test_a_connection_failure_is_retried_and_then_reported(api):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(DataSourceError, match="failed after 2 attempts: connection failed"):
        source_frame({"kind": "api", "url": f"http://127.0.0.1:{port}/x", "retries": 1, "backoff_s": 0})


@pytest.mark.parametrize(("path", "reason"), [
    ("/html", "not JSON"),
    ("/not-a-list", "are a mapping, not a list"),
    ("/list", "no records at 'data.items'"),
])
def test_a_response_in_the_wrong_shape_names_the_url_and_the_reason(api, path, reason):
    with pytest.raises(DataSourceError) as caught:
        source_frame(api_source(api, path, records="data.items"))

    assert f"{api.base}{path}" in str(caught.value)
    assert reason in str(caught.value)


def test_a_host_not_allowed_is_refused_before_any_request(api):
    spec = {"kind": "api", "url": f"http://localhost:{api.server_address[1]}/orders"}

    with pytest.raises(DataSourceError, match="'localhost' is not in AGENTS_DATA_API_ALLOWED_HOSTS"):
        source_frame(spec)

    assert api.seen == []


def test_a_redirect_is_not_followed(api):
    with pytest.raises(DataSourceError) as caught:
        source_frame(api_source(api, "/moved"))

    assert f"redirect to '{api.base}/orders'" in str(caught.value)
    assert [r["path"] for r in api.seen] == ["/moved"]


def test_a_header_value_comes_from_the_environment(api, monkeypatch):
    monkeypatch.setenv("SHOP_API_KEY", "k-123")
    spec = api_source(api, "/whoami", headers={"X-Api-Key": {"env": "SHOP_API_KEY"}})

    frame = source_frame(spec)

    assert frame["key"].tolist() == ["k-123"]
    assert "k-123" not in json.dumps(source_describe(spec))


def test_a_header_from_a_missing_variable_is_refused_before_any_request(api, monkeypatch):
    monkeypatch.delenv("SHOP_API_KEY", raising=False)
    spec = api_source(api, "/whoami", headers={"X-Api-Key": {"env": "SHOP_API_KEY"}})

    with pytest.raises(DataSourceError, match="'SHOP_API_KEY', which is not set"):
        source_frame(spec)

    assert api.seen == []


# --- datasets -------------------------------------------------------------------------------------------------


@pytest.fixture
def published(root, db):
    """Dataset orders_clean published twice: #1 the first five orders, #2 all ten."""
    from agents.models import Dataset

    rows = []
    for number, frame in ((1, ORDERS.iloc[:5]), (2, ORDERS)):
        path = root / "datasets" / "orders_clean" / f"{number}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
        rows.append(Dataset.objects.create(
            name="orders_clean", number=number, path=f"datasets/orders_clean/{number}.parquet",
            row_count=len(frame), checksum=hashlib.sha256(path.read_bytes()).hexdigest(),
        ))
    return rows


def test_a_dataset_is_read_at_its_latest_number_unless_one_is_given(published):
    latest = source_frame({"kind": "dataset", "dataset": "orders_clean"})
    first = source_frame({"kind": "dataset", "dataset": "orders_clean", "number": 1}, columns=["order_id"])

    pd.testing.assert_frame_equal(latest, ORDERS)
    assert first["order_id"].tolist() == [1, 2, 3, 4, 5]
    assert list(first.columns) == ["order_id"]


def test_a_dataset_streams_in_chunks(published):
    frames = chunks({"kind": "dataset", "dataset": "orders_clean"}, 4, columns=["region", "amount"])

    assert [len(frame) for frame in frames] == [4, 4, 2]
    pd.testing.assert_frame_equal(joined(frames), ORDERS[["region", "amount"]])


def test_a_dataset_describes_the_number_and_checksum_it_resolves_to(published):
    described = source_describe({"kind": "dataset", "dataset": "orders_clean"})

    assert described == {"kind": "dataset", "dataset": "orders_clean", "number": 2,
                         "path": "datasets/orders_clean/2.parquet", "checksum": published[1].checksum}


def test_an_unknown_dataset_or_number_is_named(published):
    with pytest.raises(DataSourceError, match="no dataset named 'orders_raw'"):
        source_frame({"kind": "dataset", "dataset": "orders_raw"})
    with pytest.raises(DataSourceError, match="dataset 'orders_clean' has no number 5"):
        source_frame({"kind": "dataset", "dataset": "orders_clean", "number": 5})


def test_a_dataset_file_changed_after_publishing_is_refused(published, root):
    ORDERS.iloc[:3].to_parquet(root / "datasets" / "orders_clean" / "2.parquet", index=False)

    with pytest.raises(DataSourceError, match="'orders_clean' #2.*changed since it was published"):
        source_frame({"kind": "dataset", "dataset": "orders_clean"})
    pd.testing.assert_frame_equal(source_frame({"kind": "dataset", "dataset": "orders_clean", "number": 1}),
                                  ORDERS.iloc[:5])


CHANGED = "dataset 'orders_clean' #2: 'datasets/orders_clean/2.parquet' has changed since it was published"


def test_a_dataset_file_rewritten_after_the_read_is_asked_for_is_refused(published, root):
    # given a read of dataset #2 asked for (as a run asks for its source before reading it)
    frames = source_read({"kind": "dataset", "dataset": "orders_clean"}, chunk_rows=4)

    # when its file is rewritten with other rows before they are read
    ORDERS.iloc[:3].to_parquet(root / "datasets" / "orders_clean" / "2.parquet", index=False)

    # then the rows read are not taken for the published ones
    with pytest.raises(DataSourceError) as caught:
        list(frames)
    assert str(caught.value).startswith(CHANGED)


def test_a_dataset_file_rewritten_while_it_is_read_is_refused(published, root):
    # given a read of dataset #2 that has given its first chunk
    frames = source_read({"kind": "dataset", "dataset": "orders_clean"}, chunk_rows=4)
    assert next(frames)["order_id"].tolist() == [1, 2, 3, 4]

    # when its file is rewritten in place with other rows
    with open(root / "datasets" / "orders_clean" / "2.parquet", "r+b") as handle:
        handle.write(b"\0" * 64)

    # then the read is refused, naming the dataset: what was parsed cannot be told to be the published bytes
    with pytest.raises(DataSourceError) as caught:
        list(frames)
    assert str(caught.value).startswith(CHANGED)


def test_a_dataset_file_replaced_by_another_while_it_is_read_gives_the_published_rows(published, root):
    # given a read of dataset #2 that has given its first chunk
    frames = source_read({"kind": "dataset", "dataset": "orders_clean"}, chunk_rows=4)
    first = next(frames)

    # when another file is moved in its place
    other = root / "datasets" / "orders_clean" / "other.parquet"
    ORDERS.iloc[:3].to_parquet(other, index=False)
    other.replace(root / "datasets" / "orders_clean" / "2.parquet")

    # then the rest of the read is of the file opened, the one whose checksum is verified: the published rows
    pd.testing.assert_frame_equal(joined([first, *frames]), ORDERS)


# --- validation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "culprit"), [
    ("in/orders.csv", "orders: a source must be a mapping"),
    ({"kind": "ftp", "path": "x"}, "orders.kind: 'ftp' is not a source kind"),
    ({"kind": "file", "path": "a.csv", "colour": "red"}, "orders: unknown key 'colour' for a file source"),
    ({"kind": "file"}, "orders.path: is required"),
    ({"kind": "file", "path": "/etc/passwd.csv"}, "orders.path: '/etc/passwd.csv' is refused: absolute"),
    ({"kind": "file", "path": "../x.csv"}, "orders.path: '../x.csv' is refused: '..'"),
    ({"kind": "file", "path": "notes.txt"}, "orders.format: cannot tell the format from 'notes.txt'"),
    ({"kind": "file", "path": "a.csv", "encoding": "klingon"}, "orders.encoding: 'klingon'"),
    ({"kind": "file", "path": "a.parquet", "delimiter": ";"}, "orders.delimiter: applies to csv files only"),
    ({"kind": "database", "connection": "pg"}, "orders.query: is required"),
    ({"kind": "database", "query": "SELECT 1"}, "orders.connection: is required"),
    ({"kind": "database", "connection": "pg", "query": "DELETE FROM t"}, "orders.query: must start with SELECT"),
    ({"kind": "database", "connection": "pg", "query": "/* x */ UPDATE t SET a = 1"}, "starts with 'UPDATE'"),
    ({"kind": "database", "connection": "pg", "query": "SELECT 1; DROP TABLE t"}, "orders.query: must be one"),
    ({"kind": "database", "connection": "pg", "query": "SELECT 1", "params": {"a-b": 1}},
     "orders.params: 'a-b' is not a parameter name"),
    ({"kind": "api"}, "orders.url: is required"),
    ({"kind": "api", "url": "file:///etc/passwd"}, "orders.url: 'file:///etc/passwd' is not an http"),
    ({"kind": "api", "url": "http://h/x", "method": "DELETE"}, "orders.method: 'DELETE'"),
    ({"kind": "api", "url": "http://h/x", "body": {"a": 1}}, "orders.body: is sent with POST only"),
    ({"kind": "api", "url": "http://h/x", "retries": -1}, "orders.retries: must be from 0 to 10"),
    ({"kind": "api", "url": "http://h/x", "headers": {"Authorization": {"value": "x"}}},
     "orders.headers.Authorization: must be text or {env: VARIABLE}"),
    ({"kind": "api", "url": "http://h/x", "pagination": {"type": "offset"}},
     "orders.pagination.type: 'offset' is not a pagination type"),
    ({"kind": "api", "url": "http://h/x", "pagination": {"type": "cursor"}}, "orders.pagination.cursor_path: is"),
    ({"kind": "api", "url": "http://h/x", "pagination": {"type": "page", "size_param": "n"}},
     "orders.pagination.size: is required with size_param"),
    ({"kind": "dataset"}, "orders.dataset: is required"),
    ({"kind": "dataset", "dataset": "orders_clean", "number": 0}, "orders.number: must be at least 1"),
])
def test_a_bad_source_is_refused_naming_the_culprit(raw, culprit):
    _, errors = source_validate(raw, where="orders")

    assert any(culprit in error for error in errors), errors


def test_a_good_source_gets_its_defaults(settings):
    settings.AGENTS_DATA_API_ALLOWED_HOSTS = ["api.example.com"]
    file_spec, file_errors = source_validate({"kind": "file", "path": "in/events.ndjson"}, where="s")
    api_spec, api_errors = source_validate({"kind": "api", "url": "https://api.example.com/v1/orders"}, where="s")
    query_spec, query_errors = source_validate(
        {"kind": "database", "connection": "pg", "query": "-- daily\nWITH x AS (SELECT ';' AS s) SELECT * FROM x;"},
        where="s",
    )

    assert (file_errors, api_errors, query_errors) == ([], [], [])
    # a jsonl source holds no csv options: validated again, it is still valid
    assert file_spec == {"kind": "file", "path": "in/events.ndjson", "format": "jsonl", "encoding": "utf-8",
                         "parse_dates": []}
    assert source_validate(file_spec, where="s") == (file_spec, [])
    assert api_spec == {"kind": "api", "url": "https://api.example.com/v1/orders", "method": "GET", "params": {},
                        "body": None, "headers": {}, "timeout_s": 10, "retries": 3, "backoff_s": 0.5, "records": "",
                        "pagination": {"type": "none"}}
    assert query_spec["params"] == {}


def test_reading_an_invalid_source_raises_with_the_errors(root):
    with pytest.raises(DataSourceError, match="unknown key 'colour'"):
        source_frame({"kind": "file", "path": "in/orders.csv", "colour": "red"})


def test_describe_names_what_was_read_without_secrets(settings):
    settings.AGENTS_DATA_API_ALLOWED_HOSTS = ["api.example.com"]
    assert source_describe({"kind": "file", "path": "in/orders.csv"}) == {
        "kind": "file", "path": "in/orders.csv", "format": "csv"}
    assert source_describe({"kind": "api", "url": "https://api.example.com:8443/v1/orders?key=s3cret",
                            "headers": {"Authorization": "Bearer t0ken"}}) == {
        "kind": "api", "url": "https://api.example.com:8443/v1/orders", "method": "GET"}
    # credentials before the host are refused outright: the URL could be read two ways
    assert source_validate({"kind": "api", "url": "https://user:pw@api.example.com/v1"}, where="s")[1] == [
        "s.url: https://api.example.com/v1: refused: the URL carries credentials before its host; send them in a "
        "header from a secret"]
    assert source_describe({"kind": "database", "connection": "pg", "query": "SELECT 1"}) == {
        "kind": "database", "connection": "pg", "query": "SELECT 1", "params": {}}
