"""Content-Encoding of HTTP bodies, once for every route: a request body sent with gzip or
deflate (tritonclient's request_compression_algorithm, or any client that compresses its JSON)
is inflated, never past the body size limit, so that a small compressed body cannot become a
huge one in memory; a KServe v2 response of 1 KiB or more is compressed when the client
accepts it."""

from __future__ import annotations

import zlib

from rnnserve.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding gzip or deflate (the zlib format, as HTTP defines it); identity
    or none leaves the body as it is. 415 for another coding, 400 for data that is not what
    the header says (or ends early, or goes on after its end), 413 when it inflates past
    `limit` bytes."""
    coding = (encoding or "").strip().lower()
    if not coding or coding == "identity" or not body:  # no body is no body, coded or not
        return body
    if coding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; "
                                   "use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=31 if coding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {coding} data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed body exceeds the limit of {limit} bytes: "
                              "split the request or raise --max-body-bytes")
    if not inflater.eof:
        raise InvalidInput(f"the body is not valid {coding} data: it ends before the "
                           "compressed stream does")
    if inflater.unused_data:  # (a second gzip member too: one member is what clients send)
        raise InvalidInput(f"the body has {len(inflater.unused_data)} bytes after the end of "
                           f"its {coding} stream: send one compressed stream, nothing after it")
    return out


COMPRESS_MIN_BYTES = 1024
"""Smaller responses go out as they are, even to a client that accepts gzip or deflate (HTTP
leaves that to the server): under about a packet nothing is saved on the wire, and the
compressor's own cost was a third of the server's CPU time on a one-step v2 reply of ~150
bytes, whose gzip form is longer than the reply."""


def compress(body: bytes, accept_encoding: str) -> tuple[bytes, str | None]:
    """Compress a response of COMPRESS_MIN_BYTES or more if the client asked for gzip or
    deflate."""
    if len(body) < COMPRESS_MIN_BYTES or not accept_encoding:
        return body, None
    accepted = {part.split(";")[0].strip().lower() for part in accept_encoding.split(",")}
    if "gzip" in accepted:
        packer = zlib.compressobj(wbits=31)
        return packer.compress(body) + packer.flush(), "gzip"
    if "deflate" in accepted:
        return zlib.compress(body), "deflate"
    return body, None
