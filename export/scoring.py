"""The data a training run prepares once for every cell, and how a model is scored on it.

Every score here follows the evaluation rule of data.py: each month is run from a zero state,
its first 24 forecasts are not scored, and nothing crosses a month boundary. The training site
is scored on its validation and test months; the sites it never trained on (the other pvlib
files) on their test months, like for like, and on all twelve months.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rnnserve.export import data as D
from rnnserve.export.baselines import RidgeAR, baseline_rmse, fit_ridge
from rnnserve.export.model import TemperatureForecaster
from rnnserve.export.weather import SITES

ALL_MONTHS = tuple(range(1, 13))


@dataclass
class Prepared:
    """Everything the training loop and the evaluation need, made once for all cells."""

    site: D.Site  # the training site
    split: D.MonthSplit
    stats: D.Stats
    x_train: torch.Tensor  # [N, window, F] physical units
    y_train: torch.Tensor  # [N, window, 1] next-hour °F
    ridge: RidgeAR
    others: dict[str, D.Site]  # sites never trained on
    baselines: dict[str, dict[str, dict[str, float]]]  # site -> scope -> baseline -> RMSE °F

    def scopes(self) -> dict[str, dict[str, list[D.Month]]]:
        """site -> scope ("val", "test", "all") -> the months scored there."""
        out = {self.site.name: {"val": self.site.pick(self.split.val),
                                "test": self.site.pick(self.split.test)}}
        for name, site in self.others.items():
            out[name] = {"test": site.pick(self.split.test),
                         "all": site.pick(tuple(m for m in ALL_MONTHS if m in site.months))}
        return out


def prepare(data: str, features: tuple[str, ...], val: tuple[int, ...], test: tuple[int, ...],
            window: int, stride: int) -> Prepared:
    site = D.load(data, features)
    split = D.MonthSplit.declare(site, val, test)
    train = site.pick(split.train)
    stats = D.train_stats(train)
    x, y = D.make_windows(train, window, stride)
    ridge = fit_ridge(train, site.pick(split.val), stats)
    others = {name: D.load(name, features) for name in SITES if name != site.name}
    ds = Prepared(site, split, stats, torch.from_numpy(x), torch.from_numpy(y), ridge, others,
                  {})
    ds.baselines = {name: {scope: baseline_rmse(months, ridge)
                           for scope, months in scopes.items()}
                    for name, scopes in ds.scopes().items()}
    return ds


@torch.no_grad()
def forecast_months(model: TemperatureForecaster, months: list[D.Month]) -> list[np.ndarray]:
    """Each month in one call from a zero state, as a fresh server session would: [N-1] °F."""
    out = []
    for month in months:
        pred, *_ = model(torch.from_numpy(month.x)[None], *model.zero_state(1))
        out.append(pred[0, :, 0].numpy())
    return out


def model_rmse(model: TemperatureForecaster, months: list[D.Month]) -> float:
    return D.scored_rmse(months, forecast_months(model, months))


def site_table(model: TemperatureForecaster, ds: Prepared) -> dict[str, Any]:
    """metrics.json's "sites": per site and scope, the months and every RMSE (°F, 4 places)."""
    table: dict[str, Any] = {}
    for name, scopes in ds.scopes().items():
        table[name] = {}
        for scope, months in scopes.items():
            if scope == "val":
                continue
            rmse = {"model": model_rmse(model, months), **ds.baselines[name][scope]}
            table[name][f"{scope}_months"] = {
                "months": [m.month for m in months],
                "rmse_f": {k: round(v, 4) for k, v in rmse.items()},
            }
    return table
