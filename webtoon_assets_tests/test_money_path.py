"""Issue 9, the money path under faults, through the real fal-client against the loopback fake:
nothing unrecorded, nothing billed twice, nothing lost, no episode stuck.

Every case ends by comparing the books: what the ledger says was billed, request by request and in
total, against what the fake billed (a request is billed when it completes with an output)."""

from __future__ import annotations

import json
import os
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from webtoon_assets.gateway import Gateway, ImageStore
from webtoon_assets.gateway.providers import select_provider
from webtoon_assets.gateway.providers.fal_platform import FalPlatform
from webtoon_assets.gateway.retry import GenerationFailed, AttemptPolicy
from webtoon_assets.ledger import Ledger, read_rows
from webtoon_assets.ledger.reconcile import open_unknowns, reconcile, write_settlements
from webtoon_assets.paths import REPO_ROOT
from webtoon_assets.pricing import load_pricebook
from webtoon_assets_tests.fal_harness import TEST_KEY
from webtoon_assets_tests.test_fal_faults import PAID, panel_request

ADMIN_KEY = "fal-admin-test-key-SECRET"


def new_gateway(tmp_path: Path) -> Gateway:
    """A gateway as a new run would build it over the same data root."""
    return Gateway(ImageStore(tmp_path / "store"), select_provider("", None, tmp_path / "store"),
                   Ledger(tmp_path / "ledger"), load_pricebook(REPO_ROOT / "data" / "pricebook.yaml"),
                   retry=AttemptPolicy(attempts=3, base_seconds=0.01, nsfw_retries=2))


@pytest.fixture
def runs(fake_fal, tmp_path):
    """Make gateways (one per simulated run); all are closed at the end."""
    made: list[Gateway] = []

    def make() -> Gateway:
        made.append(new_gateway(tmp_path))
        return made[-1]
    yield make
    for gw in made:
        gw.provider.close()


def statuses(tmp_path: Path) -> list[tuple[str, Decimal]]:
    return [(r.status, r.billed_usd) for r in read_rows(tmp_path / "ledger")]


def assert_books_balance(tmp_path: Path, fake) -> None:
    """Per request id and in total, the ledger bills exactly what the fake billed. A request fal
    billed that no row names is allowed only where an unknown row without an id stands for it."""
    stats = fake.stats()
    rows = list(read_rows(tmp_path / "ledger"))
    ours: Counter = Counter()
    for r in rows:
        if r.provider_request_id:
            ours[r.provider_request_id] += r.billed_usd
    theirs = {b["request_id"]: Decimal(b["cost"]) for b in stats["billed"]}
    assert {k: v for k, v in ours.items() if v} == {k: v for k, v in theirs.items() if k in ours}
    if set(theirs) - set(ours):
        assert any(r.status == "unknown" and not r.provider_request_id for r in rows)
    assert sum((r.billed_usd for r in rows), Decimal(0)) == Decimal(stats["billed_usd"])


def one_submission_per_request(fake) -> None:
    assert set(fake.stats()["submissions_by_prompt"].values()) <= {1}


def settle(tmp_path: Path, fake, admin: bool = True):
    platform = FalPlatform(TEST_KEY, ADMIN_KEY if admin else None, api_url=f"{fake.base_url}/v1")
    report = reconcile(read_rows(tmp_path / "ledger"), platform)
    ledger = Ledger(tmp_path / "ledger")
    write_settlements(ledger, report, "reconcile")
    ledger.close()
    return report


# -- 1. ambiguous submissions --------------------------------------------------------------------------
def test_an_accepted_submission_whose_answer_was_lost_is_unknown_never_resent(runs, fake_fal, tmp_path):
    fake_fal.configure(faults=[{"kind": "accept_drop", "count": 1}], admin_key=ADMIN_KEY)
    with pytest.raises(GenerationFailed, match=r"outcome of the paid request .* is unknown.*webtoon reconcile"):
        runs().generate(panel_request())
    c = fake_fal.stats()["counts"]
    assert c["submit_attempts"] == 1 and c["submitted"] == 1  # fal queued it once; it was never sent again
    assert statuses(tmp_path) == [("unknown", PAID)]  # held at its quote, counted as spent
    unknown = next(read_rows(tmp_path / "ledger"))
    assert unknown.provider_request_id is None and "answer to the submission" in unknown.error
    assert not list((tmp_path / "store" / "pending").glob("*.json"))  # nothing blocks the next run
    report = settle(tmp_path, fake_fal)
    assert [(s.outcome, s.correction) for s in report.settled] == [("billed", 0)]
    assert statuses(tmp_path) == [("unknown", PAID), ("reconciled", 0)]
    assert open_unknowns(read_rows(tmp_path / "ledger")) == []
    assert_books_balance(tmp_path, fake_fal)
    # a re-run asks anew: a new paid attempt, recorded as such
    assert runs().generate(panel_request()).status == "generated"
    assert_books_balance(tmp_path, fake_fal)


