"""`rnnserve train` and `rnnserve export` (service/cli.py dispatches here).

Bad input ends with one line on stderr, `rnnserve <command>: error: <what and how to fix>`, and
exit code 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage dump) and lets us return the code."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def _fail(command: str, message: str) -> int:
    print(f"rnnserve {command}: error: {message}", file=sys.stderr)
    return 2


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    try:
        return parser.parse_args(argv)
    except _UsageError as exc:
        return _fail(parser.prog.split()[-1], str(exc))
    except SystemExit as exc:  # --help
        return int(exc.code or 0)


def _cells(text: str) -> list[str]:
    return [c.strip().lower() for c in text.split(",") if c.strip()]


def _names(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _months(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c.strip()]


def train_parser() -> argparse.ArgumentParser:
    from rnnserve.export.train import TrainConfig

    d = TrainConfig()
    p = _Parser(prog="rnnserve train",
                description="Train the temperature RNN/LSTM/GRU on observed hourly weather and "
                            "export them to ONNX.")
    p.add_argument("--cells", type=_cells, default=d.cells, help="comma list of rnn,lstm,gru")
    p.add_argument("--out", type=Path, default=d.out, help="model repository (default models/)")
    p.add_argument("--checkpoints", type=Path, default=d.checkpoints,
                   help="where the .pt checkpoints go (default export/checkpoints/)")
    p.add_argument("--data", default=d.data, metavar="SITE|FILE",
                   help="a site shipped with pvlib (greensboro, sand_point, miami) or a TMY3 "
                        ".csv / TMY2 .tm2 file (default greensboro)")
    p.add_argument("--features", type=_names, default=d.features,
                   help="comma list of input features, temperature_f first (default: "
                        + ",".join(d.features) + ")")
    p.add_argument("--val-months", type=_months, default=d.val_months,
                   help="comma list of validation months 1-12 (default "
                        + ",".join(map(str, d.val_months)) + ")")
    p.add_argument("--test-months", type=_months, default=d.test_months,
                   help="comma list of test months 1-12 (default "
                        + ",".join(map(str, d.test_months)) + ")")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--epochs", type=int, default=d.epochs, help="maximum epochs")
    p.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience")
    p.add_argument("--hidden", type=int, default=d.hidden, help="hidden size (all cells)")
    p.add_argument("--layers", type=int, default=d.layers)
    p.add_argument("--window", type=int, default=d.window, help="training window, hours")
    p.add_argument("--stride", type=int, default=d.stride, help="hours between windows")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--clip", type=float, default=d.clip, help="gradient-norm clip")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="torch threads (fixed for bit-for-bit reproducibility)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG reports")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def train_main(argv: list[str]) -> int:
    """`rnnserve train`: returns 0, or 2 with a one-line message for bad input."""
    from rnnserve.export.errors import ExportInputError
    from rnnserve.export.train import TrainConfig, run

    args = _parse(train_parser(), argv)
    if isinstance(args, int):
        return args
    cfg = TrainConfig(
        cells=args.cells, out=args.out, checkpoints=args.checkpoints, data=args.data,
        features=args.features, val_months=args.val_months, test_months=args.test_months,
        seed=args.seed, hidden=args.hidden, layers=args.layers, window=args.window,
        stride=args.stride, epochs=args.epochs, patience=args.patience,
        batch_size=args.batch_size, lr=args.lr, clip=args.clip, threads=args.threads,
        plots=not args.no_plots, progress=not args.quiet,
    )
    try:
        run(cfg)
    except ExportInputError as exc:
        return _fail("train", str(exc))
    return 0


def export_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rnnserve export",
                description="Export a checkpoint written by `rnnserve train` to ONNX + model.json.")
    p.add_argument("checkpoint", type=Path, help="a .pt file from export/checkpoints/")
    p.add_argument("--out", type=Path, required=True,
                   help="directory to write model.onnx and model.json into, e.g. models/my-lstm")
    p.add_argument("--name", help="model name in model.json (default: the --out directory name)")
    p.add_argument("--opset", type=int, default=17)
    return p


def export_main(argv: list[str]) -> int:
    """`rnnserve export CHECKPOINT --out DIR`: returns 0, or 2 for bad input."""
    from rnnserve.export import data as D
    from rnnserve.export.errors import ExportInputError
    from rnnserve.export.model import load_checkpoint
    from rnnserve.export.onnx_export import export_forecaster

    args = _parse(export_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        if args.out.exists() and not args.out.is_dir():
            raise ExportInputError(f"--out {str(args.out)!r} is a file, not a directory")
        if args.opset < 14:
            raise ExportInputError(f"--opset {args.opset} is too old: use 14 or newer (17 tested)")
        model, ckpt = load_checkpoint(str(args.checkpoint))
        path = export_forecaster(
            model,
            args.out,
            name=args.name or args.out.resolve().name,
            metrics=ckpt.get("metrics", {}),
            data_source=ckpt.get("data_source", ""),
            features=D.features_with_units(
                ckpt.get("train_config", {}).get("features", D.DEFAULT_FEATURES)),
            outputs=D.OUTPUTS,
            data_info=ckpt.get("data"),
            opset=args.opset,
        )
    except ExportInputError as exc:
        return _fail("export", str(exc))
    print(f"wrote {path} and {path.with_name('model.json')}")
    return 0
