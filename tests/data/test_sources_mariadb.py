"""MariaDB/MySQL database sources (a database of the test's own on the local MariaDB, dropped after) and JSON
array files in each of pandas' layouts (orient)."""
import json
import uuid
from datetime import date, datetime

import pandas as pd
import pymysql
import pytest
from django.conf import settings as django_settings

from agents.data import services
from agents.data.sources import source_frame, source_read, source_validate
from agents.exceptions import DataSourceError
from agents.models import DataRun, Dataset
from tests.conftest import wait_for
from tests.data.conftest import load

MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
DATABASE = f"agentsite_test_{uuid.uuid4().hex[:12]}"
CONNECTION = "maria_tests"
ORDERS = pd.DataFrame({
    "order_id": range(1, 11),
    "region": ["north", "south", "north", "east", "south", "west", "north", "east", "west", "south"],
    "amount": [10.5, 20.0, 7.25, 99.0, 3.5, 42.0, 18.0, 5.0, 61.5, 12.0],
})

# The data agent's worker processes fork once per test session and keep the settings they started with: the
# connection is named at import (collection comes before any worker starts); the database exists only while
# this module's tests run.
django_settings.AGENTS_DATA_DATABASES[CONNECTION] = f"mariadb://root@127.0.0.1:3306/{DATABASE}"


