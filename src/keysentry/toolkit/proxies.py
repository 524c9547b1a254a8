"""Which address a request comes from, when reverse proxies stand in front of the app."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from keysentry.errors import ConfigurationError

__all__ = ["Network", "client_ip", "parse_proxies"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(
    proxies: str | Iterable[str], option: str = "trusted_proxies"
) -> tuple[Network, ...]:
    """Parse addresses or networks (``"10.0.0.0/8"``, ``"::1"``).

    Raises:
        ConfigurationError: one is not an address or network, named.
    """
    if isinstance(proxies, str):
        proxies = [proxies]
    elif not isinstance(proxies, Iterable):
        raise ConfigurationError(f"{option} must be a list of addresses or networks")
    networks = []
    for proxy in proxies:
        try:
            if not isinstance(proxy, str):  # ip_network takes an int as an address
                raise TypeError(proxy)
            networks.append(ipaddress.ip_network(proxy, strict=False))
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{option}: {proxy!r} is not an IP address or network"
            ) from None
    return tuple(networks)


def is_trusted(networks: Sequence[Network], address: str) -> bool:
    """Whether *address* lies in one of *networks*."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(
    networks: Sequence[Network],
    peer: str | None,
    forwarded_for: Sequence[str],
    real_ip: str | None = None,
) -> str | None:
    """The client's address: *peer*, unless *peer* is a trusted proxy; then the right-most
    ``X-Forwarded-For`` hop that is not one (each proxy appends the address it was called
    from, so everything left of that was written by the client), else ``X-Real-IP``.

    A peer that is not trusted is the client itself, whatever headers it sends.
    """
    if peer is None or not networks or not is_trusted(networks, peer):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        if hop and not is_trusted(networks, hop):
            return hop
    if real_ip and real_ip.strip() and not any(hops):
        return real_ip.strip()
    return peer
