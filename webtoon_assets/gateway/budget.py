"""Budgets: reserve a quote before any paid submission, against what is spent and in flight.

Spend so far comes from the ledger (every process's rows, read once per episode per run);
reservations of this process's in-flight requests are held here until the attempt ends."""

from __future__ import annotations

import threading
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from webtoon_assets.ledger import read_rows


class BudgetExceeded(RuntimeError):
    pass


class Budget:
    def __init__(self, ledger_dir: Path, per_episode: dict[tuple[str, str], Decimal] | None = None,
                 per_run_usd: Decimal | None = None):
        self.ledger_dir = ledger_dir
        self.per_episode = per_episode or {}
        self.per_run_usd = per_run_usd
        self._lock = threading.Lock()
        self._spent: dict[tuple[str, str], Decimal] = {}
        self._run_spent = Decimal(0)
        self._inflight: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        self._run_inflight = Decimal(0)

    def set_episode_budget(self, series: str, episode: str, usd: Decimal | None) -> None:
        with self._lock:
            if usd is None:
                self.per_episode.pop((series, episode), None)
            else:
                self.per_episode[(series, episode)] = usd

    def _episode_spent(self, ep: tuple[str, str]) -> Decimal:
        if ep not in self._spent:
            self._spent[ep] = sum((r.cost_usd for r in read_rows(self.ledger_dir)
                                   if (r.series, r.episode) == ep), Decimal(0))
        return self._spent[ep]

    def reserve(self, series: str, episode: str, usd: Decimal, what: str) -> None:
        ep = (series, episode)
        with self._lock:
            limit = self.per_episode.get(ep)
            if limit is not None:
                spent, inflight = self._episode_spent(ep), self._inflight[ep]
                if spent + inflight + usd > limit:
                    raise BudgetExceeded(
                        f"budget refused {what}: episode {series}/{episode} budget ${limit} "
                        f"(series.yaml budget.per_episode_usd); spent ${spent}, in flight ${inflight}, "
                        f"this request ${usd}")
            if self.per_run_usd is not None and self._run_spent + self._run_inflight + usd > self.per_run_usd:
                raise BudgetExceeded(
                    f"budget refused {what}: run cap ${self.per_run_usd} (WEBTOON_MAX_RUN_USD); spent "
                    f"${self._run_spent}, in flight ${self._run_inflight}, this request ${usd}")
            self._inflight[ep] += usd
            self._run_inflight += usd

    def settle(self, series: str, episode: str, reserved: Decimal, cost: Decimal) -> None:
        """The attempt ended: release its reservation and count what it really cost."""
        ep = (series, episode)
        with self._lock:
            self._inflight[ep] -= reserved
            self._run_inflight -= reserved
            if ep in self._spent:  # else first read from the ledger later, this row included
                self._spent[ep] += cost
            self._run_spent += cost
