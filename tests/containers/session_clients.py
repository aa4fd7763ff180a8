"""Test clients that step one session each through the compose stack's nginx the way a careful
device does: one step at a time, each with a `step_id`, sent again with the same step_id after
any failure (a dropped connection, a 502/503/504, UNAVAILABLE) until it is acknowledged.
Over REST, a WebSocket stream (reconnecting with ?session_id=) or gRPC (a KServe v2 sequence
through tritonclient.grpc), in plaintext or over TLS verified against the test's CA.

Each client keeps what the server acknowledged (outputs and, where the transport says it, the
session's step count after the step) and every failed try by kind, so the test can check that
no acknowledged step was lost or applied twice and report how the faults looked to clients."""

from __future__ import annotations

import json
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

STEP_DEADLINE_S = 120.0
"""How long one step may take, retries included, before the client gives up (the test fails).
Longer than the 90 s the compose test gives a replica's container to reach Redis by name after
Redis came back at another address (compose_stack.wait_until_reaches: the container network's
DNS has left a replica on the old address for 45 s and more)."""
RETRY_PAUSE_S = 0.2
RETRY_GRPC = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.INTERNAL",
              "StatusCode.CANCELLED"}
"""gRPC statuses a step is sent again after: nginx's 502/503/504 arrive as UNAVAILABLE, a reset
stream as INTERNAL or CANCELLED, the client's own deadline as DEADLINE_EXCEEDED."""


class Retry(Exception):
    """This try failed in a way that may pass: send the same step again."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind)
        self.kind, self.detail = kind, detail[:300]


class SteppingClient(ABC):
    """One session, stepped through `seq` ([time, features] float32) one step per request."""

    transport = ""

    def __init__(self, name: str, model: str, seq: np.ndarray, session_id: str) -> None:
        self.name, self.model, self.seq, self.session_id = name, model, seq, session_id
        self.outputs: list[list[float]] = []
        self.ack_times: list[float] = []
        self.failures: Counter[str] = Counter()
        self.failure_samples: dict[str, str] = {}  # the latest message of each kind
        self.resumed: list[float] = []  # when each gate let the client go on
        self.step_ids_sent: set[str] = set()
        self.miscounted: list[str] = []  # acks whose step count was not the step's number
        self.error: BaseException | None = None

    @abstractmethod
    def send(self, x: list[list[float]], step_id: str, t: int) -> tuple[list[list[float]],
                                                                         int | None]:
        """One try: (the step's outputs, the session's step count after it if known)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def step(self, t: int) -> None:
        step_id = f"{self.name}:{t}"
        x = self.seq[t:t + 1].tolist()
        deadline = time.monotonic() + STEP_DEADLINE_S
        while True:
            self.step_ids_sent.add(step_id)
            try:
                outputs, steps = self.send(x, step_id, t)
            except Retry as exc:
                self.failures[exc.kind] += 1
                self.failure_samples[exc.kind] = exc.detail
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name}: step {t} not acknowledged in "
                                         f"{STEP_DEADLINE_S}s: {dict(self.failures)}; the "
                                         f"latest of each: {self.failure_samples}") from exc
                time.sleep(RETRY_PAUSE_S)
                continue
            break
        if steps is not None and steps != t + 1:
            self.miscounted.append(f"step {t} acknowledged with steps={steps}")
        self.outputs.extend(outputs)
        self.ack_times.append(time.monotonic())

    def run(self, steps: range, gates: dict[int, threading.Event], pace_s: float) -> None:
        """Step through `steps`, waiting at each gate until the test opens it; a failure is
        kept in `error` for the test to raise."""
        try:
            for t in steps:
                gate = gates.get(t)
                if gate is not None:
                    if not gate.wait(timeout=120):
                        raise AssertionError(f"{self.name}: gate at step {t} never opened")
                    self.resumed.append(time.monotonic())
                self.step(t)
                time.sleep(pace_s)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc
        finally:
            self.close()

    @property
    def acknowledged(self) -> int:
        return len(self.ack_times)

    def first_ack_after(self, moment: float) -> float | None:
        return next((t for t in self.ack_times if t > moment), None)


def tls_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """Verification against the test's CA (host name and chain), or None for plaintext."""
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else None


