"""Real observed hourly weather from the typical-meteorological-year files shipped in pvlib.

A TMY file holds one year of hourly readings in which every calendar month is one real observed
month, picked from a different year. Three ship inside the pvlib wheel (no download, ever):

    greensboro  TMY3 723170TYA.CSV   Greensboro Piedmont Triad Intl, NC (training site)
    sand_point  TMY3 703165TY.csv    Sand Point, AK                     (scored, never trained)
    miami       TMY2 12839.tm2       Miami, FL                          (scored, never trained)

`load_site` turns one file into a frame with one column per name of the feature vocabulary (in
physical units, see FEATURE_UNITS) plus `month` (1-12, from the file's date column). Row order
is the file's; the hour comes from the file's time column (TMY3 01:00..24:00, TMY2 1..24) modulo
24, local standard time as in the file, and the day of year from the date column of the same row
(so the 24:00 reading belongs to its own day and month, as in the file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rnnserve.export.errors import ExportInputError

FEATURE_UNITS: dict[str, str] = {
    "temperature_f": "degF",  # dry-bulb temperature
    "dew_point_f": "degF",
    "relative_humidity": "%",
    "pressure_mbar": "mbar",  # station pressure (not reduced to sea level)
    "wind_speed_ms": "m/s",
    "ghi_wm2": "W/m2",  # global horizontal irradiance
    "hour_sin": "1",  # sin(2π·h/24), h = the file's hour modulo 24
    "hour_cos": "1",
    "doy_sin": "1",  # sin(2π·(d−1)/365), d = day of year of the file's date
    "doy_cos": "1",
}
"""The feature vocabulary: every name a model.json may list as an input, with its unit."""


@dataclass(frozen=True)
class SiteFile:
    """One TMY file inside pvlib's data folder."""

    file: str
    kind: str  # "tmy3" | "tmy2"
    label: str


SITES: dict[str, SiteFile] = {
    "greensboro": SiteFile("723170TYA.CSV", "tmy3", "Greensboro, NC"),
    "sand_point": SiteFile("703165TY.csv", "tmy3", "Sand Point, AK"),
    "miami": SiteFile("12839.tm2", "tmy2", "Miami, FL"),
}
TRAINING_SITE = "greensboro"


def _pvlib() -> Any:
    """pvlib, imported lazily (only training and tests need it), or a one-line remedy."""
    try:
        import pvlib
        import pvlib.iotools
    except ImportError as exc:
        raise ExportInputError(f"reading the weather files needs pvlib ({exc}): "
                               "pip install -e '.[train]'") from None
    return pvlib


def pvlib_data_dir() -> Path:
    """pvlib's installed data folder: the TMY files ship in its wheel."""
    return Path(_pvlib().__file__).resolve().parent / "data"


def site_path(site: str) -> Path:
    """The file of a named site, as installed with pvlib."""
    if site not in SITES:
        raise ExportInputError(f"unknown site {site!r}: choose one of {', '.join(SITES)}")
    return pvlib_data_dir() / SITES[site].file


def _f(celsius: pd.Series) -> np.ndarray:
    return celsius.to_numpy(dtype=np.float64) * 9.0 / 5.0 + 32.0


def _read_tmy3(path: Path) -> pd.DataFrame:
    raw, _ = _pvlib().iotools.read_tmy3(str(path), map_variables=True)
    dates = pd.to_datetime(raw["Date (MM/DD/YYYY)"], format="%m/%d/%Y")
    hours = raw["Time (HH:MM)"].str.split(":").str[0].astype(int)
    return pd.DataFrame({
        "temperature_f": _f(raw["temp_air"]),
        "dew_point_f": _f(raw["temp_dew"]),
        "relative_humidity": raw["relative_humidity"].to_numpy(dtype=np.float64),
        "pressure_mbar": raw["pressure"].to_numpy(dtype=np.float64),
        "wind_speed_ms": raw["wind_speed"].to_numpy(dtype=np.float64),
        "ghi_wm2": raw["ghi"].to_numpy(dtype=np.float64),
        "hour": hours.to_numpy() % 24,
        "month": dates.dt.month.to_numpy(),
        "doy": dates.dt.day_of_year.to_numpy(),
        "time": (dates + pd.to_timedelta(hours, unit="h")).to_numpy(),
    })


