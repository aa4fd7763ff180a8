"""Observed weather -> features, next-hour targets, the split by months, windows, the scoring
rule and the three baselines."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rnnserve.export import data as D
from rnnserve.export.baselines import RidgeAR, baseline_rmse, persistence, same_hour_yesterday
from rnnserve.export.errors import ExportInputError
from rnnserve.export.weather import FEATURE_UNITS, SITES, load_site, pvlib_data_dir

pytest.importorskip("pvlib", reason="needs the train extra (pvlib)")


def synthetic(temps_by_month: dict[int, list[float]]) -> D.Site:
    """A site of the given months (temperature_f and hour_sin only), hours counted from 0."""
    rows = []
    for month, temps in temps_by_month.items():
        for i, t in enumerate(temps):
            rows.append({"temperature_f": t, "hour_sin": math.sin(2 * math.pi * (i % 24) / 24),
                         "month": month, "time": pd.Timestamp(2001, month, 1) + pd.Timedelta(
                             hours=i)})
    return D.site_months("synthetic", pd.DataFrame(rows), ("temperature_f", "hour_sin"))


def test_the_three_sites_ship_inside_pvlib() -> None:
    """Nothing downloads: the files are in the installed package."""
    for name, site in SITES.items():
        assert (pvlib_data_dir() / site.file).is_file()
        _, frame = load_site(name)
        assert len(frame) == 8760 and sorted(frame["month"].unique()) == list(range(1, 13))
        assert np.isfinite(frame[list(FEATURE_UNITS)].to_numpy()).all()


def test_greensboro_in_physical_units() -> None:
    _, frame = load_site("greensboro")
    first = frame.iloc[0]  # 01/01/1988,01:00: dry bulb 10.0 °C, dew point 6.1 °C, 993 mbar
    assert first["temperature_f"] == pytest.approx(50.0)
    assert first["dew_point_f"] == pytest.approx(6.1 * 9 / 5 + 32)
    assert first["pressure_mbar"] == 993 and first["wind_speed_ms"] == pytest.approx(6.2)
    assert first["hour"] == 1 and first["doy"] == 1
    midnight = frame.iloc[23]  # the file's 24:00 row belongs to its own date
    assert midnight["hour"] == 0 and midnight["doy"] == 1 and midnight["month"] == 1
    assert midnight["hour_sin"] == 0.0 and midnight["hour_cos"] == 1.0
    assert 900 < frame["pressure_mbar"].mean() < 1050  # mbar, not kPa
    persistence_all = np.sqrt(np.mean(np.diff(frame["temperature_f"].to_numpy()) ** 2))
    assert persistence_all == pytest.approx(2.36, abs=0.01)  # the figure the issue quotes


def test_miami_tmy2_tenths_are_scaled() -> None:
    _, frame = load_site("miami")
    assert 60 < frame["temperature_f"].mean() < 85  # °F, not tenths of °C
    assert 1 < frame["wind_speed_ms"].mean() < 10


def test_months_targets_and_the_scoring_rule() -> None:
    site = synthetic({1: [float(i) for i in range(30)], 2: [100.0 + i for i in range(40)]})
    jan = site.months[1]
    assert jan.x.shape == (29, 2) and jan.y.shape == (29,)
    np.testing.assert_array_equal(jan.y, np.arange(1, 30))  # the next row, same month only
    assert jan.scored == slice(24, 29)
    # a forecast that is wrong only in the warm-up scores zero
    perfect = jan.y.astype(np.float64).copy()
    perfect[:24] = -999
    assert D.scored_rmse([jan], [perfect]) == 0.0


def test_split_by_whole_months_and_stats_from_training_months_only() -> None:
    site = synthetic({m: [10.0 * m + (i % 2) for i in range(30)] for m in range(1, 6)})
    split = D.MonthSplit.declare(site, (2,), (4, 5))
    assert split.train == (1, 3)
    stats = D.train_stats(site.pick(split.train))
    assert stats.mean[0] == pytest.approx(20.5, abs=0.05)  # months 1 and 3 only
    for val, test, message in [((2,), (2,), "both"), ((), (4,), "non-empty"),
                               ((13,), (4,), "in the data")]:
        with pytest.raises(ExportInputError, match=message):
            D.MonthSplit.declare(site, val, test)


def test_windows_stay_inside_months() -> None:
    site = synthetic({1: [float(i) for i in range(50)], 2: [1000.0 + i for i in range(50)]})
    x, y = D.make_windows(site.pick((1, 2)), window=30, stride=15)
    assert x.shape == (6, 30, 2) and y.shape == (6, 30, 1)  # starts 0, 15, and 19 (the end)
    for window in x[:, :, 0]:
        assert window.max() < 1000 or window.min() >= 1000  # never across a boundary
    for window, stride, message in [(0, 1, "--window"), (10, 0, "--stride"), (500, 1, "longer")]:
        with pytest.raises(ExportInputError, match=message):
            D.make_windows(site.pick((1,)), window, stride)


def test_baselines_by_hand() -> None:
    day = [float(i % 24) for i in range(24 * 5)]
    site = synthetic({1: day, 2: day})
    jan = site.months[1]
    np.testing.assert_array_equal(persistence(jan), jan.x[:, 0])
    yesterday = same_hour_yesterday(jan)
    np.testing.assert_array_equal(yesterday[23:], jan.x[: len(jan.y) - 23, 0])
    stats = D.train_stats([jan])
    ridge = RidgeAR.fit([jan], stats, 1e-6)
    base = baseline_rmse([site.months[2]], ridge)
    assert base["same_hour_yesterday"] == 0.0  # a perfectly periodic day
    assert base["persistence"] > 1.0  # the 23 -> 0 wrap-around
    assert base["linear_ar"] < 1e-3  # 24 hours of history see the whole cycle


def test_feature_lists_are_checked() -> None:
    assert D.check_features(["temperature_f", "ghi_wm2"]) == ("temperature_f", "ghi_wm2")
    for names, message in [(["ghi_wm2", "temperature_f"], "temperature_f first"),
                           (["temperature_f", "temperature_f"], "once"),
                           (["temperature_f", "visibility"], "unknown feature")]:
        with pytest.raises(ExportInputError, match=message):
            D.check_features(names)


def test_bad_weather_files_are_rejected_with_a_reason(tmp_path: Path) -> None:
    garbage = tmp_path / "x.csv"
    garbage.write_text("not,a\ntmy,file\n")
    for path, message in [(tmp_path / "none.csv", "does not exist"),
                          (garbage, "not a readable TMY3 file")]:
        with pytest.raises(ExportInputError, match=message):
            load_site(str(path))
