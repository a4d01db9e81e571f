"""Dataset analysis without services: profiles match pandas' own statistics, planted anomalies are found, a shifted
column trips drift and a stable one does not."""
import numpy as np
import pandas as pd
import pytest

from agents.data.analysis import (
    SKETCH_POINTS,
    DriftCounter,
    Profiler,
    anomalies_flag,
    drift_compare,
    drift_reference,
    profile_frames,
)
from agents.data.transforms import transform_apply, transform_validate
from agents.exceptions import DataError

ROWS = 120_000
#: Quantiles are read off merged per-chunk distribution functions: a quantile's rank is off by at most
#: 1/SKETCH_POINTS of the rows, so its value lies between pandas' quantiles at share +- that much.
RANK_TOLERANCE = 1 / SKETCH_POINTS


def generated(rows: int = ROWS, *, seed: int = 3, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "amount": rng.gamma(2.0, 40.0, rows) + shift,
        "score": rng.normal(50, 10, rows),
        "quantity": rng.integers(1, 20, rows),
        "region": np.asarray(["north", "south", "east", "west"])[rng.integers(0, 4, rows)],
        "ordered_at": pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 86_400 * 90, rows), unit="s"),
    })
    frame.loc[frame.index % 40 == 0, "score"] = np.nan
    return frame


def chunks(frame: pd.DataFrame, size: int):
    return (frame.iloc[start:start + size] for start in range(0, len(frame), size))


def column(profile: dict, name: str) -> dict:
    return next(item for item in profile["columns"] if item["name"] == name)


@pytest.mark.parametrize("name", ["amount", "score", "quantity"])
def test_a_chunked_profile_matches_pandas_statistics(name):
    frame = generated()

    profile = profile_frames(chunks(frame, 7_000))

    series = frame[name]
    stats = column(profile, name)
    assert profile["rows"] == ROWS
    assert (stats["count"], stats["nulls"]) == (series.count(), series.isna().sum())
    assert (stats["min"], stats["max"]) == (series.min(), series.max())
    assert stats["mean"] == pytest.approx(series.mean(), rel=1e-12)
    assert stats["std"] == pytest.approx(series.std(), rel=1e-9)
    for label, value in stats["quantiles"].items():
        share = int(label.rstrip("%")) / 100
        low, high = series.quantile([max(share - RANK_TOLERANCE, 0), min(share + RANK_TOLERANCE, 1)])
        assert low <= value <= high, (label, value, low, high)
    assert sum(stats["histogram"]["counts"]) == series.count()
    assert len(stats["histogram"]["counts"]) == 20


def test_counts_of_distinct_and_top_values_are_exact_for_a_few_values():
    frame = generated()

    profile = profile_frames(chunks(frame, 9_999))

    region = column(profile, "region")
    expected = frame["region"].value_counts()
    assert region["kind"] == "category" and "mean" not in region
    assert (region["distinct"], region["distinct_exact"]) == (4, True)
    assert {item["value"]: item["count"] for item in region["top"]} == expected.to_dict()
    quantity = column(profile, "quantity")
    assert (quantity["distinct"], quantity["distinct_exact"]) == (19, True)
    assert quantity["top"][0] == {"value": int(frame["quantity"].value_counts().idxmax()),
                                  "count": int(frame["quantity"].value_counts().max())}


def test_many_distinct_values_are_estimated_within_a_few_percent():
    stats = column(profile_frames(chunks(generated(), 10_000)), "amount")

    assert stats["distinct_exact"] is False
    assert stats["distinct"] == pytest.approx(generated()["amount"].nunique(), rel=0.05)


def test_an_estimate_of_distinct_values_is_never_more_than_the_values():
    # 5,000 ids, each once: the sketch's estimate came out above 5,000
    ids = pd.DataFrame({"id": np.arange(5_000)})

    stats = column(profile_frames(chunks(ids, 700)), "id")

    assert stats["distinct_exact"] is False
    assert stats["distinct"] <= stats["count"] == 5_000
    assert stats["distinct"] == pytest.approx(5_000, rel=0.05)


def test_datetimes_are_profiled_as_timestamps():
    frame = generated()

    stats = column(profile_frames(chunks(frame, 50_000)), "ordered_at")

    assert stats["kind"] == "datetime"
    assert (stats["min"], stats["max"]) == (frame["ordered_at"].min().isoformat(), frame["ordered_at"].max().isoformat())