def test_a_dropped_submission_fal_never_queued_reconciles_to_zero(runs, fake_fal, tmp_path):
    fake_fal.configure(faults=[{"kind": "drop", "count": 1}], admin_key=ADMIN_KEY)
    with pytest.raises(GenerationFailed, match="unknown"):
        runs().generate(panel_request())
    assert fake_fal.stats()["counts"]["submit_attempts"] == 1
    assert statuses(tmp_path) == [("unknown", PAID)]
    report = settle(tmp_path, fake_fal)
    assert [(s.outcome, s.correction) for s in report.settled] == [("not_billed", -PAID)]
    assert sum(b for _, b in statuses(tmp_path)) == 0
    assert_books_balance(tmp_path, fake_fal)


def test_without_an_admin_key_an_unknown_stays_counted(runs, fake_fal, tmp_path):
    fake_fal.configure(faults=[{"kind": "accept_drop", "count": 1}])
    with pytest.raises(GenerationFailed):
        runs().generate(panel_request())
    report = settle(tmp_path, fake_fal, admin=False)
    assert not report.settled and report.still_held_usd == PAID and "FAL_ADMIN_KEY" in report.open[0].why
    assert [r.status for r in open_unknowns(read_rows(tmp_path / "ledger"))] == ["unknown"]


def test_usage_already_explained_by_the_ledger_is_not_given_to_an_unknown(runs, fake_fal, tmp_path):
    """Reconciliation by window subtracts what the ledger already knows was billed there."""
    fake_fal.configure(faults=[{"kind": "drop", "count": 1, "match": "second"}], admin_key=ADMIN_KEY)
    gw = runs()
    gw.generate(panel_request("first panel"))
    with pytest.raises(GenerationFailed):
        gw.generate(panel_request("second panel"))
    report = settle(tmp_path, fake_fal)
    assert [s.outcome for s in report.settled] == ["not_billed"]
    assert_books_balance(tmp_path, fake_fal)


def test_a_run_killed_while_submitting_leaves_an_unknown_the_next_run_records(runs, fake_fal, tmp_path):
    """The journal's intent is written (fsynced) before a submission is sent; a process killed
    before fal's answer reached the journal leaves only the intent. The next run holding the key's
    lock records that attempt as unknown, then asks anew."""
    request = panel_request()
    key = request.key("fal")
    pending = tmp_path / "store" / "pending" / f"{key}.json"
    pending.parent.mkdir(parents=True)
    pending.write_text(json.dumps({"endpoint": request.endpoint, "seed": 11, "started_at": 1.7e9,
                                   "host": "h", "pid": 1}))
    assert runs().generate(request).status == "generated"
    assert statuses(tmp_path) == [("unknown", PAID), ("generated", PAID)]
    assert "crashed while submitting" in next(read_rows(tmp_path / "ledger")).error
    assert not pending.exists()


def test_a_timeout_fal_will_not_cancel_is_unknown_then_settled_by_request_id(runs, fake_fal, tmp_path):
    gw = runs()
    gw.provider.settings = gw.provider.settings.model_copy(update={"timeout_seconds": 0.3})
    fake_fal.configure(faults=[{"kind": "slow", "count": 1, "seconds": 0.8}, {"kind": "no_cancel", "count": 1}])
    with pytest.raises(GenerationFailed, match="could not be cancelled"):
        gw.generate(panel_request())
    (unknown,) = read_rows(tmp_path / "ledger")
    assert unknown.status == "unknown" and unknown.provider_request_id
    import time
    time.sleep(0.8)  # it finishes at fal, and fal bills it
    report = settle(tmp_path, fake_fal, admin=False)  # by id: no admin key needed
    assert [(s.outcome, s.correction) for s in report.settled] == [("billed", 0)]
    assert_books_balance(tmp_path, fake_fal)


