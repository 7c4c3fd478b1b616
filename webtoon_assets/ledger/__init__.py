"""The spend ledger: one row per generation attempt, appended the moment it ends."""

from webtoon_assets.ledger.journal import (Ledger, LedgerProblem, find_rows, ledger_files, read_file, read_rows,
                                           seal_torn_tails, verify)
from webtoon_assets.ledger.row import DamagedRow, LedgerRow, Status, parse_line

__all__ = ["DamagedRow", "Ledger", "LedgerProblem", "LedgerRow", "Status", "find_rows", "ledger_files", "parse_line",
           "read_file", "read_rows", "seal_torn_tails", "verify"]
