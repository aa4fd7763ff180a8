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
from rnnserve.export.scoring import (
    Prepared,
    forecast_months,
    model_rmse,
    prepare,
    site_table,
)
from rnnserve.export.weather import TRAINING_SITE
from torch import nn
from tqdm import tqdm


@dataclass
class TrainConfig:
    cells: list[str] = field(default_factory=lambda: list(CELLS))  # which models to train
    out: Path = Path("models")  # model repository; each model goes to out/temperature-<cell>/
    checkpoints: Path = Path("export/checkpoints")  # .pt files (state_dict + config), git-ignored
    data: str = TRAINING_SITE  # a pvlib site name or a path to a TMY3 .csv / TMY2 .tm2 file
    features: list[str] = field(default_factory=lambda: list(D.DEFAULT_FEATURES))
    val_months: list[int] = field(default_factory=lambda: list(D.VAL_MONTHS))
    test_months: list[int] = field(default_factory=lambda: list(D.TEST_MONTHS))
    seed: int = 0  # the same seed for every cell: each model is reproducible on its own
    # model
    hidden: int = 64  # same hidden size for all three cells
    layers: int = 2
    # data
    window: int = 168  # training window, hours (one week: seven daily cycles)
    stride: int = 12  # hours between window starts (half a day: windows overlap a lot)
    # optimization
    epochs: int = 30  # at most; early stopping usually ends sooner
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
        D.check_features(self.features)
        for flag, months in (("--val-months", self.val_months),
                             ("--test-months", self.test_months)):
            if not months or any(not 1 <= m <= 12 for m in months):
                raise ExportInputError(f"{flag} must list months 1-12, got {months}")
        if self.out.exists() and not self.out.is_dir():
            raise ExportInputError(f"--out {str(self.out)!r} is a file, not a directory")
        if self.checkpoints.exists() and not self.checkpoints.is_dir():
            raise ExportInputError(f"--checkpoints {str(self.checkpoints)!r} is not a directory")


def prepare_data(cfg: TrainConfig) -> Prepared:
    return prepare(cfg.data, tuple(cfg.features), tuple(cfg.val_months),
                   tuple(cfg.test_months), cfg.window, cfg.stride)


