"""rnnserve beside its peers, every row of issue 17 in one run: KServe v2 HTTP and gRPC
sequence steps against NVIDIA Triton 2.51 (set up by the bench itself from PyPI's
nvidia-pytriton wheel, Python backend + ONNX Runtime, dynamic batching, the client carrying
the state) and against two echoes of the v2 body (FastAPI's cheapest route, and a
framework-free uvloop + httptools protocol), gRPC against a bare grpc.aio echo, REST steps
against a FastAPI echo, bulk steps against in-process ONNX Runtime, the WebSocket stream
against a bare WebSocket echo; each row's ratio measured in the same round, with PASS/MISS
against its target.

    python -m bench.peers                  # 2 rounds of 5 s phases, every row
    python -m bench.peers --quick          # 1 round of 2 s phases (a smoke run)
    python -m bench.peers --only v2-http grpc --json bench/results/peers.json
    python -m bench.peers --no-peer        # without Triton (offline; its rows say so)

256 closed-loop sessions, one timestep of the medium LSTM (bench/medium_model.py) per request,
unless a row says otherwise. Systems of a row take turns within a round (short phases,
interleaved, so machine noise hits them alike); a ratio is the median over rounds of
same-round ratios. See docs/bench_peers.md.

The parts, one module each: plan (command line), triton (the peer: venv, server tree, model
repository, process), http1 (a small HTTP/1.1 client), closedloop (the v2 sequence loop,
transport-free), v2http and v2grpc (its codecs and links), servers, checks (correctness),
systems (one phase per measured system; REST, WebSocket and in-process pieces reused from
bench.sessions), rows (which systems each row compares, its targets), run (main).
"""
