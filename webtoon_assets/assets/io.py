"""Stores each asset's manifest as JSON at output/<series>/<episode>/<asset>.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext

from webtoon_assets.files import write_text_atomic
from webtoon_assets.paths import DataLayout


class ManifestIOManager(ConfigurableIOManager):
    data_dir: str

    def _path(self, context: OutputContext | InputContext) -> Path:
        series, name = context.asset_key.path[0], context.asset_key.path[-1]
        return DataLayout(Path(self.data_dir)).output_dir(series, context.asset_partition_key) / f"{name}.json"

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        write_text_atomic(self._path(context),
                          obj.model_dump_json(indent=1) if hasattr(obj, "model_dump_json") else json.dumps(obj))

    def load_input(self, context: InputContext) -> dict[str, Any]:
        path = self._path(context)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: materialize {'/'.join(context.asset_key.path)} for "
                f"episode {context.asset_partition_key} first"
            )
        return json.loads(path.read_text())