# -- 2. paid but unusable results -------------------------------------------------------------------------
@pytest.mark.parametrize("fault", [
    {"kind": "corrupt_image", "times": 99}, {"kind": "truncated_image", "times": 99},
    {"kind": "wrong_type", "times": 99}, {"kind": "html_body", "times": 99}, {"kind": "oversized"},
])
def test_a_paid_unusable_result_is_billed_once_and_the_next_run_decides_afresh(runs, fake_fal, tmp_path, fault):
    fake_fal.configure(faults=[{**fault, "count": 1}])
    with pytest.raises(GenerationFailed, match=r"failed after 1 attempt"):
        runs().generate(panel_request())
    assert statuses(tmp_path) == [("failed", PAID)]  # fal finished the request: charged, once
    assert not list((tmp_path / "store" / "pending").glob("*.json"))  # retired: no stuck episode
    assert not list((tmp_path / "store" / "images").rglob("*.png"))
    assert runs().generate(panel_request()).status == "generated"  # a new paid attempt
    c = fake_fal.stats()["counts"]
    assert c["submitted"] == 2 and c["paid"] == 2
    assert statuses(tmp_path) == [("failed", PAID), ("generated", PAID)]
    assert_books_balance(tmp_path, fake_fal)


def crash_after_the_row(gw: Gateway) -> None:
    """A paid request whose ledger row is written, then the disk fills before its image is stored:
    the journal entry is never retired."""
    def disk_full(*a, **k):
        raise OSError("No space left on device")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gw.store, "commit", disk_full)
        with pytest.raises(OSError):
            gw.generate(panel_request())


def test_a_request_id_is_billed_once_when_a_crash_came_after_its_row(runs, fake_fal, tmp_path):
    """Crash between writing the billed row and retiring the journal: the next run resumes the
    same request (no new submission) and records it at $0, naming the row that billed it."""
    crash_after_the_row(runs())
    result = runs().generate(panel_request())
    assert result.status == "generated"
    first, second = read_rows(tmp_path / "ledger")
    assert (first.billed_usd, second.billed_usd) == (PAID, 0)
    assert first.provider_request_id == second.provider_request_id and first.id in second.note
    c = fake_fal.stats()["counts"]
    assert c["submitted"] == 1 and c["paid"] == 1
    assert_books_balance(tmp_path, fake_fal)


def test_a_crash_after_acceptance_is_resumed_not_paid_again(runs, fake_fal, tmp_path):
    """The handle is journalled the moment fal accepts; a process that dies while waiting is
    resumed by the next run from the journal."""
    gw = runs()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(gw.provider), "_wait", _die_waiting)
        with pytest.raises(RuntimeError, match="killed"):
            gw.generate(panel_request())
    assert statuses(tmp_path) == [("failed", 0)]  # the attempt is recorded; its request stays journalled
    assert runs().generate(panel_request()).status == "generated"
    c = fake_fal.stats()["counts"]
    assert c["submitted"] == 1 and c["paid"] == 1
    assert_books_balance(tmp_path, fake_fal)


async def _die_waiting(self, handle):
    from webtoon_assets.gateway.providers.base import ProviderError
    raise ProviderError("killed", retryable=False, billed=False, request_id=handle.request_id, resumable=True)


# -- 3. store integrity ---------------------------------------------------------------------------------
def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else data[:100] + b"\0" * 8 + data[108:])


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_stored_image_is_quarantined_and_fetched_again_free(runs, fake_fal, tmp_path, how):
    first = runs().generate(panel_request())
    _damage(first.path, how)
    again = runs().generate(panel_request())
    assert again.status == "cached" and again.sha256 == first.sha256
    assert "quarantined" in list(read_rows(tmp_path / "ledger"))[-1].note
    assert len(list((tmp_path / "store" / "quarantine").glob("*.png"))) == 1
    c = fake_fal.stats()["counts"]
    assert c["submitted"] == 1 and c["paid"] == 1
    assert_books_balance(tmp_path, fake_fal)


