"""The `rnnserve` command line: `serve` runs the server, `train` and `export` run the export/
pipeline. The training commands import torch lazily, so the server runs without it."""

from __future__ import annotations

import argparse
import importlib
import sys


def _train_or_export(command: str, argv: list[str]) -> int:
    try:
        export_cli = importlib.import_module("rnnserve.export.cli")
    except ImportError as exc:  # torch or onnx missing
        print(
            f"rnnserve {command} needs the training extra ({exc}). Install it with:\n"
            "  pip install torch==2.13.0 && pip install -e '.[train]'",
            file=sys.stderr,
        )
        return 2
    entry = export_cli.train_main if command == "train" else export_cli.export_main
    return int(entry(argv))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="rnnserve", description="Serve recurrent models (RNN, LSTM, GRU) with state."
    )
    parser.add_argument("command", choices=["serve", "train", "export"])
    if not args or args[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    command, rest = args[0], args[1:]
    if command not in ("serve", "train", "export"):
        parser.error(f"unknown command {command!r}: choose serve, train or export")
    if command == "serve":
        from rnnserve.serve import serve_main

        return serve_main(rest)
    return _train_or_export(command, rest)


if __name__ == "__main__":
    raise SystemExit(main())
