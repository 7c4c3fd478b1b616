"""Issue 14: the image store on object storage every machine reaches (WEBTOON_STORE_URL, an fsspec
URL), each machine's own store a cache of it (gateway/remote_store.py).

Two "machines" here are two cache directories, two gateways and two PostgreSQL coordinations (the
request locks and the ledger in one real database, pg_harness) sharing one remote: a ``file://``
directory (fsspec's local filesystem, the path a mounted share would be) or fsspec's ``memory://``.
What one machine made is a hit on the other, byte for byte; a damaged remote copy is caught by its
sha256, quarantined in the remote and made again once, on the ledger; a failed upload loses nothing
and is uploaded again by the next lookup; no temp is ever left in the remote; and the URL without a
database is refused."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

from webtoon_assets.gateway import Gateway, ImageStore
from webtoon_assets.gateway.coordination.postgres import PgCoordination
from webtoon_assets.gateway.remote_store import RemoteStore, RemoteStoreError, StoreConfigError, open_store
from webtoon_assets.paths import REPO_ROOT, DataLayout
from webtoon_assets.pricing import load_pricebook
from webtoon_assets.temps import is_temp
from webtoon_assets_tests.pg_harness import postgres  # noqa: F401 - the session fixture
from webtoon_assets_tests.test_gateway import CountingProvider, request

BOOK = REPO_ROOT / "data" / "pricebook.yaml"
ENV = ("WEBTOON_DATABASE_URL", "WEBTOON_STORE_DIR", "WEBTOON_STORE_URL")


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pg_url(postgres, clean_env):  # noqa: F811
    return postgres.create_database(f"remote_{uuid.uuid4().hex[:12]}")


class Machine:
    """One machine: its own store (the cache), its own gateway and connections; the shared remote and database."""

    def __init__(self, root: Path, remote: str, url: str, fs=None):
        self.coordination = PgCoordination(url)
        self.store = RemoteStore(root / "store", remote, fs=fs)
        self.provider = CountingProvider()
        self.gw = Gateway(self.store, self.provider, self.coordination.ledger, load_pricebook(BOOK),
                          locks=self.coordination.lock, submissions=self.coordination.submissions)

    def close(self) -> None:
        self.coordination.close()


def leftover_temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and is_temp(p.name)]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- two machines, one remote, one database ------------------------------------------------------------
def test_an_image_made_on_one_machine_is_a_hit_on_another(pg_url, tmp_path):
    remote = tmp_path / "remote"
    a, b = Machine(tmp_path / "a", f"file://{remote}", pg_url), Machine(tmp_path / "b", f"file://{remote}", pg_url)
    made = a.gw.generate(request())
    key = made.key
    assert (remote / "images" / key[:2] / f"{key}.png").read_bytes() == made.path.read_bytes()
    assert json.loads((remote / "records" / key[:2] / f"{key}.json").read_text())["sha256"] == made.sha256
    got = b.gw.generate(request())
    assert (made.status, got.status, a.provider.calls, b.provider.calls) == ("generated", "cached", 1, 0)
    assert got.path.parent.parent == tmp_path / "b" / "store" / "images"  # B's own working copy
    assert got.path.read_bytes() == made.path.read_bytes() and got.sha256 == made.sha256
    assert b.store.lookup(key).state == "ok"  # and now a plain local hit
    rows = list(a.coordination.ledger.rows())
    assert [(r.status, r.request_key) for r in rows] == [("generated", key), ("cached", key)]
    assert leftover_temps(remote) == [] and leftover_temps(tmp_path / "b") == []
    a.close(), b.close()


def test_a_corrupted_remote_image_is_quarantined_there_and_made_again_once(pg_url, tmp_path):
    remote = tmp_path / "remote"
    a, b = Machine(tmp_path / "a", f"file://{remote}", pg_url), Machine(tmp_path / "b", f"file://{remote}", pg_url)
    key = a.gw.generate(request()).key
    shared = remote / "images" / key[:2] / f"{key}.png"
    bad = bytearray(shared.read_bytes())
    bad[len(bad) // 2] ^= 0xFF  # same size: only the sha256 tells
    shared.write_bytes(bytes(bad))

    again = b.gw.generate(request())
    assert (again.status, b.provider.calls) == ("generated", 1)
    rows = [r for r in b.coordination.ledger.rows() if r.request_key == key]
    assert [r.status for r in rows] == ["generated", "generated"]
    assert "sha256" in rows[1].note and "quarantined at file://" in rows[1].note and "made again" in rows[1].note
    kept = list((remote / "quarantine").iterdir())
    assert len(kept) == 1 and kept[0].read_bytes() == bytes(bad)  # moved aside, never deleted
    record = json.loads((remote / "records" / key[:2] / f"{key}.json").read_text())
    assert sha(shared) == record["sha256"] == again.sha256 == sha(again.path)  # the remote is whole again
    assert not (tmp_path / "b" / "store" / "quarantine").exists()  # the bad bytes were never installed here
    c = Machine(tmp_path / "c", f"file://{remote}", pg_url)  # a third machine: a hit, on the new copy
    assert (c.gw.generate(request()).status, c.provider.calls) == ("cached", 0)
    assert leftover_temps(remote) == [] and leftover_temps(tmp_path) == []
    a.close(), b.close(), c.close()


class FlakyFS(LocalFileSystem):
    """A file:// remote whose uploads fail while ``failing`` (a network down, a full bucket)."""

    failing = False

    def put_file(self, lpath, rpath, *args, **kwargs):
        if self.failing:
            Path(self._strip_protocol(rpath)).write_bytes(b"half")  # a torn upload, left for us to clean
            raise ConnectionError("the remote is unreachable")
        return super().put_file(lpath, rpath, *args, **kwargs)


