"""Features, targets, chronological splits, windows and the two baselines."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from rnnserve.export import data as D
from rnnserve.export.errors import ExportInputError


def frame(temps: list[float], start: str = "2010-01-01") -> pd.DataFrame:
    return pd.DataFrame({"date": pd.date_range(start, periods=len(temps), freq="h"),
                         "temp": temps})


def test_builtin_cities_ship_with_the_package() -> None:
    cities = D.load_cities()
    assert [c.name for c in cities] == ["seattle", "san_francisco"]
    for c in cities:
        assert c.x.shape == (8758, 3) and c.y.shape == (8758,)  # 8759 hours, last has no target
        assert c.x.dtype == np.float32 and np.isfinite(c.x).all()


def test_features_in_contract_order_and_next_hour_target() -> None:
    city = D.city_series("t", frame([50.0, 51.0, 53.0, 52.0], start="2010-01-01 06:00"))
    assert [name for name, _ in D.FEATURES] == ["temperature_f", "hour_sin", "hour_cos"]
    np.testing.assert_allclose(city.x[:, 0], [50, 51, 53])
    np.testing.assert_allclose(city.y, [51, 53, 52])  # next hour
    np.testing.assert_allclose(city.x[0, 1:], [math.sin(math.pi / 2), math.cos(math.pi / 2)],
                               atol=1e-7)  # 06:00 is a quarter of the day


def test_seasonal_naive_is_same_hour_yesterday_even_across_a_gap() -> None:
    temps = [float(i) for i in range(60)]
    df = frame(temps).drop(index=30).reset_index(drop=True)  # one missing hour, like DST
    city = D.city_series("t", df)
    # Target at row 40 is 2010-01-02 18:00 (41 wall-clock hours in, one skipped): yesterday 18:00.
    target_time = city.dates[40] + pd.Timedelta(hours=1)
    assert target_time == pd.Timestamp("2010-01-02 18:00")
    assert city.y[40] == 42.0 and city.seasonal[40] == 18.0


def test_split_is_chronological_and_stats_come_from_train_only() -> None:
    split = D.chronological_split(100)
    assert split.train == (0, 70) and split.val == (70, 85) and split.test == (85, 100)
    temps = [10.0] * 70 + [1000.0] * 31
    temps[1::2] = [t + 2 for t in temps[1::2]]
    city = D.city_series("t", frame(temps))
    stats = D.train_stats([city], [split])
    assert 10 <= stats.temp_mean <= 12  # the 1000s of val/test never leak in


def test_windows_and_baselines_by_hand() -> None:
    city = D.city_series("t", frame([float(i % 24) for i in range(24 * 20)]))
    split = D.chronological_split(len(city.y))
    x, y = D.make_windows([city], [split], window=48, stride=24)
    assert x.shape[1:] == (48, 3) and y.shape[1:] == (48, 1)
    np.testing.assert_array_equal(y[1, :, 0], city.y[24:72])
    base = D.baseline_rmse([city], [split], "test")
    assert base["seasonal_naive"] == 0.0  # a perfectly periodic day
    assert base["persistence"] > 1.0  # the 23 -> 0 wrap-around


@pytest.mark.parametrize(
    ("df", "message"),
    [
        (frame([]), "at least 2 hours"),
        (frame([50.0, float("nan"), 52.0]), "NaN"),
        (pd.DataFrame({"date": ["2010-01-01"], "tmp": [1.0]}), "lacks column"),
        (frame([1.0, 2.0]).iloc[::-1], "increasing time order"),
    ],
)
def test_bad_data_is_rejected_with_a_reason(df: pd.DataFrame, message: str) -> None:
    with pytest.raises(ExportInputError, match=message):
        D.city_series("t", df)


def test_bad_windows_are_rejected() -> None:
    city = D.city_series("t", frame([float(i) for i in range(100)]))
    split = D.chronological_split(len(city.y))
    for window, stride, message in [(0, 1, "--window"), (10, 0, "--stride"), (500, 1, "longer")]:
        with pytest.raises(ExportInputError, match=message):
            D.make_windows([city], [split], window, stride)
