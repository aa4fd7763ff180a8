"""Hourly temperatures -> features, targets, chronological splits, training windows, baselines.

The data are real NOAA hourly temperatures for 2010 (Seattle and San Francisco) shipped inside
the `vega_datasets` package, so training never touches the network. Every timestep has exactly
three features, in this order (the exported model's `input` contract):

    temperature_f   the temperature this hour, °F
    hour_sin        sin(2π·hour/24)   the hour of day on a circle, so 23h and 0h are neighbours
    hour_cos        cos(2π·hour/24)

and one target: the temperature the next row (next hour), °F. Each city is split in time order
(train / validation / test); normalization statistics come from the training parts only, so no
later information leaks into the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rnnserve.export.errors import ExportInputError

FEATURES: list[tuple[str, str]] = [
    ("temperature_f", "degF"),
    ("hour_sin", "1"),
    ("hour_cos", "1"),
]
OUTPUTS: list[tuple[str, str]] = [("next_hour_temperature_f", "degF")]
DATA_SOURCE = (
    "NOAA hourly temperatures 2010, Seattle and San Francisco, via vega_datasets "
    "(local_data.seattle_temps / sf_temps)"
)
SEASONAL_LAG = pd.Timedelta(hours=24)


@dataclass(frozen=True)
class CitySeries:
    """One city's whole year, aligned so that row t of `x` predicts `y[t]` (the next hour)."""

    name: str
    dates: pd.DatetimeIndex  # [T]    timestamp of each input row
    x: np.ndarray  # [T, 3]  float32 features (°F, sin, cos)
    y: np.ndarray  # [T]     float32 next-hour temperature, °F
    seasonal: np.ndarray  # [T] float32 seasonal-naive forecast of y (same hour the day before)


@dataclass(frozen=True)
class Split:
    """Index ranges [start, stop) into a CitySeries, per part, in time order."""

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]


@dataclass(frozen=True)
class Stats:
    """Normalization statistics from the training parts only (baked into the exported model)."""

    temp_mean: float  # mean temperature, °F
    temp_std: float  # std of temperature, °F
    delta_std: float  # std of the hour-to-hour change, °F: the scale of the predicted residual


# ----------------------------------------------------------------------------- loading


def load_builtin_cities() -> dict[str, pd.DataFrame]:
    """Seattle and San Francisco 2010 from the files shipped in vega_datasets (no network)."""
    from vega_datasets import local_data

    return {"seattle": local_data.seattle_temps(), "san_francisco": local_data.sf_temps()}


def load_csv(path: str | Path) -> pd.DataFrame:
    """A user CSV with columns `date` (parseable timestamps) and `temp` (°F), one row an hour."""
    path = Path(path)
    if not path.is_file():
        raise ExportInputError(
            f"data file {str(path)!r} does not exist (give a CSV with columns date,temp)"
        )
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ExportInputError(f"data file {str(path)!r} is not a readable CSV: {exc}") from None
    return frame


def city_series(name: str, frame: pd.DataFrame) -> CitySeries:
    """Validate one city's frame and turn it into features, next-hour targets and a baseline."""
    missing = {"date", "temp"} - set(frame.columns)
    if missing:
        raise ExportInputError(
            f"data for {name!r} lacks column(s) {sorted(missing)}: need date,temp"
        )
    if len(frame) < 2:
        raise ExportInputError(f"data for {name!r} has {len(frame)} row(s): need at least 2 hours")
    try:
        dates = pd.DatetimeIndex(pd.to_datetime(frame["date"]))
        temp = pd.to_numeric(frame["temp"]).to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ExportInputError(f"data for {name!r} has unparseable values: {exc}") from None
    if not np.all(np.isfinite(temp)) or dates.hasnans:
        bad = int(np.sum(~np.isfinite(temp))) + int(dates.isna().sum())
        raise ExportInputError(f"data for {name!r} has {bad} NaN/inf value(s): clean or drop them")
    if not dates.is_monotonic_increasing or dates.has_duplicates:
        raise ExportInputError(f"data for {name!r} is not in strictly increasing time order")

    hour = dates.hour.to_numpy() + dates.minute.to_numpy() / 60.0
    angle = 2.0 * math.pi * hour / 24.0
    feats = np.stack([temp, np.sin(angle), np.cos(angle)], axis=1)  # [T+1, 3]

    # Seasonal naive: the temperature at the same clock time one day before the target hour.
    # Looked up by timestamp (the data skip one hour at the DST change); where that hour is
    # missing, fall back to 24 rows back, and where even that is missing, to persistence.
    by_time = pd.Series(temp, index=dates)
    target_dates = dates[1:]
    seasonal = by_time.reindex(target_dates - SEASONAL_LAG).to_numpy()
    back = np.concatenate([np.full(23, np.nan), temp[: max(len(temp) - 24, 0)]])
    rows_back = back[: len(temp) - 1]
    seasonal = np.where(np.isnan(seasonal), rows_back, seasonal)
    seasonal = np.where(np.isnan(seasonal), temp[:-1], seasonal)

    return CitySeries(
        name=name,
        dates=dates[:-1],
        x=feats[:-1].astype(np.float32),
        y=temp[1:].astype(np.float32),
        seasonal=seasonal.astype(np.float32),
    )


