"""A private network of Linux network namespaces for the multi-host test: one namespace for the
backends that also holds the bridge every other namespace is cabled to, one per host, and a veth
from the root namespace (where the test runs) into the same bridge.

The bridge lives in the backends' namespace rather than in the root one on purpose: with
`br_netfilter` loaded (Docker hosts, most CI runners) bridged frames go through the iptables
FORWARD chain of the bridge's namespace, which is DROP on a Docker host but empty in a fresh one.

Everything made here carries a random tag in its name, so parallel runs on one machine do not
collide, and `close()` removes all of it (it is safe to call after a half-done `open()`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field

BACKENDS = "back"


class NetnsUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, no `ip`, no kernel support)."""


def netns_problem() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    return None


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no route of the root namespace touches."""
    routes = json.loads(_ip("-j", "-4", "route", "show", "table", "all") or "[]")
    taken = []
    for route in routes:
        destination = route.get("dst", "")
        if destination and destination not in ("default",):
            try:
                taken.append(ipaddress.ip_network(destination, strict=False))
            except ValueError:
                continue
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for third in candidates:
        subnet = ipaddress.IPv4Network(f"10.213.{third}.0/24")
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise NetnsUnavailable("no free /24 in 10.213.0.0/16")


@dataclass
class Topology:
    """`hosts` namespaces plus the backends' one, all on one bridge; addresses in `address`."""

    hosts: list[str]
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    subnet: ipaddress.IPv4Network | None = None
    address: dict[str, str] = field(default_factory=dict)  # role ("back", host names, "root") -> IPv4
    _namespaces: list[str] = field(default_factory=list)
    _root_link: str = ""

    def netns(self, role: str) -> str:
        return f"wfmh-{self.tag}-{role}"

    def exec_prefix(self, role: str) -> list[str]:
        """Argv prefix that runs a command inside `role`'s namespace (ip execs it: same pid)."""
        return ["ip", "netns", "exec", self.netns(role)]

    def open(self) -> Topology:
        self.subnet = _free_subnet()
        base = self.subnet.network_address
        self.address = {BACKENDS: str(base + 1), "root": str(base + 254)}
        self.address.update({name: str(base + 11 + index) for index, name in enumerate(self.hosts)})
        back = self._add_netns(BACKENDS)
        _ip("-n", back, "link", "add", "br0", "type", "bridge")
        _ip("-n", back, "addr", "add", f"{self.address[BACKENDS]}/24", "dev", "br0")
        _ip("-n", back, "link", "set", "br0", "up")
        # The root namespace's cable (interface names are at most 15 bytes).
        self._root_link = f"wfmh{self.tag}r"
        _ip("link", "add", self._root_link, "type", "veth", "peer", "name", "root", "netns", back)
        _ip("addr", "add", f"{self.address['root']}/24", "dev", self._root_link)
        _ip("link", "set", self._root_link, "up")
        _ip("-n", back, "link", "set", "root", "master", "br0", "up")
        for name in self.hosts:
            namespace = self._add_netns(name)
            _ip("-n", namespace, "link", "add", "eth0", "type", "veth", "peer", "name", name, "netns", back)
            _ip("-n", namespace, "addr", "add", f"{self.address[name]}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", back, "link", "set", name, "master", "br0", "up")
        return self

    def _add_netns(self, role: str) -> str:
        namespace = self.netns(role)
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")  # hosts talk to themselves on 127.0.0.1 too
        return namespace

    def close(self) -> list[str]:
        """Remove the veths and namespaces made so far; returns what could not be removed."""
        problems = []
        if self._root_link:
            # Deleting a namespace frees its veths asynchronously: delete the root end ourselves.
            done = subprocess.run(["ip", "link", "del", self._root_link], capture_output=True, text=True)
            if done.returncode != 0 and "Cannot find" not in done.stderr:
                problems.append(f"link {self._root_link}: {done.stderr.strip()}")
            self._root_link = ""
        for namespace in reversed(self._namespaces):
            done = subprocess.run(["ip", "netns", "del", namespace], capture_output=True, text=True)
            if done.returncode != 0:
                problems.append(f"netns {namespace}: {done.stderr.strip()}")
        self._namespaces.clear()
        return problems
