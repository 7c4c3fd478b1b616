"""Writing a file so a reader never sees half of it and concurrent writers never share a temp file.

Every file the project writes whole goes through here: the content is written to a temp file beside
the destination, then renamed over it (``os.replace``, atomic on one filesystem). A reader sees the
old file or the new one, never a part; a writer killed mid-write leaves only its temp.

Temp files carry their writer's host and pid (``webtoon_assets.temps.temp_path``), so
``sweep_temp_files`` can remove what a killed writer left and keep what a live one is writing.
Append-only journals (the ledger) are not written here: they append, and repair a torn last line.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from webtoon_assets.temps import sweep_temp_files, temp_path  # noqa: F401 - the sweep lives beside the names


@contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """A fresh temp path beside ``path``, for a writer that makes the file itself (Pillow's
    ``Image.save``, DuckDB, a hard link): when the block ends without an error the temp is renamed
    over ``path``; the temp never outlives the block. ``suffix`` ends the temp's name (for a writer
    that goes by the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failure; or a no-op rename onto a hard link of the same file


def write_bytes_atomic(path: Path, data: bytes, durable: bool = False) -> Path:
    """``durable``: fsync before the rename, for records a crash must not lose (journal entries)."""
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as f:  # exclusive: never another writer's temp
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    return path


def write_text_atomic(path: Path, text: str, durable: bool = False) -> Path:
    """``text`` as UTF-8, written whole (see ``write_bytes_atomic``)."""
    return write_bytes_atomic(path, text.encode("utf-8"), durable=durable)
