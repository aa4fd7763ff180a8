"""A closed-loop HTTP load generator: N clients, each sending its next request as soon as the
previous response has been read, over a keep-alive pool of N connections.

Generic on purpose: the workload is a `RequestFactory` (client index, request number) ->
`Request`, so a stateful-session benchmark can reuse this by building step requests per client.
Bodies should be encoded before the run (the factory only picks one), because the generator
shares the machine's cores with the server under test: every microsecond spent here is taken
from the server. For the same reason the default client is aiohttp on uvloop, the cheapest
combination measured on this machine (see docs/bench_predict.md); httpx is kept for comparison.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bench.client_loop import run_client
from bench.stats import CpuMarks, CpuProbe, LoadResult, Window

ClientKind = Literal["aiohttp", "httpx"]


@dataclass(frozen=True)
class Request:
    """One HTTP request, body already encoded."""

    method: str
    path: str
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


RequestFactory = Callable[[int, int], Request]
"""(client index, request number of that client) -> the request to send."""

Validator = Callable[[int, bytes], str | None]
"""(status, response body) -> None when the response is right, else what is wrong."""


def expect_200(status: int, body: bytes) -> str | None:
    """The default check: any status but 200 counts as an error (the body says why)."""
    if status == 200:
        return None
    return f"HTTP {status}: {body[:200]!r}"


class _Transport(Protocol):
    async def send(self, request: Request) -> tuple[int, bytes]: ...

    async def aclose(self) -> None: ...


class _AiohttpTransport:
    def __init__(self, base_url: str, pool_size: int, timeout_s: float) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=pool_size, limit_per_host=pool_size, keepalive_timeout=120
        )
        self._base = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)
        )

    async def send(self, request: Request) -> tuple[int, bytes]:
        async with self._session.request(
            request.method, self._base + request.path, data=request.body, headers=request.headers
        ) as response:
            return response.status, await response.read()

    async def aclose(self) -> None:
        await self._session.close()


class _HttpxTransport:
    def __init__(self, base_url: str, pool_size: int, timeout_s: float) -> None:
        import httpx

        limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
        self._client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout_s)

    async def send(self, request: Request) -> tuple[int, bytes]:
        response = await self._client.request(
            request.method, request.path, content=request.body, headers=dict(request.headers)
        )
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self._client.aclose()


def _transport(kind: ClientKind, base_url: str, pool_size: int, timeout_s: float) -> _Transport:
    if kind == "aiohttp":
        return _AiohttpTransport(base_url, pool_size, timeout_s)
    if kind == "httpx":
        return _HttpxTransport(base_url, pool_size, timeout_s)
    raise ValueError(f"unknown client {kind!r}: choose aiohttp or httpx")


async def run_load_async(
    base_url: str,
    factory: RequestFactory,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    max_requests: int = 100_000,
    client: ClientKind = "aiohttp",
    validate: Validator = expect_200,
    timeout_s: float = 30.0,
    cpu_probes: Mapping[str, CpuProbe] | None = None,
) -> LoadResult:
    """Run one load point and return what completed inside the measured window.

    Warm-up and measurement are one continuous run (no ramp-down and ramp-up between them),
    so the window sees a server already at steady state with all connections open.
    `cpu_probes` (e.g. the server process's CPU counter) are read at the window's edges, as
    is this process."""
    transport = _transport(client, base_url, concurrency, timeout_s)
    result = LoadResult(concurrency=concurrency, window_s=0.0)
    window = Window(time.perf_counter(), warmup_s, duration_s, max_requests)
    cpu = CpuMarks(cpu_probes)

    async def one_client(index: int) -> None:
        number = 0
        while window.open_for_new(time.perf_counter()):
            request = factory(index, number)
            number += 1
            started = time.perf_counter()
            try:
                status, body = await transport.send(request)
                error = validate(status, body)
            except Exception as exc:  # a failed request is a data point, not a crash
                error = f"{type(exc).__name__}: {exc}"
            if not window.record(result, started, time.perf_counter(), error):
                return

    timer = asyncio.create_task(cpu.mark_window_edges(window))
    try:
        await asyncio.gather(*(one_client(i) for i in range(concurrency)))
    finally:
        timer.cancel()
        await transport.aclose()
    result.window_s = window.length()
    cpu.into(result)
    return result


def run_load(base_url: str, factory: RequestFactory, **options: Any) -> LoadResult:
    """`run_load_async` from synchronous code, on uvloop when it is installed (it is with
    uvicorn[standard]): less client CPU left competing with the server; the client's
    collector quiet (bench.client_loop)."""
    return run_client(run_load_async(base_url, factory, **options))