def test_profilers_of_separate_parts_merge_into_the_whole():
    frame = generated()
    first, second = Profiler(), Profiler()
    first.update(frame.iloc[:50_000])
    second.update(frame.iloc[50_000:])

    first.merge(second)

    merged, whole = first.finish(), profile_frames([frame])
    for name in ("amount", "score"):
        for key in ("count", "nulls", "min", "max"):
            assert column(merged, name)[key] == column(whole, name)[key]
        assert column(merged, name)["mean"] == pytest.approx(column(whole, name)["mean"], rel=1e-12)
        assert column(merged, name)["std"] == pytest.approx(column(whole, name)["std"], rel=1e-9)


def assert_quantiles_within_rank(stats: dict, series: pd.Series) -> None:
    for label, value in stats["quantiles"].items():
        share = int(label.rstrip("%")) / 100
        low, high = series.quantile([max(share - RANK_TOLERANCE, 0), min(share + RANK_TOLERANCE, 1)])
        assert low <= value <= high, (label, value, low, high)


def test_ids_already_in_order_profile_as_shuffled_ones_do():
    ids = pd.DataFrame({"order_id": np.arange(1, ROWS + 1)})
    shuffled = ids.sample(frac=1.0, random_state=5).reset_index(drop=True)

    in_order = column(profile_frames(chunks(ids, 7_000)), "order_id")
    mixed = column(profile_frames(chunks(shuffled, 7_000)), "order_id")

    for stats in (in_order, mixed):
        assert (stats["count"], stats["min"], stats["max"]) == (ROWS, 1, ROWS)
        assert stats["mean"] == pytest.approx(ids["order_id"].mean(), rel=1e-12)
        assert stats["std"] == pytest.approx(ids["order_id"].std(), rel=1e-9)
        assert_quantiles_within_rank(stats, ids["order_id"])
        assert sum(stats["histogram"]["counts"]) == ROWS
        assert stats["distinct_exact"] is False
        assert stats["distinct"] == pytest.approx(ROWS, rel=0.05)
    # the distinct sketch keeps the smallest hashes of the same set of values, whatever their order
    assert in_order["distinct"] == mixed["distinct"]


def test_top_values_add_up_exactly_over_many_chunks():
    frame = generated()

    profile = profile_frames(chunks(frame, 2_000))  # 60 chunks, folded every TOP_PARTS

    quantity = column(profile, "quantity")
    expected = frame["quantity"].value_counts()
    assert {item["value"]: item["count"] for item in quantity["top"]} == expected.head(10).to_dict()
    region = column(profile, "region")
    assert {item["value"]: item["count"] for item in region["top"]} == frame["region"].value_counts().to_dict()


def test_whole_numbers_read_as_floats_in_one_chunk_count_as_the_same_values():
    as_integers = pd.DataFrame({"quantity": np.arange(1, 101)})
    as_floats = pd.DataFrame({"quantity": np.append(np.arange(1, 101, dtype="float64"), np.nan)})

    stats = column(profile_frames([as_integers, as_floats]), "quantity")

    assert (stats["distinct"], stats["distinct_exact"]) == (100, True)
    assert (stats["count"], stats["nulls"]) == (200, 1)
    assert stats["top"][0]["count"] == 2


@pytest.mark.parametrize("dtype", ["str", "string[pyarrow]", object])
def test_text_with_missing_values_is_counted_alike_in_every_storage(dtype):
    values = pd.Series(["north", None, "south", "north", "east", None] * 1_000, dtype=dtype)

    stats = column(profile_frames(chunks(pd.DataFrame({"region": values}), 1_000)), "region")

    assert (stats["count"], stats["nulls"]) == (4_000, 2_000)
    assert (stats["distinct"], stats["distinct_exact"]) == (3, True)
    assert stats["top"] == [{"value": "north", "count": 2_000}, {"value": "east", "count": 1_000},
                            {"value": "south", "count": 1_000}]


@pytest.mark.parametrize("zone", [None, "UTC", "Europe/Berlin"])
def test_datetimes_in_any_unit_and_zone_keep_missing_values_apart(zone):
    frame = generated()
    stamps = frame["ordered_at"].astype("datetime64[s]")
    stamps = stamps.dt.tz_localize("UTC").dt.tz_convert(zone) if zone else stamps
    stamps[frame.index % 50 == 0] = pd.NaT

    stats = column(profile_frames(chunks(pd.DataFrame({"at": stamps}), 9_000)), "at")

    instants = stamps.dt.tz_convert("UTC") if zone else stamps  # a zone's instants are shown in UTC, with +00:00
    assert (stats["count"], stats["nulls"]) == (instants.count(), instants.isna().sum())
    assert (stats["min"], stats["max"]) == (instants.min().isoformat(), instants.max().isoformat())
    nanoseconds = instants.dropna().dt.tz_localize(None) if zone else instants.dropna()
    nanoseconds = nanoseconds.astype("datetime64[ns]").astype("int64")
    for label, value in stats["quantiles"].items():
        share = int(label.rstrip("%")) / 100
        low, high = nanoseconds.quantile([max(share - RANK_TOLERANCE, 0), min(share + RANK_TOLERANCE, 1)])
        assert low <= pd.Timestamp(value).value <= high, label


