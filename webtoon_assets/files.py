"""Writing a file so a reader never sees half of it and concurrent writers never share a temp file.

Temp files carry their writer's host and pid (``webtoon_assets.temps``), so ``sweep_temp_files``
can remove what a killed writer left and keep what a live one is writing."""

from __future__ import annotations

import os
from pathlib import Path

from webtoon_assets.temps import mkstemp_beside, sweep_temp_files  # noqa: F401 - the sweep lives beside the names


def write_text_atomic(path: Path, text: str, durable: bool = False) -> Path:
    """``durable``: fsync before the rename, for records a crash must not lose (journal entries)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
