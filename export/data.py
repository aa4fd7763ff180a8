"""Observed hourly weather -> features, next-hour targets, a split by whole months, training
windows, and the evaluation rule every model and baseline is scored by.

The data are a typical meteorological year (export/weather.py): twelve real observed months,
each from a different year, so a month is a sequence of its own and nothing (no training window,
no model state, no baseline's look-back) ever crosses a month boundary.

Row t of a month holds that hour's readings (the model's inputs, named from the vocabulary in
weather.FEATURE_UNITS, `temperature_f` first); the target of row t is the dry-bulb temperature
of row t+1. The evaluation rule (declared in every model.json): each scored month is run from a
zero state at its row 0; the forecasts made at rows 0..23 warm the state up and are not scored;
every later forecast with a target in the same month is (rows 24..N-2 of an N-hour month).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from rnnserve.export.errors import ExportInputError
from rnnserve.export.weather import FEATURE_UNITS, SITES, TRAINING_SITE, load_site

DEFAULT_FEATURES: tuple[str, ...] = (
    "temperature_f", "dew_point_f", "relative_humidity", "pressure_mbar", "wind_speed_ms",
    "ghi_wm2", "hour_sin", "hour_cos", "doy_sin", "doy_cos",
)
OUTPUTS: list[tuple[str, str]] = [("next_hour_temperature_f", "degF")]
VAL_MONTHS: tuple[int, ...] = (1, 7)  # early stopping, model choice, the ridge's penalty
TEST_MONTHS: tuple[int, ...] = (4, 10)  # scored once, at the end: spring and autumn fronts
WARMUP_HOURS = 24  # forecasts made in a month's first 24 rows are not scored
YESTERDAY = 24  # hours back for "same hour yesterday"


EVALUATION_RULE = (
    "each month is run from a zero state at its first row; the forecasts made at its first 24 "
    "rows warm the state up and are not scored; every later forecast whose target (the next "
    "row) is in the same month is scored; RMSE in °F pooled over the scored rows of the months"
)
BASELINE_RULES = {
    "persistence": "next hour = this hour's temperature_f",
    "same_hour_yesterday": "next hour = temperature_f 24 rows before the target row",
    "linear_ar": "ridge regression of the next-hour change on the previous 24 hours of the "
                 "model's features (standardized with the training statistics), fitted on the "
                 "training months, penalty chosen on the validation months",
}


def site_label(name: str) -> str:
    return SITES[name].label if name in SITES else name


def site_file(name: str) -> str:
    """The data file as model.json declares it: pvlib's data/<file> for a pvlib site."""
    return f"pvlib/data/{SITES[name].file}" if name in SITES else name


def data_source(data: str) -> str:
    if data in SITES:
        kind = SITES[data].kind.upper()
        return (f"{kind} typical meteorological year {SITES[data].file} ({SITES[data].label}): "
                "hourly observations, each month one real observed month of a different year, "
                "from the pvlib package's data folder")
    return f"user TMY file: {data}"


