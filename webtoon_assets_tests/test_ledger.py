"""The ledger keeps every attempt: across a SIGKILL, and with many processes and threads writing."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path

from webtoon_assets.ledger import Ledger, LedgerRow, read_rows


def row(i: int, who: str = "t") -> LedgerRow:
    return LedgerRow(time=dt.datetime.now(dt.timezone.utc), run_id=who, series="s", episode="ep01", asset="panels",
                     item=f"p{i}", reusable=False, provider="fal", endpoint="fal-ai/flux-2/flash",
                     request_key=f"{who}-{i}", status="generated", billed_usd=Decimal("0.005"),
                     list_usd=Decimal("0.005"), credits=Decimal("0.6"))


def test_a_row_survives_a_process_killed_right_after_the_attempt(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from webtoon_assets.gateway import Attribution, Gateway, GenerationRequest, ImageStore
        from webtoon_assets.gateway.providers import LocalProvider
        from webtoon_assets.ledger import Ledger
        from webtoon_assets.paths import REPO_ROOT
        from webtoon_assets.pricing import load_pricebook
        root = Path({str(tmp_path)!r})
        gw = Gateway(ImageStore(root / "store"), LocalProvider(), Ledger(root / "ledger"),
                     load_pricebook(REPO_ROOT / "data" / "pricebook.yaml"), run_id="doomed")
        gw.generate(GenerationRequest(endpoint="fal-ai/flux-2/flash", arguments={{"prompt": "x", "image_size": "square"}},
                    attribution=Attribution(series="s", episode="ep01", asset="panels", item="p01")))
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no atexit, no buffered writes flushed
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    rows = list(read_rows(tmp_path / "ledger"))
    assert [(r.run_id, r.status, r.item, r.list_usd) for r in rows] == [("doomed", "generated", "p01", Decimal("0.005"))]


def _write_many(folder: str, who: str, threads: int, per_thread: int) -> None:
    ledger = Ledger(Path(folder))

    def work(t: int) -> None:
        for i in range(per_thread):
            ledger.append(row(t * 1000 + i, who))

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()


def test_many_concurrent_writers_lose_nothing(tmp_path):
    procs, threads, per_thread = 4, 6, 25
    with ProcessPoolExecutor(procs) as ex:
        list(ex.map(_write_many, [str(tmp_path)] * procs, [f"w{p}" for p in range(procs)],
                    [threads] * procs, [per_thread] * procs))
    keys = [r.request_key for r in read_rows(tmp_path)]
    assert len(keys) == len(set(keys)) == procs * threads * per_thread
    assert len(list(tmp_path.glob("*.jsonl"))) == procs  # one file per process: no contention


def test_a_torn_last_line_is_skipped(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append(row(1))
    ledger.close()
    path = next(tmp_path.glob("*.jsonl"))
    with open(path, "a") as f:
        f.write(row(2).model_dump_json()[:40])  # killed mid-write
    assert [r.item for r in read_rows(tmp_path)] == ["p1"]
