"""The client's address behind the organisation's reverse proxy, for the envelope trail.

The signing page is published through a reverse proxy, so the TCP peer of every party's request is
the proxy. A proxy names the client in X-Forwarded-For, but anyone can send that header, so it is
believed only from a peer listed in ``[api] trusted_proxies``, and then read from the right: each
trusted proxy appends the address it saw, so the right-most address that is not itself a trusted
proxy is the last one nobody trusted wrote — what a client puts in the header it sends lands to the
left of it and is never taken. An entry that is no IP address reached before that point means the
chain cannot be followed: the peer is recorded, as without a proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import falcon

__all__ = ["ClientAddress", "Network", "client_ip"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(peer: str, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The address to record for a request from ``peer`` carrying ``forwarded_for`` (X-Forwarded-For)."""
    if not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    for hop in reversed(hops):
        if not _is_address(hop):
            return peer
        if not _trusted(hop, trusted):
            return hop
    return hops[0]  # every hop is a trusted proxy: the first of them made the request


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in trusted)


class ClientAddress:
    """Middleware: ``req.context.client_ip`` for every request, the one address faces record."""

    def __init__(self, trusted: Sequence[Network]) -> None:
        self._trusted = tuple(trusted)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.client_ip = client_ip(req.remote_addr, req.get_header("X-Forwarded-For"), self._trusted)
