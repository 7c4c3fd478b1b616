"""The project's SQLite storage for Dagster (webtoon_assets.instance_storage): Dagster's files and
tables, with connections kept open; what it writes Dagster's own storage reads, and back."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, asset, materialize

from webtoon_assets import instance_storage
from webtoon_assets.instance import PROJECT_CONFIG, prepare_home
from webtoon_assets.instance_storage import KeptSqliteEventLogStorage, KeptSqliteRunStorage, KeptSqliteStorage


@asset
def one() -> int:
    return 1


@asset
def two(one: int) -> int:
    return one + 1


def _home(tmp_path: Path, storage: dict) -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": storage, "telemetry": {"enabled": False}}))
    return home


def _kept(base: Path) -> dict:
    return {"custom": {"module": "webtoon_assets.instance_storage", "class": "KeptSqliteStorage",
                       "config": {"base_dir": str(base)}}}


def test_the_project_instance_uses_it(tmp_path):
    home = prepare_home(tmp_path / "dagster", source=PROJECT_CONFIG, base=tmp_path)
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.get_ref().storage, KeptSqliteStorage)
        assert isinstance(instance.run_storage, KeptSqliteRunStorage)
        assert isinstance(instance.event_log_storage, KeptSqliteEventLogStorage)
        # the same layout as storage: sqlite, under the same base_dir (existing instances keep their history)
        base = tmp_path / "data" / "dagster" / "storage"
        assert Path(instance.event_log_storage._base_dir) == base / "history" / "runs"  # noqa: SLF001
        assert (base / "history" / "runs.db").is_file() and (base / "schedules").is_dir()


def test_runs_written_kept_are_read_by_dagsters_storage_and_back(tmp_path):
    base = tmp_path / "storage"
    with DagsterInstance.from_config(str(_home(tmp_path, _kept(base)))) as kept:
        first = materialize([one, two], instance=kept)
        assert first.success
        events = kept.all_logs(first.run_id)
    with DagsterInstance.from_config(str(_home(tmp_path, {"sqlite": {"base_dir": str(base)}}))) as plain:
        assert [r.run_id for r in plain.get_runs()] == [first.run_id]
        assert len(plain.all_logs(first.run_id)) == len(events)
        assert plain.get_latest_materialization_event(two.key) is not None
        second = materialize([one, two], instance=plain)
    with DagsterInstance.from_config(str(_home(tmp_path, _kept(base)))) as kept:
        assert {r.run_id for r in kept.get_runs()} == {first.run_id, second.run_id}
        latest = kept.get_latest_materialization_event(two.key)
        assert latest is not None and latest.run_id == second.run_id


def test_connections_are_kept_between_writes_and_a_few_run_databases_at_most(tmp_path, monkeypatch):
    opened: list[str] = []
    real = instance_storage._engine

    def counting(conn_string, **kw):
        opened.append(conn_string)
        return real(conn_string, **kw)

    monkeypatch.setattr(instance_storage, "_engine", counting)
    with DagsterInstance.from_config(str(_home(tmp_path, _kept(tmp_path / "storage")))) as instance:
        runs = [materialize([one, two], instance=instance) for _ in range(instance_storage.RUN_SHARDS_KEPT + 2)]
        assert all(r.success for r in runs)
        # one engine per database written: the runs', the index's and one per run (each run's many
        # events went through one engine), never one per event
        per_run = [c for c in opened if any(r.run_id in c for r in runs)]
        assert len(per_run) == len(runs)
        assert sum("index" in c for c in opened) == 1 and sum(c.endswith("runs.db") for c in opened) == 1
        kept = instance.event_log_storage._kept._engines  # noqa: SLF001
        assert len(kept) == instance_storage.RUN_SHARDS_KEPT + 1  # the last runs' and the index's
        assert "index" in kept
        # an aged-out run's database opens again when read
        assert len(instance.all_logs(runs[0].run_id)) > 0


def _write_in_child(home: str, queue) -> None:
    try:
        with DagsterInstance.from_config(home) as instance:
            queue.put(materialize([one, two], instance=instance).run_id)
    except BaseException as e:  # report, never hang the parent
        queue.put(f"error: {e!r}")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_opens_its_own_connections(tmp_path):
    home = str(_home(tmp_path, _kept(tmp_path / "storage")))
    with DagsterInstance.from_config(home) as instance:
        parent = materialize([one, two], instance=instance)  # the parent now holds open connections
        engines = instance.event_log_storage._kept  # noqa: SLF001
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_write_in_child, args=(home, queue))
        child.start()
        child_run = queue.get(timeout=120)
        child.join(60)
        assert child.exitcode == 0 and not str(child_run).startswith("error"), child_run
        # the parent's kept connections still work after the child used (and closed) its own
        again = materialize([one, two], instance=instance)
        assert again.success
        assert {r.run_id for r in instance.get_runs()} == {parent.run_id, child_run, again.run_id}
        # and the cache, carried into a forked child, is dropped there rather than reused
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's exit code is the assertion
            os.close(reader)
            ok = engines.get("probe", lambda: "fresh") == "fresh" and "index" not in engines._engines  # noqa: SLF001
            os.write(writer, b"1" if ok else b"0")
            os._exit(0)
        os.close(writer)
        assert os.read(reader, 1) == b"1"
        os.close(reader)
        os.waitpid(pid, 0)
