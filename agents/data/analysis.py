"""Dataset analysis: column profiles, anomaly flags and drift between two versions of a dataset.

Pure: pandas, numpy and scikit-learn (loaded on first use), no Django. Modelled on ydata-profiling's column
statistics and Evidently's data drift report.

Profiles are built in one pass, chunk by chunk, from mergeable partial statistics (``ColumnProfiler.update`` per
chunk, ``merge`` of two profilers, ``finish`` for the JSON):

- count, nulls, min, max: exact; mean and standard deviation: exact, merged with Chan's parallel form of Welford's
  update (count, mean, sum of squared deviations), so no large sum loses precision.
- quantiles (5, 25, 50, 75, 95 %) and the 20-bin histogram: from a piecewise-linear distribution function kept per
  chunk (``SKETCH_POINTS`` + 1 order statistics of the chunk's sorted values), the chunks' functions added weighted
  by their row counts. A quantile's rank is off by at most 1/``SKETCH_POINTS`` of the rows (0.1 %); a chunk of at
  most ``SKETCH_POINTS`` rows is kept whole. Histogram counts are read off the same function, so a bin's count is
  off by at most that many rows too.
- distinct: exact below ``DISTINCT_SKETCH_SIZE`` distinct values, above it a K-minimum-values estimate over 64-bit
  hashes (relative standard error about 1/sqrt(K), 1.6 %); ``distinct_exact`` says which. A whole number hashes as
  the equal float, so 5 and 5.0 (a chunk read as floats for a missing value) are one value.
- inf and -inf: counted apart (``infinite``); min, max and quantiles take them in, the mean is infinite (undefined
  with both), the standard deviation undefined, and ``finite`` gives the count, mean and standard deviation of the
  finite values, which alone make the sketches and the histogram. In JSON they are the text "inf" and "-inf".
- top values: each chunk's ``TOP_KEPT`` most frequent values with their counts, added up every ``TOP_PARTS`` chunks
  and cut to the ``TOP_KEPT`` most frequent; exact when a column has at most ``TOP_KEPT`` distinct values, else a
  lower bound.

Each chunk's column is read once into a numpy array (datetimes as int64 nanoseconds) and sorted once (not at all when
already in order, as ids often are); the sorted runs give the distinct values and their counts, from which come the
sketch, the hashes, the top values and, when there are at most half as many distinct values as rows, the moments.
Text held by Arrow is counted by Arrow's ``value_counts``.

Anomalies (``anomalies_flag``): a robust z-score (median and MAD), Tukey's IQR fences, or scikit-learn's
IsolationForest over several columns (seeded), as columns ``anomaly_score`` and ``is_anomaly`` added to every row.

Drift (``DriftReference`` / ``drift_compare``): the population stability index of each numeric column over the
reference's deciles, and a chi-square test of homogeneity for each other column.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from agents.core.lazy import lazy
from agents.exceptions import DataError

np = lazy("numpy")
pd = lazy("pandas")
pa_compute = lazy("pyarrow.compute")
pa_types = lazy("pyarrow.types")

#: Order statistics kept per chunk for quantiles and histograms (rank error at most 1/SKETCH_POINTS).
SKETCH_POINTS = 1000
#: Chunk sketches kept before they are folded into one (each fold adds at most 1/SKETCH_POINTS of rank error).
MAX_SKETCHES = 64
#: Hashes kept by the distinct-count sketch (exact below this many distinct values).
DISTINCT_SKETCH_SIZE = 4096
#: Integers up to this size hash as the equal float; larger ones by their own bits.
EXACT_INTEGERS = 2 ** 53
#: Most frequent values kept per column while merging chunks, and shown in a profile.
TOP_KEPT = 1000
#: Chunks' top values held before they are added up and cut to the ``TOP_KEPT`` most frequent.
TOP_PARTS = 16
TOP_SHOWN = 10
HISTOGRAM_BINS = 20
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)

ANOMALY_METHODS = ("isolation_forest", "robust_z", "iqr")
#: Default thresholds: |robust z| above 3.5 (Iglewicz and Hoaglin), 1.5 IQRs beyond the quartiles (Tukey).
ANOMALY_THRESHOLDS = {"robust_z": 3.5, "iqr": 1.5}
MAX_ANOMALY_ROWS = 5_000_000

#: A numeric column is binned on the reference's deciles; an empty bin counts as this share (PSI stays finite).
PSI_BINS = 10
PSI_FLOOR = 1e-4
#: Categories beyond this many (the reference's most frequent) are pooled as one for the chi-square test.
CHI_SQUARE_CATEGORIES = 20
DRIFT_DEFAULTS = {"psi_max": 0.2, "p_value_min": 0.01}
OTHER = "(other)"


# ------------------------------------------------------------------------------------ column kinds


def column_kind(series: pd.Series) -> str:
    """'number', 'datetime' or 'category' (text, booleans and anything else)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "category"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "category"


def _numbers(series: pd.Series, kind: str, *, native: bool = False) -> np.ndarray:
    """The present values as float64 (datetimes as nanoseconds since the epoch: the instant's, in UTC, for a column
    with a time zone); with ``native``, integers stay integers."""
    present = series.dropna()
    if kind == "datetime":
        values = present.dt.tz_convert("UTC").dt.tz_localize(None) if getattr(series.dtype, "tz", None) else present
        nanoseconds = values.astype("datetime64[ns]").to_numpy().astype("int64")
        return nanoseconds if native else nanoseconds.astype("float64")
    if native and pd.api.types.is_integer_dtype(present.dtype):
        return present.to_numpy(dtype="int64")
    return present.to_numpy(dtype="float64", na_value=np.nan)


