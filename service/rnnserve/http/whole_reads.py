"""Whole reads: a POST that arrives whole in one read of an idle keep-alive connection is read
by a parser of the protocol's own (httptools, as uvicorn's) with callbacks that only collect,
and answered on the direct path (http/direct_path.py) without uvicorn's per-request machinery.

Measured on KServe v2 sequence steps (bench.peers' client, 256 sequences), uvicorn's protocol
spent a fifth of the server's CPU around each such request: a callback per header that also
checks for `Expect`, a URL parse, a `RequestResponseCycle` with its `asyncio.Event` and ASGI
send and receive, none of which a request answered directly uses. Here one request costs one
feed of the parser and a small `WholeRequest` that stands where uvicorn's cycle stood, so the
protocol's pipelining, its time limits and its shutdown see it as they see a cycle.

Only the plainest requests are read here, and anything else is fed to uvicorn's parser,
unchanged (the same bytes, so it sees the connection exactly as before): exactly one request,
ended within the read; `POST` over HTTP/1.1, kept alive; an origin-form target with no query,
fragment or escape; no `Expect`, no upgrade; and a hot route the direct path takes (its Content
-Length within the body limit, no Transfer-Encoding, no forwarded headers, no CORS origin).
A read that is not one of those costs one extra parse of what it holds, up to where it ended
or broke."""

from __future__ import annotations

from typing import Any

import httptools


class _Unwaited:
    """The message event of a request read whole: nothing ever waits on its body."""

    def set(self) -> None:
        return None


class WholeRequest:
    """A request read whole: what the direct path and uvicorn's protocol read of a
    `RequestResponseCycle` (its scope, body and response flags), and nothing else."""

    __slots__ = ("scope", "body", "raw", "keep_alive", "default_headers", "disconnected",
                 "response_started", "response_complete", "on_response")
    more_body = False
    waiting_for_100_continue = False
    message_event = _Unwaited()

    def __init__(self, scope: dict[str, Any], body: bytes, default_headers: Any,
                 on_response: Any, raw: bytes = b"") -> None:
        self.scope = scope
        self.body = body
        self.raw = raw  # the read that held it (http/repeat_steps.py: what a repeat matches)
        self.default_headers = default_headers
        self.on_response = on_response
        self.keep_alive = True
        self.disconnected = self.response_started = self.response_complete = False


class WholeReader:
    """One connection's parser for whole reads. After a read it did not take, it starts over
    with a new parser (it may have stopped inside a request)."""

    __slots__ = ("_parser", "_url", "_headers", "_body", "_begun", "_ended", "_refused")
    # (`_refused`: a head that is not one to take; read while the head's flags are the
    # parser's, in on_headers_complete: after the message they are reset for the next)

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = b""
        self._begun = 0
        self._ended = self._refused = False

    # the parser's callbacks: collect only

    def on_message_begin(self) -> None:
        self._begun += 1

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect":
            self._refused = True
        self._headers.append((name, value.rstrip(b" \t")))  # as uvicorn strips it

    def on_headers_complete(self) -> None:
        parser = self._parser
        if (parser.get_method() != b"POST" or parser.get_http_version() != "1.1"
                or not parser.should_keep_alive() or parser.should_upgrade()):
            self._refused = True

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self._ended = True

    def read(self, data: bytes, protocol: Any, on_response: Any) -> WholeRequest | None:
        """The request `data` holds whole, with the scope uvicorn would make of it; None when
        the read is not one plain whole request (the module's docstring says which)."""
        self._url, self._headers, self._body = b"", [], b""
        self._begun, self._ended, self._refused = 0, False, False
        parser = self._parser
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._start_over()
            return None
        if self._begun != 1 or not self._ended:
            self._start_over()
            return None
        url = self._url
        if (self._refused or url[:1] != b"/" or b"?" in url or b"%" in url or b"#" in url
                or not url.isascii()):
            self._start_over()
            return None
        root = protocol.root_path
        scope = {
            "type": "http",
            "asgi": {"version": protocol.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": protocol.server,
            "client": protocol.client,
            "scheme": protocol.scheme,
            "root_path": root,
            "headers": self._headers,
            "state": protocol.app_state.copy(),
            "method": "POST",
            "path": root + url.decode("ascii"),
            "raw_path": root.encode("ascii") + url,
            "query_string": b"",
        }
        return WholeRequest(scope, self._body, protocol.server_state.default_headers,
                            on_response, data)

    def _start_over(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