class RestClient(SteppingClient):
    """POST /v1/sessions/{id}/step."""

    transport = "rest"

    def __init__(self, name: str, model: str, seq: np.ndarray, session_id: str, base_url: str,
                 ca_file: Path | None = None) -> None:
        super().__init__(name, model, seq, session_id)
        context = tls_context(ca_file)
        self.http = httpx.Client(base_url=base_url, timeout=10, trust_env=False,
                                 verify=context if context else True)

    def send(self, x: list[list[float]], step_id: str, t: int) -> tuple[list[list[float]],
                                                                         int | None]:
        try:
            r = self.http.post(f"/v1/sessions/{self.session_id}/step",
                               json={"inputs": x, "step_id": step_id})
        except httpx.TransportError as exc:
            raise Retry(f"rest {type(exc).__name__}", str(exc)) from exc
        if r.status_code in (502, 503, 504):
            raise Retry(f"rest http {r.status_code}", r.text)
        assert r.status_code == 200, f"{self.name} step {t}: {r.status_code} {r.text}"
        body = r.json()
        return body["outputs"], int(body["steps"])

    def close(self) -> None:
        self.http.close()


class StreamClient(SteppingClient):
    """A WebSocket stream attached to the session (?session_id=), reconnected after a drop."""

    transport = "websocket"

    def __init__(self, name: str, model: str, seq: np.ndarray, session_id: str, ws_base: str,
                 ca_file: Path | None = None) -> None:
        super().__init__(name, model, seq, session_id)
        self.url = f"{ws_base}/v1/models/{model}/stream?session_id={session_id}"
        self.context = tls_context(ca_file)
        self.ws: ClientConnection | None = None

    def _connect(self) -> ClientConnection:
        try:
            ws = connect(self.url, ssl=self.context, proxy=None, open_timeout=10,
                         close_timeout=2, legacy=True)
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise Retry(f"websocket connect {type(exc).__name__}", str(exc)) from exc
        try:
            hello = json.loads(ws.recv(timeout=10))
        except (OSError, TimeoutError, WebSocketException) as exc:
            ws.close()
            raise Retry(f"websocket greeting {type(exc).__name__}") from exc
        if "error" in hello:
            ws.close()
            if hello.get("status") in (502, 503, 504):
                raise Retry(f"websocket connect {hello['status']}")
            raise AssertionError(f"{self.name}: stream refused: {hello}")
        assert hello["session_id"] == self.session_id, hello
        return ws

    def send(self, x: list[list[float]], step_id: str, t: int) -> tuple[list[list[float]],
                                                                         int | None]:
        if self.ws is None:
            self.ws = self._connect()
        try:
            self.ws.send(json.dumps({"inputs": x, "step_id": step_id}))
            reply: dict[str, Any] = json.loads(self.ws.recv(timeout=10))
        except (OSError, TimeoutError, WebSocketException) as exc:
            self.close()
            raise Retry(f"websocket {type(exc).__name__}", str(exc)) from exc
        if "error" in reply:
            if reply.get("status") in (502, 503, 504):
                raise Retry(f"websocket step {reply['status']}", reply.get("error", ""))
            raise AssertionError(f"{self.name} step {t}: {reply}")
        return reply["outputs"], int(reply["steps"])

    def close(self) -> None:
        if self.ws is not None:
            ws, self.ws = self.ws, None
            try:
                ws.close()
            except (OSError, WebSocketException):
                pass


class GrpcClient(SteppingClient):
    """A KServe v2 sequence over gRPC (tritonclient.grpc): sequence_start on step 0, the
    step_id as a request parameter, x-session-id metadata so nginx hashes it like HTTP. Its
    session is the server's `v2.<model>.s.<sequence id>`."""

    transport = "grpc"

    def __init__(self, name: str, model: str, seq: np.ndarray, target: str,
                 ca_file: Path | None = None) -> None:
        super().__init__(name, model, seq, f"v2.{model}.s.{name}")
        self.client = grpcclient.InferenceServerClient(
            target, ssl=ca_file is not None,
            root_certificates=str(ca_file) if ca_file else None,
            channel_args=[("grpc.enable_http_proxy", 0)])
        self.headers = {"x-session-id": name}

    def send(self, x: list[list[float]], step_id: str, t: int) -> tuple[list[list[float]],
                                                                         int | None]:
        given = grpcclient.InferInput("input", [1, 1, len(x[0])], "FP32")
        given.set_data_from_numpy(np.asarray([x], dtype=np.float32))
        try:
            result = self.client.infer(
                self.model, [given], sequence_id=self.name, sequence_start=t == 0,
                parameters={"step_id": step_id},
                headers=dict(self.headers),  # tritonclient adds to the dict it is given
                client_timeout=10)
        except InferenceServerException as exc:
            status = str(exc.status())
            if status not in RETRY_GRPC:
                raise AssertionError(f"{self.name} step {t}: {exc}") from exc
            detail = " http 504" if "504" in str(exc) else ""
            raise Retry(f"grpc {status.removeprefix('StatusCode.')}{detail}", str(exc)) from exc
        out = result.as_numpy("output")
        assert out is not None and out.shape[:2] == (1, 1), out
        return out[0].tolist(), None

    def close(self) -> None:
        self.client.close()
