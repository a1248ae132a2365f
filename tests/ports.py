"""Free loopback ports for the servers tests start.

Asking the kernel for port 0 and closing the socket races: the port it returns lies in the ephemeral range, so
any outgoing connection (kube-apiserver to etcd, a client to the webhook) may take it as its source port before
the server we start binds it, and etcd then dies with "address already in use". The ports here come from below
the ephemeral range, where the kernel never picks source ports, and none is handed out twice in one run.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_GIVEN: set[int] = set()
_LOWEST = 10000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A loopback port that nothing listens on now, outside the ephemeral range, not returned before."""
    high = _ephemeral_low()
    if high - _LOWEST < 1000:  # an unusual range that leaves no room below it: fall back to the kernel's choice
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    for _ in range(1000):
        port = random.randrange(_LOWEST, high)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free loopback port between {_LOWEST} and {high}")
