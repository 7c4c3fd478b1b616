"""Content-addressed image store: one file per request key, written atomically, with its record.

Layout: ``<store>/images/ab/<key>.png`` and ``<store>/records/ab/<key>.json``. A key is present
only once both are in place (the record is renamed in last), so a crash mid-write leaves no
half entry. ``lock(key)`` is a cross-process lock so two runs never make the same image twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock

from webtoon_assets.files import write_text_atomic


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ImageStore:
    def __init__(self, root: Path):
        self.root = root

    def image_path(self, key: str) -> Path:
        return self.root / "images" / key[:2] / f"{key}.png"

    def record_path(self, key: str) -> Path:
        return self.root / "records" / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of a stored image, or None if the key was never completed."""
        rec = self.record_path(key)
        if not rec.is_file() or not self.image_path(key).is_file():
            return None
        return json.loads(rec.read_text())

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        path = self.root / "locks" / key[:2] / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path):
            yield

    @contextmanager
    def staging(self, key: str) -> Iterator[Path]:
        """A temporary file beside the final image, removed unless committed."""
        final = self.image_path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:12]}-", suffix=".png", dir=final.parent)
        os.close(fd)
        try:
            yield Path(tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def commit(self, key: str, staged: Path, record: dict[str, Any]) -> dict[str, Any]:
        record = {**record, "key": key, "sha256": sha256_file(staged), "bytes": staged.stat().st_size}
        os.replace(staged, self.image_path(key))
        write_text_atomic(self.record_path(key), json.dumps(record, indent=1, sort_keys=True, default=str))
        return record

    # Text results (a model's answer) are records without an image.
    def text_path(self, key: str) -> Path:
        return self.root / "texts" / key[:2] / f"{key}.json"

    def get_text(self, key: str) -> dict[str, Any] | None:
        path = self.text_path(key)
        return json.loads(path.read_text()) if path.is_file() else None

    def commit_text(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        record = {**record, "key": key}
        write_text_atomic(self.text_path(key), json.dumps(record, indent=1, sort_keys=True, default=str))
        return record

    def publish(self, key: str, dest: Path) -> Path:
        """Expose a stored image at a readable path (hard link; copy across filesystems)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = self.image_path(key)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        return dest
