"""Where the money path's processes meet: the ledger, a request key's lock, the budgets'
reservations and the journal of paid submissions.

On one machine they are files under the data root (``files.py``, the default). With
``WEBTOON_DATABASE_URL`` (``postgresql://...``) they live in one PostgreSQL database that every
machine of a studio reaches (``postgres.py``): the ledger an append-only table, locks advisory
locks, reservations transactions, the journal a table. ``open_coordination`` chooses; the gateway
takes the parts (``Gateway(ledger=c.ledger, budget=c.budgets(...), locks=c.lock,
submissions=c.submissions)``)."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any, Protocol

from webtoon_assets.gateway.budget import Budgets
from webtoon_assets.paths import DataLayout

DATABASE_ENV = "WEBTOON_DATABASE_URL"


class Coordination(Protocol):
    kind: str  # "files" or "postgres"
    where: str  # where the ledger is, for messages
    ledger: Any  # append(row), rows(problems), find(needle, since), close()
    submissions: Any  # open(key) -> Submission

    def lock(self, key: str) -> AbstractContextManager[Any]: ...

    def budgets(self, run_id: str = "", per_run_usd: Decimal | None = None,
                per_episode: dict[tuple[str, str], Decimal] | None = None) -> Budgets: ...

    def close(self) -> None: ...


def configured_url(explicit: str | None = None) -> str | None:
    """The coordination database: ``explicit`` (a resource's field), else WEBTOON_DATABASE_URL; None: files."""
    url = (explicit or os.environ.get(DATABASE_ENV, "")).strip()
    if not url:
        return None
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"{DATABASE_ENV} must be a postgresql:// URL, got {url.split('://')[0]}://...")
    return url


def open_coordination(layout: DataLayout, database_url: str | None = None) -> Coordination:
    """The files under ``layout`` (one machine), or the database at ``database_url`` (else
    WEBTOON_DATABASE_URL) when one is configured."""
    url = configured_url(database_url)
    if url is None:
        from webtoon_assets.gateway.coordination.files import FileCoordination
        return FileCoordination(layout)
    from webtoon_assets.gateway.coordination.postgres import PgCoordination
    return PgCoordination(url)


__all__ = ["Coordination", "DATABASE_ENV", "configured_url", "open_coordination"]
