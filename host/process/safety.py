"""Start-up checks an operator must not be able to get wrong silently (issue 15 item 11).

The admin API installs and removes code: bound to an address other hosts can reach, without
`server.admin_token`, anyone on the network could run their own module here. Such a configuration
refuses to start unless `server.admin_allow_insecure = true` says it is meant.
"""

from __future__ import annotations

import ipaddress
import socket

from host.config import ServerConfig, split_address


class StartupRefused(Exception):
    """The configuration is unsafe to serve; the message says why and how to allow it."""


def is_loopback(host: str) -> bool:
    """Whether every address `host` (an IP literal or a name; "" is every interface) is a loopback one."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False  # cannot tell: treat as reachable
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


def check_admin_exposure(server: ServerConfig) -> None:
    """Raise StartupRefused for a tokenless admin listener on a non-loopback address."""
    if server.admin_token or server.admin_allow_insecure:
        return
    host, _ = split_address(server.admin)
    if not is_loopback(host):
        raise StartupRefused(
            f"the admin listener {server.admin} is reachable from other hosts and has no server.admin_token: "
            "anyone could install code. Set server.admin_token, bind it to 127.0.0.1, or set "
            "server.admin_allow_insecure = true if this is intended")