UNMEASURED_DUE = ("column 'due' holds dates outside the years 1677 to 2262, which a profile cannot measure in "
                  "nanoseconds")


@pytest.mark.parametrize("zone", [None, "Europe/Berlin"])
def test_a_column_with_dates_beyond_nanoseconds_is_marked_unmeasured_and_the_rest_is_profiled(zone):
    # given a sentinel date ("valid until 9999") in the second chunk of a column, after chunks that are in range
    due = pd.Series(["2024-01-01", None, "2024-02-01", "9999-12-31", None, "2024-03-01"], dtype="datetime64[s]")
    frame = pd.DataFrame({"id": range(6), "due": due.dt.tz_localize(zone) if zone else due})

    # when the table is profiled in chunks, and as two profilers merged
    profile = profile_frames(chunks(frame, 3))
    first, second = Profiler(), Profiler()
    first.update(frame.iloc[:3])
    second.update(frame.iloc[3:])
    first.merge(second)
    merged = first.finish()

    # then the column says it could not be measured, and why, keeping its count and nulls; the others are profiled
    for result in (profile, merged):
        assert column(result, "due") == {
            "name": "due", "kind": "datetime", "count": 4, "nulls": 2, "null_percent": round(100 * 2 / 6, 4),
            "distinct": None, "distinct_exact": False, "top": [], "unmeasured": UNMEASURED_DUE}
        assert (column(result, "id")["min"], column(result, "id")["max"], result["rows"]) == (0.0, 5.0, 6)


@pytest.mark.parametrize("method", ["robust_z", "iqr", "isolation_forest"])
def test_planted_anomalies_are_flagged(method):
    frame = generated(5_000)
    planted = [17, 1_234, 4_321]
    frame.loc[planted, "amount"] = [9_000.0, 7_000.0, 12_000.0]
    frame.loc[planted, "score"] = [400.0, -300.0, 500.0]

    result = anomalies_flag(frame, columns=["amount", "score"], method=method, contamination=0.001)

    assert result.loc[planted, "is_anomaly"].all()
    flagged = result[result["is_anomaly"]]
    assert len(flagged) < 0.05 * len(frame)
    assert set(result.nlargest(3, "anomaly_score").index) == set(planted)


def test_isolation_forest_scores_are_seeded():
    frame = generated(3_000)

    first = anomalies_flag(frame, columns=["amount", "score"], random_state=11)
    second = anomalies_flag(frame, columns=["amount", "score"], random_state=11)

    assert first["anomaly_score"].tolist() == second["anomaly_score"].tolist()


def test_anomalies_is_a_registered_transform_that_refuses_bad_params_by_name():
    spec, errors = transform_validate({"type": "custom", "function": "anomalies",
                                       "params": {"columns": ["amount"], "method": "robust_z"}}, where="t",
                                      source_validate=lambda raw, where: (raw, []))
    assert errors == []
    assert transform_apply(generated(500), spec, where="t")["is_anomaly"].dtype == bool

    with pytest.raises(DataError, match="column 'region' is not numeric"):
        anomalies_flag(generated(500), columns=["region"])
    with pytest.raises(DataError, match="method 'zscore' is not one of"):
        anomalies_flag(generated(500), columns=["amount"], method="zscore")


def drift_of(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> dict:
    counter = DriftCounter(drift_reference(reference, columns))
    for chunk in chunks(current, 8_000):
        counter.update(chunk)
    return {entry["column"]: entry for entry in drift_compare(counter.reference, counter, psi_max=0.2,
                                                              p_value_min=0.01)}


def test_a_shifted_column_drifts_and_a_stable_one_does_not():
    reference, current = generated(seed=1), generated(seed=2, shift=40.0)

    report = drift_of(reference, current, ["amount", "score", "region"])

    assert report["amount"]["drifted"] and report["amount"]["psi"] > 0.2
    assert not report["score"]["drifted"] and report["score"]["psi"] < 0.01
    assert report["region"]["test"] == "chi_square" and not report["region"]["drifted"]


def test_a_changed_mix_of_categories_drifts():
    reference = generated(seed=1)
    current = generated(seed=2)
    current.loc[current.index % 3 == 0, "region"] = "north"

    report = drift_of(reference, current, ["region"])

    assert report["region"]["drifted"] and report["region"]["p_value"] < 1e-6
