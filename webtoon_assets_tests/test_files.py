"""The one atomic writer (webtoon_assets.files): a destination holds the old content or the new,
never a part, and no temp outlives a write."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from webtoon_assets.files import atomic_path, write_bytes_atomic, write_text_atomic
from webtoon_assets.temps import temp_writer


def test_writes_whole_files_and_leaves_no_temp(tmp_path: Path):
    dest = tmp_path / "new" / "page.html"
    assert write_text_atomic(dest, "héllo") == dest
    assert dest.read_text(encoding="utf-8") == "héllo"
    write_bytes_atomic(dest, b"\x00bytes", durable=True)
    assert dest.read_bytes() == b"\x00bytes"
    assert [p.name for p in dest.parent.iterdir()] == ["page.html"]


def test_a_writer_that_fails_leaves_the_old_file(tmp_path: Path):
    dest = tmp_path / "panel.png"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["panel.png"]


def test_a_path_writer_gets_a_temp_named_by_its_writer(tmp_path: Path):
    dest = tmp_path / "thumb.jpg"
    with atomic_path(dest) as tmp:
        assert tmp.parent == tmp_path and not tmp.exists()
        assert temp_writer(tmp.name) is not None  # host and pid: swept if this process dies
        Image.new("RGB", (4, 4), "red").save(tmp, format="JPEG")
        assert not dest.exists()
    with Image.open(dest) as im:
        assert im.format == "JPEG" and im.size == (4, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["thumb.jpg"]
