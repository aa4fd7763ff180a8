"""Repeated steps: the next step of a KServe v2 sequence on a keep-alive connection arrives as
the same bytes as the connection's last lane step, but for the input tensor's values (its
HTTP head, its JSON header with the sequence id: a client builds them the same way each time).
The protocol compares the read with those bytes (one length check and one `startswith`) before
parsing anything; when they match, the request is what the last one was, with new values.

What a repeat skips is only what follows from those bytes alone, which the last step worked
out already: the HTTP parse (http/whole_reads.py), the route's match and the direct path's
header rules (`DirectPath.takes`), the JSON header's decoding (its `v2_codec.Seen`, which
`decode_request` reuses too for a header met again), and the lane's reading of the sequence
parameters, step id and session id. The tensor is read from the new bytes by the codec's own
`laid_out`, as decode_request reads it. The 200 is `infer_response`'s, but for outputs of the
shapes the last repeat's had (the same call, version and shapes make the same JSON header and
header lines) those are reused and only the tensors are written anew.

Everything that depends on the server's state or on the new values is done again, by the same
calls as on every lane step (http/sequence_lane.py): the API key (keys can be replaced while
serving), whether the connection still knows the sequence and its model version is still
served, the data plane's checks of the step (`V2DataPlane.later_step_input`: outputs, shape,
limits, finite values), the step itself, a request id, the time limit, the metrics and the log
line. A repeat that fails any of those goes the way any request goes (the lane's own take,
then the whole way), so a client sees the answer it would get if no repeat were kept.

One repeat is kept per connection: the latest lane step read whole. A client stepping one
sequence per connection (bench.peers' client; a device holding its own connection) matches
it on every step; a pool that interleaves sequences on one connection matches when a
sequence's steps follow each other, and otherwise pays one comparison.

Measured with bench.peers' v2 client (256 sequences, one medium-LSTM step a request), the
server's CPU per v2 step went from 0.111-0.123 ms (the code before, the same hour) to
0.065-0.097, and v2 HTTP from 1.32 x Triton's rate to 1.68-1.96 over three full runs (README,
"Speed")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnserve.engine import V2Response
from rnnserve.http.v2 import infer_response
from rnnserve.http.v2_codec import InferCall, Seen, laid_out
from rnnserve.http.whole_reads import WholeRequest


@dataclass(eq=False)
class Repeat:
    """A lane step read whole, as far as its bytes decide it."""

    prefix: bytes  # the read up to the input tensor: the HTTP head and the JSON header
    total: int  # the read's length
    body_at: int  # where the body begins in the read
    scope: dict[str, Any]  # the step's scope ("state" is made anew for each repeat)
    found: Any  # its hot route's match
    seen: Seen  # its JSON header's decoding
    model: str
    remembered: Any  # the lane's Remembered sequence it stepped
    headers: dict[bytes, bytes]  # its first_headers
    step_id: str | None
    reply: tuple[tuple[Any, ...], bytes, list[tuple[bytes, bytes]]] | None = None
    # (the outputs' shapes, the JSON header and the header lines of a 200 made for a repeat)

    def matches(self, data: bytes) -> bool:
        """Whether a read is this step again with other input values."""
        return len(data) == self.total and data.startswith(self.prefix)

    def request(self, data: bytes, protocol: Any, on_response: Any) -> WholeRequest:
        """The request a read that `matches` holds, as the connection's reader would make it."""
        scope = self.scope.copy()
        scope["state"] = protocol.app_state.copy()
        return WholeRequest(scope, data[self.body_at:], protocol.server_state.default_headers,
                            on_response, data)

    def call(self, data: bytes) -> InferCall:
        """The decoded v2 call of a read that `matches`: the kept decoding, the new tensor."""
        return laid_out(self.seen, memoryview(data)[len(self.prefix):], self.model, None)

    def response(self, call: InferCall, answer: V2Response) -> tuple[list[tuple[bytes, bytes]],
                                                                      bytes]:
        """The 200 to a repeat (header lines, body) as `infer_response` makes it. The same call
        (the kept decoding) answered by the same model version with outputs of the same shapes
        has the same JSON header and header lines; when every output travelled binary and
        uncompressed, those of the last are reused and only the tensors are written anew."""
        values = answer.outputs.values()
        shapes = tuple(value.shape for value in values)
        kept = self.reply
        if kept is not None and kept[0] == shapes:
            return list(kept[2]), kept[1] + b"".join(
                [np.ascontiguousarray(value, "<f4").tobytes() for value in values])
        response = infer_response(call, answer, self.headers)
        lines, payload = response.raw_headers, bytes(response.body)
        named = dict(lines)
        split = named.get(b"inference-header-content-length")
        if (split is not None and b"content-encoding" not in named
                and len(payload) - int(split) == 4 * sum(value.size for value in values)):
            self.reply = (shapes, payload[:int(split)], list(lines))
        return lines, payload


def repeat_of(cycle: Any, found: Any, call: InferCall, remembered: Any,
              headers: dict[bytes, bytes], step_id: str | None) -> Repeat | None:
    """The repeat of a lane step just entered, when it was read whole (a WholeRequest with its
    read) and its body is a short JSON header (`call.seen`: kept by decode_request) and the
    binary tensors; else None."""
    raw: bytes = getattr(cycle, "raw", b"")
    body: bytes = cycle.body
    seen = call.seen
    if not raw or seen is None or not raw.endswith(body):
        return None
    body_at = len(raw) - len(body)
    split = len(body) - seen[0].tensors[-1][3]  # (the tensors end where the body ends)
    return Repeat(raw[:body_at + split], len(raw), body_at, dict(cycle.scope), found, seen,
                  call.request.model, remembered, headers, step_id)
