"""No API key in any log line: a real server at --log-level debug (uvicorn and the websockets
library log every handshake and its headers there) sees keys sent every way a client can,
right and wrong, over REST, KServe v2 and WebSocket, with errors on each; afterwards neither key
is anywhere in its log, in the text and the JSON format. The browser way for a WebSocket, the
subprotocols `rnnserve` + `rnnserve.key.<key>`, is answered with exactly `rnnserve`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.conftest import serving

KEY = "log-secret-key-4b7e1f"
WRONG = "log-wrong-key-9d2c6a"
STREAM = "/v1/models/tiny-gru/stream"
V2_ONE = {"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


async def websockets_every_way(port: int) -> list[str]:
    """Connect with the key and a wrong key as ?api_key=, as a subprotocol, as a header; returns
    the selected subprotocol of each accepted connection, or the refusal's status."""
    url = f"ws://127.0.0.1:{port}{STREAM}"
    attempts: list[dict[str, object]] = [
        {"uri": f"{url}?api_key={KEY}"},
        {"uri": f"{url}?API_KEY={KEY}&api_key={WRONG}"},
        {"uri": f"{url}?api_key={WRONG}"},
        {"uri": f"{url}?%61pi%5Fkey={KEY}"},  # not the name the server reads: refused
        {"uri": url, "subprotocols": ["rnnserve", f"rnnserve.key.{KEY}"]},
        {"uri": url, "subprotocols": [f"rnnserve.key.{WRONG}", "rnnserve"]},
        {"uri": url, "subprotocols": [f"rnnserve.key.{KEY}"]},  # without "rnnserve": refused
        {"uri": url, "additional_headers": {"Authorization": f"Bearer {KEY}"}},
        {"uri": f"{url}?session_id=nope&api_key={KEY}"},  # accepted, then an error message
    ]
    outcomes = []
    for attempt in attempts:
        try:
            async with websockets.connect(**attempt) as ws:  # type: ignore[arg-type]
                hello = json.loads(await ws.recv())
                if "session_id" in hello:
                    await ws.send('{"inputs": [[1, 2]]}')  # a bad step: an error reply
                    assert "error" in json.loads(await ws.recv())
                outcomes.append(str(ws.response.headers.get("Sec-WebSocket-Protocol")))
        except InvalidStatus as exc:
            outcomes.append(str(exc.response.status_code))
    return outcomes


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_key_reaches_the_log(tmp_path: Path, tiny_repo: Path, log_format: str) -> None:
    with serving(["--models", str(tiny_repo), "--api-keys", KEY, "--log-level", "debug",
                  "--log-format", log_format], tmp_path / "server.log") as server:
        outcomes = asyncio.run(websockets_every_way(server.port))
        assert outcomes == ["None", "403", "403", "403", "rnnserve", "403", "403", "None",
                            "None"]
        with httpx.Client(base_url=server.url, timeout=10) as http:
            good, bad = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {WRONG}"}
            errors = [
                http.get("/v1/models", headers=bad),
                http.get(f"/v1/models?api_key={KEY}"),  # HTTP takes no query key: 401
                http.get("/v1/sessions/nope", headers=good),
                http.post("/v1/models/tiny-gru/predict", headers=good, json={"inputs": [[1]]}),
                http.post(f"/v1/models/tiny-gru/predict?api_key={WRONG}", headers=good,
                          content=b"{not json"),
                http.post("/v2/models/tiny-gru/infer", headers=bad, json={}),
                http.post("/v2/models/tiny-gru/infer", headers=good, json={"inputs": []}),
                http.post(f"/v2/models/nope/infer?api_key={KEY}", headers=good, json=V2_ONE),
            ]
            assert [r.status_code for r in errors] == [401, 401, 404, 400, 400, 401, 400, 404]
            for r in errors:
                assert KEY not in r.text and WRONG not in r.text  # nor in an error body
        log = server.log()
    assert KEY not in log and WRONG not in log
    # the lines are still there, with the value redacted
    assert "?api_key=[redacted]" in log and "rnnserve.key.[redacted]" in log
    assert '"WebSocket /v1/models/tiny-gru/stream" [accepted]' in log.replace('\\"', '"')
    if log_format == "json":  # uvicorn's lines, too, are rnnserve's JSON
        lines = [line for line in log.splitlines() if line.strip()]
        parsed = [json.loads(line) for line in lines]
        assert any(e["logger"] == "uvicorn.error" and "[accepted]" in e["message"]
                   for e in parsed)


@pytest.mark.parametrize(("line", "kept"), [
    ('127.0.0.1:5 - "WebSocket /s?session_id=x&api_key=SECRET&v=2" [accepted]',
     '"WebSocket /s?session_id=x&api_key=[redacted]&v=2" [accepted]'),
    ("< GET /s?API_KEY=SECRET HTTP/1.1", "?API_KEY=[redacted] HTTP/1.1"),
    ("< GET /s?api%5Fkey=SECRET HTTP/1.1", "?api%5Fkey=[redacted] HTTP/1.1"),
    ("< GET /s?%61PI_%4bey%3DSECRET HTTP/1.1", "?%61PI_%4bey%3D[redacted] HTTP/1.1"),
    ('GET /s?api_key=SE"CRET" 200', 'api_key=[redacted]" 200'),
    ("< sec-websocket-protocol: rnnserve.key.SECRET, rnnserve",
     "rnnserve.key.[redacted], rnnserve"),
    ("< authorization: Bearer SECRET", "< authorization: [redacted]"),
    ("< Authorization: SE CRET", "< Authorization: [redacted]"),
    ("metadata (('authorization', 'Bearer SECRET'), ('x', 'y'))",
     "(('authorization', '[redacted]'), ('x', 'y'))"),
    ("Traceback ...\nValueError: bad url /s?api_key=SECRET\n", "url /s?api_key=[redacted]\n"),
])
def test_redact_covers_every_place_a_key_travels(line: str, kept: str) -> None:
    from rnnserve.redact import redact

    redacted = redact(line)
    assert "SECRET" not in redacted and "CRET" not in redacted and kept in redacted
