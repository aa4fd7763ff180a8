"""A small HTTP/1.1 keep-alive client on asyncio's Protocol with httptools' response parser:
one connection per closed-loop client, one request in flight on it, the request written as
one pre-built bytes object.

Why not aiohttp (bench/loadgen.py): the load generator shares two cores with the server it
measures, and a step of the medium LSTM costs the server tens of microseconds; aiohttp's
per-request machinery costs the client more than that. Here a request is one `write` and a
response is the parser's callbacks into a list, so the client takes as little CPU from the
servers as it can, and the same for every server (rnnserve and Triton run through this code
alike). Handles Content-Length and chunked bodies (httptools decodes both).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools


class Http1Connection(asyncio.Protocol):
    """One keep-alive connection; `request` sends bytes and returns (status, headers, body).
    Header names come back lower-cased."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, dict[bytes, bytes], bytes]] | None = None
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._lost: Exception | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> Http1Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port)
        return protocol

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        status = self._parser.get_status_code()
        headers, body = self._headers, b"".join(self._body)
        self._headers, self._body = {}, []
        if waiter is not None and not waiter.done():
            waiter.set_result((status, headers, body))

    def _fail(self, exc: Exception) -> None:
        self._lost = exc
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def request(self, data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        if self._lost is not None or self._transport is None:
            raise ConnectionError(f"connection unusable: {self._lost}")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def head(path: str, host: str, body_length: int, headers: dict[str, str]) -> bytes:
    """The head of a POST with a body of `body_length` bytes (the body is appended to it)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {body_length}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
