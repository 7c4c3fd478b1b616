"""Is the process that wrote a file still running? Files that outlive their writer (ledger tails,
temp files, journal intents, budget reservations) carry the writer's host and pid for this."""

from __future__ import annotations

import os
import socket

HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def writer_alive(host: str, pid: int) -> bool:
    """A writer on another host cannot be checked from here: it counts as alive."""
    return host != HOST or pid_alive(pid)
