"""Who may come in: IP allow and deny lists, and the client address behind trusted proxies (pure).

The rules: an address in the deny list is refused; if the allow list is not empty, an address outside it
is refused too; everything else is admitted. Lists hold CIDRs, IPv4 and IPv6 alike (an IPv4 address
written as IPv6, ``::ffff:10.0.0.1``, is matched as IPv4).

Behind a load balancer every connection comes from the balancer, so the client address is read from
``X-Forwarded-For``, but only when the peer is a listed proxy (anyone else could write that header):
the list is read from the right, skipping trusted proxies, and the first address that is not one is
the client.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "AccessRules",
    "Address",
    "ListName",
    "Network",
    "client_address",
    "metrics_allowed",
    "parse_address",
    "parse_network",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ListName = Literal["allow", "deny"]


def parse_address(text: str) -> Address | None:
    """An IP address (IPv4-mapped IPv6 as IPv4, zone ids dropped); ``None`` if it is not one."""
    try:
        address = ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: str) -> Network:
    """A CIDR (host bits are cleared: ``10.1.2.3/8`` is ``10.0.0.0/8``); a bare address is a /32 or /128.

    Raises ``ValueError`` if it is not one.
    """
    return ipaddress.ip_network(text.strip(), strict=False)


@dataclass
class AccessRules:
    """The allow and deny lists a node applies; replaced as a whole when the lists change."""

    allow: frozenset[Network] = field(default_factory=frozenset)
    deny: frozenset[Network] = field(default_factory=frozenset)

    @classmethod
    def of(cls, entries: Iterable[tuple[ListName, Network]]) -> AccessRules:
        """Rules from ``(list, network)`` pairs."""
        allow: set[Network] = set()
        deny: set[Network] = set()
        for name, network in entries:
            (allow if name == "allow" else deny).add(network)
        return cls(frozenset(allow), frozenset(deny))

    def admits(self, address: str | Address | None) -> bool:
        """Whether a client at ``address`` may come in (an unreadable address only if no list applies)."""
        if not self.allow and not self.deny:
            return True
        parsed = parse_address(address) if isinstance(address, str) else address
        if parsed is None:
            return False
        if any(parsed in network for network in self.deny if network.version == parsed.version):
            return False
        return not self.allow or any(parsed in network for network in self.allow if network.version == parsed.version)


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: Iterable[Network]) -> str:
    """The client's address: the peer's, or, if the peer is a trusted proxy, the nearest untrusted hop of
    ``X-Forwarded-For`` (all of its header lines, in order)."""
    proxies = tuple(trusted)
    parsed_peer = parse_address(peer) if peer else None
    if parsed_peer is None:
        return peer or ""
    if not proxies or not _trusted(parsed_peer, proxies):
        return str(parsed_peer)
    hops = [hop.strip() for line in forwarded_for for hop in line.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return hop[:64]  # garbage from the client side: keyed as it is, never trusted
        if not _trusted(address, proxies):
            return str(address)
    # Every hop is a proxy of ours: the first one is where the request came from.
    return str(parse_address(hops[0])) if hops else str(parsed_peer)


def _trusted(address: Address, proxies: tuple[Network, ...]) -> bool:
    return any(address in network for network in proxies if network.version == address.version)


def metrics_allowed(token: str | None, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header carries the metrics bearer token (never, if none is set)."""
    if not token or not authorization:
        return False
    scheme, _, value = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())
