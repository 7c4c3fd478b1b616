"""The image store on object storage every machine reaches (``WEBTOON_STORE_URL``, an fsspec URL).

``RemoteStore`` is an ``ImageStore`` whose local root (the machine's ``layout.store``) is a cache
holding the working copies every reader uses (Pillow, publish, references read local files), and
whose remote (``s3://bucket/prefix``, ``gs://...``, ``az://...``, ``file:///mnt/shared/store``) is
the shared truth, in the same content-addressed layout: ``images/ab/<key>.png`` with
``records/ab/<key>.json``, ``files/`` with ``file_records/``, ``texts/``.

- A lookup reads the local copy first. A key missing (or damaged) here whose record the remote
  holds is downloaded to a local temp, checked against that record (size, sha256), then installed
  here, image then record. A remote copy that fails the check (or a remote record without its
  image) is a ``damaged`` lookup: the gateway quarantines it, here and in the remote's
  ``quarantine/`` (moved, never deleted), and fetches it again from the provider or makes it again.
- A commit is local, as before, then uploaded: the image (or file) first, the record last, as the
  record's presence is what makes a key present remotely. Each object goes to a temp name and is
  moved into place where moving is a rename (a mounted path); object stores write an object whole,
  so there it is written directly. A failed upload loses nothing: the local copy stays committed,
  the failure is logged, and the next lookup that finds the key whole here and absent remotely
  uploads it again (the keys seen remotely are remembered per process, so a hit is not a remote
  round trip every time).
- Staging, publish, locks and paths stay local. The request locks across machines are the
  database's (the gateway takes ``coordination.lock``), so ``open_store`` refuses
  ``WEBTOON_STORE_URL`` without ``WEBTOON_DATABASE_URL``.

A remote that cannot be read when a key is missing here is an error (``RemoteStoreError``), not a
miss: a miss would pay again for an image the studio may already hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from webtoon_assets.files import write_text_atomic
from webtoon_assets.gateway.coordination import DATABASE_ENV, configured_url
from webtoon_assets.gateway.store import ImageStore, Lookup, sha256_file
from webtoon_assets.paths import DataLayout
from webtoon_assets.temps import HOST_TAG, mkstemp_beside, temp_path

STORE_URL_ENV = "WEBTOON_STORE_URL"
# Protocols whose writes are whole objects (a reader never sees half of one), where a move is a
# copy and a delete: written directly. Any other (a local or mounted path, sftp) is renamed in.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "memory"})
# What each scheme needs installed beside fsspec (none is bundled with the project).
DRIVERS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
           "abfss": "adlfs", "adl": "adlfs"}

logger = logging.getLogger(__name__)


class RemoteStoreError(OSError):
    """The shared store could not be read where its answer decides whether to pay."""


class StoreConfigError(ValueError):
    """WEBTOON_STORE_URL is unusable as configured."""


class RemoteStore(ImageStore):
    def __init__(self, root: Path, url: str, fs: Any = None, log: Callable[[str], None] | None = None):
        """``root``: this machine's cache; ``url``: the shared store (fsspec URL). ``fs``: an fsspec
        filesystem to use instead of the URL's (then ``url`` is the path in it)."""
        super().__init__(root)
        if fs is None:
            fs, base = _open_url(url)
        else:
            base = fs._strip_protocol(url)
        self.url, self.fs = url, fs
        self.base = str(base).rstrip("/")
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        self.rename_into_place = not (set(protocols) & OBJECT_STORES)
        if self.rename_into_place and Path(self.base or "/").resolve() == root.resolve():
            raise StoreConfigError(f"{STORE_URL_ENV}={url} is this machine's own store ({root}): the shared "
                                   "store must be another place (or leave it unset)")
        self.log = log or logger.warning
        self._known: set[str] = set()  # records (relative paths) this process saw or put in the remote
        self._damaged: set[str] = set()  # images/files (relative paths) whose remote copy failed its check
        self.upload_failures = 0

    def __repr__(self) -> str:
        return f"RemoteStore({self.root}, {self.url})"

    # -- paths ---------------------------------------------------------------------------------------
    def _rel(self, local: Path) -> str:
        return local.relative_to(self.root).as_posix()

    def remote_path(self, rel: str) -> str:
        """The remote path (in ``self.fs``) of a store-relative path such as ``images/ab/<key>.png``."""
        return f"{self.base}/{rel}" if self.base else rel

    # -- lookups -------------------------------------------------------------------------------------
    def _lookup(self, key: str, image: Path, rec: Path) -> Lookup:
        found = super()._lookup(key, image, rec)
        if found.state == "ok":
            self._ensure_remote(image, rec)
            return found
        return self._fetch(key, image, rec, found) or found

    def _fetch(self, key: str, image: Path, rec: Path, local: Lookup) -> Lookup | None:
        """The remote's copy of a key not whole here, installed here; a damaged Lookup when the
        remote's copy fails its check; None when the remote holds no record of it."""
        irel, rrel = self._rel(image), self._rel(rec)
        raw = self._read(rrel)
        if raw is None:
            self._damaged.discard(irel)
            return None
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or "sha256" not in record:
                raise ValueError("not a store record")
        except (ValueError, UnicodeDecodeError) as e:
            self.log(f"shared store: record {self.remote_path(rrel)} unreadable ({e}); taken as absent")
            return None
        if local.state == "unrecorded" and self._matches(image, record):  # only the record was lost here
            self._install_record(key, image, rec, raw, record)
            return Lookup("ok", record)
        image.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = mkstemp_beside(image.with_name(key[:12]), suffix=image.suffix)
        try:
            h, size = hashlib.sha256(), 0
            try:
                with os.fdopen(fd, "wb") as out, self.fs.open(self.remote_path(irel), "rb") as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        h.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            except FileNotFoundError:
                self._damaged.add(irel)
                return Lookup("damaged", record, f"the shared store's {self.remote_path(irel)} is missing "
                                                 "(its record is there)")
            except Exception as e:  # noqa: BLE001 - unreachable: not a miss (a miss would pay again)
                raise RemoteStoreError(f"the shared store {self.url} could not be read "
                                       f"({self.remote_path(irel)}): {type(e).__name__}: {e}") from e
            if "bytes" in record and size != record["bytes"]:
                self._damaged.add(irel)
                return Lookup("damaged", record, f"the shared store's {self.remote_path(irel)} has {size} bytes, "
                                                 f"{record['bytes']} were stored")
            if h.hexdigest() != record["sha256"]:
                self._damaged.add(irel)
                return Lookup("damaged", record, f"the shared store's {self.remote_path(irel)} does not match the "
                                                 "sha256 recorded when it was stored")
            if image.exists():  # the damaged (or unrecorded) copy here: kept aside, never overwritten
                ImageStore._quarantine(self, image, key, image.suffix)
            os.replace(tmp, image)
            self._install_record(key, image, rec, raw, record)
            return Lookup("ok", record)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _matches(self, image: Path, record: dict[str, Any]) -> bool:
        try:
            return (("bytes" not in record or image.stat().st_size == record["bytes"])
                    and sha256_file(image) == record["sha256"])
        except OSError:
            return False

    def _install_record(self, key: str, image: Path, rec: Path, raw: bytes, record: dict[str, Any]) -> None:
        write_text_atomic(rec, raw.decode("utf-8"), durable=True)  # the remote's record, as it is there
        st = image.stat()
        self._verified[key] = (st.st_ino, st.st_size, st.st_mtime_ns, record["sha256"])
        self._known.add(self._rel(rec))
        self._damaged.discard(self._rel(image))

    def _read(self, rel: str) -> bytes | None:
        """A remote object's bytes, None if absent; RemoteStoreError if the remote cannot be read."""
        try:
            return self.fs.cat_file(self.remote_path(rel))
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            raise RemoteStoreError(f"the shared store {self.url} could not be read ({self.remote_path(rel)}): "
                                   f"{type(e).__name__}: {e}") from e

    def get_text(self, key: str) -> dict[str, Any] | None:
        path = self.text_path(key)
        if (record := super().get_text(key)) is not None:
            self._ensure_remote(path)
            return record
        rel = self._rel(path)
        raw = self._read(rel)
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not a text record")
        except (ValueError, UnicodeDecodeError) as e:
            where = self._quarantine_remote(rel, key, ".json")
            self.log(f"shared store: text {self.remote_path(rel)} unreadable ({e}); quarantined at {where}")
            return None
        write_text_atomic(path, raw.decode("utf-8"))
        self._known.add(rel)
        return record

    # -- commits: here, then to the remote, the record last -------------------------------------------
    def write_record(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        record = super().write_record(key, record)  # commit() ends here too
        self._upload(self.image_path(key), self.record_path(key))
        return record

    def commit_file(self, key: str, staged: Path, record: dict[str, Any], suffix: str = ".safetensors"
                    ) -> dict[str, Any]:
        record = super().commit_file(key, staged, record, suffix)
        self._upload(self.file_path(key, suffix), self.file_record_path(key))
        return record

    def commit_text(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        record = super().commit_text(key, record)
        self._upload(self.text_path(key))
        return record

    def _ensure_remote(self, *local: Path) -> None:
        """Upload a key whole here that the remote lacks (an upload that failed before)."""
        rel = self._rel(local[-1])
        if rel in self._known:
            return
        try:
            present = self.fs.exists(self.remote_path(rel))
        except Exception as e:  # noqa: BLE001 - the local copy serves; asked again on the next hit
            self.log(f"shared store: could not check {self.remote_path(rel)} ({type(e).__name__}: {e})")
            return
        if present:
            self._known.add(rel)
        else:
            self._upload(*local)

    def _upload(self, *local: Path) -> bool:
        """Put ``local`` files in the remote in order (the record last). A failure is logged, never
        raised: the local copy is committed, and the next lookup of the key uploads it again."""
        rel = self._rel(local[-1])
        self._known.discard(rel)
        try:
            for path in local:
                self._put(path)
        except Exception as e:  # noqa: BLE001
            self.upload_failures += 1
            self.log(f"shared store: uploading {rel} to {self.url} failed ({type(e).__name__}: {e}); "
                     "kept here, uploaded again on its next lookup")
            return False
        self._known.add(rel)
        return True

    def _put(self, path: Path) -> None:
        dest = self.remote_path(self._rel(path))
        if not self.rename_into_place:
            self.fs.put_file(str(path), dest)
            return
        parent = dest.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = str(temp_path(PurePosixPath(dest)))  # named like every temp of ours: see temps.py
        try:
            self.fs.put_file(str(path), tmp)
            self.fs.mv(tmp, dest)
        except BaseException:
            try:
                self.fs.rm_file(tmp)
            except Exception:  # noqa: BLE001 - never written, or already moved
                pass
            raise

    # -- quarantine: here, and the remote's damaged copy moved to its quarantine/ ------------------------
    def _quarantine(self, src: Path, key: str, suffix: str) -> Path | str | None:
        here = super()._quarantine(src, key, suffix)
        rel = self._rel(src)
        if rel not in self._damaged:
            return here
        self._damaged.discard(rel)
        self._known.discard(self._rel(self.file_record_path(key) if rel.startswith("files/")
                                      else self.record_path(key)))
        there = self._quarantine_remote(rel, key, suffix)
        if here is None:
            return there
        return f"{here} and {there}" if there else here

    def _quarantine_remote(self, rel: str, key: str, suffix: str) -> str | None:
        """Move a remote object to the remote's quarantine/ (kept, never deleted); its URL, or None."""
        dest = self.remote_path(f"quarantine/{key}-{time.strftime('%Y%m%dT%H%M%S')}-{HOST_TAG}-{os.getpid()}{suffix}")
        try:
            if self.rename_into_place:
                self.fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
            self.fs.mv(self.remote_path(rel), dest)
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001 - the gateway makes it again anyway; the record is rewritten
            self.log(f"shared store: could not quarantine {self.remote_path(rel)} ({type(e).__name__}: {e})")
            return None
        return self.fs.unstrip_protocol(dest)


def _open_url(url: str) -> tuple[Any, str]:
    import fsspec

    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not scheme:
        raise StoreConfigError(f"{STORE_URL_ENV} must be an fsspec URL (s3://bucket/prefix, gs://..., az://..., "
                               f"file:///mnt/shared/store), got {url!r}; a mounted path can also be "
                               "WEBTOON_STORE_DIR")
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        need = DRIVERS.get(scheme)
        raise StoreConfigError(f"{STORE_URL_ENV}={url}: fsspec cannot open {scheme}:// here ({e})"
                               + (f"; install {need} (not bundled with the project)" if need else "")) from e
    except ValueError as e:
        raise StoreConfigError(f"{STORE_URL_ENV}={url}: {e}") from e


def configured_store_url() -> str | None:
    return os.environ.get(STORE_URL_ENV, "").strip() or None


def open_store(layout: DataLayout, database_url: str | None = None) -> ImageStore:
    """The store of ``layout`` (``layout.store``), with the shared store at WEBTOON_STORE_URL
    behind it when that is set. Refused without a coordination database (``database_url``, else
    WEBTOON_DATABASE_URL): the request locks would be file locks, which cannot span machines."""
    url = configured_store_url()
    if url is None:
        return ImageStore(layout.store)
    if configured_url(database_url) is None:
        raise StoreConfigError(
            f"{STORE_URL_ENV} is set ({url}) but {DATABASE_ENV} is not: machines sharing a store must take "
            f"their request locks in one PostgreSQL database, as file locks cannot span machines (two "
            f"machines would pay for the same image). Set {DATABASE_ENV}=postgresql://... on every machine, "
            f"or unset {STORE_URL_ENV}.")
    return RemoteStore(layout.store, url)


__all__ = ["RemoteStore", "RemoteStoreError", "STORE_URL_ENV", "StoreConfigError", "configured_store_url",
           "open_store"]