def test_a_failed_upload_keeps_the_local_copy_and_is_uploaded_by_the_next_lookup(pg_url, tmp_path, caplog):
    remote = tmp_path / "remote"
    flaky = FlakyFS(skip_instance_cache=True)
    a = Machine(tmp_path / "a", f"file://{remote}", pg_url, fs=flaky)
    b = Machine(tmp_path / "b", f"file://{remote}", pg_url)
    flaky.failing = True
    with caplog.at_level(logging.WARNING, logger="webtoon_assets.gateway.remote_store"):
        made = a.gw.generate(request())
    assert made.status == "generated" and made.path.is_file() and sha(made.path) == made.sha256
    assert a.store.upload_failures == 1 and "uploaded again on its next lookup" in caplog.text
    assert [r.status for r in a.coordination.ledger.rows()] == ["generated"]  # the ledger row stands
    assert not (remote / "records").exists() and leftover_temps(remote) == []  # nothing half there
    flaky.failing = False
    assert a.store.lookup(made.key).state == "ok"  # a local hit, absent remotely: uploaded now
    assert (remote / "records" / made.key[:2] / f"{made.key}.json").is_file()
    got = b.gw.generate(request())
    assert (got.status, b.provider.calls, got.path.read_bytes()) == ("cached", 0, made.path.read_bytes())
    assert leftover_temps(remote) == []
    a.close(), b.close()


# -- the store alone, on fsspec's memory:// ----------------------------------------------------------------
def commit_image(store: RemoteStore, key: str, color: str = "red") -> dict:
    with store.staging(key) as staged:
        Image.new("RGB", (16, 16), color).save(staged, format="PNG")
        return store.commit(key, staged, {"width": 16, "height": 16})


@pytest.fixture
def memory_url():
    url = f"memory://bucket-{uuid.uuid4().hex[:8]}/store"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def test_memory_remote_round_trips_images_files_and_texts(tmp_path, memory_url, clean_env):
    a, b = RemoteStore(tmp_path / "a", memory_url), RemoteStore(tmp_path / "b", memory_url)
    key = "ab" * 32
    record = commit_image(a, key)
    (weights := tmp_path / "w.bin").write_bytes(b"weights")
    a.commit_file(key, weights, {"stand_in": True})
    a.commit_text(key, {"text": "an answer"})
    fs = a.fs
    names = sorted(p.split("/store/", 1)[1] for p in fs.find(memory_url))
    assert names == [f"file_records/ab/{key}.json", f"files/ab/{key}.safetensors", f"images/ab/{key}.png",
                     f"records/ab/{key}.json", f"texts/ab/{key}.json"]
    assert not any(is_temp(n.rsplit("/", 1)[1]) for n in names)
    assert b.get(key) == record and b.image_path(key).read_bytes() == a.image_path(key).read_bytes()
    assert b.lookup_file(key).state == "ok" and b.file_path(key).read_bytes() == b"weights"
    assert b.get_text(key)["text"] == "an answer" and b.text_path(key).is_file()
    assert b.lookup("cd" * 32).state == "missing" and b.get_text("cd" * 32) is None


