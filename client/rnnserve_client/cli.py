"""The `rnnserve-client` command: list models, predict a CSV, stream a CSV (or stdin) into a
session and print one output line per reading as the replies come, resumable with --session.

The server's URL comes from --url or $RNNSERVE_URL (default http://127.0.0.1:8000), the key
from --api-key or $RNNSERVE_API_KEY. A CSV has one reading per line, one column per input
feature (a first line that is not numbers is a header and is skipped). Outputs are printed as
comma-separated values, one line per timestep, with enough digits to give back the exact
float32 values. A stream prints its session id on stderr first ("session: ID"), so that a
stream cut short can go on with --session=ID (in one argument: an id may begin with "-")."""

from __future__ import annotations

import argparse
import csv
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

import numpy as np

from rnnserve_client.errors import RnnServeClientError
from rnnserve_client.sync import Client
from rnnserve_client.wire import KEY_ENV, URL_ENV


def readings(source: TextIO) -> Iterator[list[float]]:
    """Each CSV line's numbers, read as they arrive (a live pipe streams line by line)."""
    for number, row in enumerate(csv.reader(source)):
        cells = [c.strip() for c in row if c.strip()]
        if not cells:
            continue
        try:
            yield [float(c) for c in cells]
        except ValueError:
            if number == 0:
                continue  # a header line
            raise SystemExit(f"line {number + 1} is not numbers: "
                             f"{','.join(cells)[:80]}") from None


def line(values: np.ndarray) -> str:
    """One timestep's outputs; '.9g' round-trips float32 exactly."""
    return ",".join(format(float(v), ".9g") for v in np.ravel(values))


def print_outputs(outputs: np.ndarray, out: TextIO) -> None:
    for row in np.asarray(outputs).reshape(np.asarray(outputs).shape[0], -1):
        out.write(line(row) + "\n")
    out.flush()


def open_input(path: str) -> TextIO:
    return sys.stdin if path == "-" else open(path, newline="", encoding="utf-8")  # noqa: SIM115


def cmd_models(client: Client, args: argparse.Namespace) -> None:
    for m in client.models():
        print(f"{m.name}\tversion {m.version}\tinputs {m.input_size}\toutputs "
              f"{m.output_size}\t{'stream' if m.streamable else 'predict only'}")


def cmd_predict(client: Client, args: argparse.Namespace) -> None:
    with open_input(args.file) as source:
        sequence = np.asarray(list(readings(source)), dtype=np.float32)
    print_outputs(client.predict(args.model, sequence, version=args.version), sys.stdout)


def cmd_stream(client: Client, args: argparse.Namespace) -> None:
    """The main thread reads and sends (waiting while the window is full); a second thread
    receives and prints, so outputs appear as they come, in order."""
    stream = client.stream(args.model, args.session, window=args.window)
    stream.open()
    print(f"session: {stream.session_id}", file=sys.stderr, flush=True)
    sent = 0
    done_sending = threading.Event()
    failure: list[BaseException] = []

    def printer() -> None:
        received = 0
        try:
            while not (done_sending.is_set() and received >= sent):
                if received >= sent:
                    done_sending.wait(0.01)
                    continue
                print_outputs(stream.recv(), sys.stdout)
                received += 1
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=printer, daemon=True)
    thread.start()
    try:
        with open_input(args.file) as source:
            for reading in readings(source):
                if failure:
                    break
                stream.send(np.asarray(reading, dtype=np.float32))
                sent += 1
    finally:
        done_sending.set()
        thread.join()
        stream.close()
    if failure:
        raise failure[0]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rnnserve-client", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=None,
                   help=f"the server's base URL (default ${URL_ENV}, else http://127.0.0.1:8000)")
    p.add_argument("--api-key", default=None, help=f"API key (default ${KEY_ENV})")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request time limit")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the served models").set_defaults(run=cmd_models)
    pr = sub.add_parser("predict", help="predict one sequence from a CSV (one reading a line)")
    pr.add_argument("model")
    pr.add_argument("file", nargs="?", default="-", help="CSV file, or - for stdin")
    pr.add_argument("--version", type=int, default=None)
    pr.set_defaults(run=cmd_predict)
    st = sub.add_parser("stream", help="stream readings into a session, one output line each")
    st.add_argument("model")
    st.add_argument("file", nargs="?", default="-", help="CSV file, or - for stdin")
    st.add_argument("--session", default=None,
                    help='resume this session instead of a new one; write --session=ID, '
                    'as an id may begin with "-"')
    st.add_argument("--window", type=int, default=16, help="steps in flight (default 16)")
    st.set_defaults(run=cmd_stream)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with Client(args.url, api_key=args.api_key, timeout_s=args.timeout_s) as client:
            args.run(client, args)
    except RnnServeClientError as exc:
        print(f"rnnserve-client: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except (BrokenPipeError, KeyboardInterrupt):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
