"""Load and validate a series bible and its episode scripts from the data root."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from webtoon_assets.bible.episode import Episode, ProseScript
from webtoon_assets.bible.errors import BibleError
from webtoon_assets.bible.models import SLUG_RE, Series, check_slug
from webtoon_assets.bible.script import parse_script
from webtoon_assets.paths import DataLayout

SCRIPT_SUFFIX = ".txt"


def _slug(value: str, what: str, where: Path | str) -> str:
    try:
        return check_slug(value)
    except ValueError as e:
        raise BibleError(where, [f"{what} {value!r}: {e}"]) from None


def load_series(layout: DataLayout, series_id: str) -> Series:
    _slug(series_id, "series id", layout.series_root)
    path = layout.series_dir(series_id) / "series.yaml"
    if not path.is_file():
        raise BibleError(path, ["expected a series.yaml file here (title, style, characters, locations, ...)"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise BibleError(path, [f"expected valid YAML: {e}"]) from e
    if not isinstance(raw, dict):
        raise BibleError(path, ["expected a mapping of fields (title, style, characters, ...) at the top"])
    raw.setdefault("id", series_id)
    if raw["id"] != series_id:
        raise BibleError(path, [f"id: expected {series_id!r} (the folder's name), got {raw['id']!r}"])
    try:
        return Series.model_validate(raw)
    except ValidationError as e:
        raise BibleError.from_validation(path, e) from e


def script_path(layout: DataLayout, series_id: str, episode_id: str) -> Path:
    _slug(episode_id, "episode id", layout.episodes_dir(series_id))
    return layout.episodes_dir(series_id) / f"{episode_id}{SCRIPT_SUFFIX}"


def load_episode(layout: DataLayout, series: Series, episode_id: str) -> Episode | ProseScript:
    path = script_path(layout, series.id, episode_id)
    if not path.is_file():
        raise BibleError(path, [f"expected the script of episode {episode_id!r} here"])
    return parse_script(path, series, episode_id)


def episode_ids(layout: DataLayout, series_id: str) -> list[str]:
    """Episode ids with a script on disk, sorted; files whose stem is not a slug are skipped."""
    folder = layout.episodes_dir(series_id)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob(f"*{SCRIPT_SUFFIX}") if SLUG_RE.match(p.stem))


def series_ids(layout: DataLayout) -> list[str]:
    root = layout.series_root
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "series.yaml").is_file() and SLUG_RE.match(p.name))
