"""The gateway as a Dagster resource: one per run, configured once for the code location."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from webtoon_assets.gateway.budget import Budgets
from webtoon_assets.gateway.gateway import Gateway
from webtoon_assets.gateway.providers import select_provider
from webtoon_assets.gateway.retry import AttemptPolicy
from webtoon_assets.gateway.store import ImageStore
from webtoon_assets.ledger import Ledger
from webtoon_assets.paths import DataLayout
from webtoon_assets.pricing import load_pricebook
from webtoon_assets.temps import sweep_temp_files


class GatewayResource(ConfigurableResource):
    """Config: ``data_dir`` (the data root), ``provider`` ('' = from the environment),
    ``max_run_usd`` (a cap on one run's spend; '' = ``WEBTOON_MAX_RUN_USD`` or none) and
    ``fal_key`` (given as ``EnvVar("FAL_KEY")``: resolved at run time, never shown or logged)."""

    data_dir: str
    provider: str = ""
    max_run_usd: str = ""
    fal_key: str | None = None
    _gateway: Gateway | None = PrivateAttr(default=None)

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir))

    def build(self, run_id: str = "") -> Gateway:
        cap = self.max_run_usd or os.environ.get("WEBTOON_MAX_RUN_USD", "")
        layout = self.layout
        return Gateway(
            store=ImageStore(layout.store),
            provider=select_provider(self.provider, self.fal_key, layout.store),
            ledger=Ledger(layout.ledger_dir),
            pricebook=load_pricebook(layout.pricebook),
            budget=Budgets(layout.budgets_db, layout.ledger_dir, run_id, per_run_usd=Decimal(cap) if cap else None),
            run_id=run_id,
            retry=AttemptPolicy.from_env(),
        )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        sweep_temp_files(self.layout.root)  # temp files left by writers that were killed
        self._gateway = self.build(context.run.run_id if context.run else "")

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._gateway is not None:
            self._gateway.provider.close()
            self._gateway.ledger.close()
            if self._gateway.budget is not None:
                self._gateway.budget.close()

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:  # used outside a run (tests, CLI)
            self._gateway = self.build()
        return self._gateway
