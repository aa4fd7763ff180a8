"""Per-model report files written beside model.onnx: metrics.json and two small PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

# No "Software"/date chunk, so the same figure gives the same PNG bytes.
_PNG_METADATA = {"Software": None}


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    path.write_text(json.dumps(metrics, indent=2) + "\n")


def plot_learning_curve(
    path: Path, cell: str, train_loss: list[float], val_loss: list[float], best_epoch: int
) -> None:
    """Train and validation loss (MSE of the normalized next-hour change) per epoch."""
    epochs = np.arange(1, len(train_loss) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    ax.plot(epochs, train_loss, marker="o", ms=3, label="train (windows)")
    ax.plot(epochs, val_loss, marker="o", ms=3, label="validation (whole months)")
    ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("MSE, normalized hourly change")
    ax.set_yscale("log")
    ax.set_title(f"temperature-{cell}: learning curve")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata=_PNG_METADATA)
    plt.close(fig)


def plot_forecast(
    path: Path,
    cell: str,
    site: str,
    weeks: list[tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    """One week per test month: the observed next-hour temperature, the model, persistence and
    the linear baseline.

    weeks: (target times [T], observed [T], model [T], persistence [T], linear AR [T]), °F.
    """
    fig, axes = plt.subplots(len(weeks), 1, figsize=(9.0, 2.8 * len(weeks)), dpi=100, squeeze=False)
    for ax, week in zip(axes[:, 0], weeks, strict=True):
        times, actual, forecast, persistence, linear = week
        ax.plot(times, actual, color="black", lw=1.6, label="observed")
        ax.plot(times, forecast, color="tab:red", lw=1.0, label=f"{cell.upper()} forecast")
        ax.plot(times, linear, color="tab:green", lw=0.8, ls="--", label="linear AR")
        ax.plot(times, persistence, color="tab:blue", lw=0.8, ls=":", label="persistence")
        ax.set_ylabel("°F")
        ax.set_title(f"{site}: next-hour forecast, test week from {times[0]:%d %b %Y}")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, metadata=_PNG_METADATA)
    plt.close(fig)