def load_cities(csv_paths: list[str] | None = None) -> list[CitySeries]:
    """The built-in cities, or one series per user CSV (named by the file stem)."""
    if csv_paths:
        frames = {Path(p).stem: load_csv(p) for p in csv_paths}
    else:
        frames = load_builtin_cities()
    return [city_series(name, frame) for name, frame in frames.items()]


# ----------------------------------------------------------------------------- splitting


def chronological_split(n: int, val_frac: float = 0.15, test_frac: float = 0.15) -> Split:
    """Train on the past, validate on the next part, test on the last part: no shuffling."""
    n_test = int(round(n * test_frac))
    n_val = int(round(n * val_frac))
    n_train = n - n_val - n_test
    if n_train < 1 or n_val < 1 or n_test < 1:
        raise ExportInputError(f"{n} hours are too few to split into train/validation/test")
    return Split(train=(0, n_train), val=(n_train, n_train + n_val), test=(n_train + n_val, n))


def train_stats(cities: list[CitySeries], splits: list[Split]) -> Stats:
    """Mean/std of temperature and of the hourly change, over the training parts only."""
    now = [part(c.x[:, 0], s.train) for c, s in zip(cities, splits, strict=True)]
    nxt = [part(c.y, s.train) for c, s in zip(cities, splits, strict=True)]
    temps = np.concatenate(now)
    deltas = np.concatenate(nxt) - temps
    temp_std = float(np.std(temps.astype(np.float64)))
    delta_std = float(np.std(deltas.astype(np.float64)))
    if temp_std <= 0.0 or delta_std <= 0.0:
        raise ExportInputError("the training temperatures are constant: nothing to learn")
    return Stats(float(np.mean(temps.astype(np.float64))), temp_std, delta_std)


def make_windows(
    cities: list[CitySeries], splits: list[Split], window: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-length training windows cut from each city's training part.

    Returns x [N, window, 3] and y [N, window, 1]. One week (168 h) keeps several daily cycles in
    view; the stride trades overlap (more windows) against epoch time. The model itself runs on
    any length: windows are only how it is trained.
    """
    if window < 1:
        raise ExportInputError(f"--window must be at least 1 hour, got {window}")
    if stride < 1:
        raise ExportInputError(f"--stride must be at least 1 hour, got {stride}")
    xs, ys = [], []
    for city, split in zip(cities, splits, strict=True):
        start, stop = split.train
        if stop - start < window:
            raise ExportInputError(
                f"--window {window} is longer than {city.name}'s training part ({stop - start} h)"
            )
        for s in range(start, stop - window + 1, stride):
            xs.append(city.x[s : s + window])
            ys.append(city.y[s : s + window, None])
    return np.stack(xs), np.stack(ys)


# ----------------------------------------------------------------------------- baselines


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root mean squared error in the data's unit (°F), computed in float64."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    return float(np.sqrt(np.mean(diff * diff)))


def part(values: np.ndarray, rng: tuple[int, int]) -> np.ndarray:
    """The rows of one split part."""
    return values[rng[0] : rng[1]]


def baseline_rmse(cities: list[CitySeries], splits: list[Split], which: str) -> dict[str, float]:
    """Persistence (next hour = this hour) and seasonal naive (= same hour yesterday), pooled."""
    rngs = [getattr(s, which) for s in splits]
    target = np.concatenate([part(c.y, r) for c, r in zip(cities, rngs, strict=True)])
    persistence = np.concatenate([part(c.x[:, 0], r) for c, r in zip(cities, rngs, strict=True)])
    seasonal = np.concatenate([part(c.seasonal, r) for c, r in zip(cities, rngs, strict=True)])
    return {"persistence": rmse(persistence, target), "seasonal_naive": rmse(seasonal, target)}
