"""Train the temperature forecasters (RNN, LSTM, GRU) and export them to the model repository.

Reads top to bottom: config -> data -> per cell (model -> training loop -> evaluation ->
report -> export) -> summary table. Deterministic: fixed seed per cell, deterministic
algorithms, a fixed thread count, in-order data; the same seed and library versions give the
same model.onnx bytes.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rnnserve.export import data as D
from rnnserve.export.errors import ExportInputError
from rnnserve.export.model import (
    CELLS,
    ModelConfig,
    TemperatureForecaster,
    count_parameters,
    save_checkpoint,
)
from rnnserve.export.onnx_export import export_forecaster
from rnnserve.export.report import plot_forecast, plot_learning_curve, write_metrics
from torch import nn
from tqdm import tqdm


@dataclass
class TrainConfig:
    cells: list[str] = field(default_factory=lambda: list(CELLS))  # which models to train
    out: Path = Path("models")  # model repository; each model goes to out/temperature-<cell>/
    checkpoints: Path = Path("export/checkpoints")  # .pt files (state_dict + config), git-ignored
    data: list[str] | None = None  # CSVs (date,temp) instead of the built-in Seattle/SF 2010
    seed: int = 0  # the same seed for every cell: each model is reproducible on its own
    # model
    hidden: int = 64  # same hidden size for all three cells
    layers: int = 2
    # data
    window: int = 168  # training window, hours (one week: seven daily cycles)
    stride: int = 12  # hours between window starts (half a day: windows overlap a lot)
    # optimization
    epochs: int = 25  # at most; early stopping usually ends sooner
    patience: int = 8  # epochs without a better validation loss before stopping
    batch_size: int = 32
    lr: float = 3e-3  # Adam
    clip: float = 1.0  # gradient norm clip: long windows make a vanilla RNN a deep network
    threads: int = 1  # fixed: float sums (and so the bytes) can depend on the thread count
    plots: bool = True  # learning_curve.png and forecast.png
    progress: bool = True  # tqdm bar

    def validate(self) -> None:
        unknown = [c for c in self.cells if c not in CELLS]
        if unknown or not self.cells:
            raise ExportInputError(
                f"unknown cell(s) {', '.join(map(repr, unknown)) or '(none given)'}: "
                f"choose from {','.join(CELLS)}"
            )
        for name in ("hidden", "layers", "epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ExportInputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.patience < 0:
            raise ExportInputError("--patience must be 0 or more")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not (self.clip > 0):
            raise ExportInputError("--lr and --clip must be positive numbers")
        if self.out.exists() and not self.out.is_dir():
            raise ExportInputError(f"--out {str(self.out)!r} is a file, not a directory")
        if self.checkpoints.exists() and not self.checkpoints.is_dir():
            raise ExportInputError(f"--checkpoints {str(self.checkpoints)!r} is not a directory")


@dataclass
class Dataset:
    """Everything the training loop and the evaluation need, prepared once for all cells."""

    cities: list[D.CitySeries]
    splits: list[D.Split]
    stats: D.Stats
    x_train: torch.Tensor  # [N, window, 3] °F features
    y_train: torch.Tensor  # [N, window, 1] next-hour °F
    baselines: dict[str, dict[str, float]]  # part -> {persistence, seasonal_naive} RMSE °F


def prepare_data(cfg: TrainConfig) -> Dataset:
    cities = D.load_cities(cfg.data)
    splits = [D.chronological_split(len(c.y)) for c in cities]
    stats = D.train_stats(cities, splits)
    x, y = D.make_windows(cities, splits, cfg.window, cfg.stride)  # [N, W, 3], [N, W, 1]
    baselines = {p: D.baseline_rmse(cities, splits, p) for p in ("val", "test")}
    return Dataset(cities, splits, stats, torch.from_numpy(x), torch.from_numpy(y), baselines)


@torch.no_grad()
def predict_city(model: TemperatureForecaster, city: D.CitySeries) -> np.ndarray:
    """Run one city's whole year in one call from a zero state: [T] next-hour °F.

    Validation and test hours are thus forecast with the state warmed up on everything before
    them, as a streaming client would see it.
    """
    x = torch.from_numpy(city.x)[None]  # [1, T, 3]
    out, *_ = model(x, *model.zero_state(1))  # [1, T, 1]
    return out[0, :, 0].numpy()


def evaluate(
    model: TemperatureForecaster, ds: Dataset, which: str
) -> tuple[float, list[np.ndarray]]:
    """Pooled RMSE (°F) over one part of every city, and the per-city forecasts [T] each."""
    preds = [predict_city(model, c) for c in ds.cities]
    rngs = [getattr(s, which) for s in ds.splits]
    pred = np.concatenate([D.part(p, r) for p, r in zip(preds, rngs, strict=True)])
    target = np.concatenate([D.part(c.y, r) for c, r in zip(ds.cities, rngs, strict=True)])
    return D.rmse(pred, target), preds


def set_determinism(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


def train_cell(cell: str, cfg: TrainConfig, ds: Dataset) -> dict[str, Any]:
    """Train one cell, write its report and ONNX export; return its summary row."""
    started = time.perf_counter()
    set_determinism(cfg.seed, cfg.threads)  # per cell: --cells gru alone gives the same GRU

    # ---------------------------------------------------------------- model
    mcfg = ModelConfig(
        cell=cell,
        hidden_size=cfg.hidden,
        num_layers=cfg.layers,
        temp_mean=ds.stats.temp_mean,
        temp_std=ds.stats.temp_std,
        delta_std=ds.stats.delta_std,
    )
    model = TemperatureForecaster(mcfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    # Cosine decay to zero over the epoch budget: big steps first, fine-tuning at the end.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    delta_std = ds.stats.delta_std
    n = len(ds.x_train)

    # ---------------------------------------------------------------- training loop
    train_hist: list[float] = []
    val_hist: list[float] = []
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))  # (val loss, epoch, weights)
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"{cell:>4}", unit="ep", disable=not cfg.progress,
               dynamic_ncols=True, leave=True)
    for epoch in bar:
        model.train()
        order = torch.randperm(n, generator=shuffle)
        total = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            xb, yb = ds.x_train[idx], ds.y_train[idx]  # [b, W, 3], [b, W, 1]
            out, *_ = model(xb, *model.zero_state(len(idx)))  # [b, W, 1] °F
            # Loss on the change in units of its std: O(1) whatever the climate.
            loss = nn.functional.mse_loss(out / delta_std, yb / delta_std)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            total += loss.item() * len(idx)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        schedule.step()
        train_hist.append(total / n)

        model.eval()
        val_rmse, _ = evaluate(model, ds, "val")
        val_hist.append((val_rmse / delta_std) ** 2)
        if val_hist[-1] < best[0]:
            best = (val_hist[-1], epoch, copy.deepcopy(model.state_dict()))
        bar.set_postfix(loss=f"{train_hist[-1]:.4f}", val=f"{val_hist[-1]:.4f}",
                        best=f"{best[1]}")
        if epoch - best[1] > cfg.patience:
            break
    bar.close()
    model.load_state_dict(best[2])
    model.eval()

    # ---------------------------------------------------------------- evaluation (best epoch)
    val_rmse, _ = evaluate(model, ds, "val")
    test_rmse, preds = evaluate(model, ds, "test")
    seconds = time.perf_counter() - started
    base = ds.baselines["test"]
    metrics: dict[str, Any] = {
        "test_rmse_f": round(test_rmse, 4),
        "test_persistence_rmse_f": round(base["persistence"], 4),
        "test_seasonal_naive_rmse_f": round(base["seasonal_naive"], 4),
        "val_rmse_f": round(val_rmse, 4),
        "val_persistence_rmse_f": round(ds.baselines["val"]["persistence"], 4),
        "beats_persistence": bool(test_rmse < base["persistence"]),
        "epochs": len(train_hist),
        "best_epoch": best[1],
        "params": count_parameters(model),
        "seed": cfg.seed,
    }

    # ---------------------------------------------------------------- report + export
    name = f"temperature-{cell}"
    out_dir = cfg.out / name
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.checkpoints.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportInputError(f"cannot create {exc.filename!r}: {exc.strerror}") from None
    facts = {
        "metrics": metrics,
        "train_config": _jsonable(asdict(cfg)),
        "data_source": _source(cfg),
    }
    save_checkpoint(model, str(cfg.checkpoints / f"{name}.pt"), facts)
    export_forecaster(
        model,
        out_dir,
        name=name,
        metrics=metrics,
        data_source=_source(cfg),
        features=D.FEATURES,
        outputs=D.OUTPUTS,
    )
    # Wall time lives only in metrics.json: model.json stays reproducible byte for byte.
    write_metrics(out_dir / "metrics.json",
                  {"model": name, "cell": cell, **metrics, "train_seconds": round(seconds, 1)})
    if cfg.plots:
        plot_learning_curve(out_dir / "learning_curve.png", cell, train_hist, val_hist, best[1])
        weeks = []
        for city, split, pred in zip(ds.cities, ds.splits, preds, strict=True):
            s = split.test[0]
            w = slice(s, min(s + 168, split.test[1]))
            weeks.append((city.name, city.dates[w] + pd.Timedelta(hours=1), city.y[w],
                          pred[w], city.x[w, 0]))
        plot_forecast(out_dir / "forecast.png", cell, weeks)
    return {"cell": cell, **metrics, "train_seconds": seconds}


def _source(cfg: TrainConfig) -> str:
    return D.DATA_SOURCE if not cfg.data else "user CSV: " + ", ".join(cfg.data)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return str(obj) if isinstance(obj, Path) else obj


def format_table(rows: list[dict[str, Any]]) -> str:
    """The summary table (also pasted into docs/training.md)."""
    head = ("cell", "params", "epochs", "best val RMSE", "test RMSE", "persistence",
            "seasonal naive", "seconds")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        lines.append(
            f"| {r['cell']} | {r['params']:,} | {r['epochs']} | {r['val_rmse_f']:.3f} °F "
            f"| {r['test_rmse_f']:.3f} °F | {r['test_persistence_rmse_f']:.3f} °F "
            f"| {r['test_seasonal_naive_rmse_f']:.3f} °F | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def run(cfg: TrainConfig) -> list[dict[str, Any]]:
    """The whole pipeline for every requested cell; returns the summary rows."""
    cfg.validate()
    t0 = time.perf_counter()
    print("== data", flush=True)
    ds = prepare_data(cfg)
    n, w, f = ds.x_train.shape
    print(f"   {len(ds.cities)} cities, {n} training windows of {w} h x {f} features; "
          f"train mean {ds.stats.temp_mean:.2f} °F, std {ds.stats.temp_std:.2f} °F, "
          f"hourly change std {ds.stats.delta_std:.3f} °F", flush=True)
    rows = []
    for cell in cfg.cells:
        print(f"== train {cell}", flush=True)
        rows.append(train_cell(cell, cfg, ds))
    print("== summary (RMSE in °F on the test part, next-hour forecast)", flush=True)
    print(format_table(rows))
    print(f"   total {time.perf_counter() - t0:.0f} s, {cfg.threads} thread(s); "
          f"models in {cfg.out}/", flush=True)
    return rows
