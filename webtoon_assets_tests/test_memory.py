"""glibc's malloc arenas, capped for the processes that run episodes (webtoon_assets.memory)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from webtoon_assets import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_cap_is_taken_by_glibc():
    assert memory.limit_malloc_arenas() is True


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_threads_share_the_capped_arenas():
    """Eight threads allocating at once (through ctypes, which lets go of the GIL, as Pillow does):
    glibc's own report (malloc_stats) lists at most the cap's arenas, and more without it."""
    probe = r"""
import ctypes, sys, threading
from webtoon_assets.memory import limit_malloc_arenas
if sys.argv[1] == "cap":
    limit_malloc_arenas(2)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
start = threading.Barrier(8)
def run():
    start.wait()
    for _ in range(20000):
        libc.free(libc.malloc(65536))
ts = [threading.Thread(target=run) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
libc.malloc_stats()
"""
    arenas = {}
    for mode in ("cap", "default"):
        err = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True).stderr
        arenas[mode] = sum(line.startswith("Arena ") for line in err.splitlines())
    assert 1 <= arenas["cap"] <= 2 < arenas["default"], arenas