def features_with_units(names: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """[(name, unit)] for model.json, in input order."""
    return [(n, FEATURE_UNITS[n]) for n in names]


def check_features(names: list[str]) -> tuple[str, ...]:
    """A model's feature list: known names, no repeats, `temperature_f` first (the forecast is
    a change added to it)."""
    unknown = [n for n in names if n not in FEATURE_UNITS]
    if unknown:
        raise ExportInputError(f"unknown feature(s) {', '.join(map(repr, unknown))}: choose "
                               f"from {','.join(FEATURE_UNITS)}")
    if len(set(names)) != len(names) or not names or names[0] != "temperature_f":
        raise ExportInputError("--features must list each name once, temperature_f first")
    return tuple(names)


@dataclass(frozen=True)
class Month:
    """One observed month: row t of `x` predicts `y[t]`, the temperature of row t+1."""

    month: int  # 1..12
    x: np.ndarray  # [N-1, F] float32 inputs in physical units
    y: np.ndarray  # [N-1]    float32 next-hour dry-bulb temperature, °F
    times: np.ndarray  # [N-1] datetime64: when row t was read (local standard time, real year)

    @property
    def scored(self) -> slice:
        """The rows whose forecasts are scored: all but the first WARMUP_HOURS."""
        return slice(WARMUP_HOURS, len(self.y))


@dataclass(frozen=True)
class Site:
    name: str
    features: tuple[str, ...]
    months: dict[int, Month]

    def pick(self, months: tuple[int, ...]) -> list[Month]:
        return [self.months[m] for m in months]


def site_months(name: str, frame: pd.DataFrame, features: tuple[str, ...]) -> Site:
    """Cut a TMY frame into its months (each a contiguous block of rows in the file)."""
    month_of_row = frame["month"].to_numpy()
    starts = np.flatnonzero(np.diff(month_of_row, prepend=-1))
    stops = [*starts[1:], len(frame)]
    values = frame[list(features)].to_numpy(dtype=np.float64)
    temps = frame["temperature_f"].to_numpy(dtype=np.float64)
    times = frame["time"].to_numpy()
    months: dict[int, Month] = {}
    for start, stop in zip(starts, stops, strict=True):
        m = int(month_of_row[start])
        if m in months:
            raise ExportInputError(f"{name}: month {m} is not one contiguous block of rows")
        if stop - start < WARMUP_HOURS + 2:
            raise ExportInputError(f"{name}: month {m} has {stop - start} hours; need at least "
                                   f"{WARMUP_HOURS + 2} (a day to warm up, then a forecast)")
        months[m] = Month(m, values[start : stop - 1].astype(np.float32),
                          temps[start + 1 : stop].astype(np.float32), times[start : stop - 1])
    return Site(name, features, months)


def load(site_or_path: str, features: tuple[str, ...]) -> Site:
    name, frame = load_site(site_or_path)
    return site_months(name, frame, features)


def load_all_sites(features: tuple[str, ...]) -> dict[str, Site]:
    """The training site first, then the two it is never trained on."""
    return {name: load(name, features) for name in [TRAINING_SITE, *
            (s for s in SITES if s != TRAINING_SITE)]}


@dataclass(frozen=True)
class MonthSplit:
    """Whole calendar months per part; every month not validation or test trains."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    @classmethod
    def declare(cls, site: Site, val: tuple[int, ...], test: tuple[int, ...]) -> MonthSplit:
        for label, months in (("validation", val), ("test", test)):
            missing = [m for m in months if m not in site.months]
            if not months or missing:
                raise ExportInputError(f"{label} months {list(months)} must be non-empty and "
                                       f"in the data (it has {sorted(site.months)})")
        if set(val) & set(test):
            raise ExportInputError(f"months {sorted(set(val) & set(test))} are both "
                                   "validation and test")
        train = tuple(m for m in sorted(site.months) if m not in val and m not in test)
        if not train:
            raise ExportInputError("no month is left for training")
        return cls(train, tuple(val), tuple(test))


@dataclass(frozen=True)
class Stats:
    """Normalization from the training months only (baked into the exported model)."""

    mean: tuple[float, ...]  # per feature, physical units
    std: tuple[float, ...]  # per feature (1.0 where a feature is constant)
    delta_std: float  # std of the hour-to-hour temperature change, °F: the output's scale


def train_stats(months: list[Month]) -> Stats:
    x = np.concatenate([m.x for m in months]).astype(np.float64)
    deltas = np.concatenate([m.y.astype(np.float64) - m.x[:, 0] for m in months])
    std = np.std(x, axis=0)
    delta_std = float(np.std(deltas))
    if std[0] <= 0.0 or delta_std <= 0.0:
        raise ExportInputError("the training temperatures are constant: nothing to learn")
    std = np.where(std > 0.0, std, 1.0)
    return Stats(tuple(float(v) for v in x.mean(axis=0)), tuple(float(v) for v in std),
                 delta_std)


def make_windows(months: list[Month], window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Training windows inside each month: x [N, window, F], y [N, window, 1]; the last one
    ends on the month's last row, so every hour is seen."""
    if window < 1:
        raise ExportInputError(f"--window must be at least 1 hour, got {window}")
    if stride < 1:
        raise ExportInputError(f"--stride must be at least 1 hour, got {stride}")
    xs, ys = [], []
    for month in months:
        n = len(month.y)
        if n < window:
            raise ExportInputError(f"--window {window} is longer than month {month.month} "
                                   f"({n} h)")
        starts = list(range(0, n - window + 1, stride))
        if starts[-1] != n - window:
            starts.append(n - window)
        for s in starts:
            xs.append(month.x[s : s + window])
            ys.append(month.y[s : s + window, None])
    return np.stack(xs), np.stack(ys)


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root mean squared error in °F, computed in float64."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    return float(np.sqrt(np.mean(diff * diff)))


def scored_rmse(months: list[Month], forecasts: list[np.ndarray]) -> float:
    """RMSE pooled over the scored rows of every month (forecasts[i] is [N-1] for months[i])."""
    pred = np.concatenate([f[m.scored] for m, f in zip(months, forecasts, strict=True)])
    target = np.concatenate([m.y[m.scored] for m in months])
    return rmse(pred, target)
