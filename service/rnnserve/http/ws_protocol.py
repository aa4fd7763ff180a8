"""uvicorn's sans-I/O WebSocket protocol, plus a direct channel for the session stream.

Through ASGI each message costs a dict, a queue hand-off, a task wake-up and, in uvicorn, a
pause and resume of the socket's reader; a WebSocket echo on that path already spends ~25 µs
of server CPU per message, more than a batched model step. A handler that finds
`scope["extensions"][DIRECT]` can instead `attach` callbacks: text messages then reach it
synchronously from `data_received`, and `send_text` writes a frame straight to the transport.
Everything else (handshake, accept/close, pings, other routes, TestClient) is unchanged ASGI."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

DIRECT = "rnnserve.ws.direct"

OnText = Callable[[str | None], None]  # None: a binary message
OnClose = Callable[[], None]


def text_frame_header(length: int) -> bytes:
    """FIN + text opcode, then the payload length in RFC 6455's 7, 7+16 or 7+64 bit form."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return _HEADER16.pack(0x81, 126, length)
    return _HEADER64.pack(0x81, 127, length)


_HEADER16 = struct.Struct("!BBH")
_HEADER64 = struct.Struct("!BBQ")
_LENGTH16 = struct.Struct("!H")
_LENGTH64 = struct.Struct("!Q")


class DirectChannel:
    """What a handler holds in direct mode: message and close callbacks in, frames out, and
    pause/resume of the socket's reader for backpressure."""

    def __init__(self, protocol: DirectWebSocketProtocol) -> None:
        self._protocol = protocol
        # Write one text frame (UTF-8 bytes); False once the connection is closing.
        self.send_text: Callable[[bytes], bool] = protocol.send_direct
        self.on_text: OnText | None = None
        self.on_close: OnClose | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def attach(self, on_text: OnText, on_close: OnClose) -> None:
        """From now on text messages go to `on_text`, not to ASGI `receive()`. Messages the
        ASGI queue already holds are handed over first, in order."""
        self.on_text, self.on_close = on_text, on_close
        self._protocol.drain_queue_into_direct()

    def pause_reading(self) -> None:
        self._protocol.pause_direct_reading()

    def resume_reading(self) -> None:
        self._protocol.resume_direct_reading()

    def mark_closed(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_close is not None:
            on_close, self.on_close = self.on_close, None
            on_close()


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """Pass as uvicorn's `ws` protocol class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct: DirectChannel | None = None
        self._own_frames = False  # after the handshake: frames parsed here, see data_received
        self._inbox = bytearray()
        self._in_fragmented_message = False

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            self.direct = DirectChannel(self)
            scope["extensions"][DIRECT] = self.direct
            # permessage-deflate frames need the library's decompression
            self._own_frames = self.response.status_code == 101 and not self.conn.extensions

    # -- frames ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Whole, masked, unfragmented text and binary frames (all a client of the stream
        sends) are cut and unmasked here, in one pass over the bytes; the library's
        generator-based parser cost more per message than the model step. Any other frame
        (control, fragment, reserved bits, unmasked) is handed to the library whole, so its
        parser always starts at a frame boundary and keeps its own close and ping logic; one
        over the size limit hands it the rest of the stream, and it closes with 1009."""
        if not self._own_frames:
            super().data_received(data)
            return
        inbox = self._inbox
        inbox += data
        size, pos, limit = len(inbox), 0, self.config.ws_max_size
        while size - pos >= 2 and self._own_frames and not self.transport.is_closing():
            first, second = inbox[pos], inbox[pos + 1]
            length, header = second & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, header = _LENGTH16.unpack_from(inbox, pos + 2)[0], 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, header = _LENGTH64.unpack_from(inbox, pos + 2)[0], 10
            if length > limit:
                self._own_frames = False
                rest = bytes(inbox[pos:])
                inbox.clear()
                super().data_received(rest)
                return
            masked = second & 0x80  # a client must mask; the library closes 1002 if not
            end = pos + header + (4 if masked else 0) + length
            if end > size:
                break
            if first in (0x81, 0x82) and masked and not self._in_fragmented_message:
                masking = pos + header
                payload = apply_mask(inbox[masking + 4:end], inbox[masking:masking + 4])
                pos = end
                on_text = self.direct.on_text if self.direct is not None else None
                if on_text is not None and first == 0x81 and not self.close_sent:
                    try:
                        text = payload.decode()
                    except UnicodeDecodeError:
                        self.frames, self.curr_msg_data_type = [payload], "text"
                        self.send_receive_event_to_app()  # closes with 1007
                        continue
                    on_text(text)
                else:
                    self.frames = [payload]
                    self.curr_msg_data_type = "text" if first == 0x81 else "bytes"
                    self.send_receive_event_to_app()
            else:
                opcode, fin = first & 0x0F, first & 0x80
                if opcode in (1, 2) and not fin:
                    self._in_fragmented_message = True
                elif opcode == 0 and fin:
                    self._in_fragmented_message = False
                frame = bytes(inbox[pos:end])
                pos = end
                super().data_received(frame)
        del inbox[:pos]

    # -- incoming --------------------------------------------------------------------------

    def send_receive_event_to_app(self) -> None:
        channel = self.direct
        if channel is None or channel.on_text is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type != "text":
            channel.on_text(None)  # the handler answers with an error
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.conn.send_close(1007)
            self.handle_parser_exception()
            return
        channel.on_text(text)

    def drain_queue_into_direct(self) -> None:
        """Hand text messages that arrived before `attach` to the direct handler."""
        channel = self.direct
        assert channel is not None and channel.on_text is not None
        self.resume_direct_reading()  # ASGI paused after each message; direct mode pauses on
        while not self.queue.empty():  # its own terms (messages in flight), on the same flag
            message = self.queue.get_nowait()
            if message["type"] != "websocket.receive":
                self.queue.put_nowait(message)  # a disconnect: connection_lost reports it
                break
            channel.on_text(message.get("text"))

    # -- outgoing --------------------------------------------------------------------------

    def send_direct(self, data: bytes) -> bool:
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return False
        if self.conn.extensions:  # permessage-deflate: the library compresses the frame
            try:
                self.conn.send_text(data)
            except InvalidState:
                return False
            self.transport.write(b"".join(self.conn.data_to_send()))
        else:  # a server's frame is unmasked: a 2-10 byte header, then the payload
            self.transport.write(text_frame_header(len(data)) + data)
        return True

    def pause_direct_reading(self) -> None:
        if not self.read_paused and not self.transport.is_closing():
            self.read_paused = True
            self.transport.pause_reading()

    def resume_direct_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    # -- the end ---------------------------------------------------------------------------

    def _end_direct(self) -> None:
        if self.direct is not None:
            self.direct.mark_closed()

    def handle_close(self, event: Any) -> None:
        super().handle_close(event)
        self._end_direct()

    def handle_parser_exception(self) -> None:
        super().handle_parser_exception()
        self._end_direct()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._end_direct()

    def shutdown(self) -> None:
        super().shutdown()
        self._end_direct()
