"""One machine's coordination, as it has always been: files under the data root.

The ledger is one JSON-lines file per process (``<data>/ledger``), a request key's lock a file lock
(``<store>/locks``), the submission journal one file per key (``<store>/pending``), the budgets'
reservations a SQLite file (``<data>/budgets.sqlite``)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

from webtoon_assets.gateway.budget import Budgets
from webtoon_assets.gateway.store import ImageStore
from webtoon_assets.gateway.submissions import Submissions
from webtoon_assets.ledger import Ledger
from webtoon_assets.paths import DataLayout


class FileCoordination:
    kind = "files"

    def __init__(self, layout: DataLayout):
        self.layout = layout
        self.ledger = Ledger(layout.ledger_dir)
        self.submissions = Submissions(layout.store / "pending")
        self._store = ImageStore(layout.store)
        self.where = str(layout.ledger_dir)

    def lock(self, key: str) -> AbstractContextManager[Any]:
        return self._store.lock(key)

    def budgets(self, run_id: str = "", per_run_usd: Decimal | None = None,
                per_episode: dict[tuple[str, str], Decimal] | None = None) -> Budgets:
        return Budgets(self.layout.budgets_db, self.layout.ledger_dir, run_id, per_episode=per_episode,
                       per_run_usd=per_run_usd)

    def close(self) -> None:
        self.ledger.close()
