"""Append-only JSON-lines files, one per process, so concurrent runs never contend for a file.

Each row is written, flushed and fsynced before the gateway returns, so a process killed right
after an attempt has already recorded it. A process killed mid-append leaves at most one partial
last line in its own file; the next writer to open the folder seals it (moves the fragment to
``<file>.torn`` and truncates the file to its last whole row). Readers count every whole row and
report every damaged one by file and line, never dropping one silently."""

from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from webtoon_assets.ledger.row import DamagedRow, LedgerRow, parse_line
from webtoon_assets.liveness import HOST, writer_alive


@dataclass(frozen=True)
class LedgerProblem:
    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def _writer(path: Path) -> tuple[str, int] | None:
    """(host, pid) from a ledger file's name: <stamp>-<host>-<pid>-<thread>.jsonl."""
    parts = path.stem.split("-")
    try:
        return "-".join(parts[1:-2]), int(parts[-2])
    except (IndexError, ValueError):
        return None


def _writer_gone(path: Path) -> bool:
    who = _writer(path)
    return who is None or not writer_alive(*who)


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
            seal_torn_tails(self.folder)
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
            name = f"{stamp}-{HOST}-{os.getpid()}-{threading.get_ident() % 10000}.jsonl"
            self._file = open(self.folder / name, "a", encoding="utf-8")
            self._pid = os.getpid()
        return self._file

    def append(self, row: LedgerRow) -> None:
        line = row.to_line()
        with self._lock:
            f = self._handle()
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def rows(self, problems: list[LedgerProblem] | None = None) -> Iterator[LedgerRow]:
        """Every whole row (damaged ones go to ``problems``): the same interface as the database ledger."""
        return read_rows(self.folder, problems)

    def find(self, needle: str, since: float = 0.0) -> Iterator[LedgerRow]:
        """Rows that may name ``needle`` (a request key or a provider's request id): callers check the field."""
        return find_rows(self.folder, needle, since)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def seal_torn_tails(folder: Path) -> list[Path]:
    """Cut the partial last line off every ledger file whose writer is gone; keep it in .torn."""
    sealed = []
    for path in sorted(folder.glob("*.jsonl")):
        try:
            with open(path, "rb+") as f:
                size = f.seek(0, os.SEEK_END)
                if size == 0:
                    continue
                f.seek(size - 1)
                if f.read(1) == b"\n" or not _writer_gone(path):
                    continue
                keep = _last_newline(f, size)
                f.seek(keep)
                fragment = f.read()
                with open(path.with_suffix(".jsonl.torn"), "ab") as torn:
                    torn.write(fragment + b"\n")
                    torn.flush()
                    os.fsync(torn.fileno())
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
                sealed.append(path)
        except FileNotFoundError:
            continue
    return sealed


def _last_newline(f, size: int) -> int:
    """The offset just past the last newline of an open file (0 if it has none)."""
    pos = size
    while pos > 0:
        step = min(65536, pos)
        f.seek(pos - step)
        chunk = f.read(step)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return pos - step + i + 1
        pos -= step
    return 0


def ledger_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def read_file(path: Path, problems: list[LedgerProblem] | None = None, start: int = 0
              ) -> Iterator[tuple[LedgerRow, int]]:
    """Whole rows of one file from byte ``start``, each with the offset just past it. Damaged rows
    go to ``problems``; a partial last line is left for its live writer, or reported if it is gone."""
    with open(path, "rb") as f:
        f.seek(start)
        offset, number = start, (0 if start == 0 else None)  # line numbers counted from a file's start
        for raw in f:
            at, offset = offset, offset + len(raw)
            number = None if number is None else number + 1
            if not raw.endswith(b"\n"):
                if problems is not None and _writer_gone(path):
                    problems.append(LedgerProblem(path, number or _line_at(path, at),
                                                  "torn write: the process died mid-append (the next writer seals it)"))
                return
            try:
                yield parse_line(raw.decode("utf-8")), offset
            except (DamagedRow, UnicodeDecodeError) as e:
                if problems is not None:
                    problems.append(LedgerProblem(path, number or _line_at(path, at), str(e)))


def _line_at(path: Path, at: int) -> int:
    with open(path, "rb") as f:
        return f.read(at).count(b"\n") + 1


def read_rows(folder: Path, problems: list[LedgerProblem] | None = None) -> Iterator[LedgerRow]:
    for path in ledger_files(folder):
        for row, _ in read_file(path, problems):
            yield row


def verify(folder: Path) -> tuple[int, list[LedgerProblem], list[Path]]:
    """(whole rows, damaged rows, files holding sealed torn fragments)."""
    problems: list[LedgerProblem] = []
    n = sum(1 for _ in read_rows(folder, problems))
    torn = sorted(folder.glob("*.jsonl.torn")) if folder.is_dir() else []
    return n, problems, torn


def find_rows(folder: Path, needle: str, since: float = 0.0) -> Iterator[LedgerRow]:
    """Rows whose line mentions ``needle`` (a request id or key), in files written since ``since``
    (a Unix time): cheap enough for the rare paths that need it (resuming, rebuilding a record)."""
    token = needle.encode()
    for path in ledger_files(folder):
        try:
            if path.stat().st_mtime < since - 1:
                continue
        except FileNotFoundError:
            continue
        with open(path, "rb") as f:
            for raw in f:
                if token in raw and raw.endswith(b"\n"):
                    try:
                        yield parse_line(raw.decode("utf-8"))
                    except (DamagedRow, UnicodeDecodeError):
                        continue