def test_a_damaged_image_fal_no_longer_has_is_made_again_as_a_recorded_attempt(runs, fake_fal, tmp_path):
    first = runs().generate(panel_request())
    os.truncate(first.path, 10)
    fake_fal.reset()  # fal's copy is gone
    again = runs().generate(panel_request())
    assert again.status == "generated"
    last = list(read_rows(tmp_path / "ledger"))[-1]
    assert last.billed_usd == PAID and "made again" in last.note


def test_a_deleted_record_is_rebuilt_from_the_image_and_the_ledger(runs, fake_fal, tmp_path):
    first = runs().generate(panel_request())
    runs()  # noqa - another run starts
    (tmp_path / "store" / "records" / first.key[:2] / f"{first.key}.json").unlink()
    again = runs().generate(panel_request())
    assert again.status == "cached" and again.sha256 == first.sha256
    assert "rebuilt" in list(read_rows(tmp_path / "ledger"))[-1].note
    assert fake_fal.stats()["counts"]["submitted"] == 1
    assert runs().store.get(first.key)["rebuilt_from_ledger_row"]


# -- the whole battery's invariant on a clean run --------------------------------------------------------
def test_a_clean_request_balances(runs, fake_fal, tmp_path):
    runs().generate(panel_request())
    one_submission_per_request(fake_fal)
    assert_books_balance(tmp_path, fake_fal)


# -- the commands a person uses: costs names it, ledger verify, reconcile ----------------------------------
def _webtoon(*args: str, env: dict[str, str]) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "webtoon_assets.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def leave_an_unknown(gw: Gateway, fake_fal) -> None:
    """A request fal accepted but whose answer was lost (an ``unknown`` row), then one made."""
    fake_fal.configure(faults=[{"kind": "accept_drop", "count": 1}], admin_key=ADMIN_KEY)
    try:
        with pytest.raises(GenerationFailed):
            gw.generate(panel_request())
        gw.generate(panel_request("a second panel"))
    finally:
        gw.provider.close()


def test_costs_names_unknowns_verify_finds_damage_and_reconcile_settles(fake_fal, tmp_path):
    from webtoon_assets_tests.conftest import fresh_data_root
    layout = fresh_data_root(tmp_path / "data")
    gw = Gateway(ImageStore(layout.store), select_provider("", None, layout.store), Ledger(layout.ledger_dir),
                 load_pricebook(layout.pricebook))
    leave_an_unknown(gw, fake_fal)
    gw.ledger.close()
    env = {**fake_fal.env(), "WEBTOON_DATA_DIR": str(layout.root), "FAL_ADMIN_KEY": ADMIN_KEY}

    costs = _webtoon("costs", env=env)
    assert "Unknown outcomes: 1 paid call(s)" in costs.stdout and "panels p07 on fal-ai/flux-2/flash" in costs.stdout

    path = next(layout.ledger_dir.glob("*.jsonl"))
    good = path.read_text()
    path.write_text(good.replace('"billed_usd":"0.005"', '"billed_usd":"0.050"', 1))
    verify = _webtoon("ledger", "verify", env=env)
    assert verify.returncode == 1 and f"{path}:1: checksum does not match" in verify.stdout
    costs = _webtoon("costs", env=env)
    assert f"Damaged ledger rows: 1" in costs.stdout and "Traceback" not in costs.stderr
    path.write_text(good)
    assert _webtoon("ledger", "verify", env=env).returncode == 0

    settled = _webtoon("reconcile", env=env)
    assert settled.returncode == 0, settled.stdout + settled.stderr
    assert "settled" in settled.stdout and "billed (correction $0)" in settled.stdout
    assert "Unknown outcomes" not in _webtoon("costs", env=env).stdout
    assert "nothing to reconcile" in _webtoon("reconcile", env=env).stdout
    rows = list(read_rows(layout.ledger_dir))
    assert sum((r.billed_usd for r in rows), Decimal(0)) == Decimal(fake_fal.stats()["billed_usd"]) == 2 * PAID
    for text in (costs.stdout, costs.stderr, settled.stdout, settled.stderr):
        assert TEST_KEY not in text and ADMIN_KEY not in text
