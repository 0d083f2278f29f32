"""Who may use the gateway: rules against DNS rebinding and drive-by web pages.

A web page can make the browser send requests to 127.0.0.1. Two things give it
away: a `Host` that is not a loopback name (DNS rebinding points evil.example at
127.0.0.1, but the browser still sends `Host: evil.example`), and an `Origin`
header (browsers add it to cross-origin requests; coding CLIs do not).
"""

from __future__ import annotations

import ipaddress

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback_peer(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str | None) -> bool:
    """`Host` must name this machine's loopback (any port)."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8787
        host = host.split("]")[0] + "]"
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    """No `Origin` (CLIs, SDKs) is fine; a browser origin only when listed explicitly."""
    if origin is None:
        return True
    return origin.strip().rstrip("/").lower() in {o.rstrip("/").lower() for o in allowed}
