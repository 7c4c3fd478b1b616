"""The spend ledger: one row per generation attempt, appended the moment it ends."""

from webtoon_assets.ledger.journal import Ledger, read_rows
from webtoon_assets.ledger.row import LedgerRow, Status

__all__ = ["Ledger", "LedgerRow", "Status", "read_rows"]
