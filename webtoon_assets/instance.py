"""The project's Dagster instance: where it lives, its config, and a safe first open.

``DAGSTER_HOME`` is ``data/dagster/`` (git-ignored), so everything Dagster writes beside its config
(telemetry, ``logs/event.log``, ``.nux``) stays out of the repository. Its ``dagster.yaml`` is
generated from the repository's ``dagster.yaml`` (the one to edit), with the relative paths made
absolute against the repository root so the instance is the same from any working directory.
``WEBTOON_INSTANCE_CONFIG`` names another source file (relative to the repository root, or
absolute): ``deploy/postgres/dagster.yaml`` puts the instance's storage in PostgreSQL
(``DAGSTER_PG_URL``) for a deployment over several machines.

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
CONFIG_ENV = "WEBTOON_INSTANCE_CONFIG"  # the source file instead of ./dagster.yaml (e.g. deploy/postgres/dagster.yaml)
DEFAULT_HOME = REPO_ROOT / "data" / "dagster"
LOCK_NAME = ".instance.lock"
# Settings in dagster.yaml that are paths (relative ones are relative to the repository root).
PATH_SETTINGS = (("storage", "sqlite", "base_dir"), ("storage", "custom", "config", "base_dir"),
                 ("local_artifact_storage", "config", "base_dir"),
                 ("compute_logs", "config", "base_dir"))
HEADER = ("# Generated from {source} by webtoon_assets.instance: edit that file, not this one.\n"
          "# Relative paths there are resolved against {base}.\n")


def project_config() -> Path:
    """The file the instance's config is written from: ``WEBTOON_INSTANCE_CONFIG`` (relative to the
    repository root, or absolute) if set, else the repository's ``dagster.yaml``."""
    env = os.environ.get(CONFIG_ENV, "").strip()
    if not env:
        return PROJECT_CONFIG
    path = Path(env).expanduser()
    path = path if path.is_absolute() else REPO_ROOT / path
    if not path.is_file():
        raise FileNotFoundError(f"{CONFIG_ENV}={env}: no config file at {path}")
    return path.resolve()


def render_config(source: Path | None = None, base: Path = REPO_ROOT) -> str:
    """The instance config: ``source`` (default ``project_config()``) with its relative paths made
    absolute against ``base``."""
    source = source or project_config()
    config = yaml.safe_load(source.read_text()) or {}
    for path in PATH_SETTINGS:
        node = config
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(path[-1]), str):
            value = Path(node[path[-1]])
            node[path[-1]] = str(value if value.is_absolute() else (base / value).resolve())
    return HEADER.format(source=source, base=base) + yaml.safe_dump(config, sort_keys=False)


def prepare_home(home: Path = DEFAULT_HOME, source: Path | None = None, base: Path = REPO_ROOT) -> Path:
    """Write ``home/dagster.yaml`` from ``source`` (default ``project_config()``) when it differs;
    returns ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    target, text = home / "dagster.yaml", render_config(source or project_config(), base)
    if not target.is_file() or target.read_text() != text:
        write_text_atomic(target, text)
    return home


def check_postgres_driver(config_file: Path) -> None:
    """Refuse a PostgreSQL storage whose URL leaves the driver to SQLAlchemy: 2.1 maps a plain
    ``postgresql://`` to psycopg 3, which dagster-postgres 0.29 does not work with (psycopg2 only).
    Says so before Dagster fails deep in a first write."""
    if not config_file.is_file():
        return
    config = yaml.safe_load(config_file.read_text()) or {}
    storage = config.get("storage") if isinstance(config, dict) else None
    pg = storage.get("postgres") if isinstance(storage, dict) else None
    if not isinstance(pg, dict):
        return
    url, where = pg.get("postgres_url"), "storage.postgres.postgres_url"
    if isinstance(url, dict) and "env" in url:
        url, where = os.environ.get(url["env"]), url["env"]
        if not url:
            raise ValueError(f"{where} is not set: the URL of the PostgreSQL database of Dagster's instance "
                             f"({config_file}), e.g. postgresql+psycopg2://user:password@host:5432/dagster")
    db = pg.get("postgres_db")
    if isinstance(url, str):
        scheme = url.split("://", 1)[0]
    else:
        scheme, where = (db.get("scheme", "postgresql") if isinstance(db, dict) else None,
                         "storage.postgres.postgres_db.scheme")
    if scheme in ("postgresql", "postgres"):
        raise ValueError(f"{where}: name the driver, "
                         "postgresql+psycopg2 (SQLAlchemy 2.1 reads a plain postgresql URL as psycopg 3's, "
                         f"which dagster-postgres does not support); in {config_file}")


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
    its ``dagster.yaml`` (re)written first from ``project_config()`` (the repository's, or
    ``WEBTOON_INSTANCE_CONFIG``'s); any other home is used as it is.
    Sets ``DAGSTER_HOME`` for this process when it was not set."""
    from dagster import DagsterInstance

    home = (home or instance_home()).resolve()
    os.environ.setdefault("DAGSTER_HOME", str(home))
    home.mkdir(parents=True, exist_ok=True)
    with FileLock(home / LOCK_NAME):
        if home == DEFAULT_HOME.resolve():
            prepare_home(home)
        check_postgres_driver(home / "dagster.yaml")
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
        written = f"config from {project_config()}, " if instance_home() == DEFAULT_HOME.resolve() else ""
        print(f"Dagster instance ready: DAGSTER_HOME={instance_home()} ({written}run storage "
              f"{type(instance.run_storage).__name__}, local files in {instance.root_directory})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
