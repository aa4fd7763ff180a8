"""The three baselines every model is measured against, forecasting the same rows by the same
rule (data.py): persistence, same hour yesterday, and a linear autoregression.

The linear one is strong on real weather (about a third below persistence on Greensboro): a
ridge regression of the next hour's change in temperature on the previous 24 hours of the
model's own features (24·F inputs, standardized with the training statistics), fitted on the
training months only, its penalty chosen on the validation months. It sees exactly what the
recurrent models see in their first day of state, so beating it means the state learned more
than a fixed linear filter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rnnserve.export.data import YESTERDAY, Month, Stats, scored_rmse

LAGS = 24  # hours of features in the ridge's input
# ridge penalties tried on the validation months
PENALTIES = (1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def persistence(month: Month) -> np.ndarray:
    """Next hour = this hour: [N-1] °F."""
    return month.x[:, 0].astype(np.float64)


def same_hour_yesterday(month: Month) -> np.ndarray:
    """The temperature 24 hours before the target hour (row t-23 for the target of row t); rows
    with no such hour in the month (never scored) fall back to persistence."""
    temp = month.x[:, 0].astype(np.float64)
    out = temp.copy()
    back = YESTERDAY - 1
    out[back:] = temp[: len(temp) - back]
    return out


def _lagged(month: Month, stats: Stats) -> np.ndarray:
    """[N-1, LAGS·F]: row t holds the standardized features of rows t-23..t (zeros before row 0,
    never scored)."""
    z = (month.x.astype(np.float64) - np.array(stats.mean)) / np.array(stats.std)
    n, f = z.shape
    padded = np.concatenate([np.zeros((LAGS - 1, f)), z])
    return np.stack([padded[i : i + n] for i in range(LAGS)], axis=1).reshape(n, LAGS * f)


@dataclass(frozen=True)
class RidgeAR:
    """Next-hour change = intercept + weights · (the previous 24 hours of features)."""

    stats: Stats
    weights: np.ndarray  # [LAGS·F]
    intercept: float
    penalty: float

    def forecast(self, month: Month) -> np.ndarray:
        change = _lagged(month, self.stats) @ self.weights + self.intercept
        return month.x[:, 0].astype(np.float64) + change

    @classmethod
    def fit(cls, train: list[Month], stats: Stats, penalty: float) -> RidgeAR:
        """Least squares with an L2 penalty (intercept free) on every training row with a full
        day of history: closed form, deterministic."""
        rows = [(_lagged(m, stats)[LAGS - 1 :],
                 (m.y.astype(np.float64) - m.x[:, 0])[LAGS - 1 :]) for m in train]
        x = np.concatenate([r[0] for r in rows])
        y = np.concatenate([r[1] for r in rows])
        x_mean, y_mean = x.mean(axis=0), float(y.mean())
        xc = x - x_mean
        gram = xc.T @ xc + penalty * np.eye(x.shape[1])
        weights = np.linalg.solve(gram, xc.T @ (y - y_mean))
        return cls(stats, weights, y_mean - float(x_mean @ weights), penalty)


def fit_ridge(train: list[Month], val: list[Month], stats: Stats) -> RidgeAR:
    """The ridge with the penalty that scores best on the validation months."""
    fits = [RidgeAR.fit(train, stats, p) for p in PENALTIES]
    scores = [scored_rmse(val, [r.forecast(m) for m in val]) for r in fits]
    return fits[int(np.argmin(scores))]


def baseline_rmse(months: list[Month], ridge: RidgeAR) -> dict[str, float]:
    """Each baseline's RMSE (°F) on the scored rows of these months."""
    return {
        "persistence": scored_rmse(months, [persistence(m) for m in months]),
        "same_hour_yesterday": scored_rmse(months, [same_hour_yesterday(m) for m in months]),
        "linear_ar": scored_rmse(months, [ridge.forecast(m) for m in months]),
    }
