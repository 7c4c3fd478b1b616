"""Load and validate a series bible and its episode scripts from the data root."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from webtoon_assets.bible.episode import Episode, ProseScript
from webtoon_assets.bible.errors import BibleError
from webtoon_assets.bible.models import SLUG_RE, Series, check_slug
from webtoon_assets.bible.script import parse_script
from webtoon_assets.bible.yaml_strict import Lines, load_yaml
from webtoon_assets.paths import DataLayout

SCRIPT_SUFFIX = ".txt"


class PricedEndpoints(Protocol):
    """What the model check needs of the price book: ``webtoon_assets.pricing.PriceBook``, which is a
    layer above the bible (it reads its file with the bible's strict YAML and reports BibleError)."""

    def endpoint_problem(self, endpoint: str) -> str | None: ...

    def argument_problems(self, endpoint: str, arguments: dict[str, Any]) -> dict[str, str]: ...


def _slug(value: str, what: str, where: Path | str) -> str:
    try:
        return check_slug(value)
    except ValueError as e:
        raise BibleError(where, [f"{what} {value!r}: {e}"]) from None


def _inside_root(layout: DataLayout, path: Path, what: str) -> Path:
    """Refuse a path that resolves (through a link) outside the data root, before it is read.
    The error names the link, never where it leads."""
    root = layout.root.resolve()
    real = path.resolve()
    if real != root and root not in real.parents:
        raise BibleError(path, [f"{what} leads out of the data root ({root}) through a link; "
                                "expected it inside the data root"])
    return path


def _series_dir(layout: DataLayout, series_id: str) -> Path:
    _slug(series_id, "series id", layout.series_root)
    return _inside_root(layout, layout.series_root / series_id, "the series folder")


def load_series(layout: DataLayout, series_id: str, book: PricedEndpoints | None = None) -> Series:
    """The validated series.yaml. With ``book``, also every model's endpoint is in it and its
    ``arguments`` are ones the endpoint accepts: what the CLI and each asset check before spending."""
    path = _inside_root(layout, _series_dir(layout, series_id) / "series.yaml", "series.yaml")
    if not path.is_file():
        raise BibleError(path, ["expected a series.yaml file here (title, style, characters, locations, ...)"])
    raw, lines = load_yaml(path)
    if not isinstance(raw, dict):
        raise BibleError(path, ["expected a mapping of fields (title, style, characters, ...) at the top"])
    raw.setdefault("id", series_id)
    if raw["id"] != series_id:
        line = f"line {lines[('id',)]}: " if ("id",) in lines else ""
        raise BibleError(path, [f"{line}id: expected {series_id!r} (the folder's name), got {raw['id']!r}"])
    try:
        series = Series.model_validate(raw)
    except ValidationError as e:
        raise BibleError.from_validation(path, e, lines=lines) from e
    if book is not None and (problems := model_problems(series, book, lines)):
        raise BibleError(path, problems)
    return series


def model_problems(series: Series, book: PricedEndpoints, lines: Lines | None = None) -> list[str]:
    """Each model's endpoint has a price-book entry, and its arguments fit what the entry accepts."""
    lines = lines or {}

    def at(*key: str) -> str:
        return f"line {lines[key]}: " if key in lines else ""

    models = [(("models", family), m.endpoint, m.arguments) for family, m in series.models if family != "loras"]
    if series.models.loras.train:  # the trainer and the LoRA panel endpoint must be priced too
        loras = series.models.loras
        models += [(("models", "loras", "trainer"), loras.trainer, {}), (("models", "loras"), loras.endpoint, {})]
    if "vision-judge" in (series.trial.scorer, series.consistency.scorer):  # the trial's, or the gate's
        models.append((("trial", "judge"), series.trial.judge.endpoint, series.trial.judge.arguments))
    problems = []
    for i, endpoint in enumerate(series.trial.candidates):
        if (problem := book.endpoint_problem(endpoint)) is not None:
            problems.append(f"{at('trial', 'candidates', str(i))}trial.candidates[{i}]: {problem}")
    for key, endpoint, arguments in models:
        name = ".".join(key)
        if (problem := book.endpoint_problem(endpoint)) is not None:
            problems.append(f"{at(*key, 'endpoint')}{name}.endpoint: {problem}")
            continue
        for arg, problem in book.argument_problems(endpoint, arguments).items():
            problems.append(f"{at(*key, 'arguments', arg)}{name}.arguments.{arg}: {problem}")
    return problems


def script_path(layout: DataLayout, series_id: str, episode_id: str) -> Path:
    _slug(episode_id, "episode id", layout.series_root / series_id / "episodes")
    return _series_dir(layout, series_id) / "episodes" / f"{episode_id}{SCRIPT_SUFFIX}"


def load_episode(layout: DataLayout, series: Series, episode_id: str) -> Episode | ProseScript:
    path = script_path(layout, series.id, episode_id)
    _inside_root(layout, path.parent, "the episodes folder")
    _inside_root(layout, path, "the script")
    if not path.is_file():
        raise BibleError(path, [f"expected the script of episode {episode_id!r} here"])
    return parse_script(path, series, episode_id)


def episode_ids(layout: DataLayout, series_id: str) -> list[str]:
    """Episode ids with a script on disk, sorted; files whose stem is not a slug are skipped."""
    folder = layout.series_root / series_id / "episodes"
    if not SLUG_RE.match(series_id) or not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob(f"*{SCRIPT_SUFFIX}") if SLUG_RE.match(p.stem))


def series_ids(layout: DataLayout) -> list[str]:
    root = layout.series_root
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "series.yaml").is_file() and SLUG_RE.match(p.name))
