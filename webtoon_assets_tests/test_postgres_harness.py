"""The PostgreSQL test harness (webtoon_assets_tests/pg_harness.py): start, connect, create a
database, stop, and nothing left running."""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from webtoon_assets_tests.pg_harness import PgServer, find_postgres_bin, postgres, start_postgres  # noqa: F401


def test_fixture_server_accepts_connections_and_creates_databases(postgres: PgServer) -> None:  # noqa: F811
    assert postgres.url == f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres"
    url = postgres.create_database("harness_check")
    assert url.endswith(f":{postgres.port}/harness_check")
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (x int)")
        cur.execute("INSERT INTO t VALUES (1), (2)")
        cur.execute("SELECT sum(x), current_database(), current_setting('max_connections') FROM t")
        assert cur.fetchone() == (3, "harness_check", "200")
    conn.close()
    assert postgres.create_database() != postgres.create_database()  # unique names by default


def test_start_and_stop_leave_no_process_behind(tmp_path: Path) -> None:
    if find_postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    server = start_postgres(tmp_path)
    try:
        assert server.processes(), "the server's processes are found by their cwd"
        conn = psycopg2.connect(server.create_database("one"))
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        conn.close()
        with pytest.raises(psycopg2.errors.DuplicateDatabase):
            server.create_database("one")
    finally:
        server.stop()
    assert server.proc.poll() is not None
    assert server.processes() == []
    assert not server.directory.exists()
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(server.url, connect_timeout=2)
    server.stop()  # idempotent
