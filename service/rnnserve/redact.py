"""API keys out of every log line: `redact` replaces what follows each place a key can travel.

A key reaches the server in three places, and each can end up in a log line: the query
parameter `api_key=` (uvicorn logs a WebSocket's path with its query string at info; matched
in any case and percent-encoding of the name), the subprotocol `rnnserve.key.<key>`, and the
`Authorization` header (the websockets library logs every request header at debug). Each is
matched case-insensitively, whatever text surrounds it (a message, its arguments, a
traceback), and its value becomes `[redacted]`; the name stays, so a line still says how the
client authenticated.

A value ends where its context ends it: `&`, `#` or whitespace in a query, `,` or whitespace
in a subprotocol list, the end of the line in a header; a quote closes a value only when the
quoted text ends there too (a log line that quotes a path, the repr of a tuple), so a key that
holds a quote is still redacted whole.

A state store's URL may carry a password (redis://:secret@host, also redis+sentinel://): `safe_url`
is the URL every message and log line shows instead."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_CLOSING_QUOTE = r"[\"'](?:[\s,)\]}]|$)"
"""A quote that closes the quoted text around a value (a quoted path, a tuple's repr)."""


def _spelled_any_way(name: str) -> str:
    """A pattern for `name` in any case, each character also percent-encoded (a client may
    spell `?%61pi_key=` and a server that decodes names reads api_key)."""
    def one(c: str) -> str:
        codes = {f"%{ord(v):02x}" for v in {c.lower(), c.upper()}}
        return "(?:" + "|".join([re.escape(c), *sorted(codes)]) + ")"
    return "".join(one(c) for c in name)


_QUERY = re.compile(rf"(?i)({_spelled_any_way('api_key')}(?:=|%3d))"
                    rf"[^\s&#]+?(?=[\s&#]|$|{_CLOSING_QUOTE})")
_SUBPROTOCOL = re.compile(rf"(?i)(rnnserve\.key\.)[^\s,]+?(?=[\s,]|$|{_CLOSING_QUOTE})")
_HEADER = re.compile(r"(?i)(\bauthorization[\"']?\s*[:=,]\s*[\"']?|\bbearer\s+)"
                     rf"[^\r\n]+?(?=[\r\n]|$|{_CLOSING_QUOTE})")

REDACTED = "[redacted]"


def _keep_name(match: re.Match[str]) -> str:
    return match.group(1) + REDACTED


def redact(text: str) -> str:
    """`text` with every API key that could be in it replaced by [redacted]."""
    lowered = text.lower()  # most lines hold none of these: skip the regexes
    if ("key" not in lowered and "bearer" not in lowered and "authorization" not in lowered
            and "%" not in lowered):
        return text
    for pattern in (_QUERY, _SUBPROTOCOL, _HEADER):
        text = pattern.sub(_keep_name, text)
    return text


def safe_url(url: str) -> str:
    """A store's URL without credentials (user, password) or query, for messages and logs."""
    if "+sentinel://" in url.lower():  # many hosts: urlsplit would take "h1:1,h2:2" as one
        scheme, _, rest = url.partition("://")
        authority, slash, path = rest.partition("/")
        return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path.split('?')[0]}"
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    if not parts.scheme:
        return url  # "memory": a name, not a URL
    hosts = parts.netloc.rpartition("@")[2]
    if "," in hosts:  # redis+sentinel://[:PASSWORD@]HOST:PORT,HOST:PORT/MASTER: no one port
        return f"{parts.scheme}://{hosts}{parts.path}"
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
