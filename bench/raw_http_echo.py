"""The floor of any Python HTTP/1.1 server under the KServe v2 row: no framework at all.

bench/echo_server.py's v2 echo is the floor of a Python *ASGI* server (uvicorn, Starlette,
FastAPI's cheapest route). This one is what is left when every layer but the socket, the
HTTP parser and the v2 body itself is taken away: an asyncio protocol on uvloop feeding
httptools (the event loop and parser uvicorn[standard] runs), which for each
`POST /v2/models/{m}/infer` splits the body at Inference-Header-Content-Length, parses the JSON
header (orjson) and writes the same v2 binary reply as the ASGI echo, head and body in one
write. It keeps connections alive and answers pipelined requests in order; anything else gets a
404 or a 400 and, for a request it cannot parse, a closed connection. No request id, metrics,
time limit, API keys or body limit: this is a floor to measure against, not a server.

`python -m bench.raw_http_echo --port 8201`
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import httptools
import orjson
import uvloop

from bench.echo_server import V2_OUTPUT, v2_reply_header

READY = b"/v2/health/ready"


def _response(status: bytes, content_type: bytes, payload: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type + b"\r\n" + extra
            + b"content-length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)


class V2Echo(asyncio.Protocol):
    """One connection: httptools calls the on_* methods as a request's parts arrive."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.header_length: int | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(_response(b"400 Bad Request", b"text/plain", b"malformed request"))
            if self.transport is not None:
                self.transport.close()

    # httptools' callbacks

    def on_message_begin(self) -> None:
        self.url, self.header_length, self.body = b"", None, []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"inference-header-content-length":
            self.header_length = int(value) if value.isdigit() else -1

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self._write(self._answer(self.parser.get_method(), self.url, b"".join(self.body)))

    def _answer(self, method: bytes, url: bytes, body: bytes) -> bytes:
        if method == b"GET" and url == READY:
            return _response(b"200 OK", b"application/json", b'{"ready":true}')
        parts = url.split(b"/")
        if method != b"POST" or len(parts) != 5 or parts[:3] != [b"", b"v2", b"models"] \
                or parts[4] != b"infer":
            return _response(b"404 Not Found", b"text/plain", b"not found")
        split = len(body) if self.header_length is None else self.header_length
        try:
            header = orjson.loads(body[:split]) if 0 < split <= len(body) else None
        except orjson.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or "inputs" not in header:
            return _response(b"400 Bad Request", b"application/json", b'{"error":"inputs missing"}')
        reply = v2_reply_header(parts[3].decode("latin-1"))
        return _response(b"200 OK", b"application/octet-stream", reply + V2_OUTPUT,
                         b"inference-header-content-length: " + str(len(reply)).encode() + b"\r\n")

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if not self.parser.should_keep_alive():
                self.transport.close()


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(V2Echo, host, port, backlog=2048)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8201)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
