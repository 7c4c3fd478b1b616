"""Each asset's manifest as JSON at output/<series>/<episode>/<asset>.json, validated both ways
into the pydantic type the asset declares, so asset bodies receive typed manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, Failure, InputContext, OutputContext
from pydantic import BaseModel, ValidationError

from webtoon_assets.files import write_text_atomic
from webtoon_assets.paths import DataLayout


def _model(context: OutputContext | InputContext) -> type[BaseModel] | None:
    t = context.dagster_type.typing_type if context.dagster_type else None
    return t if isinstance(t, type) and issubclass(t, BaseModel) else None


class ManifestIOManager(ConfigurableIOManager):
    data_dir: str

    def _path(self, context: OutputContext | InputContext) -> Path:
        series, name = context.asset_key.path[0], context.asset_key.path[-1]
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return DataLayout(Path(self.data_dir)).output_dir(series, partition) / f"{name}.json"

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        model = _model(context)
        if model is not None and not isinstance(obj, model):
            raise TypeError(f"{'/'.join(context.asset_key.path)} returned {type(obj).__name__}, "
                            f"not the {model.__name__} it declares")
        write_text_atomic(self._path(context),
                          obj.model_dump_json(indent=1) if isinstance(obj, BaseModel) else json.dumps(obj))

    def load_input(self, context: InputContext) -> Any:
        path = self._path(context)
        name = "/".join(context.asset_key.path)
        if not path.is_file():
            raise Failure(description=f"{path} is missing: materialize {name} for episode "
                                      f"{context.asset_partition_key} first", allow_retries=False)
        text = path.read_text(encoding="utf-8")
        model = _model(context)
        try:
            return model.model_validate_json(text) if model is not None else json.loads(text)
        except (ValidationError, ValueError) as e:
            raise Failure(description=f"{path}: not a valid {model.__name__ if model else 'JSON'} manifest "
                                      f"({str(e).splitlines()[0]}); materialize {name} again", allow_retries=False)
