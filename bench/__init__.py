"""Benchmarks for rnnserve. `python -m bench.predict` compares stateless prediction against a
naive FastAPI + PyTorch server and an in-process ONNX Runtime ceiling; see docs/bench_predict.md.

The pieces are reusable for other workloads: `loadgen` (an asyncio HTTP load generator driven
by a request factory), `procs` (free ports, server subprocesses), `inprocess` (the same load
shape without HTTP), `stats` (latency summaries)."""
