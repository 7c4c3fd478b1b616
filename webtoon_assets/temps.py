"""Temporary files that say who wrote them, and a sweep for the ones a dead writer left.

Every temp file the project writes sits beside its destination, hidden, and is named
``.<name>.<host>.<pid>.<random>.tmp[<suffix>]``: the writer's host and pid let a sweep tell a
temp that a killed process left behind (remove it) from one a live writer is still filling (keep it).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from webtoon_assets.liveness import HOST, pid_alive

# A host name as it can appear in a file name (dots would make the name ambiguous).
HOST_TAG = re.sub(r"[^A-Za-z0-9-]", "_", HOST)[:63] or "host"
MAX_AGE_SECONDS = 24 * 3600

_OURS = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.(?P<rand>[A-Za-z0-9_]+)"
                   r"\.tmp(?P<suffix>(\.[A-Za-z0-9]+)*)$")
# What earlier versions wrote, without a writer: removed only once they are old.
_LEGACY = (re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)*$"),     # .<name>.tmp, .<name>.<pid>.tmp, .<name>.XXXXXXXX.tmp
           re.compile(r"^\.[0-9a-f]{12}-[A-Za-z0-9_]+\.png$"))  # the store's old staging files


def _prefix(name: str) -> str:
    return f".{name}.{HOST_TAG}.{os.getpid()}."


def mkstemp_beside(path: Path, suffix: str = "") -> tuple[int, str]:
    """Create a temp file beside ``path`` (like ``tempfile.mkstemp``): ``(fd, temp path)``."""
    return tempfile.mkstemp(prefix=_prefix(path.name), suffix=f".tmp{suffix}", dir=path.parent)


def temp_path(path: Path, suffix: str = "") -> Path:
    """A fresh temp name beside ``path``, not created (for writers that make the file themselves:
    a hard link, a DuckDB database, Pillow)."""
    return path.with_name(f"{_prefix(path.name)}{os.urandom(6).hex()}.tmp{suffix}")


def temp_writer(name: str) -> tuple[str, int] | None:
    """(host, pid) of the writer of a temp file named ``name``, or None if it is not one of ours."""
    m = _OURS.match(name)
    return (m["host"], int(m["pid"])) if m else None


def is_temp(name: str) -> bool:
    return bool(_OURS.match(name)) or any(p.match(name) for p in _LEGACY)


def sweep_temp_files(root: Path, max_age: float = MAX_AGE_SECONDS, skip: tuple[str, ...] = ("dagster",)
                     ) -> list[Path]:
    """Remove the temp files under ``root`` left by writers that are gone: ours written on this host
    by a process no longer running, and any temp (ours from another host, or an old-style name
    without a writer) older than ``max_age``. A live writer's temp is kept. ``skip``: top-level
    folders not ours to sweep (the Dagster instance's state). Returns what was removed; never raises."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    now = time.time()
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            if not name.startswith(".") or not is_temp(name):
                continue
            path = Path(dirpath) / name
            try:
                writer = temp_writer(name)
                dead = writer is not None and writer[0] == HOST_TAG and not pid_alive(writer[1])
                if dead or now - path.lstat().st_mtime > max_age:
                    path.unlink()
                    removed.append(path)
            except OSError:  # gone already (another sweep), or not ours to remove
                continue
    return removed
