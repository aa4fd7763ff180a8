"""Closed-loop session load: N clients, each with its own session, sending one message and
waiting for its reply before sending the next.

* WebSocket (`run_ws_point`): N connections opened BEFORE the measurement (the handshake, and
  for rnnserve the session it creates, are not timed), then each connection sends its next
  pre-encoded text message as soon as the previous reply is in. aiohttp's WebSocket client on
  uvloop: the load generator shares the cores with the server, so it must be cheap, and its
  own CPU is read over the window like the server's.
* REST helpers: create and delete N sessions (untimed) around a `bench.loadgen.run_load`
  point whose requests are `POST /v1/sessions/{id}/step` over a keep-alive pool.

Same measurement rules as the HTTP load generator (`bench.stats.Window`): warm-up, then a
window bounded in time and message count; only messages sent and answered inside it count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from bench.client_loop import run_client
from bench.stats import CpuMarks, CpuProbe, LoadResult, Window

T = TypeVar("T")
REPLY_PREFIX = '{"outputs"'  # every good step reply of rnnserve and of the echo starts so


async def _bounded(coros: Sequence[Coroutine[Any, Any, T]], limit: int) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def run_ws_point_async(
    url: str,
    messages: Sequence[str],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    max_requests: int,
    cpu_probes: Mapping[str, CpuProbe] | None = None,
    connect_limit: int = 128,
    timeout_s: float = 60.0,
) -> tuple[LoadResult, list[str], float]:
    """Open `concurrency` WebSocket connections to `url`, read each one's first message (its
    session id), then run the closed loop. Returns the result, the session ids (so that the
    caller can delete them) and the seconds the connections took to open."""
    import aiohttp
    import orjson

    connector = aiohttp.TCPConnector(limit=0)
    session = aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout_s)
    )
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    session_ids: list[str] = []
    try:
        opened_at = time.perf_counter()

        async def connect() -> tuple[aiohttp.ClientWebSocketResponse, str]:
            ws = await session.ws_connect(
                url, autoping=True, heartbeat=None, compress=0, max_msg_size=0
            )
            first = await asyncio.wait_for(ws.receive(), timeout_s)
            if first.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"no greeting from {url}: {first.type} {first.data!r}")
            greeting = orjson.loads(first.data)
            if "session_id" not in greeting:
                raise RuntimeError(f"greeting without session_id from {url}: {first.data!r}")
            return ws, str(greeting["session_id"])

        pairs = await _bounded([connect() for _ in range(concurrency)], connect_limit)
        sockets = [ws for ws, _ in pairs]
        session_ids = [sid for _, sid in pairs]
        connect_s = time.perf_counter() - opened_at

        result = LoadResult(concurrency=concurrency, window_s=0.0)
        window = Window(time.perf_counter(), warmup_s, duration_s, max_requests)
        cpu = CpuMarks(cpu_probes)
        text_type = aiohttp.WSMsgType.TEXT

        async def one_client(index: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            number = 0
            count = len(messages)
            while window.open_for_new(time.perf_counter()):
                message = messages[(index + number) % count]
                number += 1
                started = time.perf_counter()
                try:
                    await ws.send_str(message)
                    reply = await ws.receive()
                    if reply.type == text_type and reply.data.startswith(REPLY_PREFIX):
                        error = None
                    else:
                        error = f"bad reply {reply.type}: {str(reply.data)[:200]}"
                except Exception as exc:  # a failed message is a data point, not a crash
                    error = f"{type(exc).__name__}: {exc}"
                if not window.record(result, started, time.perf_counter(), error):
                    return
                if error is not None and ws.closed:
                    return

        timer = asyncio.create_task(cpu.mark_window_edges(window))
        try:
            await asyncio.gather(*(one_client(i, ws) for i, ws in enumerate(sockets)))
        finally:
            timer.cancel()
        result.window_s = window.length()
        cpu.into(result)
        return result, session_ids, connect_s
    finally:
        await _bounded([ws.close() for ws in sockets], 512)
        await session.close()


def run_ws_point(
    url: str, messages: Sequence[str], **options: Any
) -> tuple[LoadResult, list[str], float]:
    return run_client(run_ws_point_async(url, messages, **options))


async def create_sessions_async(
    base_url: str, model: str, count: int, limit: int = 64
) -> list[str]:
    """`count` sessions via `POST /v1/models/{model}/sessions` (201 {"session_id"})."""
    import aiohttp
    import orjson

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as session:

        async def one() -> str:
            async with session.post(f"{base_url}/v1/models/{model}/sessions") as response:
                body = await response.read()
                if response.status != 201:
                    raise RuntimeError(f"create session: HTTP {response.status} {body[:200]!r}")
                return str(orjson.loads(body)["session_id"])

        return await _bounded([one() for _ in range(count)], limit)


async def delete_sessions_async(base_url: str, session_ids: Sequence[str], limit: int = 64) -> int:
    """Delete sessions (best effort: unknown ones are fine); returns how many failed."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as session:

        async def one(session_id: str) -> bool:
            try:
                async with session.delete(f"{base_url}/v1/sessions/{session_id}") as response:
                    await response.read()
                    return response.status in (204, 404)
            except aiohttp.ClientError:
                return False

        done = await _bounded([one(sid) for sid in session_ids], limit)
        return sum(not ok for ok in done)


def create_sessions(base_url: str, model: str, count: int) -> list[str]:
    return run_client(create_sessions_async(base_url, model, count))


def delete_sessions(base_url: str, session_ids: Sequence[str]) -> int:
    return run_client(delete_sessions_async(base_url, session_ids))
