"""Which addresses the console listens on and which peers it answers: the LAN, nothing else.

Interfaces and their subnets come from ifaddr (pure Python, maintained; netifaces, the usual
choice, has had no release since 2021). Every decision is a pure function of the interface list
and the peer address, so it can be tested with simulated peers and interfaces.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

import ifaddr

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK_NETWORKS: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class LanConfigError(ValueError):
    """An entry of [console] listen or allow is not an address or network."""


@dataclass(frozen=True)
class InterfaceAddress:
    interface: str
    address: IPAddress
    network: IPNetwork

    @property
    def lan_facing(self) -> bool:
        """A private, non-loopback address a LAN client can reach (IPv6 link-local needs a scope: no)."""
        a = self.address
        return a.is_private and not a.is_loopback and not a.is_link_local and not a.is_multicast


def interface_addresses() -> list[InterfaceAddress]:
    """Every address of every interface, with the subnet it is on."""
    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                address = ipaddress.ip_address(text.split("%")[0])
                network = ipaddress.ip_network(f"{address}/{ip.network_prefix}", strict=False)
            except ValueError:
                continue
            found.append(InterfaceAddress(adapter.nice_name, address, network))
    return found


def parse_peer(text: str | None) -> IPAddress | None:
    """A peer address as the server reports it; IPv4-mapped IPv6 becomes IPv4. None if unreadable."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def listen_addresses(setting: Iterable[str], interfaces: list[InterfaceAddress]) -> list[IPAddress]:
    """The console's listening addresses: 127.0.0.1, plus the LAN-facing ones for "auto"."""
    chosen: list[IPAddress] = [ipaddress.ip_address("127.0.0.1")]
    for entry in setting:
        if entry == "auto":
            candidates = [i.address for i in interfaces if i.lan_facing]
        else:
            try:
                candidates = [ipaddress.ip_address(entry)]
            except ValueError as exc:
                raise LanConfigError(f"[console] listen: {entry!r} is not an IP address") from exc
        chosen.extend(a for a in candidates if a not in chosen)
    return chosen


def allowed_networks(setting: Iterable[str], interfaces: list[InterfaceAddress]) -> list[IPNetwork]:
    """The allow-list: "auto" stands for the box's own subnets and loopback."""
    networks: list[IPNetwork] = []
    for entry in setting:
        if entry == "auto":
            candidates = [*LOOPBACK_NETWORKS, *(i.network for i in interfaces)]
        else:
            try:
                candidates = [ipaddress.ip_network(entry, strict=False)]
            except ValueError as exc:
                raise LanConfigError(f"[console] allow: {entry!r} is not an address or network") from exc
        networks.extend(n for n in candidates if n not in networks)
    return networks


class LanPolicy:
    """The allow-list decision for one peer address."""

    def __init__(self, networks: list[IPNetwork]) -> None:
        self.networks = networks

    def allows(self, peer: str | None) -> bool:
        address = parse_peer(peer)
        if address is None:
            return False
        return any(address.version == n.version and address in n for n in self.networks)

    def describe(self) -> str:
        return ", ".join(str(n) for n in self.networks)
