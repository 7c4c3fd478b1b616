"""Append-only JSON-lines files, one per process, so concurrent runs never contend for a file.

Each row is written, flushed and fsynced before the gateway returns, so a process killed right
after an attempt has already recorded it. Readers skip a torn last line (a kill mid-write)."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
from pathlib import Path
from typing import Iterator

from webtoon_assets.ledger.row import LedgerRow


class Ledger:
    def __init__(self, folder: Path):
        self.folder = folder
        self._lock = threading.Lock()
        self._file = None
        self._pid = None

    def _handle(self):
        # One file per process (and per fork: a child must not share its parent's file).
        if self._file is None or self._pid != os.getpid():
            self.folder.mkdir(parents=True, exist_ok=True)
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
            name = f"{stamp}-{socket.gethostname()}-{os.getpid()}-{threading.get_ident() % 10000}.jsonl"
            self._file = open(self.folder / name, "a", encoding="utf-8")
            self._pid = os.getpid()
        return self._file

    def append(self, row: LedgerRow) -> None:
        line = row.model_dump_json() + "\n"
        with self._lock:
            f = self._handle()
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_rows(folder: Path) -> Iterator[LedgerRow]:
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # torn write from a killed process: the row never completed
                try:
                    yield LedgerRow.model_validate(json.loads(line))
                except (json.JSONDecodeError, ValueError):
                    continue
