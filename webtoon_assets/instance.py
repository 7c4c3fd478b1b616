"""The project's Dagster instance: where it lives, its config, and a safe first open.

``DAGSTER_HOME`` is ``data/dagster/`` (git-ignored), so everything Dagster writes beside its config
(telemetry, ``logs/event.log``, ``.nux``) stays out of the repository. Its ``dagster.yaml`` is
generated from the repository's ``dagster.yaml`` (the one to edit), with the relative paths made
absolute against the repository root so the instance is the same from any working directory.

Opening the instance the first time creates its SQLite databases and stamps their schema; two
processes doing that at once can crash in the migration. ``open_instance`` takes a file lock around
the open, so the first one initialises and the others wait, then find it ready.

    python -m webtoon_assets.instance     # write the config and initialise (``make ui`` runs it first)
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import yaml
from filelock import FileLock

from webtoon_assets.files import write_text_atomic
from webtoon_assets.paths import REPO_ROOT

if TYPE_CHECKING:
    from dagster import DagsterInstance

PROJECT_CONFIG = REPO_ROOT / "dagster.yaml"
DEFAULT_HOME = REPO_ROOT / "data" / "dagster"
LOCK_NAME = ".instance.lock"
# Settings in dagster.yaml that are paths (relative ones are relative to the repository root).
PATH_SETTINGS = (("storage", "sqlite", "base_dir"), ("local_artifact_storage", "config", "base_dir"),
                 ("compute_logs", "config", "base_dir"))
HEADER = ("# Generated from {source} by webtoon_assets.instance: edit that file, not this one.\n"
          "# Relative paths there are resolved against {base}.\n")


def render_config(source: Path = PROJECT_CONFIG, base: Path = REPO_ROOT) -> str:
    """The instance config: ``source`` with its relative paths made absolute against ``base``."""
    config = yaml.safe_load(source.read_text()) or {}
    for path in PATH_SETTINGS:
        node = config
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(path[-1]), str):
            value = Path(node[path[-1]])
            node[path[-1]] = str(value if value.is_absolute() else (base / value).resolve())
    return HEADER.format(source=source, base=base) + yaml.safe_dump(config, sort_keys=False)


def prepare_home(home: Path = DEFAULT_HOME, source: Path = PROJECT_CONFIG, base: Path = REPO_ROOT) -> Path:
    """Write ``home/dagster.yaml`` from the project's config when it differs; returns ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    target, text = home / "dagster.yaml", render_config(source, base)
    if not target.is_file() or target.read_text() != text:
        write_text_atomic(target, text)
    return home


def instance_home() -> Path:
    """``DAGSTER_HOME`` if set, else the project's ``data/dagster``."""
    env = os.environ.get("DAGSTER_HOME")
    return Path(env).expanduser().resolve() if env else DEFAULT_HOME


def initialise(instance: "DagsterInstance") -> None:
    """What a first run would otherwise create on its own, racing others: the storages' tables and
    schema stamps (made as they are opened; touched here so all of it happens under the lock)."""
    instance.get_runs(limit=1)
    instance.event_log_storage.get_concurrency_keys()


@contextmanager
def open_instance(home: Path | None = None) -> Iterator["DagsterInstance"]:
    """The Dagster instance in ``home`` (default: ``instance_home()``), opened under a file lock so
    concurrent first opens never race in the storage's migration. The project's default home gets
    its ``dagster.yaml`` (re)written from the repository's first; any other home is used as it is.
    Sets ``DAGSTER_HOME`` for this process when it was not set."""
    from dagster import DagsterInstance

    home = (home or instance_home()).resolve()
    os.environ.setdefault("DAGSTER_HOME", str(home))
    home.mkdir(parents=True, exist_ok=True)
    with FileLock(home / LOCK_NAME):
        if home == DEFAULT_HOME.resolve():
            prepare_home(home)
        instance = DagsterInstance.from_config(str(home))
        try:
            initialise(instance)
        except BaseException:
            instance.dispose()
            raise
    try:
        yield instance
    finally:
        instance.dispose()


def main() -> int:
    with open_instance() as instance:
        print(f"Dagster instance ready: DAGSTER_HOME={instance_home()} (state in {instance.root_directory})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
