"""The client address and scheme behind trusted reverse proxies (TOKENMETER_DASHBOARD_TRUSTED_PROXIES, proxy31).

Only when the TCP peer is one of the trusted proxies is X-Forwarded-For read, from the right: each proxy appends the
address it saw, so the right-most entry that is not itself a trusted proxy is the client the nearest trusted hop saw;
anything left of it is what the client (or an untrusted hop) claimed and is never read. An entry that is no address
stops the walk: the client is then the nearest trusted hop known (the peer itself at first), never a guess. From any
other peer, and always for Forwarded, X-Forwarded-Host, -Port and -By, the headers are removed before the app runs.

A middleware, not waitress's `trusted_proxy`: that takes one address (or "*") and a fixed hop count, and sets the
client to whatever text the header holds; here a list of networks, a chain of any length and only parsed addresses.
"""

from __future__ import annotations

import ipaddress
from typing import Callable, Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Entries of X-Forwarded-For read at most, from the right: a chain of proxies is a handful; past this the farthest
# trusted one read is the client (bounds the work a header of 10,000 entries, from a trusted network, can cause).
MAX_FORWARDED_HOPS = 32
MAX_ENTRY_CHARS = 100  # the longest address with a port and a zone is far shorter
FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                     "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_BY", "HTTP_FORWARDED")
SCHEMES = frozenset({"http", "https"})


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """"10.0.0.5" (one address) or "10.0.0.0/8"; ValueError naming the entry otherwise (host bits set included: is
    "10.0.0.1/8" the network or a typo?)."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=True))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP address or network (CIDR): {exc}") from None
    return networks


def parse_address(text: str) -> Address | None:
    """One X-Forwarded-For entry as an address: `203.0.113.9`, `2001:db8::1`, `[2001:db8::1]:443`,
    `203.0.113.9:51234` (a port some proxies add), quoted or padded; None for anything else."""
    if len(text) > MAX_ENTRY_CHARS:
        return None
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        text, bracket, _ = text[1:].partition("]")
        if not bracket:
            return None
    elif text.count(":") == 1:  # IPv4 with a port (an IPv6 address has two colons at least)
        text, _, port = text.partition(":")
        if not (port.isascii() and port.isdigit()):
            return None
    if not text.isascii():  # int() reads other scripts' digits; an address has none
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _unmapped(address: Address) -> Address:
    """::ffff:10.0.0.5 (an IPv4 peer on a dual-stack socket) as 10.0.0.5, so an IPv4 network matches it."""
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def client_address(peer: Address, forwarded_for: str | None, trusted: list[Network]) -> Address:
    """The client behind `peer`, a trusted proxy: the walk of `forwarded_for` described above."""
    client = peer
    if forwarded_for:
        for entry in reversed(forwarded_for.rsplit(",", MAX_FORWARDED_HOPS)[-MAX_FORWARDED_HOPS:]):
            hop = parse_address(entry)
            if hop is None:
                break
            client = hop
            if not is_trusted(hop, trusted):
                break
    return client


def is_trusted(address: Address, trusted: list[Network]) -> bool:
    address = _unmapped(address)
    return any(address.version == net.version and address in net for net in trusted)


def forwarded_scheme(value: str | None) -> str | None:
    """The right-most X-Forwarded-Proto value (the nearest proxy's) if it is http or https, else None."""
    if not value or len(value) > MAX_ENTRY_CHARS:
        return None
    scheme = value.rsplit(",", 1)[-1].strip().lower()
    return scheme if scheme in SCHEMES else None


def from_trusted_proxies(wsgi_app: Callable, trusted: list[Network]) -> Callable:
    """`wsgi_app` with REMOTE_ADDR and wsgi.url_scheme taken from a trusted proxy's headers, and every forwarded
    header removed (from any peer) before it runs."""

    def translated(environ: dict, start_response: Callable) -> Iterable[bytes]:
        peer = parse_address(environ.get("REMOTE_ADDR", ""))
        if peer is not None and is_trusted(peer, trusted):
            client = client_address(peer, environ.get("HTTP_X_FORWARDED_FOR"), trusted)
            if client is not peer:
                environ["REMOTE_ADDR"] = str(_unmapped(client))
            scheme = forwarded_scheme(environ.get("HTTP_X_FORWARDED_PROTO"))
            if scheme:
                environ["wsgi.url_scheme"] = scheme
        for header in FORWARDED_HEADERS:
            environ.pop(header, None)
        return wsgi_app(environ, start_response)

    return translated
