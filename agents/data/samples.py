"""Generated order data with known defects, for the demo, the benchmark and tests.

Pure: numpy and pandas only. Defects are placed at known rows so a reader can check a quality report:
every 50th order has no customer, every 97th is a copy of the order before it, every 61st has a negative
amount, every 73rd names a customer that does not exist, every 89th is two years old; the rest are from the last
20 hours before ``now`` (default: the current time, so freshness checks on the demo keep passing).
"""
from __future__ import annotations

from pathlib import Path

from agents.core.lazy import lazy

np = lazy("numpy")
pd = lazy("pandas")

REGIONS = ("north", "south", "east", "west")
STATUSES = ("paid", "paid", "paid", "refunded", "pending")
CUSTOMERS = 1000


def orders_frame(rows: int, *, seed: int = 7, defects: bool = True, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """``rows`` orders (order_id, customer_id, region, status, amount, ordered_at), with defects when asked."""
    rng = np.random.default_rng(seed)
    now = now if now is not None else pd.Timestamp.now(tz="UTC").floor("s")
    index = np.arange(rows)
    frame = pd.DataFrame({
        "order_id": index + 1,
        "customer_id": rng.integers(1, CUSTOMERS + 1, rows).astype("float64"),
        "region": np.asarray(REGIONS)[rng.integers(0, len(REGIONS), rows)],
        "status": np.asarray(STATUSES)[rng.integers(0, len(STATUSES), rows)],
        "amount": np.round(rng.gamma(2.0, 40.0, rows) + 1, 2),
        "ordered_at": now - pd.to_timedelta(rng.integers(0, 20 * 3600, rows), unit="s"),
    })
    if defects:
        frame.loc[index % 50 == 49, "customer_id"] = np.nan
        frame.loc[index % 61 == 60, "amount"] *= -1
        frame.loc[index % 73 == 72, "customer_id"] = CUSTOMERS + 500
        frame.loc[index % 89 == 88, "ordered_at"] = now - pd.Timedelta(days=730)
        copies = index[(index % 97 == 96)]
        frame.iloc[copies, :] = frame.iloc[copies - 1, :].to_numpy()
    return frame


def customers_frame() -> pd.DataFrame:
    """The customers orders refer to (ids 1..CUSTOMERS)."""
    ids = np.arange(1, CUSTOMERS + 1)
    return pd.DataFrame({"customer_id": ids, "name": [f"customer {i}" for i in ids]})


def orders_csv_write(path: Path, rows: int, *, seed: int = 7, defects: bool = True, chunk_rows: int = 500_000) -> Path:
    """Write generated orders to a CSV file in chunks (memory stays bounded for millions of rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w") as handle:
        while written < rows:
            size = min(chunk_rows, rows - written)
            frame = orders_frame(size, seed=seed + written, defects=defects)
            frame["order_id"] += written
            frame.to_csv(handle, index=False, header=written == 0, date_format="%Y-%m-%dT%H:%M:%SZ")
            written += size
    return path
