"""The journal of paid submissions, one file per request key (``<store>/pending/<key>.json``), or
one row per key of a database's table when the money path's coordination is in PostgreSQL
(``gateway/coordination``): a Submission writes through its ``journal``, the same rules either way.

Never pay twice, never lose a charge:
- before a provider sends a paid request it writes an *intent* (fsynced), and the moment the
  provider accepts it, the request's handle (its id and URLs);
- the gateway retires the entry only after the attempt's ledger row is written;
- so whatever a crash interrupts, the next run holding the key's lock finds the entry: a handle
  is resumed (polled or fetched, not paid again); a bare intent means the earlier process died
  while submitting, an outcome nobody knows, which the gateway records as ``unknown``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from webtoon_assets.files import write_text_atomic
from webtoon_assets.liveness import HOST


class FileJournal:
    """Where one key's entry is kept on one machine: ``<store>/pending/<key>.json``, written atomically
    and fsynced. (With a database configured, the entry is a row: gateway/coordination/postgres.py.)"""

    def __init__(self, path: Path):
        self.path = path

    def write(self, entry: dict[str, Any]) -> None:
        write_text_atomic(self.path, json.dumps(entry), durable=True)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Submission:
    """One key's journal entry, handed to the provider for one attempt. ``journal``: where the entry
    is written (the file at ``path`` unless given)."""

    def __init__(self, path: Path | None, entry: dict[str, Any] | None, journal: Any = None):
        self.path = path
        self.entry = entry
        self.journal = journal if journal is not None else FileJournal(path)

    @property
    def resume(self) -> dict[str, Any] | None:
        """The handle of a request the provider accepted earlier: resume it instead of submitting."""
        return self.entry if self.entry and self.entry.get("request_id") else None

    @property
    def orphaned_intent(self) -> dict[str, Any] | None:
        """An intent with no handle, found under the key's lock: its writer died mid-submit."""
        return self.entry if self.entry and not self.entry.get("request_id") else None

    @property
    def since(self) -> float:
        return float((self.entry or {}).get("started_at", 0.0))

    def submitting(self, endpoint: str, seed: Any) -> None:
        self._write({"endpoint": endpoint, "seed": seed, "started_at": time.time(), "host": HOST, "pid": os.getpid()})

    def accepted(self, handle: dict[str, Any]) -> None:
        self._write({**(self.entry or {}), **handle, "accepted_at": time.time()})

    def retire(self) -> None:
        self.entry = None
        self.journal.remove()

    def _write(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        self.journal.write(entry)


class Submissions:
    def __init__(self, folder: Path):
        self.folder = folder

    def open(self, key: str) -> Submission:
        path = self.folder / f"{key}.json"
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            entry = None
        except ValueError:  # a damaged entry is an intent whose outcome is unknown
            entry = {"damaged": True, "started_at": path.stat().st_mtime}
        return Submission(path, entry)