def maria(sql: str, params=None, *, database: str | None = DATABASE):
    connection = pymysql.connect(**MARIADB, database=database, autocommit=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def mariadb():
    """A database of orders on the local MariaDB, dropped after the module."""
    maria(f"CREATE DATABASE {DATABASE}", database=None)
    maria("CREATE TABLE orders (order_id INT PRIMARY KEY, region VARCHAR(20), amount DOUBLE)")
    connection = pymysql.connect(**MARIADB, database=DATABASE, autocommit=True)
    with connection.cursor() as cursor:
        cursor.executemany("INSERT INTO orders VALUES (%s, %s, %s)", ORDERS.values.tolist())
    connection.close()
    yield CONNECTION
    maria(f"DROP DATABASE IF EXISTS {DATABASE}", database=None)


def maria_source(query: str, **params) -> dict:
    return {"kind": "database", "connection": CONNECTION, "query": query, "params": params}


def test_a_query_reads_rows_with_its_parameters_bound_by_name(mariadb):
    frame = source_frame(maria_source("SELECT order_id, amount FROM orders WHERE region = :region AND amount > :low "
                                      "ORDER BY order_id", region="north", low=8))

    assert frame.to_dict("list") == {"order_id": [1, 7], "amount": [10.5, 18.0]}


def test_a_parameter_value_is_data_never_sql(mariadb):
    frame = source_frame(maria_source("SELECT order_id FROM orders WHERE region = :region",
                                      region="x' OR '1'='1"))

    assert frame.empty and maria("SELECT count(*) FROM orders") == ((10,),)


def test_rows_stream_in_chunks(mariadb):
    frames = list(source_read(maria_source("SELECT * FROM orders ORDER BY order_id"), chunk_rows=4))

    assert [len(frame) for frame in frames] == [4, 4, 2]
    assert pd.concat(frames)["order_id"].tolist() == list(range(1, 11))


def test_a_write_is_refused_before_and_by_the_server(mariadb):
    for query, reason in [
        ("DELETE FROM orders", "must start with SELECT or WITH"),
        ("SELECT 1; DROP TABLE orders", "must be one statement"),
        ("SELECT * FROM orders INTO OUTFILE '/tmp/orders.csv'", "INTO OUTFILE writes a file on the server"),
        ("SELECT 1 /*!, LOAD_FILE('/etc/passwd') */", "calls load_file()"),
        ("SELECT 'it\\'s', sleep(5) FROM orders", "calls sleep()"),
    ]:
        spec, errors = source_validate(maria_source(query), where="orders")
        assert any(reason in error for error in errors), (query, errors)

    # Past the checks, the transaction itself is read-only: a locking read is a write to MariaDB.
    with pytest.raises(DataSourceError) as caught:
        source_frame(maria_source("SELECT * FROM orders FOR UPDATE"))

    assert str(caught.value).startswith(f"database connection {CONNECTION!r} is read-only: sources may not write")
    assert maria("SELECT count(*) FROM orders") == ((10,),)


def test_a_slow_query_is_cancelled_at_the_statement_timeout(mariadb, settings):
    settings.AGENTS_DATA_STATEMENT_TIMEOUT_S = 0.3
    slow = "SELECT sum(a.seq * b.seq) AS total FROM seq_1_to_100000 a, seq_1_to_100000 b"

    with pytest.raises(DataSourceError) as caught:
        source_frame(maria_source(slow))

    assert str(caught.value) == (f"the query on database connection {CONNECTION!r} was cancelled after 0.3 s "
                                 "(AGENTS_DATA_STATEMENT_TIMEOUT_S)")


def test_a_refused_login_names_the_connection_but_never_the_password(mariadb, settings):
    settings.AGENTS_DATA_DATABASES = {"warehouse": f"mysql://root:Wr0ng-s3cret@127.0.0.1:3306/{DATABASE}"}

    with pytest.raises(DataSourceError) as caught:
        source_frame({"kind": "database", "connection": "warehouse", "query": "SELECT 1"})

    assert str(caught.value).startswith("database connection 'warehouse' cannot be reached: Access denied")
    assert "Wr0ng-s3cret" not in str(caught.value)


@pytest.mark.django_db(transaction=True)
def test_a_mariadb_table_feeds_a_pipeline_run_by_a_data_agent(worker, mariadb, shared_folder):
    spec = {
        "name": f"{shared_folder}-maria",
        "params": {"region": "north"},
        "source": maria_source("SELECT order_id, region, amount FROM orders WHERE region <> :region"),
        "transforms": [{"type": "aggregate", "group_by": ["region"],
                        "aggregations": {"revenue": {"column": "amount", "function": "sum"}}}],
        "quality_checks": [{"type": "row_count", "min": 3, "max": 3}],
        "output": {"dataset": f"{shared_folder}_maria"},
        "chunk_rows": 2,
    }
    run = services.data_run_enqueue(version=load(spec), params={"region": "east"})
    wait_for(lambda: DataRun.objects.get(pk=run.pk).status in ("succeeded", "failed"), timeout_s=60,
             what="the data run to finish")

    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.worker not in ("", "inline") and run.chunks == 4
    output = pd.read_parquet(django_settings.AGENTS_DATA_ROOT / Dataset.objects.get(run=run).path)
    expected = ORDERS[ORDERS.region != "east"].groupby("region").amount.sum()
    assert output.set_index("region")["revenue"].to_dict() == pytest.approx(expected.to_dict())
    assert {"kind": "database", "connection": CONNECTION, "role": "source"}.items() <= run.dataset.inputs[0].items()


# --- zero dates ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zero_dates(mariadb):
    """Deliveries with MariaDB's zero date for "no date" (sql_mode without NO_ZERO_DATE, as MariaDB allows), and a
    table with a date whose day is zero (NO_ZERO_IN_DATE off), which no date type holds."""
    connection = pymysql.connect(**MARIADB, database=DATABASE, autocommit=True)
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION sql_mode = ''")
        cursor.execute("CREATE TABLE deliveries (id INT PRIMARY KEY, d DATE, dt DATETIME)")
        cursor.execute("INSERT INTO deliveries VALUES (1, '2024-01-01', '2024-01-01 10:30:00'), "
                       "(2, '0000-00-00', '0000-00-00 00:00:00')")
        cursor.execute("CREATE TABLE day_zero (id INT PRIMARY KEY, d DATE)")
        cursor.execute("INSERT INTO day_zero VALUES (1, '2024-01-01'), (2, '2024-01-00')")
    connection.close()
    yield mariadb


def dates_pipeline_run(shared_folder: str, table: str) -> DataRun:
    spec = {
        "name": f"{shared_folder}-{table}",
        "source": maria_source(f"SELECT id, d FROM {table} ORDER BY id"),
        "output": {"dataset": f"{shared_folder}_{table}"},
    }
    run = services.data_run_enqueue(version=load(spec))
    wait_for(lambda: DataRun.objects.get(pk=run.pk).status in ("succeeded", "failed"), timeout_s=60,
             what="the data run to finish")
    run.refresh_from_db()
    return run


def test_a_zero_date_is_read_as_missing(zero_dates):
    frame = source_frame(maria_source("SELECT d, dt FROM deliveries ORDER BY id"))

    assert frame["d"].tolist() == [date(2024, 1, 1), None]
    assert frame["dt"].iloc[0] == datetime(2024, 1, 1, 10, 30) and frame["dt"].isna().tolist() == [False, True]


@pytest.mark.django_db(transaction=True)
def test_a_pipeline_run_stores_a_zero_date_as_null(worker, zero_dates, shared_folder):
    run = dates_pipeline_run(shared_folder, "deliveries")

    assert run.status == "succeeded", run.error
    output = pd.read_parquet(django_settings.AGENTS_DATA_ROOT / Dataset.objects.get(run=run).path)
    assert output["d"].tolist() == [date(2024, 1, 1), None]


@pytest.mark.django_db(transaction=True)
def test_a_column_of_dates_and_text_fails_the_run_naming_the_column(worker, zero_dates, shared_folder):
    run = dates_pipeline_run(shared_folder, "day_zero")

    assert run.status == "failed"
    assert run.error == ("column 'd' cannot be stored: it holds date values (2024-01-01) and str values "
                         "('2024-01-00'); a column holds values of one type")


# --- JSON files ---------------------------------------------------------------------------------------------

LAYOUTS = {orient: ORDERS.to_json(orient=orient) for orient in ("records", "columns", "index", "split", "values")}


@pytest.mark.parametrize("orient", ["records", "columns", "index", "split"])
def test_a_json_file_is_read_in_each_layout(data_root, orient):
    (data_root / "orders.json").write_text(LAYOUTS[orient])
    spec = {"kind": "file", "path": "orders.json"} | ({"orient": orient} if orient != "records" else {})

    frames = list(source_read(spec, chunk_rows=4, columns=["order_id", "amount"]))

    assert [len(frame) for frame in frames] == [4, 4, 2]
    assert pd.concat(frames, ignore_index=True).to_dict("list") == ORDERS[["order_id", "amount"]].to_dict("list")


def test_a_json_array_of_arrays_has_numbered_columns(data_root):
    (data_root / "orders.json").write_text(LAYOUTS["values"])

    frame = source_frame({"kind": "file", "path": "orders.json", "orient": "values"})

    assert list(frame.columns) == ["0", "1", "2"] and frame["1"].tolist() == ORDERS["region"].tolist()


def test_a_json_file_in_another_layout_is_refused_saying_what_was_expected(data_root):
    (data_root / "orders.json").write_text(json.dumps({"rows": ORDERS.to_dict("records")}))

    with pytest.raises(DataSourceError) as caught:
        source_frame({"kind": "file", "path": "orders.json"})

    assert str(caught.value) == "file 'orders.json': orient records expects an array of objects, the file starts with '{'"


def test_json_options_are_validated():
    _, errors = source_validate({"kind": "file", "path": "a.json", "orient": "table"}, where="s")
    assert errors == ["s.orient: must be one of records, columns, index, split, values, got 'table'"]
    _, errors = source_validate({"kind": "file", "path": "a.csv", "orient": "split"}, where="s")
    assert errors == ["s.orient: applies to json files only"]
