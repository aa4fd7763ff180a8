"""The `redis+sentinel://` form of --state-store: the sentinels to ask and the master to follow.

    redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]

A single Redis is one point of failure; Sentinel watches a master and its replicas and
promotes a replica when the master dies. The URL names the sentinels (any of them answers
which node is the master now) and the master's name in their `sentinel monitor` line, not a
Redis node: the store asks the sentinels again whenever it opens a connection, so after a
failover it talks to the new master. PASSWORD (and USER, for a Redis ACL user) is the one the
data nodes require (`requirepass`, `masterauth`); the sentinels themselves are asked without
one. A port left out is Sentinel's usual 26379.

Parsed here, once, by the settings check (so `rnnserve serve` exits 2 with the reason) and
again by the connection factory. No message here ever holds the password: a bad URL is
quoted with its credentials replaced by `***`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from rnnserve.whole_numbers import whole_number

SCHEME = "redis+sentinel"
TLS_SCHEME = "rediss+sentinel"
FORM = f"{SCHEME}://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]"
DEFAULT_SENTINEL_PORT = 26379

_NAME = re.compile(r"[A-Za-z0-9._\-]+")
"""A master name as sentinel.conf spells them: no spaces, slashes or other punctuation."""


class BadSentinelUrl(ValueError):
    """A --state-store redis+sentinel:// URL that cannot be used; the message says why and
    shows the expected form, never the password."""


@dataclass(frozen=True)
class SentinelTarget:
    """What a redis+sentinel:// URL names."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def safe(self) -> str:
        """The URL without its credentials, for messages and logs."""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
        return f"{SCHEME}://{hosts}/{self.master_name}/{self.db}"


def is_sentinel_url(url: str) -> bool:
    """Whether `url` asks for Sentinel (either scheme; the TLS one is then refused)."""
    return url.lower().startswith((SCHEME + "://", TLS_SCHEME + "://"))


def without_credentials(url: str) -> str:
    """`url` with whatever stands before the last '@' of its authority shown as `***`."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, master name, DB and credentials of `url`; BadSentinelUrl if any part is
    missing or malformed."""
    shown = without_credentials(url)

    def bad(why: str) -> BadSentinelUrl:
        return BadSentinelUrl(f"--state-store {shown!r}: {why}; expected {FORM}")

    scheme, _, rest = url.partition("://")
    if scheme.lower() == TLS_SCHEME:
        raise BadSentinelUrl(
            f"--state-store {shown!r}: TLS to Sentinel ({TLS_SCHEME}://) is not supported; "
            f"use {SCHEME}:// on a trusted network, or a rediss:// URL to one Redis")
    if scheme.lower() != SCHEME:
        raise bad(f"the scheme must be {SCHEME}://")
    if "?" in rest or "#" in rest:
        raise bad("options after '?' or '#' are not accepted")
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    if at and password is None:
        raise bad("the part before '@' must be ':PASSWORD' or 'USER:PASSWORD'")
    sentinels = tuple(_address(item, bad) for item in hosts.split(","))
    name, _, db_text = path.partition("/")
    if not name:
        raise bad("the master's name is missing after the sentinels' addresses")
    if not _NAME.fullmatch(name):
        raise bad(f"the master name {name!r} may hold only letters, digits, '.', '_' and '-'")
    db_text = db_text.rstrip("/")
    db = whole_number(db_text) if db_text else 0
    if db is None:
        raise bad(f"the database {db_text!r} must be a number (0, 1, ...)")
    return SentinelTarget(sentinels=sentinels, master_name=name, db=db,
                          username=username, password=password)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    """(user or None, password) from `[USER]:PASSWORD`; (None, None) when there is no ':'."""
    user, colon, password = userinfo.partition(":")
    if not colon or not password:
        return None, None
    return (unquote(user) or None), unquote(password)


def _address(item: str, bad: Callable[[str], BadSentinelUrl]) -> tuple[str, int]:
    """HOST[:PORT] or [IPV6][:PORT] -> (host, port)."""
    item = item.strip()
    if item.startswith("["):
        host, closing, port_text = item[1:].partition("]")
        if not closing or (port_text and not port_text.startswith(":")):
            raise bad(f"the sentinel address {item!r} is not [IPV6]:PORT")
        port_text = port_text[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise bad(f"a sentinel address {item!r} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    port = whole_number(port_text)
    if port is None or not 0 < port < 65536:
        raise bad(f"the sentinel address {item!r} has no valid port (1-65535)")
    return host, port
