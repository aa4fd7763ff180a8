"""The committed models scored against the baselines by the rule their model.json declares, from
the raw pvlib files, with none of the training code (nothing from rnnserve.export): the TMY3
files are read here with the csv module, the TMY2 file with pvlib's plain reader; the features,
the baselines, the ridge regression and the scoring are written again below from the words of
docs/training.md and model.json.

What a user relies on: the RMSE figures in metrics.json (and the README) are what the files on
disk score on real weather, and the LSTM and GRU beat persistence by 30 % and the linear
baseline on the test months of the site they were trained on.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import date
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

pvlib = pytest.importorskip("pvlib")

MODELS = Path(__file__).resolve().parents[2] / "models"
CELLS = ("rnn", "lstm", "gru")
SITE_FILES = {"greensboro": "723170TYA.CSV", "sand_point": "703165TY.csv", "miami": "12839.tm2"}
WARMUP = 24
LAGS = 24
TOLERANCE_F = 2e-3  # float32 ONNX Runtime vs PyTorch, and rounding to 4 places


def f_from_c(celsius: float) -> float:
    return celsius * 9.0 / 5.0 + 32.0


def raw_rows(path: Path) -> list[dict[str, float]]:
    """Every reading of a TMY file in file order: physical quantities plus month, hour, doy."""
    rows = []
    if path.suffix.lower() == ".tm2":
        frame, _ = pvlib.iotools.read_tmy2(str(path))  # values as stored: tenths of °C and m/s
        for r in frame.itertuples():
            year = int(r.year) + 1900
            day = date(year, int(r.month), int(r.day))
            rows.append({"t": f_from_c(r.DryBulb / 10), "td": f_from_c(r.DewPoint / 10),
                         "rh": float(r.RHum), "p": float(r.Pressure), "w": r.Wspd / 10,
                         "ghi": float(r.GHI), "month": day.month, "hour": int(r.hour) % 24,
                         "doy": day.timetuple().tm_yday})
        return rows
    with path.open(newline="") as fh:
        next(fh)  # station line
        for r in csv.DictReader(fh):
            month, dd, year = (int(v) for v in r["Date (MM/DD/YYYY)"].split("/"))
            rows.append({"t": f_from_c(float(r["Dry-bulb (C)"])),
                         "td": f_from_c(float(r["Dew-point (C)"])),
                         "rh": float(r["RHum (%)"]), "p": float(r["Pressure (mbar)"]),
                         "w": float(r["Wspd (m/s)"]), "ghi": float(r["GHI (W/m^2)"]),
                         "month": month, "hour": int(r["Time (HH:MM)"].split(":")[0]) % 24,
                         "doy": date(year, month, dd).timetuple().tm_yday})
    return rows


def feature(row: dict[str, float], name: str) -> float:
    """The vocabulary of docs/training.md."""
    hour = 2 * math.pi * row["hour"] / 24
    doy = 2 * math.pi * (row["doy"] - 1) / 365
    return {
        "temperature_f": row["t"], "dew_point_f": row["td"], "relative_humidity": row["rh"],
        "pressure_mbar": row["p"], "wind_speed_ms": row["w"], "ghi_wm2": row["ghi"],
        "hour_sin": math.sin(hour), "hour_cos": math.cos(hour),
        "doy_sin": math.sin(doy), "doy_cos": math.cos(doy),
    }[name]


def months_of(site: str, features: list[str]) -> dict[int, np.ndarray]:
    """month -> [N, F] float32 rows of that month (the file's rows, in order)."""
    path = Path(pvlib.__file__).parent / "data" / SITE_FILES[site]
    out: dict[int, list[list[float]]] = {}
    for row in raw_rows(path):
        out.setdefault(int(row["month"]), []).append([feature(row, n) for n in features])
    return {m: np.asarray(v, dtype=np.float32) for m, v in out.items()}


def run_month(session: ort.InferenceSession, meta: dict, x: np.ndarray) -> np.ndarray:
    """One month from a zero state in one call: the forecast made at each row, °F."""
    feeds = {"input": x[None]}
    for pair in meta["state_pairs"]:
        feeds[pair["input"]] = np.zeros((meta["layers"], 1, meta["hidden_size"]), np.float32)
    return session.run(["output"], feeds)[0][0, :, 0].astype(np.float64)


def score(forecasts: dict[int, np.ndarray], months: dict[int, np.ndarray]) -> float:
    """The declared rule: the forecast at row t targets row t+1 of the same month; rows 0..23
    warm up; RMSE pooled over the rest."""
    errors = []
    for m, pred in forecasts.items():
        temp = months[m][:, 0].astype(np.float64)
        errors.append(pred[WARMUP : len(temp) - 1] - temp[WARMUP + 1 :])
    e = np.concatenate(errors)
    return float(np.sqrt(np.mean(e * e)))


def lagged(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Row t: the standardized features of rows t-23..t, oldest first (zeros before row 0)."""
    z = (x.astype(np.float64) - mean) / std
    padded = np.vstack([np.zeros((LAGS - 1, z.shape[1])), z])
    return np.hstack([padded[i : i + len(z)] for i in range(LAGS)])


def ridge(train: list[np.ndarray], mean: np.ndarray, std: np.ndarray, penalty: float):
    """Ridge (free intercept) of the next-hour change on 24 h of features, rows with a full day
    of history in the training months; returns a forecaster of a month's rows."""
    xs, ys = [], []
    for x in train:
        temp = x[:, 0].astype(np.float64)
        xs.append(lagged(x, mean, std)[LAGS - 1 : -1])
        ys.append((temp[1:] - temp[:-1])[LAGS - 1 :])
    a, b = np.vstack(xs), np.concatenate(ys)
    a_mean, b_mean = a.mean(axis=0), b.mean()
    ac = a - a_mean
    w = np.linalg.solve(ac.T @ ac + penalty * np.eye(a.shape[1]), ac.T @ (b - b_mean))
    return lambda x: x[:, 0] + (lagged(x, mean, std) @ w + b_mean - a_mean @ w)


@pytest.fixture(scope="module")
def committed() -> dict[str, tuple[dict, dict]]:
    out = {}
    for cell in CELLS:
        folder = MODELS / f"temperature-{cell}"
        out[cell] = (json.loads((folder / "model.json").read_text()),
                     json.loads((folder / "metrics.json").read_text()))
    return out


@pytest.mark.parametrize("cell", CELLS)
def test_committed_scores_come_from_the_raw_files(committed, cell: str) -> None:
    meta, metrics = committed[cell]
    data = meta["data"]
    assert data["file"] == f"pvlib/data/{SITE_FILES['greensboro']}"
    features = [f["name"] for f in meta["features"]]
    assert features[0] == "temperature_f"
    test, val, train = data["test_months"], data["val_months"], data["train_months"]
    assert len(test) >= 2 and not set(test) & set(val) and not set(test) & set(train)
    session = ort.InferenceSession(str(MODELS / f"temperature-{cell}" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])

    home = months_of("greensboro", features)
    train_x = np.vstack([home[m][:-1] for m in train]).astype(np.float64)  # rows with a target
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    std[std == 0] = 1.0
    np.testing.assert_allclose(meta["normalization"]["feature_mean"], mean, rtol=1e-6, atol=1e-9)

    # The ridge's penalty is the best of the declared grid on the validation months.
    fits = {p: ridge([home[m] for m in train], mean, std, p)
            for p in (1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)}
    on_val = {p: score({m: f(home[m]) for m in val}, home) for p, f in fits.items()}
    assert metrics["linear_ar_penalty"] == min(on_val, key=on_val.__getitem__)
    linear = fits[metrics["linear_ar_penalty"]]

    for site, scopes in metrics["sites"].items():
        months = home if site == "greensboro" else months_of(site, features)
        for scope, entry in scopes.items():
            chosen = entry["months"]
            assert chosen == (test if scope == "test_months" else list(range(1, 13)))
            got = {
                "model": score({m: run_month(session, meta, months[m]) for m in chosen}, months),
                "persistence": score({m: months[m][:, 0] for m in chosen}, months),
                "same_hour_yesterday": score(
                    {m: np.concatenate([months[m][:23, 0], months[m][:-23, 0]]) for m in chosen},
                    months),
                "linear_ar": score({m: linear(months[m]) for m in chosen}, months),
            }
            for name, value in got.items():
                assert abs(value - entry["rmse_f"][name]) < TOLERANCE_F, (site, scope, name)
    home_test = metrics["sites"]["greensboro"]["test_months"]["rmse_f"]
    assert metrics["test_rmse_f"] == home_test["model"]
    assert metrics["test_linear_ar_rmse_f"] == home_test["linear_ar"]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lstm_and_gru_beat_the_targets(committed, cell: str) -> None:
    """At least 30 % below persistence and below the linear baseline, Greensboro test months."""
    rmse = committed[cell][1]["sites"]["greensboro"]["test_months"]["rmse_f"]
    assert rmse["model"] <= 0.7 * rmse["persistence"], rmse
    assert rmse["model"] < rmse["linear_ar"], rmse
