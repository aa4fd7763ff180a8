"""Messages that are not the protobuf their method takes: answered INVALID_ARGUMENT like any
other bad input, instead of grpc's own UNKNOWN (a deserializer that raises ends a unary call
with UNKNOWN and an error in the server log, and a stream with it, replies to the steps
already running included). The deserializer hands such a message on as an `Undecodable`; a
unary method refuses it, a stream answers it in band and goes on (stream_call.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from rnnserve.errors import InvalidInput


class Undecodable:
    """A message that could not be parsed as `expected`, and why."""

    def __init__(self, expected: str, error: Exception) -> None:
        self.error = InvalidInput(
            f"the message is not a valid {expected} ({type(error).__name__}: "
            f"{str(error)[:200]}): send the method's request message, serialized as protobuf")


def lenient(message: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    """A request deserializer for `message` that returns an Undecodable instead of raising."""
    name = message.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | Undecodable:
        try:
            return message.FromString(data)
        except DecodeError as exc:  # invalid UTF-8 in a string field is one too
            return Undecodable(name, exc)

    return parse


Unary = Callable[[Any, Any], Awaitable[Any]]
ServerStream = Callable[[Any, Any], AsyncIterator[Any]]


async def invalid_argument(request: Undecodable, context: Any) -> Any:
    """End the call of an undecodable request with INVALID_ARGUMENT."""
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error.message)


def refusing_undecodable(handler: Unary, refuse: Unary = invalid_argument) -> Unary:
    """A unary method that ends an undecodable request's call through `refuse` (by default
    INVALID_ARGUMENT; the inference service checks the caller's key first)."""

    async def call(request: Any, context: Any) -> Any:
        if type(request) is Undecodable:
            return await refuse(request, context)
        return await handler(request, context)

    return call


def refusing_undecodable_stream(handler: ServerStream) -> ServerStream:
    """A server-streaming method (health's Watch) that ends an undecodable request's call
    with INVALID_ARGUMENT."""

    async def call(request: Any, context: Any) -> AsyncIterator[Any]:
        if type(request) is Undecodable:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error.message)
        async for reply in handler(request, context):
            yield reply

    return call
