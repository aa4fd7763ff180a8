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
    """Entry point of the console script: the command, then that command's own arguments."""
    parser = argparse.ArgumentParser(
        prog="rnnserve", description="Serve recurrent models (RNN, LSTM, GRU) with state.",
        epilog="`rnnserve COMMAND --help` lists a command's options.",
    )
    parser.add_argument("command", choices=["serve", "train", "export"])
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        parser.print_help()
        return 0
    parsed = parser.parse_args(args)  # exits 0 after --help, 2 on an unknown command
    if parsed.command == "serve":
        from rnnserve.serve import serve_main

        return serve_main(parsed.args)
    return _train_or_export(parsed.command, parsed.args)


if __name__ == "__main__":
    raise SystemExit(main())
