"""Where things live under the data root.

Everything the project reads or writes sits below one root (``WEBTOON_DATA_DIR``, default
``<repo>/data``): the bible (tracked) and what is generated (git-ignored). Every path built
from an id goes through :func:`inside`, so no id can point outside the root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    return Path(os.environ.get("WEBTOON_DATA_DIR", REPO_ROOT / "data")).resolve()


def inside(root: Path, *parts: str) -> Path:
    """Join ``parts`` onto ``root`` and refuse any result that escapes it."""
    path = root.joinpath(*parts).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"path {'/'.join(parts)!r} escapes {root}")
    return path


@dataclass(frozen=True)
class DataLayout:
    root: Path

    @classmethod
    def default(cls) -> "DataLayout":
        return cls(data_root())

    @property
    def series_root(self) -> Path:
        return self.root / "series"

    def series_dir(self, series: str) -> Path:
        return inside(self.series_root, series)

    def episodes_dir(self, series: str) -> Path:
        return self.series_dir(series) / "episodes"

    @property
    def store(self) -> Path:
        """Content-addressed images and their request records: ``<root>/store``, or ``WEBTOON_STORE_DIR``
        (a path every machine of a studio reaches, e.g. a shared mount) when it is set."""
        shared = os.environ.get("WEBTOON_STORE_DIR", "")
        return Path(shared).resolve() if shared else self.root / "store"

    @property
    def pricebook(self) -> Path:
        return self.root / "pricebook.yaml"

    @property
    def ledger_dir(self) -> Path:
        return self.root / "ledger"

    @property
    def budgets_db(self) -> Path:
        """Budget reservations and running spend, shared by every process (SQLite)."""
        return self.root / "budgets.sqlite"

    @property
    def duckdb_path(self) -> Path:
        return self.root / "webtoon.duckdb"

    @property
    def reconciliation_path(self) -> Path:
        """What `webtoon reconcile` found, every run's differences, appended (one JSON object a line).
        Not in the ledger folder: every file there is read as ledger rows."""
        return self.root / "reconciliation.jsonl"

    def output_dir(self, series: str, episode: str | None = None) -> Path:
        """Human-friendly view of what an episode used: links into the store."""
        parts = [series] if episode is None else [series, episode]
        return inside(self.root / "output", *parts)