def _category_counts(series: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """The distinct present values of a column (an object array), their counts, and the number of missing values;
    text held by Arrow is counted by Arrow itself (no Python strings but the distinct ones)."""
    arrow = getattr(series.array, "__arrow_array__", None)
    if arrow is not None and isinstance(series.dtype, (pd.StringDtype, pd.ArrowDtype)):
        data = arrow()
        if pa_types.is_string(data.type) or pa_types.is_large_string(data.type):
            counted = pa_compute.value_counts(data)
            values, counts = counted.field("values"), counted.field("counts")
            if data.null_count:
                present = values.is_valid()
                values, counts = values.filter(present), counts.filter(present)
            return (values.to_numpy(zero_copy_only=False).astype(object, copy=False),
                    counts.to_numpy().astype("int64", copy=False), data.null_count)
    counted = _hashable(series).value_counts(dropna=True, sort=False)
    counted = counted[counted > 0]  # a categorical's unused categories
    return counted.index.to_numpy(dtype=object), counted.to_numpy(dtype="int64"), len(series) - int(counted.sum())


#: Nanoseconds in one tick of a datetime64 unit.
_NANOSECONDS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def _present(series: pd.Series, kind: str, name: str) -> np.ndarray:
    """The present values of a number or datetime column, read once: floats as float64, integers as int64,
    datetimes as int64 nanoseconds since the epoch (in UTC for a column with a time zone, as written for one
    without)."""
    dtype = series.dtype
    if kind == "number" and isinstance(dtype, np.dtype) and dtype.kind in "iuf":
        values = series.to_numpy(dtype="float64" if dtype.kind == "f" else "int64", copy=False)
        if dtype.kind == "f":
            missing = np.isnan(values)
            if missing.any():
                values = values[~missing]
        return values
    array = series.array
    if (kind == "datetime" and isinstance(array, pd.arrays.DatetimeArray) and array.unit in _NANOSECONDS
            and str(array.tz or "UTC") == "UTC"):
        unit = array.unit
        ticks = array.asi8
        if len(ticks) and ticks.min() == np.iinfo("int64").min:  # NaT
            ticks = ticks[ticks != np.iinfo("int64").min]
        scale = _NANOSECONDS[unit]
        if scale > 1 and len(ticks):
            limit = np.iinfo("int64").max // scale
            if ticks.min() < -limit or ticks.max() > limit:
                raise DataError(_OUT_OF_RANGE.format(name=name))
            ticks = ticks * scale
        return ticks
    try:
        return _numbers(series, kind, native=True)
    except pd.errors.OutOfBoundsDatetime as error:
        raise DataError(_OUT_OF_RANGE.format(name=name)) from error


_OUT_OF_RANGE = ("column {name!r} holds dates outside the years 1677 to 2262, which a profile cannot measure in "
                 "nanoseconds")


def _hashable(series: pd.Series) -> pd.Series:
    """Values that can be counted: lists and mappings (from JSON, or a Parquet struct or map) as their text."""
    if isinstance(series.dtype, pd.ArrowDtype) and pa_types.is_nested(series.dtype.pyarrow_dtype):
        series = series.astype(object).where(series.notna(), None)
    if series.dtype == object and len(series) and not all(
        isinstance(value, (str, int, float, bool, type(None))) for value in series.head(100)
    ):
        return series.map(lambda value: value if value is None or isinstance(value, (str, int, float, bool))
                          else _value_text(value))
    return series


def _value_text(value: Any) -> str:
    """A value pandas cannot hash or compare as its text: a list or mapping as JSON with sorted keys (so a mapping
    is one value whatever the order of its keys), anything else as ``str``."""
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, _NESTED) else str(value)


