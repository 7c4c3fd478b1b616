"""Bounded memory for the processes that run episodes (``webtoon demo``, a run worker).

glibc gives each thread that allocates its own malloc arena, up to eight per core, and an arena
keeps what its thread freed for that thread's next allocations. The pipeline's threads (renders,
lettering, the strip's prefetch, fal's workers) each hold megabytes of
image buffers for a moment, so the arenas hold the peak of every thread at once: a 10-episode
season peaked at 465 MB with the default arenas, 355 MB with two, in the same time."""

from __future__ import annotations

import ctypes
import ctypes.util

M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (the threads started after it share them); False
    where there is no glibc (another libc, another OS), which changes nothing else."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
