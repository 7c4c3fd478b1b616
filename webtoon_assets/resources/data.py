"""Where the project's files are: the one thing steps that only read and write files need."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from webtoon_assets.paths import DataLayout


class DataRootResource(ConfigurableResource):
    data_dir: str = Field(description="the data root: bible, price book, store, ledger, outputs, cost tables")

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir))