def test_memory_remote_record_is_put_last_and_hits_check_the_remote_once(tmp_path, memory_url, clean_env,
                                                                        monkeypatch):
    fs = fsspec.filesystem("memory", skip_instance_cache=True)
    a, b = RemoteStore(tmp_path / "a", memory_url, fs=fs), RemoteStore(tmp_path / "b", memory_url)
    key = "ef" * 32
    real_put = fs.put_file

    def put_all_but_records(lpath, rpath, *args, **kwargs):
        if rpath.endswith(".json"):
            raise OSError("quota exceeded")
        return real_put(lpath, rpath, *args, **kwargs)
    monkeypatch.setattr(fs, "put_file", put_all_but_records)
    commit_image(a, key)
    assert fs.exists(f"{memory_url}/images/ef/{key}.png") and not fs.exists(f"{memory_url}/records/ef/{key}.json")
    assert b.lookup(key).state == "missing"  # an image without its record is not in the remote
    monkeypatch.setattr(fs, "put_file", real_put)
    checks = []
    real_exists = fs.exists
    monkeypatch.setattr(fs, "exists", lambda path, **k: checks.append(path) or real_exists(path, **k))
    for _ in range(3):
        assert a.lookup(key).state == "ok"
    assert len(checks) == 1  # once, then known to be there
    assert b.lookup(key).state == "ok"


def test_a_damaged_local_copy_is_mended_from_the_remote_and_kept_aside(tmp_path, memory_url, clean_env):
    a, b = RemoteStore(tmp_path / "a", memory_url), RemoteStore(tmp_path / "b", memory_url)
    key = "12" * 32
    commit_image(a, key)
    assert b.lookup(key).state == "ok"
    good = b.image_path(key).read_bytes()
    b.image_path(key).write_bytes(good[:-10])  # cut short here; the remote is whole
    assert b.lookup(key).state == "ok" and b.image_path(key).read_bytes() == good
    assert [p.read_bytes() for p in (tmp_path / "b" / "quarantine").iterdir()] == [good[:-10]]


def test_an_unreachable_remote_on_a_local_miss_is_an_error_not_a_miss(tmp_path, memory_url, clean_env, monkeypatch):
    fs = fsspec.filesystem("memory", skip_instance_cache=True)
    store = RemoteStore(tmp_path / "a", memory_url, fs=fs)
    def unreachable(*args, **kwargs):
        raise TimeoutError("no route to host")
    monkeypatch.setattr(fs, "cat_file", unreachable)
    with pytest.raises(RemoteStoreError, match="could not be read"):
        store.lookup("34" * 32)  # a miss would pay again for what the studio may hold


# -- configuration ---------------------------------------------------------------------------------------
def test_the_store_url_is_refused_without_the_database(tmp_path, monkeypatch, clean_env):
    layout = DataLayout(tmp_path)
    assert type(open_store(layout)) is ImageStore  # unset: the one machine's store, as before
    monkeypatch.setenv("WEBTOON_STORE_URL", f"file://{tmp_path / 'remote'}")
    with pytest.raises(StoreConfigError, match="WEBTOON_STORE_URL.*WEBTOON_DATABASE_URL.*file locks cannot span"):
        open_store(layout)
    store = open_store(layout, database_url="postgresql://db/webtoon")  # the resource's field; nothing connects
    assert isinstance(store, RemoteStore) and store.root == layout.store
    monkeypatch.setenv("WEBTOON_DATABASE_URL", "postgresql://db/webtoon")
    assert isinstance(open_store(layout), RemoteStore)
    monkeypatch.setenv("WEBTOON_STORE_URL", "/mnt/store")
    with pytest.raises(StoreConfigError, match="fsspec URL"):
        open_store(layout)
    monkeypatch.setenv("WEBTOON_STORE_URL", f"file://{layout.store}")
    with pytest.raises(StoreConfigError, match="own store"):
        open_store(layout)
    try:
        import s3fs  # noqa: F401
    except ImportError:
        monkeypatch.setenv("WEBTOON_STORE_URL", "s3://bucket/store")
        with pytest.raises(StoreConfigError, match="install s3fs"):
            open_store(layout)
