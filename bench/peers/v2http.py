"""KServe v2 HTTP sequence steps as `closedloop` codecs, one client for every server:

* `BinaryCodec(carry_state=False)`: rnnserve. Request-level `sequence_id` (with
  `sequence_start` on the first step and `sequence_end` on the last), the input [1, 1, F] as
  FP32 in the binary tensor extension, `output` asked for as binary. The server keeps h/c.
* `BinaryCodec(carry_state=True)`: Triton's Python-backend model. No sequence_id; `h0`/`c0`
  [1, layers, hidden] travel in the request and `hn`/`cn` come back, as binary, and are sent
  with the next step.
* `JsonCodec`: rnnserve with JSON v2 bodies (`data` lists both ways).

The JSON header of a binary request is built once per sequence; a step appends raw bytes.
Every reply is read the same way: split at `Inference-Header-Content-Length`, parse the header
with orjson, slice each binary output by its `binary_data_size`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from bench.peers.closedloop import State
from bench.peers.http1 import Http1Connection, head

OUTPUT_BYTES = 4  # one FP32 value per timestep
STATE_NAMES = ("hn", "cn")  # replies -> the next request's h0, c0


class HttpLink:
    """closedloop.Link over one keep-alive connection."""

    def __init__(self, connection: Http1Connection) -> None:
        self.connection = connection

    @classmethod
    async def open(cls, host: str, port: int) -> HttpLink:
        return cls(await Http1Connection.open(host, port))

    async def call(self, message: Any) -> Any:
        return await self.connection.request(message)

    async def aclose(self) -> None:
        self.connection.close()


def read_reply(raw: tuple[int, dict[bytes, bytes], bytes]) -> tuple[str | None, dict[str, Any]]:
    """(error, outputs by name: raw bytes for binary outputs, the `data` list otherwise)."""
    status, headers, body = raw
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}", {}
    split = headers.get(b"inference-header-content-length")
    header_length = int(split) if split is not None else len(body)
    header = orjson.loads(body[:header_length])
    offset = header_length
    outputs: dict[str, Any] = {}
    for output in header.get("outputs", ()):
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            outputs[output["name"]] = output.get("data")
        else:
            outputs[output["name"]] = body[offset : offset + size]
            offset += size
    return None, outputs


class BinaryCodec:
    """v2 HTTP with the binary tensor extension (see the module's docstring)."""

    def __init__(
        self,
        host: str,
        model: str,
        steps: np.ndarray,
        carry_state: bool,
        state_shape: tuple[int, int],
        first_sequence_id: int = 1,
    ) -> None:
        self.host = host
        self.path = f"/v2/models/{model}/infer"
        self.xs = [np.asarray(x, dtype="<f4").tobytes() for x in steps]  # each [1, F]
        self.features = int(np.asarray(steps).shape[-1])
        self.carry_state = carry_state
        self.state_shape = state_shape
        self.zero_state = bytes(4 * state_shape[0] * state_shape[1])
        self.first_id = first_sequence_id
        self._prefixes: dict[tuple[int, bool, bool], bytes] = {}

    def _json_header(self, index: int, start: bool, end: bool) -> bytes:
        inputs: list[dict[str, Any]] = [
            self._tensor("input", [1, 1, self.features], 4 * self.features)
        ]
        outputs = ["output"]
        parameters: dict[str, Any] = {}
        if self.carry_state:
            state_bytes = len(self.zero_state)
            inputs += [self._tensor(n, [1, *self.state_shape], state_bytes) for n in ("h0", "c0")]
            outputs += list(STATE_NAMES)
        else:
            parameters = {"sequence_id": self.first_id + index}
            if start:
                parameters["sequence_start"] = True
            if end:
                parameters["sequence_end"] = True
        header: dict[str, Any] = {
            "inputs": inputs,
            "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in outputs],
        }
        if parameters:
            header["parameters"] = parameters
        return orjson.dumps(header)

    @staticmethod
    def _tensor(name: str, shape: list[int], size: int) -> dict[str, Any]:
        return {
            "name": name,
            "shape": shape,
            "datatype": "FP32",
            "parameters": {"binary_data_size": size},
        }

    def request(self, index: int, number: int, state: State, start: bool, end: bool) -> bytes:
        key = (index if not self.carry_state else 0, start, end)
        prefix = self._prefixes.get(key)
        if prefix is None:
            json_header = self._json_header(index, start, end)
            length = len(json_header) + len(self.xs[0])
            if self.carry_state:
                length += 2 * len(self.zero_state)
            headers = {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(json_header)),
            }
            prefix = head(self.path, self.host, length, headers) + json_header
            self._prefixes[key] = prefix
        x = self.xs[(index + number) % len(self.xs)]
        if not self.carry_state:
            return prefix + x
        h, c = (state["hn"], state["cn"]) if state else (self.zero_state, self.zero_state)
        return b"".join((prefix, x, h, c))

    def reply(self, raw: Any) -> tuple[str | None, State]:
        error, outputs = read_reply(raw)
        if error is not None:
            return error, None
        if len(outputs.get("output") or b"") != OUTPUT_BYTES:
            return f"bad reply: {raw[2][:200]!r}", None
        if not self.carry_state:
            return None, None
        state = {n: outputs.get(n) or b"" for n in STATE_NAMES}
        if any(len(v) != len(self.zero_state) for v in state.values()):
            return f"bad state in reply: {raw[2][:200]!r}", None
        return None, state


class JsonCodec:
    """rnnserve v2 HTTP with JSON bodies: `data` lists in, `data` lists out."""

    def __init__(self, host: str, model: str, steps: np.ndarray, first_sequence_id: int = 1):
        self.host = host
        self.path = f"/v2/models/{model}/infer"
        self.features = int(np.asarray(steps).shape[-1])
        self.data = [orjson.dumps(np.asarray(x, np.float32).ravel().tolist()) for x in steps]
        self.first_id = first_sequence_id

    def request(self, index: int, number: int, state: State, start: bool, end: bool) -> bytes:
        parameters = b'{"sequence_id":%d%s%s}' % (
            self.first_id + index,
            b',"sequence_start":true' if start else b"",
            b',"sequence_end":true' if end else b"",
        )
        body = (
            b'{"parameters":%s,"inputs":[{"name":"input","shape":[1,1,%d],"datatype":"FP32",'
            b'"data":%s}],"outputs":[{"name":"output"}]}'
            % (parameters, self.features, self.data[(index + number) % len(self.data)])
        )
        headers = {"Content-Type": "application/json"}
        return head(self.path, self.host, len(body), headers) + body

    def reply(self, raw: Any) -> tuple[str | None, State]:
        error, outputs = read_reply(raw)
        if error is not None:
            return error, None
        data = outputs.get("output")
        if not isinstance(data, list) or len(data) != 1:
            return f"bad reply: {raw[2][:200]!r}", None
        return None, None
