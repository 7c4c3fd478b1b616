"""Content-addressed image store: one file per request key, written atomically, with its record.

Layout: ``<store>/images/ab/<key>.png`` and ``<store>/records/ab/<key>.json``. A key is present
only once both are in place (the record is renamed in last), so a crash mid-write leaves no
half entry. ``lock(key)`` is a cross-process lock so two runs never make the same image twice.

A stored image is served only while it is whole: the size and sha256 recorded at commit are
checked on every lookup. A damaged file is moved to ``<store>/quarantine/`` (kept, never
deleted) so the gateway can make it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from filelock import FileLock

from webtoon_assets.files import atomic_path, write_text_atomic
from webtoon_assets.temps import mkstemp_beside


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Lookup:
    """What the store holds for a key. ``state``: ok (serve it), missing (never made), damaged (a
    record whose image is gone, cut short or changed), unrecorded (an image whose record is gone)."""

    state: Literal["ok", "missing", "damaged", "unrecorded"]
    record: dict[str, Any] | None = None
    reason: str = ""


class ImageStore:
    def __init__(self, root: Path):
        self.root = root
        # Files this store already hashed whole, by their stat: a step's pre-flight quote and its
        # generation look each image up, and an unchanged file need not be read twice.
        self._verified: dict[str, tuple[int, int, int, str]] = {}

    def image_path(self, key: str) -> Path:
        return self.root / "images" / key[:2] / f"{key}.png"

    def record_path(self, key: str) -> Path:
        return self.root / "records" / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of a whole stored image, or None."""
        found = self.lookup(key)
        return found.record if found.state == "ok" else None

    def lookup(self, key: str) -> Lookup:
        return self._lookup(key, self.image_path(key), self.record_path(key))

    def _lookup(self, key: str, image: Path, rec: Path) -> Lookup:
        try:
            record = json.loads(rec.read_text())
            if not isinstance(record, dict) or "sha256" not in record:
                raise ValueError("not a store record")
        except FileNotFoundError:
            return Lookup("unrecorded" if image.is_file() else "missing")
        except (ValueError, UnicodeDecodeError) as e:
            return Lookup("unrecorded" if image.is_file() else "missing", reason=f"record {rec} unreadable ({e})")
        try:
            st = image.stat()
        except FileNotFoundError:
            return Lookup("damaged", record, f"{image} is missing")
        if "bytes" in record and st.st_size != record["bytes"]:
            return Lookup("damaged", record, f"{image} has {st.st_size} bytes, {record['bytes']} were stored")
        seen = (st.st_ino, st.st_size, st.st_mtime_ns, record["sha256"])
        if self._verified.get(key) != seen:
            if sha256_file(image) != record["sha256"]:
                return Lookup("damaged", record, f"{image} does not match the sha256 recorded when it was stored")
            self._verified[key] = seen
        return Lookup("ok", record)

    def quarantine(self, key: str) -> Path | None:
        """Move a damaged image aside (kept for inspection) so it is never served; its path, or None."""
        return self._quarantine(self.image_path(key), key, ".png")

    def _quarantine(self, src: Path, key: str, suffix: str) -> Path | None:
        if not src.exists():
            return None
        dest = self.root / "quarantine" / f"{key}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}{suffix}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        return dest

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
        fd, tmp = mkstemp_beside(final.with_name(key[:12]), suffix=".png")  # named by writer: see temps.py
        os.close(fd)
        try:
            yield Path(tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def commit(self, key: str, staged: Path, record: dict[str, Any]) -> dict[str, Any]:
        record = {**record, "key": key, "sha256": sha256_file(staged), "bytes": staged.stat().st_size}
        os.replace(staged, self.image_path(key))
        return self.write_record(key, record)

    def write_record(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        write_text_atomic(self.record_path(key), json.dumps(record, indent=1, sort_keys=True, default=str),
                          durable=True)
        return record

    # File results (a trained LoRA's weights): ``files/ab/<key>.<suffix>`` with a record under
    # ``file_records/``, checked whole on every lookup like an image.
    def file_path(self, key: str, suffix: str = ".safetensors") -> Path:
        return self.root / "files" / key[:2] / f"{key}{suffix}"

    def file_record_path(self, key: str) -> Path:
        return self.root / "file_records" / key[:2] / f"{key}.json"

    def lookup_file(self, key: str, suffix: str = ".safetensors") -> Lookup:
        return self._lookup(key, self.file_path(key, suffix), self.file_record_path(key))

    def commit_file(self, key: str, staged: Path, record: dict[str, Any], suffix: str = ".safetensors"
                    ) -> dict[str, Any]:
        record = {**record, "key": key, "sha256": sha256_file(staged), "bytes": staged.stat().st_size}
        dest = self.file_path(key, suffix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dest)
        write_text_atomic(self.file_record_path(key), json.dumps(record, indent=1, sort_keys=True, default=str),
                          durable=True)
        return record

    def quarantine_file(self, key: str, suffix: str = ".safetensors") -> Path | None:
        return self._quarantine(self.file_path(key, suffix), key, suffix)

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
        """Expose a stored image at a readable path (hard link; copy across filesystems). Publishing
        again is a no-op; the temp never outlives the call (rename() onto a hard link of the same
        file succeeds without removing it)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = self.image_path(key)
        try:
            if os.path.samefile(src, dest):
                return dest
        except FileNotFoundError:
            pass
        with atomic_path(dest) as tmp:
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
        return dest