def _read_tmy2(path: Path) -> pd.DataFrame:
    """TMY2 stores temperatures and wind in tenths (°C, m/s); pvlib returns them as stored."""
    raw, _ = _pvlib().iotools.read_tmy2(str(path))
    year = raw["year"].astype(int)
    year = np.where(year < 100, year + 1900, year)  # TMY2 years are two digits, all 19xx
    dates = pd.to_datetime(pd.DataFrame({"year": year, "month": raw["month"].astype(int),
                                         "day": raw["day"].astype(int)}))
    return pd.DataFrame({
        "temperature_f": _f(raw["DryBulb"] / 10.0),
        "dew_point_f": _f(raw["DewPoint"] / 10.0),
        "relative_humidity": raw["RHum"].to_numpy(dtype=np.float64),
        "pressure_mbar": raw["Pressure"].to_numpy(dtype=np.float64),
        "wind_speed_ms": raw["Wspd"].to_numpy(dtype=np.float64) / 10.0,
        "ghi_wm2": raw["GHI"].to_numpy(dtype=np.float64),
        "hour": raw["hour"].astype(int).to_numpy() % 24,
        "month": dates.dt.month.to_numpy(),
        "doy": dates.dt.day_of_year.to_numpy(),
        "time": (dates + pd.to_timedelta(raw["hour"].astype(int), unit="h")).to_numpy(),
    })


def read_tmy(path: str | Path, kind: str | None = None) -> pd.DataFrame:
    """One TMY2/TMY3 file -> the vocabulary's columns, `month`, `hour`, `doy` and `time` (the
reading's local standard time; 24:00 is 00:00 of the next day), in file order."""
    path = Path(path)
    if not path.is_file():
        raise ExportInputError(
            f"weather file {str(path)!r} does not exist: give a site ({', '.join(SITES)}) or a "
            "TMY3 .csv / TMY2 .tm2 file"
        )
    kind = kind or ("tmy2" if path.suffix.lower() == ".tm2" else "tmy3")
    try:
        frame = _read_tmy2(path) if kind == "tmy2" else _read_tmy3(path)
    except ExportInputError:
        raise
    except Exception as exc:  # pvlib's readers raise many types for a file that is not TMY
        raise ExportInputError(
            f"weather file {str(path)!r} is not a readable {kind.upper()} file: {exc}"
        ) from None
    hour_angle = 2.0 * math.pi * frame["hour"].to_numpy() / 24.0
    doy_angle = 2.0 * math.pi * (frame["doy"].to_numpy() - 1) / 365.0
    frame["hour_sin"], frame["hour_cos"] = np.sin(hour_angle), np.cos(hour_angle)
    frame["doy_sin"], frame["doy_cos"] = np.sin(doy_angle), np.cos(doy_angle)
    values = frame[list(FEATURE_UNITS)].to_numpy()
    if not np.all(np.isfinite(values)):
        raise ExportInputError(
            f"weather file {str(path)!r} has {int(np.sum(~np.isfinite(values)))} missing or "
            "non-numeric reading(s): fill or drop them"
        )
    return frame


def load_site(site_or_path: str) -> tuple[str, pd.DataFrame]:
    """A named site (greensboro, sand_point, miami) or a path to a TMY file -> (name, frame)."""
    if site_or_path in SITES:
        return site_or_path, read_tmy(site_path(site_or_path), SITES[site_or_path].kind)
    path = Path(site_or_path)
    return path.stem, read_tmy(path)
