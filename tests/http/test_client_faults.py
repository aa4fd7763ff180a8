"""Faults that are the client's doing, against a real server over raw sockets: a body cut
short by a disconnect is counted as 499 (not a 500) and logged without a traceback; a body
whose chunked framing is broken gets a 400 that says so, and is counted as a 400."""

from __future__ import annotations

import socket
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess

HOST = "127.0.0.1"


def request_counts(server: ServerProcess) -> dict[tuple[str, str], float]:
    """(route, status) → requests counted in rnnserve_http_requests."""
    text = httpx.get(server.url + "/metrics", timeout=5).text
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "rnnserve_http_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["route"], sample.labels["status"])
                counts[key] = counts.get(key, 0) + sample.value
    return counts


def wait_for_count(server: ServerProcess, route: str, status: str, at_least: float,
                   timeout: float = 10) -> dict[tuple[str, str], float]:
    """The counts once (route, status) reaches `at_least` (the server counts a request when
    its handler ends, a moment after the client is gone)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = request_counts(server)
        if counts.get((route, status), 0) >= at_least or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def send_raw(server: ServerProcess, data: bytes, read: bool) -> bytes:
    """Send `data` on a new connection; read the answer until the server closes (`read`), or
    close at once (a client that disconnects)."""
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(data)
        if not read:
            return b""
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}", "Content-Type: application/json",
             *headers, "", ""]
    return "\r\n".join(lines).encode()


def assert_no_server_error(server: ServerProcess, log_from: int) -> None:
    """No 5xx counted, and no ERROR line or traceback in the log since `log_from` (the test
    repository's broken model is logged at ERROR when the server starts)."""
    counts = request_counts(server)
    assert not any(status.startswith("5") for _, status in counts), counts
    log = server.log()[log_from:]
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]


def test_a_body_cut_short_by_a_disconnect_is_a_499(server: ServerProcess) -> None:
    log_from = len(server.log())
    session = httpx.post(server.url + "/v1/models/tiny-gru/sessions", timeout=10).json()
    routes = {
        "/v1/models/tiny-gru/predict": "/v1/models/{model}/predict",
        "/v2/models/tiny-gru/infer": "/v2/models/{model}/infer",
        f"/v1/sessions/{session['session_id']}/step": "/v1/sessions/{session_id}/step",
    }
    for path in routes:
        send_raw(server, head(path, "Content-Length: 1000") + b'{"inputs": [[[0.1, 0.',
                 read=False)
    for template in routes.values():
        counts = wait_for_count(server, template, "499", 1)
        assert counts.get((template, "499")) == 1, counts
    assert_no_server_error(server, log_from)
    # The server is unharmed: the session still steps.
    r = httpx.post(server.url + f"/v1/sessions/{session['session_id']}/step",
                   json={"inputs": [[0.1, 0.2, 0.3]]}, timeout=10)
    assert r.status_code == 200 and r.json()["steps"] == 1


def test_a_malformed_chunked_body_is_a_400_that_says_so(server: ServerProcess) -> None:
    log_from = len(server.log())
    before = request_counts(server).get(("/v1/models/{model}/predict", "400"), 0)
    # A valid first chunk, then a chunk size that is not hexadecimal.
    answer = send_raw(server, head("/v1/models/tiny-gru/predict", "Transfer-Encoding: chunked")
                      + b'6\r\n{"inpu\r\nZZ\r\nts": []}\r\n0\r\n\r\n', read=True)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), answer
    body = rest.partition(b"\r\n\r\n")[2]
    assert b"malformed" in body and b"chunked" in body and body.startswith(b'{"error":'), body
    counts = wait_for_count(server, "/v1/models/{model}/predict", "400", before + 1)
    assert counts.get(("/v1/models/{model}/predict", "400")) == before + 1, counts
    assert_no_server_error(server, log_from)