def rows_comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the lists and mappings it holds (from JSON, or a Parquet struct, list or map column) as their
    JSON text, so its rows can be told equal or not (``duplicated``): pandas hashes the values it compares, and
    these cannot be hashed (``unhashable type: 'dict'``; a map column had no kernel at all). Nulls stay nulls."""
    comparable = frame
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        if not holds_nested(column):
            continue
        if isinstance(column.dtype, pd.ArrowDtype):
            column = column.astype(object).where(column.notna(), None)
        if comparable is frame:
            comparable = frame.copy(deep=False)
        comparable.isetitem(position, column.map(lambda value: _value_text(value) if isinstance(value, _NESTED)
                                                 else value))
    return comparable


def holds_nested(column: pd.Series) -> bool:
    """Whether ``column`` holds lists or mappings (from JSON, or a Parquet struct, list or map column)."""
    if isinstance(column.dtype, pd.ArrowDtype):
        return pa_types.is_nested(column.dtype.pyarrow_dtype)
    if column.dtype != object or pd.api.types.infer_dtype(column, skipna=True) in _SCALAR_KINDS:
        return False  # the kinds found at C speed: a column of strings is not read value by value
    return any(isinstance(value, _NESTED) for value in column)


_NESTED = (dict, list, tuple)
#: What ``infer_dtype`` calls a column holding no list or mapping.
_SCALAR_KINDS = {"string", "bytes", "empty", "integer", "floating", "mixed-integer-float", "decimal", "boolean",
                 "datetime", "datetime64", "date", "time", "timedelta", "timedelta64", "period"}


# ------------------------------------------------------------------------------------ sketches


@dataclass
class _Sketch:
    """One chunk's distribution function over ``weight`` values: the share at or below each of ``points``.

    ``exact``: the points are all the chunk's distinct values and ``ranks`` their cumulative shares (a step
    function, no error). Else the points are order statistics at ranks 0, 1/K, ..., 1, linear in between.
    """

    points: np.ndarray
    ranks: np.ndarray
    weight: int
    exact: bool


def _sketch(sorted_values: np.ndarray, distinct: np.ndarray, counts: np.ndarray) -> _Sketch:
    count = len(sorted_values)
    if len(distinct) <= SKETCH_POINTS + 1:
        return _Sketch(points=distinct.astype("float64"), ranks=np.cumsum(counts) / count, weight=count, exact=True)
    # The order statistics at ranks 0, 1/K, ..., 1, interpolated between neighbours (K + 1 reads, not a pass).
    positions = np.linspace(0, count - 1, SKETCH_POINTS + 1)
    below = np.floor(positions).astype("int64")
    above = np.minimum(below + 1, count - 1)
    low, high = sorted_values[below].astype("float64"), sorted_values[above].astype("float64")
    points = low + (positions - below) * (high - low)
    return _Sketch(points=points, ranks=np.linspace(0.0, 1.0, SKETCH_POINTS + 1), weight=count, exact=False)


def _cdf(sketches: list[_Sketch], at: np.ndarray) -> np.ndarray:
    """The share of values at or below each of ``at``, summed over the sketches."""
    total = sum(sketch.weight for sketch in sketches)
    share = np.zeros(len(at))
    for sketch in sketches:
        if sketch.exact:
            index = np.searchsorted(sketch.points, at, side="right") - 1
            share += sketch.weight * np.where(index >= 0, sketch.ranks[np.clip(index, 0, None)], 0.0)
            continue
        # Past the last point all values are below; before the first, none (not the interpolated 0).
        share += sketch.weight * np.where(at < sketch.points[0], 0.0, np.interp(at, sketch.points, sketch.ranks))
    return share / total if total else share


def _quantiles(sketches: list[_Sketch], shares: Iterable[float]) -> list[float]:
    """Values at ``shares`` of the merged distribution: for exact sketches the smallest value whose share reaches
    it (as pandas' linear rule where two order statistics are equal), else read off the linear function."""
    shares = np.asarray(list(shares), dtype=float)
    candidates = np.unique(np.concatenate([sketch.points for sketch in sketches]))
    shares_at = _cdf(sketches, candidates)
    if all(sketch.exact for sketch in sketches):
        index = np.searchsorted(shares_at, shares - 1e-12, side="left")
        return candidates[np.clip(index, 0, len(candidates) - 1)].tolist()
    return np.interp(shares, shares_at, candidates).tolist()


def _fold(sketches: list[_Sketch]) -> list[_Sketch]:
    """Many sketches as one (quantiles of the merged function at the sketch ranks)."""
    total = sum(sketch.weight for sketch in sketches)
    ranks = np.linspace(0.0, 1.0, SKETCH_POINTS + 1)
    return [_Sketch(points=np.asarray(_quantiles(sketches, ranks)), ranks=ranks, weight=total, exact=False)]


def _top_fold(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Values and counts of several chunks added up (equal values by hashing, as a dict would), the ``TOP_KEPT``
    most frequent kept."""
    values = parts[0][0] if len(parts) == 1 else np.concatenate([values for values, _ in parts])
    counts = parts[0][1] if len(parts) == 1 else np.concatenate([counts for _, counts in parts])
    codes, uniques = pd.factorize(values)
    summed = np.bincount(codes, weights=counts, minlength=len(uniques)).astype("int64")
    uniques = np.asarray(uniques, dtype=values.dtype if values.dtype != object else object)
    if len(uniques) > TOP_KEPT:
        kept = np.argpartition(-summed, TOP_KEPT)[:TOP_KEPT]
        uniques, summed = uniques[kept], summed[kept]
    return uniques, summed


def _ascending(values: np.ndarray) -> bool:
    """Whether ``values`` are already in order (ids, append-only timestamps), so need no sort: a look at the first
    thousand first, then at all."""
    head = values[:1000]
    return bool((head[1:] >= head[:-1]).all()) and bool((values[1:] >= values[:-1]).all())


def _moments(sorted_values: np.ndarray, distinct: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """The mean and the sum of squared deviations from it, over the distinct values weighted by their counts
    when there are few of them (a short pass), else over all the values."""
    if len(distinct) * 2 <= len(sorted_values):
        values, weights = distinct.astype("float64"), counts.astype("float64")
        mean = float((values * weights).sum() / weights.sum())
        deviations = values - mean
        return mean, float((deviations * deviations * weights).sum())
    values = sorted_values.astype("float64", copy=False)
    mean = float(values.mean())
    deviations = values - mean
    np.square(deviations, out=deviations)  # np.dot would start BLAS threads
    return mean, float(deviations.sum())


def _smallest_hashes(values: np.ndarray, keep: int, below: int | None = None) -> np.ndarray:
    """The ``keep`` smallest distinct 64-bit hashes of distinct ``values`` (sorted); all of them when fewer.

    ``below``: a hash above it cannot be kept (the merged sketch already holds ``keep`` smaller ones), so only
    hashes at or below it are sorted."""
    # The values are distinct: pandas' categorising first (factorize) would only cost time.
    hashes = _mix(values) if values.dtype.kind in "iuf" else pd.util.hash_array(values, categorize=False)
    if below is not None:
        hashes = hashes[hashes <= below]
    if len(hashes) > keep:
        hashes = np.partition(hashes, keep)[:keep + 1]  # keep + 1: the caller sees that some were dropped
    return _sorted_unique(hashes)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by a sort (faster than its hashing for a few thousand 64-bit values)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _mix(values: np.ndarray) -> np.ndarray:
    """64-bit hashes of numbers (no missing values): their float64 bits through splitmix64's finaliser, as
    ``pd.util.hash_array`` mixes them. Integers hash as the equal float (a chunk read as float because of a missing
    value counts 5.0 as the same value as 5 in another), but beyond 2**53, where floats cannot hold them all."""
    low, high = (values.min(), values.max()) if values.dtype.kind != "f" and len(values) else (0, 0)
    if low > EXACT_INTEGERS or high < -EXACT_INTEGERS:  # all large (datetimes in nanoseconds)
        hashes = values.astype("int64").view("uint64")  # a copy, mixed in place
    else:
        hashes = values.astype("float64").view("uint64")
        if values.dtype.kind == "f":
            hashes[values == 0] = 0  # -0.0 is 0.0
        elif low < -EXACT_INTEGERS or high > EXACT_INTEGERS:
            large = (values < -EXACT_INTEGERS) | (values > EXACT_INTEGERS)
            hashes[large] = values[large].astype("int64").view("uint64")
    hashes ^= hashes >> np.uint64(30)
    hashes *= np.uint64(0xBF58476D1CE4E5B9)
    hashes ^= hashes >> np.uint64(27)
    hashes *= np.uint64(0x94D049BB133111EB)
    hashes ^= hashes >> np.uint64(31)
    return hashes


# ------------------------------------------------------------------------------------ profile


@dataclass
class ColumnProfiler:
    """Mergeable statistics of one column; ``update`` with each chunk's series, ``finish`` for the JSON."""

    name: str
    kind: str | None = None
    rows: int = 0
    nulls: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean
    minimum: Any = None
    maximum: Any = None
    sketches: list = field(default_factory=list)
    hashes: Any = None
    top: list = field(default_factory=list)  # (values, counts) arrays: each chunk's most frequent, folded now and then
    saturated: bool = False  # the distinct sketch has dropped hashes: its count is an estimate
    # Counted apart: the moments, range, sketches and histogram are of the finite values (inf - inf is no number).
    positive_infinite: int = 0
    negative_infinite: int = 0
    unmeasured: str = ""  # why the column's values cannot be measured (only its count and nulls are)
    zoned: bool = False  # datetimes with a time zone: measured in UTC, shown with the offset +00:00

    def update(self, series: pd.Series) -> None:
        """Add a chunk's values."""
        kind = column_kind(series)
        if self.kind is None or self.rows == self.nulls:
            self.kind = kind  # chunks of only missing values may read as text; a later one shows the real kind
        elif kind != self.kind and series.notna().any():
            raise DataError(f"column {self.name!r} holds {self.kind} values in one chunk and {kind} in another")
        self.rows += len(series)
        self.zoned = self.zoned or (self.kind == "datetime" and getattr(series.dtype, "tz", None) is not None)
        if self.kind == "category":
            values, counts, nulls = _category_counts(series)
            self.nulls += nulls
            if not len(values):
                return
            self._merge_hashes(_smallest_hashes(values, DISTINCT_SKETCH_SIZE, self._hash_bound()))
            if len(values) > TOP_KEPT:
                kept = np.argpartition(-counts, TOP_KEPT)[:TOP_KEPT]
                values, counts = values[kept], counts[kept]
            self._merge_top(values, counts)
            return
        if not self.unmeasured:
            try:
                present = _present(series, self.kind, self.name)
            except DataError as error:  # dates beyond nanoseconds: the rest of the profile is still worth having
                self._unmeasurable(str(error))
        if self.unmeasured:
            self.nulls += int(series.isna().sum())
            return
        self.nulls += len(series) - len(present)
        if not len(present):
            return
        # Numbers are sorted once: the sorted run lengths are the value counts, the sorted array the sketch.
        raw = present if _ascending(present) else np.sort(present)
        first = np.empty(len(raw), dtype=bool)  # where a run of equal values starts
        first[0] = True
        np.not_equal(raw[1:], raw[:-1], out=first[1:])
        distinct, counts = raw[first], np.diff(np.flatnonzero(first), append=len(raw))
        finite, finite_distinct, finite_counts = raw, distinct, counts
        if raw.dtype.kind == "f" and (raw[0] == -np.inf or raw[-1] == np.inf):  # sorted: first and last, if any
            negative = int(counts[0]) if raw[0] == -np.inf else 0
            positive = int(counts[-1]) if raw[-1] == np.inf else 0
            self.negative_infinite += negative
            self.positive_infinite += positive
            finite = raw[negative:len(raw) - positive]
            finite_distinct = distinct[int(negative > 0):len(distinct) - int(positive > 0)]
            finite_counts = counts[int(negative > 0):len(counts) - int(positive > 0)]
        self._merge_hashes(_smallest_hashes(distinct, DISTINCT_SKETCH_SIZE, self._hash_bound()))
        if len(distinct) > TOP_KEPT:
            kept = np.argpartition(-counts, TOP_KEPT)[:TOP_KEPT]
            distinct, counts = distinct[kept], counts[kept]
        self._merge_top(distinct, counts)
        if not len(finite):
            return
        self._merge_moments(len(finite), *_moments(finite, finite_distinct, finite_counts))
        self._merge_range(finite[0].item(), finite[-1].item())
        self.sketches.append(_sketch(finite, finite_distinct, finite_counts))
        if len(self.sketches) > MAX_SKETCHES:
            self.sketches = _fold(self.sketches)

    def _unmeasurable(self, reason: str) -> None:
        """Give up the column's statistics, keeping its count and nulls, for ``reason``."""
        self.unmeasured = reason
        self.mean, self.m2, self.minimum, self.maximum = 0.0, 0.0, None, None
        self.sketches, self.hashes, self.top, self.saturated = [], None, [], False
        self.positive_infinite, self.negative_infinite = 0, 0

    def _hash_bound(self) -> int | None:
        """The largest hash the distinct sketch can still take once it estimates (None while it counts exactly)."""
        if not self.saturated:
            return None
        return int(self.hashes[-1])

    def merge(self, other: ColumnProfiler) -> None:
        """Add another profiler's statistics of the same column (from other chunks)."""
        if other.kind is None:
            return
        if self.kind is None:
            self.kind = other.kind
        self.rows += other.rows
        self.nulls += other.nulls
        self.zoned = self.zoned or other.zoned
        if other.unmeasured and not self.unmeasured:
            self._unmeasurable(other.unmeasured)
        if self.unmeasured:
            return
        self.top.extend(other.top)
        self._merge_top()
        self.positive_infinite += other.positive_infinite
        self.negative_infinite += other.negative_infinite
        self.saturated = self.saturated or other.saturated
        if other.hashes is not None:
            self._merge_hashes(other.hashes)
        if other.sketches:
            present = sum(sketch.weight for sketch in other.sketches)
            self._merge_moments(present, other.mean, other.m2)
            self._merge_range(other.minimum, other.maximum)
            self.sketches.extend(other.sketches)

    def _merge_moments(self, count: int, mean: float, m2: float) -> None:
        before = sum(sketch.weight for sketch in self.sketches)
        total = before + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * before * count / total

    def _merge_range(self, low: float, high: float) -> None:
        self.minimum = low if self.minimum is None else min(self.minimum, low)
        self.maximum = high if self.maximum is None else max(self.maximum, high)

    def _merge_hashes(self, hashes: np.ndarray) -> None:
        joined = hashes if self.hashes is None else _sorted_unique(np.concatenate((self.hashes, hashes)))
        self.hashes = joined[:DISTINCT_SKETCH_SIZE]
        self.saturated = self.saturated or len(joined) > DISTINCT_SKETCH_SIZE or len(hashes) >= DISTINCT_SKETCH_SIZE

    def _merge_top(self, values: np.ndarray | None = None, counts: np.ndarray | None = None) -> None:
        if values is not None:
            self.top.append((values, counts))
        if len(self.top) > TOP_PARTS:
            self.top = [_top_fold(self.top)]

    def distinct(self) -> tuple[int, bool]:
        """The number of distinct present values, and whether it is exact."""
        if self.hashes is None:
            return 0, True
        if not self.saturated:
            return len(self.hashes), True
        kth = float(self.hashes[-1]) / 2.0 ** 64
        return int(round((DISTINCT_SKETCH_SIZE - 1) / kth)), False

    def finish(self) -> dict:
        """The column's profile as JSON-ready values (datetimes as ISO text)."""
        present = self.rows - self.nulls
        null_percent = round(100 * self.nulls / self.rows, 4) if self.rows else 0.0
        if self.unmeasured:
            return {"name": self.name, "kind": self.kind, "count": present, "nulls": self.nulls,
                    "null_percent": null_percent, "distinct": None, "distinct_exact": False, "top": [],
                    "unmeasured": self.unmeasured}
        distinct, exact = self.distinct()
        distinct = min(distinct, present)  # an estimate may overshoot; there are no more distinct values than values
        values, counts = _top_fold(self.top) if self.top else (np.zeros(0), np.zeros(0))
        top = sorted(zip(values.tolist(), counts.tolist()), key=lambda item: (-item[1], str(item[0])))[:TOP_SHOWN]
        profile = {
            "name": self.name, "kind": self.kind or "category", "count": present, "nulls": self.nulls,
            "null_percent": null_percent,
            "distinct": distinct, "distinct_exact": exact,
            "top": [{"value": _timestamp_text(value, self.zoned) if self.kind == "datetime" else _plain(value),
                     "count": count}
                    for value, count in top],
        }
        if self.kind in ("number", "datetime") and (self.sketches or self.positive_infinite or self.negative_infinite):
            show = functools.partial(_timestamp_text, zoned=self.zoned) if self.kind == "datetime" else _number_json
            finite = sum(sketch.weight for sketch in self.sketches)
            std = math.sqrt(self.m2 / (finite - 1)) if finite > 1 else None
            if self.kind == "datetime" and std is not None:
                std = std / 1e9  # seconds
            profile.update(
                min="-inf" if self.negative_infinite else show(self.minimum) if finite else "inf",
                max="inf" if self.positive_infinite else show(self.maximum) if finite else "-inf",
                mean=show(self.mean), std=std,
                quantiles={f"{round(share * 100)}%": show(value) for share, value in zip(QUANTILES, self._quantiles(finite))},
                histogram=self._histogram(show) if finite else {"edges": [], "counts": []},
            )
            if self.positive_infinite or self.negative_infinite:
                profile.update(self._infinities(finite, show(self.mean) if finite else None, std))
        return profile

    def _infinities(self, finite: int, finite_mean: Any, finite_std: float | None) -> dict:
        """What a profile says of a column holding inf or -inf: the mean of all values is infinite, or undefined
        when both are there (inf - inf); the spread of all values is undefined; the finite values' are given apart."""
        positive, negative = self.positive_infinite, self.negative_infinite
        mean = None if positive and negative else "inf" if positive else "-inf"
        plural = "s" if positive + negative != 1 else ""
        note = (f"{positive + negative} infinite value{plural} ({positive} inf, {negative} -inf): mean "
                f"{'undefined (inf - inf)' if mean is None else mean}, std undefined; "
                f"'finite' and the histogram measure the {finite} finite values")
        return {"mean": mean, "std": None, "infinite": {"inf": positive, "-inf": negative},
                "finite": {"count": finite, "mean": finite_mean, "std": finite_std}, "note": note}

    def _quantiles(self, finite: int) -> list[float]:
        """The values at ``QUANTILES`` of all present values (``finite`` of them finite): -inf and inf stand below
        and above the finite ones (the smallest value whose share reaches a quantile's, as ``_quantiles`` reads exact
        sketches)."""
        negative, positive = self.negative_infinite, self.positive_infinite
        total = negative + finite + positive
        values, inside = [], []
        for share in QUANTILES:
            if negative and negative / total >= share - 1e-12:
                values.append(-math.inf)
            elif (negative + finite) / total < share - 1e-12:
                values.append(math.inf)
            else:
                values.append(None)
                inside.append(min(max((share * total - negative) / finite, 0.0), 1.0))
        measured = iter(_quantiles(self.sketches, inside) if inside else [])
        return [next(measured) if value is None else value for value in values]

    def _histogram(self, show) -> dict:
        low, high = float(self.minimum), float(self.maximum)
        edges = np.linspace(low, high, HISTOGRAM_BINS + 1) if high > low else np.array([low, high])
        present = sum(sketch.weight for sketch in self.sketches)
        if high == low:
            return {"edges": [show(low), show(high)], "counts": [present]}
        below = _cdf(self.sketches, edges) * present
        below[0], below[-1] = 0.0, present  # the first bin holds the minimum, the last the maximum
        counts = np.diff(np.round(below)).astype(int)
        return {"edges": [show(edge) for edge in edges], "counts": counts.tolist()}


def _timestamp_text(value: float, zoned: bool = False) -> str:
    """A datetime measured as nanoseconds as ISO text: in UTC with its offset (``+00:00``) for a column with a time
    zone, as freshness shows one, else as written."""
    stamp = pd.Timestamp(int(round(value)), unit="ns")
    return (stamp.tz_localize("UTC") if zoned else stamp).isoformat()


def _number_json(value: float) -> float | str | None:
    """A number for JSON as PostgreSQL stores it: infinity as the text "inf" or "-inf" (JSON has no infinity;
    null would read as a missing value), NaN as None."""
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return None if math.isnan(value) else value


def _plain(value: Any) -> Any:
    """A value for JSON: numpy scalars as Python ones, timestamps as ISO text, infinity as "inf" or "-inf", NaN as
    None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return _number_json(value)
    if isinstance(value, (pd.Timestamp,)):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class Profiler:
    """A whole table's profile, fed chunk by chunk (``update``), mergeable (``merge``), read with ``finish``."""

    def __init__(self) -> None:
        self.rows = 0
        self.columns: dict[str, ColumnProfiler] = {}

    def update(self, chunk: pd.DataFrame) -> None:
        """Add a chunk's rows."""
        self.rows += len(chunk)
        for name in chunk.columns:
            column = self.columns.setdefault(str(name), ColumnProfiler(name=str(name)))
            column.update(chunk[name])

    def merge(self, other: Profiler) -> None:
        """Add another profiler's rows (of a table with the same columns)."""
        self.rows += other.rows
        for name, column in other.columns.items():
            self.columns.setdefault(name, ColumnProfiler(name=name)).merge(column)

    def finish(self) -> dict:
        """``{rows, columns: [column profile, ...], method}``."""
        return {"rows": self.rows, "columns": [column.finish() for column in self.columns.values()],
                "method": PROFILE_METHOD}


PROFILE_METHOD = (f"one pass per chunk; quantiles and histogram from merged per-chunk distribution functions "
                  f"(rank error at most 1/{SKETCH_POINTS} of rows); distinct exact below {DISTINCT_SKETCH_SIZE}, "
                  f"else a K-minimum-values estimate")


def profile_frames(frames: Iterable[pd.DataFrame]) -> dict:
    """The profile of a table given as chunks."""
    profiler = Profiler()
    for frame in frames:
        profiler.update(frame)
    return profiler.finish()


# ------------------------------------------------------------------------------------ anomalies


def anomalies_flag(frame: pd.DataFrame, *, columns: list[str], method: str = "isolation_forest",
                   threshold: float | None = None, contamination: float | str = "auto",
                   random_state: int = 0, n_estimators: int = 100) -> pd.DataFrame:
    """``frame`` with ``anomaly_score`` (higher: more unusual) and ``is_anomaly`` added to every row.

    robust_z: the largest |0.6745 (x - median) / MAD| over ``columns``, an anomaly above ``threshold`` (3.5).
    iqr: the largest distance beyond [Q1 - k IQR, Q3 + k IQR] in IQR units (0 inside), an anomaly above 0, with
    k = ``threshold`` (1.5). isolation_forest: scikit-learn's IsolationForest on ``columns`` together (missing
    values take the column's median), score = the negated ``score_samples`` (from 0 to 1; above 0.5 is unusual),
    an anomaly where ``predict`` says so (``contamination``: 'auto' or the expected share). Seeded by ``random_state``.
    """
    columns = _anomaly_columns(frame, columns, method)
    if method not in ANOMALY_METHODS:
        raise DataError(f"anomalies: method {method!r} is not one of {', '.join(ANOMALY_METHODS)}")
    if len(frame) > MAX_ANOMALY_ROWS:
        raise DataError(f"anomalies: {len(frame)} rows is more than {MAX_ANOMALY_ROWS}; filter or sample first")
    values = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
    result = frame.copy()
    if method == "isolation_forest":
        score, flagged = _isolation_forest(values, contamination=contamination, random_state=random_state,
                                           n_estimators=n_estimators)
    else:
        limit = ANOMALY_THRESHOLDS[method] if threshold is None else _number(threshold, "threshold")
        score = _robust_z(values) if method == "robust_z" else _iqr_distance(values, limit)
        flagged = score > (limit if method == "robust_z" else 0.0)
    result["anomaly_score"] = score
    result["is_anomaly"] = flagged
    return result


def _anomaly_columns(frame: pd.DataFrame, columns: Any, method: str) -> list[str]:
    if isinstance(columns, str):
        columns = [columns]
    if not isinstance(columns, list) or not columns or not all(isinstance(name, str) for name in columns):
        raise DataError("anomalies: 'columns' must be a non-empty list of numeric column names")
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise DataError(f"anomalies: no column {', '.join(map(repr, missing))} (it has: "
                        f"{', '.join(map(repr, map(str, frame.columns)))})")
    text = [name for name in columns if column_kind(frame[name]) != "number"]
    if text:
        raise DataError(f"anomalies: column {', '.join(map(repr, text))} is not numeric ({method} scores numbers)")
    return columns


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise DataError(f"anomalies: {key!r} must be a positive number, got {value!r}")
    return float(value)


def _robust_z(values: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        median = np.nanmedian(values, axis=0)
        mad = np.nanmedian(np.abs(values - median), axis=0)
        # A column with MAD 0 (mostly one value) falls back to the mean absolute deviation (as IBM's modified z).
        meanad = np.nanmean(np.abs(values - median), axis=0)
        scale = np.where(mad > 0, mad / 0.6745, meanad * 1.2533)
        z = np.abs(values - median) / np.where(scale > 0, scale, np.inf)
    return np.nan_to_num(z, nan=0.0).max(axis=1)


def _iqr_distance(values: np.ndarray, k: float) -> np.ndarray:
    q1, q3 = np.nanquantile(values, 0.25, axis=0), np.nanquantile(values, 0.75, axis=0)
    iqr = q3 - q1
    low, high = q1 - k * iqr, q3 + k * iqr
    with np.errstate(invalid="ignore", divide="ignore"):
        beyond = np.maximum(low - values, values - high).clip(min=0) / np.where(iqr > 0, iqr, 1.0)
    return np.nan_to_num(beyond, nan=0.0).max(axis=1)


def _isolation_forest(values: np.ndarray, *, contamination: Any, random_state: Any,
                      n_estimators: Any) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.ensemble import IsolationForest

    if not (contamination == "auto" or (isinstance(contamination, (int, float)) and not isinstance(
            contamination, bool) and 0 < contamination <= 0.5)):
        raise DataError(f"anomalies: 'contamination' must be 'auto' or a share above 0 up to 0.5, "
                        f"got {contamination!r}")
    if isinstance(random_state, bool) or not isinstance(random_state, int):
        raise DataError(f"anomalies: 'random_state' must be a whole number, got {random_state!r}")
    if isinstance(n_estimators, bool) or not isinstance(n_estimators, int) or not 1 <= n_estimators <= 1000:
        raise DataError(f"anomalies: 'n_estimators' must be a whole number from 1 to 1000, got {n_estimators!r}")
    if len(values) == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    medians = np.nan_to_num(np.nanmedian(values, axis=0), nan=0.0) if np.isnan(values).any() else None
    if medians is not None:
        values = np.where(np.isnan(values), medians, values)
    forest = IsolationForest(n_estimators=n_estimators, contamination=contamination, random_state=random_state)
    forest.fit(values)
    return -forest.score_samples(values), forest.predict(values) == -1


# ------------------------------------------------------------------------------------ drift


@dataclass
class DriftReference:
    """What the current data is compared to: decile edges and shares per numeric column, category counts else."""

    rows: int
    edges: dict = field(default_factory=dict)
    shares: dict = field(default_factory=dict)
    categories: dict = field(default_factory=dict)


def drift_reference(frame: pd.DataFrame, columns: list[str]) -> DriftReference:
    """Bin each numeric column of the reference on its deciles; count each other column's values."""
    reference = DriftReference(rows=len(frame))
    for name in columns:
        series = frame[name]
        kind = column_kind(series)
        if kind == "category":
            counts = _hashable(series).dropna().astype(str).value_counts()
            reference.categories[name] = counts
            continue
        values = _numbers(series, kind)
        if len(values) == 0:
            continue
        edges = np.unique(np.quantile(values, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
        reference.edges[name] = edges
        reference.shares[name] = np.bincount(np.searchsorted(edges, values, side="left"),
                                             minlength=len(edges) + 1) / len(values)
    return reference


class DriftCounter:
    """The current data's counts in the reference's bins and categories, fed chunk by chunk."""

    def __init__(self, reference: DriftReference) -> None:
        self.reference = reference
        self.bins = {name: np.zeros(len(edges) + 1, dtype=np.int64) for name, edges in reference.edges.items()}
        self.categories: dict[str, pd.Series] = {name: pd.Series(dtype="int64") for name in reference.categories}
        self.missing: set[str] = set()

    def update(self, chunk: pd.DataFrame) -> None:
        """Count a chunk's values."""
        for name, edges in self.reference.edges.items():
            if name not in chunk.columns:
                self.missing.add(name)
                continue
            values = _numbers(chunk[name], column_kind(chunk[name]))
            self.bins[name] += np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
        for name in self.reference.categories:
            if name not in chunk.columns:
                self.missing.add(name)
                continue
            counts = _hashable(chunk[name]).dropna().astype(str).value_counts()
            self.categories[name] = self.categories[name].add(counts, fill_value=0)


def population_stability_index(reference_shares: np.ndarray, current_counts: np.ndarray) -> float:
    """PSI = sum((current - reference) * ln(current / reference)) over the bins, empty bins floored."""
    total = current_counts.sum()
    current = current_counts / total if total else np.zeros(len(current_counts))
    reference = np.clip(reference_shares, PSI_FLOOR, None)
    current = np.clip(current, PSI_FLOOR, None)
    return float(((current - reference) * np.log(current / reference)).sum())


def chi_square(reference_counts: pd.Series, current_counts: pd.Series) -> tuple[float, float, int]:
    """Chi-square test of homogeneity of two count vectors (the reference's top categories, the rest pooled):
    (statistic, p-value, degrees of freedom); scipy's chi2_contingency without Yates' correction."""
    from scipy.stats import chi2_contingency

    kept = list(reference_counts.sort_values(ascending=False).index[:CHI_SQUARE_CATEGORIES])
    table = []
    for counts in (reference_counts, current_counts):
        row = [float(counts.get(category, 0)) for category in kept]
        row.append(float(counts.sum()) - sum(row))
        table.append(row)
    table = np.array(table)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0
    result = chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue), int(result.dof)


def drift_compare(reference: DriftReference, counter: DriftCounter, *, psi_max: float,
                  p_value_min: float) -> list[dict]:
    """One entry per compared column: its test, statistic and whether it drifted past the threshold."""
    columns = []
    for name, shares in reference.shares.items():
        if name in counter.missing:
            columns.append({"column": name, "test": "psi", "drifted": True, "reason": "missing from the data"})
            continue
        psi = population_stability_index(shares, counter.bins[name])
        columns.append({"column": name, "test": "psi", "psi": round(psi, 6), "threshold": psi_max,
                        "drifted": psi > psi_max})
    for name, counts in reference.categories.items():
        if name in counter.missing:
            columns.append({"column": name, "test": "chi_square", "drifted": True, "reason": "missing from the data"})
            continue
        statistic, p_value, dof = chi_square(counts, counter.categories[name])
        columns.append({"column": name, "test": "chi_square", "statistic": round(statistic, 6),
                        "p_value": p_value, "dof": dof, "threshold": p_value_min, "drifted": p_value < p_value_min})
    return columns


def drift_check_problems(check: dict, where: str) -> list[str]:
    """What is wrong with a drift check's own keys (reference, thresholds)."""
    errors = []
    reference = check.get("reference", "previous")
    if reference != "previous" and (isinstance(reference, bool) or not isinstance(reference, int) or reference < 1):
        errors.append(f"{where}: key 'reference' must be 'previous' or a dataset number (1, 2, ...), "
                      f"got {reference!r}")
    for key, low, high in (("psi_max", 0.0, None), ("p_value_min", 0.0, 1.0)):
        value = check.get(key, DRIFT_DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (
                high is not None and value > high):
            bounds = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
            errors.append(f"{where}: key {key!r} must be a number {bounds}, got {value!r}")
    columns = check.get("columns")
    if columns is not None and (not isinstance(columns, list) or not columns or not all(
            isinstance(name, str) and name for name in columns)):
        errors.append(f"{where}: key 'columns' must be a list of column names (or left out for every column)")
    return errors


def drift_result(check: dict, reference: DriftReference | None, counter: DriftCounter | None, *,
                 reference_label: str) -> dict:
    """A drift check's result, in the shape of the other quality checks' results."""
    if reference is None or counter is None:
        columns, drifted = [], []
        details = {"reference": reference_label, "columns": []}
    else:
        columns = drift_compare(reference, counter, psi_max=check.get("psi_max", DRIFT_DEFAULTS["psi_max"]),
                                p_value_min=check.get("p_value_min", DRIFT_DEFAULTS["p_value_min"]))
        drifted = [entry["column"] for entry in columns if entry["drifted"]]
        details = {"reference": reference_label, "columns": columns, "drifted": drifted}
    passed = not drifted
    return {
        "name": check["name"], "type": "drift", "severity": check["severity"],
        "status": "passed" if passed else "failed", "passed": passed,
        "element_count": len(columns), "unexpected_count": len(drifted),
        "unexpected_percent": round(100 * len(drifted) / len(columns), 4) if columns else 0.0,
        "mostly": None, "sample": [], "failing_rows_path": None, "details": details, "global": True,
    }