def set_determinism(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


def train_cell(cell: str, cfg: TrainConfig, ds: Prepared) -> dict[str, Any]:
    """Train one cell, write its report and ONNX export; return its summary row."""
    started = time.perf_counter()
    set_determinism(cfg.seed, cfg.threads)  # per cell: --cells gru alone gives the same GRU

    # ---------------------------------------------------------------- model
    mcfg = ModelConfig(
        cell=cell,
        input_size=len(cfg.features),
        hidden_size=cfg.hidden,
        num_layers=cfg.layers,
        feature_mean=list(ds.stats.mean),
        feature_std=list(ds.stats.std),
        delta_std=ds.stats.delta_std,
    )
    model = TemperatureForecaster(mcfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    # Cosine decay to zero over the epoch budget: big steps first, fine-tuning at the end.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    delta_std = ds.stats.delta_std
    n = len(ds.x_train)
    val_months = ds.site.pick(ds.split.val)

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
            xb, yb = ds.x_train[idx], ds.y_train[idx]  # [b, W, F], [b, W, 1]
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
        val_hist.append((model_rmse(model, val_months) / delta_std) ** 2)
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
    test_months = ds.site.pick(ds.split.test)
    val_rmse = model_rmse(model, val_months)
    test_preds = forecast_months(model, test_months)
    test_rmse = D.scored_rmse(test_months, test_preds)
    seconds = time.perf_counter() - started
    base = ds.baselines[ds.site.name]["test"]
    metrics: dict[str, Any] = {
        "site": ds.site.name,
        "test_rmse_f": round(test_rmse, 4),
        "test_persistence_rmse_f": round(base["persistence"], 4),
        "test_same_hour_yesterday_rmse_f": round(base["same_hour_yesterday"], 4),
        "test_linear_ar_rmse_f": round(base["linear_ar"], 4),
        "below_persistence_pct": round(100.0 * (1.0 - test_rmse / base["persistence"]), 1),
        "beats_linear_ar": bool(test_rmse < base["linear_ar"]),
        "val_rmse_f": round(val_rmse, 4),
        "val_persistence_rmse_f": round(ds.baselines[ds.site.name]["val"]["persistence"], 4),
        "val_linear_ar_rmse_f": round(ds.baselines[ds.site.name]["val"]["linear_ar"], 4),
        "linear_ar_penalty": ds.ridge.penalty,
        "epochs": len(train_hist),
        "best_epoch": best[1],
        "params": count_parameters(model),
        "seed": cfg.seed,
        "sites": site_table(model, ds),
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
        "data": data_declaration(cfg, ds),
    }
    save_checkpoint(model, str(cfg.checkpoints / f"{name}.pt"), facts)
    export_forecaster(
        model,
        out_dir,
        name=name,
        metrics=metrics,
        data_source=_source(cfg),
        features=D.features_with_units(cfg.features),
        outputs=D.OUTPUTS,
        data_info=data_declaration(cfg, ds),
    )
    # Wall time lives only in metrics.json: model.json stays reproducible byte for byte.
    write_metrics(out_dir / "metrics.json",
                  {"model": name, "cell": cell, **metrics, "train_seconds": round(seconds, 1)})
    if cfg.plots:
        plot_learning_curve(out_dir / "learning_curve.png", cell, train_hist, val_hist, best[1])
        weeks = []
        for month, pred in zip(test_months, test_preds, strict=True):
            w = slice(D.WARMUP_HOURS, min(D.WARMUP_HOURS + 168, len(month.y)))
            weeks.append((pd.DatetimeIndex(month.times[w]) + pd.Timedelta(hours=1), month.y[w],
                          pred[w], month.x[w, 0], ds.ridge.forecast(month)[w]))
        plot_forecast(out_dir / "forecast.png", cell, D.site_label(ds.site.name), weeks)
    return {"cell": cell, **metrics, "train_seconds": seconds}


def data_declaration(cfg: TrainConfig, ds: Prepared) -> dict[str, Any]:
    """model.json's "data": what the model was trained and scored on, and by which rule."""
    return {
        "file": D.site_file(cfg.data),
        "train_months": list(ds.split.train),
        "val_months": list(ds.split.val),
        "test_months": list(ds.split.test),
        "target": "temperature_f of the next row (one hour later), same month",
        "evaluation": D.EVALUATION_RULE,
        "baselines": D.BASELINE_RULES,
    }


def _source(cfg: TrainConfig) -> str:
    return D.data_source(cfg.data)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return str(obj) if isinstance(obj, Path) else obj


def format_table(rows: list[dict[str, Any]]) -> str:
    """The summary table (also pasted into docs/training.md): test months of the training site."""
    head = ("cell", "params", "epochs", "best val RMSE", "test RMSE", "persistence",
            "same hour yesterday", "linear AR", "below persistence", "seconds")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        lines.append(
            f"| {r['cell']} | {r['params']:,} | {r['epochs']} | {r['val_rmse_f']:.3f} °F "
            f"| {r['test_rmse_f']:.3f} °F | {r['test_persistence_rmse_f']:.3f} °F "
            f"| {r['test_same_hour_yesterday_rmse_f']:.3f} °F "
            f"| {r['test_linear_ar_rmse_f']:.3f} °F | {r['below_persistence_pct']:.1f} % "
            f"| {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def format_sites(rows: list[dict[str, Any]]) -> str:
    """RMSE (°F) per site and scope: every model beside every baseline."""
    if not rows:
        return ""
    head = ("site", "months", *(r["cell"] for r in rows), "persistence", "same hour yesterday",
            "linear AR")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for site, scopes in rows[0]["sites"].items():
        for scope, entry in scopes.items():
            base = entry["rmse_f"]
            models = [r["sites"][site][scope]["rmse_f"]["model"] for r in rows]
            cells = [f"{v:.3f}" for v in
                     (*models, base["persistence"], base["same_hour_yesterday"],
                      base["linear_ar"])]
            months = ",".join(map(str, entry["months"]))
            lines.append(f"| {site} | {months} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(cfg: TrainConfig) -> list[dict[str, Any]]:
    """The whole pipeline for every requested cell; returns the summary rows."""
    cfg.validate()
    t0 = time.perf_counter()
    print("== data", flush=True)
    ds = prepare_data(cfg)
    n, w, f = ds.x_train.shape
    print(f"   {ds.site.name}: train months {list(ds.split.train)}, validation "
          f"{list(ds.split.val)}, test {list(ds.split.test)}; {n} training windows of {w} h x "
          f"{f} features; hourly change std {ds.stats.delta_std:.3f} °F; linear AR penalty "
          f"{ds.ridge.penalty:g}", flush=True)
    rows = []
    for cell in cfg.cells:
        print(f"== train {cell}", flush=True)
        rows.append(train_cell(cell, cfg, ds))
    print("== summary (RMSE in °F on the test months, next-hour forecast)", flush=True)
    print(format_table(rows))
    print("== every site (never trained on but the first), RMSE °F", flush=True)
    print(format_sites(rows))
    print(f"   total {time.perf_counter() - t0:.0f} s, {cfg.threads} thread(s); "
          f"models in {cfg.out}/", flush=True)
    return rows
