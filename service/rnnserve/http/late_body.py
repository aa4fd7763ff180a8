"""Whether a request that ran out of time was waiting for its client: its body has not all
arrived, and the server holds none of it unread.

Then the answer is 408 and the connection closes (request_context): the client sent fewer
bytes than its Content-Length, or no last chunk, and on a kept-alive connection its next
request's bytes would be read as the rest of this body. A body the client sent whole but the
server had not read yet (uvicorn stops reading a connection past 64 KiB until the handler
asks for the body, and a busy event loop leaves bytes in the socket) is the server's delay:
the time limit's 504, and the connection stays open, as for any slow answer.

It reads uvicorn's request cycle, whose method the ASGI `receive` is (`more_body`, its flow
control's `read_paused`, its transport): anything else (the direct path's receive, an
in-process transport) reads as "not waiting for the client"."""

from __future__ import annotations

import array
import fcntl
import termios
from typing import Any

from starlette.types import Receive


def unread_bytes(transport: Any) -> int | None:
    """Bytes in the socket's receive buffer that the server has not read (FIONREAD); None
    when that cannot be told."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return None
    count = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, count, True)
    except (OSError, ValueError):
        return None
    return count[0]


def waiting_for_client(receive: Receive) -> bool:
    """Whether the request's body is still to come from the client (see above)."""
    cycle = getattr(receive, "__self__", None)
    if not getattr(cycle, "more_body", False):
        return False  # the whole body arrived (or receive is not uvicorn's)
    if getattr(getattr(cycle, "flow", None), "read_paused", True):
        return False  # the server stopped reading: what is missing may be in the socket
    return unread_bytes(getattr(cycle, "transport", None)) == 0
