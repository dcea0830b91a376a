"""A loopback port for a server a test restarts on the same address (a relay, PostgreSQL).

Why not `bind(0)`: that hands out a port from the kernel's ephemeral range, the very range
outgoing connections take their source ports from. While such a server is down, a client
retrying `127.0.0.1:P` can be given source port P itself and connect to itself (a TCP
simultaneous open), and any other test's connection may hold P: the restart then fails with
"address in use". Under `pytest -n` many processes connect at once, so that stops being
rare. A port below the ephemeral range is never handed out implicitly; one picked at random
there and checked free is shared only with another test's explicit pick.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

#: Where Linux says its ephemeral range starts.
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Its start when it cannot be read (Linux's default; macOS starts at 49152).
DEFAULT_EPHEMERAL_START = 32768
#: The lowest port picked (above the well-known and most registered service ports).
LOWEST_PORT = 20000
#: Tries before giving up (each a random port that another server may hold).
MAX_TRIES = 200


def ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_START


def fixed_port(host: str = "127.0.0.1") -> int:
    """A free port on `host`, below the ephemeral range (see the module docstring)."""
    top = ephemeral_start()
    if top <= LOWEST_PORT + 1:
        raise RuntimeError(f"the ephemeral port range starts at {top}: no room below it")
    rng = random.SystemRandom()
    for _ in range(MAX_TRIES):
        port = rng.randrange(LOWEST_PORT, top)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} in {LOWEST_PORT}..{top - 1} after {MAX_TRIES} tries")
