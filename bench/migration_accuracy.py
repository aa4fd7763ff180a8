"""How close a migrated session comes to one that ran on the new version from its start, as a
function of the kept inputs W (`rewarm_steps`): the premise of migration is that a recurrent
state forgets its distant past (docs/migration.md).

    python -m bench.migration_accuracy --old models --new /tmp/seed1 --out docs

For each cell (rnn, lstm, gru), version 1 is `--old`'s temperature-{cell} and version 2
`--new`'s (the same features, trained with another seed: `rnnserve train --seed 1 --out ...`).
On Greensboro's test months (April and October, the hours the models never trained on), a
session starts at each month's first hour; every day from the eighth on (hour 168, 192, ...)
it is migrated. The reference is version 2 run from the month's first hour (a session that ran
on version 2 from its start); the migrated session is version 2 run from zeros over the last W
hours before the migration, exactly what POST /v1/sessions/{id}/migrate computes. Both then
forecast the next 24 hours, and their difference is reported (RMSE and largest, °F): for the
first forecast after the migration, and over the 24. W = 0 is a fresh zero state (no kept
inputs); "v1 kept" is the session that does not migrate at all (version 1's forecasts against
version 2's), the scale of the difference between the two versions themselves.

ONNX Runtime on the CPU, in this process; nothing is served. Writes migration_accuracy.json
and migration_accuracy.png to --out and prints a Markdown table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rnnserve.export import data as D

CELLS = ("rnn", "lstm", "gru")
WINDOWS = (0, 1, 3, 6, 12, 24, 48, 96, 168)
FIRST_POINT, EVERY, AHEAD = 168, 24, 24


class Model:
    """One exported model: its sequence input, its state inputs (zeros to start) and output."""

    def __init__(self, path: Path) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = json.loads((path.parent / "model.json").read_text())
        self.input = meta.get("sequence_input", "input")
        self.output = meta.get("sequence_output", "output")
        self.features = [f["name"] if isinstance(f, dict) else f for f in meta["features"]]
        self.states = {i.name: i.shape for i in self.session.get_inputs() if i.name != self.input}

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs [batch, time] of sequences [batch, time, features] from zero states."""
        feeds = {self.input: x.astype(np.float32)}
        for name, shape in self.states.items():
            feeds[name] = np.zeros((shape[0], x.shape[0], shape[2]), np.float32)
        return np.asarray(self.session.run([self.output], feeds)[0])[..., 0]


def study(old: Model, new: Model, months: list[D.Month]) -> dict[str, list[float]]:
    """Per W (and "v1 kept"): [first forecast RMSE, its largest, 24 h RMSE, its largest]."""
    diffs: dict[str, list[np.ndarray]] = {str(w): [] for w in WINDOWS}
    diffs["v1 kept"] = []
    for month in months:
        x = month.x[None]
        reference, unmigrated = new.run(x)[0], old.run(x)[0]
        points = list(range(FIRST_POINT, len(month.y) - AHEAD, EVERY))
        ahead = np.stack([reference[p:p + AHEAD] for p in points])
        diffs["v1 kept"].append(np.stack([unmigrated[p:p + AHEAD] for p in points]) - ahead)
        for w in WINDOWS:
            runs = np.stack([month.x[p - w:p + AHEAD] for p in points])
            diffs[str(w)].append(new.run(runs)[:, w:] - ahead)
    out = {}
    for key, parts in diffs.items():
        d = np.concatenate(parts)
        out[key] = [float(np.sqrt(np.mean(d[:, 0] ** 2))), float(np.abs(d[:, 0]).max()),
                    float(np.sqrt(np.mean(d ** 2))), float(np.abs(d).max())]
    return out


def plot(results: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = [max(w, 0.5) for w in WINDOWS]  # W = 0 drawn at 0.5 on the log axis
    for cell, color in zip(CELLS, ("tab:blue", "tab:orange", "tab:green"), strict=True):
        ys = [results[cell][str(w)][2] for w in WINDOWS]
        ax.plot(xs, ys, "o-", color=color, label=f"{cell}: migrated vs from its start")
        ax.axhline(results[cell]["v1 kept"][2], color=color, ls=":", lw=1,
                   label=f"{cell}: v1 vs v2 (not migrated)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs, ["0"] + [str(w) for w in WINDOWS[1:]])
    ax.set_xlabel("kept inputs W (rewarm_steps, hours)")
    ax.set_ylabel("RMSE of the next 24 forecasts, °F")
    ax.set_title("Migrated session vs a session on the new version from its start")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, default=Path("models"))
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    results: dict[str, dict[str, list[float]]] = {}
    for cell in CELLS:
        old = Model(args.old / f"temperature-{cell}" / "model.onnx")
        new = Model(args.new / f"temperature-{cell}" / "model.onnx")
        if old.features != new.features:
            raise SystemExit(f"{cell}: the versions take other features")
        site = D.load("greensboro", tuple(old.features))
        results[cell] = study(old, new, site.pick((4, 10)))
    (args.out / "migration_accuracy.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "migration_accuracy.png")
    print("| cell | " + " | ".join(f"W={w}" for w in WINDOWS) + " | not migrated |")
    print("|---|" + "---:|" * (len(WINDOWS) + 1))
    for cell in CELLS:
        row = [results[cell][str(w)] for w in WINDOWS] + [results[cell]["v1 kept"]]
        print(f"| {cell} | " + " | ".join(f"{r[2]:.3f} ({r[0]:.3f})" for r in row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
