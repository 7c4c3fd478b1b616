"""Where the project's files are: the one thing steps that only read and write files need."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource, Failure
from pydantic import Field

from webtoon_assets.bible import BibleError, Series, load_series
from webtoon_assets.paths import DataLayout


class DataRootResource(ConfigurableResource):
    data_dir: str = Field(description="the data root: bible, price book, store, ledger, outputs, cost tables")

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir))

    def series(self, series_id: str) -> Series:
        """The series' bible, or a step failure naming file, line and field (never retried)."""
        try:
            return load_series(self.layout, series_id)
        except BibleError as e:
            raise Failure(description=str(e), allow_retries=False) from e
