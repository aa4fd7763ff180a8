"""Stateful sessions, side by side, on the medium LSTM (bench/medium_model.py):

1. streaming: N closed-loop clients, each its own session, ONE timestep per message, over
   rnnserve's WebSocket stream (`ws`), rnnserve's REST step (`rest`), a naive stateful FastAPI +
   ONNX Runtime server (`naive`, bench/naive_stateful_server.py), and two transport floors
   that do no model work: a WebSocket echo (`echo-ws`) and a FastAPI JSON echo (`echo-rest`)
   (bench/echo_server.py); and over rnnserve's KServe v2 gRPC `ModelStreamInfer`
   (`grpc-stream`, bench/grpcload.py: a stream per sequence on one HTTP/2 connection;
   docs/bench_grpc.md); steps/s, p50, p99, CPU per step of the server and of this process;
2. gateway: `POST /v1/models/medium-lstm/steps` carrying 1024 sessions' steps per request,
   1 and 2 concurrent gateway clients, against the in-process ONNX Runtime ceiling that steps
   the same 1024 states ([2, 1024, 128]) in one `session.run` per step, in a loop;
3. memory per idle session (`python -m bench.session_memory`, run as a subprocess);
4. the targets as ratios with PASS/MISS, a scaling plot (steps/s and p99 vs sessions).

    python -m bench.sessions            # full: 2 rounds of 5 s per point (about 10 minutes)
    python -m bench.sessions --quick    # 1 round of 2 s per point, N up to 1024
    python -m bench.sessions --profile  # also: py-spy on rnnserve under the WS 256 load

Servers run as subprocesses (bench/procs.py) on 127.0.0.1; each point opens its sessions
first (untimed), warms up, then measures a window bounded in time and message count, then
deletes its sessions. Systems take turns at each N, round after round; the round with the
median throughput stands for a point. Results: tables on stdout, bench/results/sessions-*.json
and a PNG (`--plot`, e.g. docs/bench_sessions.png).

The parts, one module each: plan (command line, constants), servers (which server serves which
system, and what it exposes), checks (agreement with PyTorch), points (the streaming systems'
load points), gateway, profile (py-spy), tables and targets (the report), run (main). The
server processes themselves start in bench/procs.py, which bench/predict.py shares.
"""

from bench.sessions.run import main, markdown

__all__ = ["main", "markdown"]
