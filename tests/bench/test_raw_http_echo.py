"""bench/raw_http_echo.py, the framework-free floor of bench.peers' v2 row: it must answer the
v2 client's requests as the FastAPI echo does (same reply bytes), keep connections alive,
answer pipelined requests in order, and refuse what it does not serve, or the floor it
reports would measure something else."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import httpx
import orjson

from bench.echo_server import create_app
from bench.procs import HOST, base_url, start_raw_echo


def v2_request(model: str, sequence: int) -> bytes:
    head = orjson.dumps({"parameters": {"sequence_id": sequence},
                         "inputs": [{"name": "input", "shape": [1, 1, 2], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 8}}]})
    body = head + struct.pack("<2f", 1.0, 2.0)
    return (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: t\r\n"
            f"Inference-Header-Content-Length: {len(head)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def read_response(sock: socket.socket, pending: bytearray) -> tuple[bytes, dict[bytes, bytes],
                                                                      bytes]:
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        pending += chunk
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    length = int(headers[b"content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        rest += chunk
    pending[:] = rest[length:]
    return status, headers, rest[:length]


def asgi_echo_reply(model: str, request: bytes) -> bytes:
    """The FastAPI echo's body for the same request (in process, through its ASGI app)."""
    head, _, body = request.partition(b"\r\n\r\n")
    header_length = head.split(b"Inference-Header-Content-Length: ")[1].split(b"\r\n")[0]
    transport = httpx.ASGITransport(app=create_app())

    async def ask() -> bytes:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post(f"/v2/models/{model}/infer", content=body,
                                  headers={"inference-header-content-length":
                                           header_length.decode()})
            assert r.status_code == 200, r.text
            return r.content

    import asyncio

    return asyncio.run(ask())


def test_the_raw_echo_answers_pipelined_v2_steps_as_the_fastapi_echo_does(tmp_path: Path) -> None:
    with start_raw_echo(tmp_path) as echo:
        port = int(base_url(echo).rsplit(":", 1)[1])
        with socket.create_connection((HOST, port), timeout=10) as sock:
            pending = bytearray()
            # two requests in one write: answered in order, on the same connection
            sock.sendall(v2_request("alpha", 1) + v2_request("beta", 2))
            for model in ("alpha", "beta"):
                status, headers, body = read_response(sock, pending)
                assert status == b"HTTP/1.1 200 OK"
                split = int(headers[b"inference-header-content-length"])
                header = orjson.loads(body[:split])
                assert header["model_name"] == model
                assert header["outputs"][0]["parameters"] == {"binary_data_size": 4}
                assert len(body) == split + 4
                assert body == asgi_echo_reply(model, v2_request(model, 1))
            # then a third, after the answers: the connection stayed open
            sock.sendall(v2_request("gamma", 3))
            status, _, _ = read_response(sock, pending)
            assert status == b"HTTP/1.1 200 OK"

        url = base_url(echo)
        assert httpx.get(f"{url}/v2/health/ready", timeout=5).json() == {"ready": True}
        assert httpx.post(f"{url}/v2/models/m/ready", timeout=5).status_code == 404
        refused = httpx.post(f"{url}/v2/models/m/infer", content=b'{"outputs": []}', timeout=5)
        assert refused.status_code == 400 and b"inputs" in refused.content
