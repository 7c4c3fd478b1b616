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


# -- issue 9: rows carry an id and a checksum; damage is reported, never silently dropped -----------
def _ledger_file(folder: Path) -> Path:
    return next(folder.glob("*.jsonl"))


def test_rows_carry_a_unique_id_and_a_checksum(tmp_path):
    ledger = Ledger(tmp_path)
    for i in range(3):
        ledger.append(row(i))
    ledger.close()
    lines = _ledger_file(tmp_path).read_text().splitlines()
    assert all(line.endswith('"}') and ',"sum":"' in line for line in lines)
    assert len({r.id for r in read_rows(tmp_path)}) == 3


def test_a_damaged_row_is_reported_with_its_file_and_line_not_dropped_silently(tmp_path):
    from webtoon_assets.ledger import verify
    ledger = Ledger(tmp_path)
    for i in range(3):
        ledger.append(row(i))
    ledger.close()
    path = _ledger_file(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"billed_usd":"0.005"', '"billed_usd":"0.004"')  # a flipped digit
    path.write_text("".join(lines))
    problems: list = []
    assert [r.item for r in read_rows(tmp_path, problems)] == ["p0", "p2"]
    assert [(p.path, p.line) for p in problems] == [(path, 2)] and "checksum" in problems[0].reason
    n, damaged, _ = verify(tmp_path)
    assert n == 2 and [str(p) for p in damaged] == [f"{path}:2: {problems[0].reason}"]


def test_unparseable_and_foreign_lines_are_reported(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append(row(1))
    ledger.close()
    path = _ledger_file(tmp_path)
    with open(path, "a") as f:
        f.write("{not json\n")
        f.write('{"id": "x", "sum": "y"}\n')
    problems: list = []
    assert len(list(read_rows(tmp_path, problems))) == 1
    assert [p.line for p in problems] == [2, 3]


def test_the_next_writer_seals_a_dead_writers_torn_last_line(tmp_path):
    import socket
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid is a writer that is gone
    dead = tmp_path / f"20260101T000000-{socket.gethostname()}-{gone.pid}-1.jsonl"
    whole = row(1).to_line()
    dead.write_text(whole + row(2).to_line()[:40])
    problems: list = []
    assert [r.item for r in read_rows(tmp_path, problems)] == ["p1"]
    assert problems and "torn write" in problems[0].reason  # reported until sealed
    Ledger(tmp_path).append(row(3))  # the next writer
    assert dead.read_text() == whole and dead.with_suffix(".jsonl.torn").read_text().startswith('{"id"')
    problems = []
    assert sorted(r.item for r in read_rows(tmp_path, problems)) == ["p1", "p3"] and problems == []


def test_a_live_writers_partial_line_is_left_alone(tmp_path):
    import os
    import socket
    live = tmp_path / f"20260101T000000-{socket.gethostname()}-{os.getpid()}-1.jsonl"
    live.write_text(row(1).to_line() + row(2).to_line()[:40])  # mid-append right now
    problems: list = []
    assert [r.item for r in read_rows(tmp_path, problems)] == ["p1"] and problems == []
    from webtoon_assets.ledger import seal_torn_tails
    assert seal_torn_tails(tmp_path) == []


def test_rows_of_the_old_format_still_count(tmp_path):
    (tmp_path / "20250101T000000-h-1-1.jsonl").write_text(
        row(1).model_dump_json(exclude={"id", "settles", "note"}) + "\n")
    problems: list = []
    (r,) = read_rows(tmp_path, problems)
    assert problems == [] and r.id.startswith("legacy-") and r.billed_usd == Decimal("0.005")
