"""Which peers are trusted proxies, and so who the client of a connection is.

A client's address counts against per-client caps (live sessions, open connections). Behind a
proxy every connection comes from the proxy, so its X-Forwarded-For names the client; but a
client talking to the server directly could send that header too, so it is believed only from
the peers listed in --forwarded-allow-ips. A trusted proxy is never counted as a client itself.
uvicorn applies the same list to HTTP (it rewrites scope["client"]); gRPC reads it here."""

from __future__ import annotations

import functools
import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """A parsed --forwarded-allow-ips: addresses, networks (CIDR), or * for every peer."""

    def __init__(self, spec: str) -> None:
        self.spec = spec.strip()
        items = [item.strip() for item in self.spec.split(",") if item.strip()]
        self.everyone = "*" in items
        self._networks: list[Network] = []
        self._literals: set[str] = set()  # e.g. a unix socket path
        for item in items:
            if item == "*":
                continue
            try:
                self._networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self._literals.add(item)

    def __bool__(self) -> bool:
        return self.everyone or bool(self._networks) or bool(self._literals)

    def trusts(self, host: str | None) -> bool:
        """Whether `host` (an address as the socket reports it) is a trusted proxy."""
        if not host or not self:
            return False
        if self.everyone or host in self._literals:
            return True
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: the peer, unless the peer is trusted and forwards for
        someone; then the nearest address in X-Forwarded-For that is not a trusted proxy."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer

    def counted(self, client: str, forwarded: bool) -> str:
        """The address a per-client cap counts for a request whose client, after uvicorn's
        (or gRPC's) forwarding, is `client`; "" for a trusted proxy's own request, never
        counted. `forwarded`: the request carried X-Forwarded-For. With * every peer is
        trusted, so there a forwarded address counts all the same: it is the proxy's client."""
        if self.trusts(client) and not (self.everyone and forwarded):
            return ""
        return address_group(client)


@functools.lru_cache(maxsize=4096)  # parsed once per address: it was a tenth of a step's CPU
def address_group(host: str) -> str:
    """One client, as a per-address cap counts it: an IPv4 address (an IPv4-mapped IPv6 one
    too); an IPv6 /64, since one host or home usually holds a whole /64 and could otherwise
    take a fresh address for every few sessions; anything else (a unix socket, a test client)
    as given, cut to 64 characters. "" stays "" (unknown: not counted)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)
