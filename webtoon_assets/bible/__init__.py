"""The series bible: series.yaml and episode scripts, validated before anything is generated."""

from webtoon_assets.bible.episode import DialogueLine, Episode, Panel, ProseScript, Scene
from webtoon_assets.bible.errors import BibleError
from webtoon_assets.bible.loader import episode_ids, load_episode, load_series, script_path, series_ids
from webtoon_assets.bible.models import Character, FamilyModel, Location, Prop, Series, Style

__all__ = [
    "BibleError", "Character", "DialogueLine", "Episode", "FamilyModel", "Location", "Panel", "Prop", "ProseScript",
    "Scene", "Series", "Style", "episode_ids", "load_episode", "load_series", "script_path", "series_ids",
]
