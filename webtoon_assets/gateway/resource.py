"""The gateway as a Dagster resource: one per run, configured once for the code location."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from webtoon_assets.gateway.gateway import Gateway
from webtoon_assets.gateway.providers import select_provider
from webtoon_assets.gateway.store import ImageStore
from webtoon_assets.paths import DataLayout


class GatewayResource(ConfigurableResource):
    """Config: ``data_dir`` (the data root) and ``provider`` ('' = from the environment)."""

    data_dir: str
    provider: str = ""
    _gateway: Gateway | None = PrivateAttr(default=None)

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir))

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._gateway = Gateway(
            store=ImageStore(self.layout.store),
            provider=select_provider(self.provider),
            run_id=context.run.run_id if context.run else "",
        )

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:  # used outside a run (tests, CLI)
            self._gateway = Gateway(ImageStore(self.layout.store), select_provider(self.provider))
        return self._gateway
