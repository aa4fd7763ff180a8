"""A write on a Redis connection whose socket the server has already closed fails as a
connection error, so redis_client's one retry on a fresh connection applies to it.

Under uvloop (the server's event loop) writing to a closed transport raises RuntimeError
("unable to perform operation on <TCPTransport closed=True>; the handler is closed"), which
redis-py neither retries nor wraps: it reached the client as a 500. The pool checks a
connection when handing it out, but on Python 3.11 a write waits one loop turn after that
check (redis-py runs it in asyncio.wait_for, which there is a task of its own), and a Redis
killed in that turn, a failover for instance, closes the socket in between. The standard
loop only logs such a write, and the read that follows fails as a connection error.

The check runs right before the write, with no await between the two, so the socket cannot
close in between."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool


class ClosedSocketCheck:
    """Mixed in before a redis-py connection class: its timed write (every connection of ours
    has a socket timeout, so every write goes through `_send_packed_command`) refuses a closed
    socket, or one another task disconnected in the meantime (a pool-wide disconnect, at
    shutdown), with an OSError, which redis-py turns into ConnectionError after disconnecting
    (not an AttributeError on the writer it dropped)."""

    _writer: Any

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        writer = self._writer
        if writer is None or writer.transport.is_closing():  # None: another task disconnected it
            raise ConnectionResetError("the connection is closed")
        await super()._send_packed_command(command)  # type: ignore[misc]


def checking_closed_sockets(pool: ConnectionPool) -> None:
    """Make the connections `pool` opens from now on check their socket before each write.
    The pool must give its connections a socket timeout: without one redis-py writes without
    calling `_send_packed_command`, so nothing would be checked."""
    if not pool.connection_kwargs.get("socket_timeout"):
        raise ValueError("checking_closed_sockets needs a pool with a socket_timeout")
    base: type[AbstractConnection] = pool.connection_class
    if not issubclass(base, ClosedSocketCheck):
        pool.connection_class = type(base.__name__, (ClosedSocketCheck, base), {})
