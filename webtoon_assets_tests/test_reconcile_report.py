"""`webtoon prices refresh` (the price book against fal's pricing API) and `webtoon reconcile`'s
comparison of the ledger with what the platforms report (fal's billable units per result, fal's
usage per endpoint and hour, BFL's cost per response), against the loopback fake of fal and
hand-written ledger rows."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import time
from decimal import Decimal
from pathlib import Path

import pytest

from webtoon_assets.cli import RECONCILE_DRIFT, main
from webtoon_assets.ledger import Ledger, LedgerRow, read_rows
from webtoon_assets.gateway.providers.fal_platform import UsageBucket
from webtoon_assets.ledger.reconcile import Tolerance, compare_with_platforms, read_differences
from webtoon_assets.paths import REPO_ROOT, DataLayout
from webtoon_assets.pricing import load_pricebook
from webtoon_assets.pricing.refresh import FalPrice, compare, fal_unit, refresh_prices
from webtoon_assets_tests.conftest import cost_sql
from webtoon_assets_tests.fal_harness import TEST_KEY
from webtoon_assets_tests.test_fal_faults import PAID, panel_request
from webtoon_assets_tests.test_money_path import ADMIN_KEY, new_gateway

FLASH, TURBO, SEEDREAM = "fal-ai/flux-2/flash", "fal-ai/flux-2/turbo", "fal-ai/bytedance/seedream/v4/text-to-image"


# -- prices refresh ------------------------------------------------------------------------------------------
@pytest.fixture
def book(tmp_path, monkeypatch, fake_fal) -> Path:
    """A copy of the price book (WEBTOON_PRICEBOOK); fal's price list knows three of its endpoints,
    at the book's own prices."""
    path = tmp_path / "pricebook.yaml"
    shutil.copy(REPO_ROOT / "data" / "pricebook.yaml", path)
    monkeypatch.setenv("WEBTOON_PRICEBOOK", str(path))
    b = load_pricebook(path)
    fake_fal.configure(prices={}, pricing={
        FLASH: {"unit_price": float(b.entry(FLASH).price.usd_per_mp), "unit": "megapixels"},
        TURBO: {"unit_price": float(b.entry(TURBO).price.usd_per_mp), "unit": "megapixels"},
        SEEDREAM: {"unit_price": float(b.entry(SEEDREAM).price.usd_per_image), "unit": "images"}})
    return path


def refresh(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["prices", "refresh", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_refresh_with_no_change_writes_nothing(book, capsys):
    before = book.read_bytes()
    code, out, err = refresh(capsys, "--write")
    assert code == 0, out + err
    assert "3 same, 0 changed, 0 unit change(s)" in out and "CHANGED" not in out and "UNIT CHANGE" not in out
    assert re.search(r"fal-ai/flux/schnell .*unknown to fal", out)  # listed as such
    assert book.read_bytes() == before


def test_a_price_change_is_shown_and_not_written_without_write(book, fake_fal, capsys):
    before = book.read_bytes()
    fake_fal.configure(pricing={FLASH: {"unit_price": 0.006, "unit": "megapixels"}})
    code, out, _ = refresh(capsys)
    assert code == 1  # the book differs from fal
    assert re.search(r"fal-ai/flux-2/flash +\$0\.005 +-> \$0\.006 +per megapixel +CHANGED", out), out
    assert "nothing written: run `webtoon prices refresh --write`" in out
    assert book.read_bytes() == before


def test_a_unit_change_is_flagged_and_never_written(book, fake_fal, capsys):
    before = book.read_bytes()
    fake_fal.configure(pricing={TURBO: {"unit_price": 0.03, "unit": "image"}})
    code, out, _ = refresh(capsys, "--write")
    assert code == 1
    assert re.search(r"fal-ai/flux-2/turbo +\$0\.008 +\$0\.03 +per megapixel -> per image +UNIT CHANGE", out), out
    assert "edit these entries' price rules by hand: fal-ai/flux-2/turbo" in out
    assert book.read_bytes() == before


def _entry_lines(lines: list[str], endpoint: str) -> range:
    start = next(i for i, line in enumerate(lines) if f"{{endpoint: {endpoint}," in line)
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("     "))
    return range(start, end)


def test_write_changes_only_the_changed_entries_price_read_and_source(book, fake_fal, capsys):
    original = book.read_text()
    fake_fal.configure(pricing={FLASH: {"unit_price": 0.006, "unit": "megapixels"},
                                SEEDREAM: {"unit_price": 0.035, "unit": "images"},
                                TURBO: {"unit_price": 0.03, "unit": "image"}})  # a unit change: not written
    code, out, _ = refresh(capsys, "--write")
    assert code == 1  # the unit change is still to edit by hand
    assert "wrote 2 price(s)" in out and "written" in out
    api = f"{fake_fal.base_url}/v1/models/pricing?endpoint_id="
    today = dt.date.today().isoformat()

    lines = original.splitlines(keepends=True)  # the expected file: the original with three values per entry
    for endpoint, field, new in [(FLASH, "usd_per_mp", "0.006"), (SEEDREAM, "usd_per_image", "0.035")]:
        for i in _entry_lines(lines, endpoint):
            lines[i] = re.sub(rf'{field}: "[0-9.]+"', f'{field}: "{new}"', lines[i])
            lines[i] = re.sub(r'source: "[^"]*"', f'source: "{api}{endpoint}"', lines[i])
            lines[i] = re.sub(r"read: \d{4}-\d\d-\d\d", f"read: {today}", lines[i])
    assert book.read_text() == "".join(lines)  # every other byte as it was

    b = load_pricebook(book)
    assert b.entry(FLASH).price.usd_per_mp == Decimal("0.006") and b.entry(FLASH).read == dt.date.today()
    assert b.entry(FLASH).source == f"{api}{FLASH}"
    assert b.entry(SEEDREAM).price.usd_per_image == Decimal("0.035")
    assert b.entry(TURBO) == load_pricebook(REPO_ROOT / "data" / "pricebook.yaml").entry(TURBO)  # untouched
    code, out, _ = refresh(capsys)  # fal and the book now agree but for the unit change
    assert "2 same, 0 changed, 1 unit change(s)" in out and code == 1


def test_pages_and_chunks_give_the_same_answer(book, fake_fal):
    fake_fal.configure(pricing_page_size=1, pricing={FLASH: {"unit_price": 0.006, "unit": "megapixels"}})
    paged = refresh_prices(book, TEST_KEY, chunk=25)  # two calls: pages of one; a 404, asked one by one
    fake_fal.configure(pricing_page_size=50)
    whole = refresh_prices(book, TEST_KEY)
    assert [(c.endpoint, c.status, c.new) for c in paged.checks] == [(c.endpoint, c.status, c.new) for c in whole.checks]
    assert {c.endpoint for c in whole.checks if c.status != "unknown"} == {FLASH, TURBO, SEEDREAM}


@pytest.mark.parametrize("env, message", [
    ({"FAL_KEY": ""}, "FAL_KEY is not set"),
    ({"FAL_KEY": "not-the-key"}, "fal refused the key (401"),
    ({"WEBTOON_FAL_API_URL": "https://127.0.0.1:9/v1"}, "fal could not be reached"),
])
def test_refresh_errors_are_clear_and_write_nothing(book, monkeypatch, capsys, env, message):
    before = book.read_bytes()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, out, err = refresh(capsys, "--write")
    assert code == 2 and message in err and "Traceback" not in err and out == ""
    assert "not-the-key" not in err and TEST_KEY not in err
    assert book.read_bytes() == before


def test_rules_compare_in_their_own_units():
    b = load_pricebook(REPO_ROOT / "data" / "pricebook.yaml")
    llm = b.entry("fal-ai/any-llm")
    per_million = llm.price.usd_per_million_tokens
    same = compare(llm, FalPrice(llm.endpoint, per_million, "1M tokens", "USD"))
    assert same.status == "same"
    per_token = compare(llm, FalPrice(llm.endpoint, per_million * 2 / 1_000_000, "tokens", "USD"))
    assert per_token.status == "changed" and per_token.new == per_million * 2 and "output" in per_token.note
    veo = b.entry("fal-ai/veo3.1")  # four tiers: compared with the default one, never written
    tiered = compare(veo, FalPrice(veo.endpoint, Decimal("0.2"), "seconds", "USD"))
    assert tiered.status == "changed" and not tiered.writable and "tiers by hand" in tiered.note
    assert compare(veo, FalPrice(veo.endpoint, Decimal("0.4"), "video", "USD")).status == "unit_change"
    assert fal_unit("compute seconds")[0] != "second"


# -- reconcile: the ledger against the platforms ------------------------------------------------------------
def clear_of_the_hour(margin: float = 5) -> None:
    """Wait until the hour has at least ``margin`` seconds left, so a test's requests and their ledger
    rows fall in one usage bucket."""
    now = dt.datetime.now(dt.timezone.utc)
    left = 3600 - (now.minute * 60 + now.second + now.microsecond / 1e6)
    if left < margin:
        time.sleep(left + 0.5)


@pytest.fixture
def data(layout, fake_fal, monkeypatch) -> DataLayout:
    """A data root whose fal rows come through the real fal-client from the fake, with an admin key."""
    fake_fal.configure(admin_key=ADMIN_KEY)
    monkeypatch.setenv("FAL_ADMIN_KEY", ADMIN_KEY)
    return layout


def generate(layout: DataLayout, *prompts: str) -> None:
    gw = new_gateway(layout.root)  # the store and ledger of the data root
    try:
        for p in prompts:
            gw.generate(panel_request(p))
    finally:
        gw.provider.close()
        gw.ledger.close()


def reconcile(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["reconcile", *args])
    out, err = capsys.readouterr()
    return code, out, err


def records(layout: DataLayout) -> list[dict]:
    return [json.loads(line) for line in layout.reconciliation_path.read_text().splitlines()]


def test_units_and_usage_differences_are_found_priced_stored_and_judged(data, fake_fal, capsys):
    clear_of_the_hour()
    fake_fal.configure(faults=[{"kind": "extra_units", "units": 1, "match": "first"}])
    generate(data, "first panel", "second panel")
    first = next(r for r in read_rows(data.ledger_dir) if r.provider_request_id and r.units == 1
                 and r.billable_units == 2)

    code, out, err = reconcile(capsys)
    assert code == 0, out + err  # $0.005 apart: within the tolerance
    assert "nothing to reconcile" in out and "Traceback" not in err
    assert re.search(rf"ok +fal_units +{FLASH} +row {first.id} +ledger \$0\.005 +platform \$0\.01 +"
                     r"difference \+\$0\.005", out), out
    assert re.search(rf"ok +fal_usage +{FLASH} +\S+ \S+ \(hour\) +ledger \$0\.01 +platform \$0\.015 +"
                     r"difference \+\$0\.005", out), out
    assert re.search(r"fal_units +2 row\(s\) +1 +0 +\+\$0\.005 +\$0\.00", out), out
    assert re.search(r"fal_usage +1 endpoint-hour\(s\) +1 +0 +\+\$0\.005", out), out
    assert "bfl_cost   not compared: no bfl rows" in out
    got = {r["source"]: r for r in records(data)}
    assert got["fal_units"]["row_id"] == first.id and got["fal_units"]["ledger_units"] == "1"
    assert (Decimal(got["fal_units"]["difference_usd"]), got["fal_units"]["drift"]) == (PAID, False)
    assert Decimal(got["fal_usage"]["platform_usd"]) == 3 * PAID and got["fal_usage"]["timeframe"] == "hour"

    # a tighter tolerance: the same differences are drift, listed first, and the exit code says so
    code, out, _ = reconcile(capsys, "--tolerance", "0.001", "--tolerance-percent", "0")
    assert code == RECONCILE_DRIFT
    body = out.split("UTC (drift")[1]
    assert body.index("DRIFT fal_units") < body.index("DRIFT fal_usage")
    assert "2 difference(s), 2 drift (+$0.01)" in out

    runs = cost_sql(data, "SELECT source, differences, drift, difference_usd FROM reconciliation_runs "
                          "ORDER BY checked_at, source")
    assert runs == [("fal_units", 1, 0, PAID), ("fal_usage", 1, 0, PAID),
                    ("fal_units", 1, 1, PAID), ("fal_usage", 1, 1, PAID)]
    (row,) = cost_sql(data, f"SELECT ledger_usd, platform_usd, ledger_units, platform_units, unit, drift "
                            f"FROM reconciliation WHERE source = 'fal_units' AND drift")
    assert row == (PAID, 2 * PAID, 1, 2, "megapixel", True)


def test_a_charge_the_ledger_cannot_explain_is_drift_in_its_bucket(data, fake_fal, capsys):
    clear_of_the_hour()
    generate(data, "a panel")
    fake_fal.configure(phantom_bills=[{"endpoint_id": FLASH, "units": 10}])  # a billing glitch: $0.05
    code, out, _ = reconcile(capsys)
    assert code == RECONCILE_DRIFT
    assert re.search(rf"DRIFT fal_usage +{FLASH} .* ledger \$0\.005 +platform \$0\.055 +difference \+\$0\.05 ", out)
    assert re.search(r"fal_units +1 row\(s\) +0 +0", out)  # the one result was billed as counted
    (row,) = cost_sql(data, "SELECT source, endpoint, difference_usd, drift, bucket IS NOT NULL FROM reconciliation")
    assert row == ("fal_usage", FLASH, Decimal("0.05"), True, True)


def bfl_row(billed: str, listed: str, status: str = "generated", **kw) -> LedgerRow:
    base = dict(time=dt.datetime.now(dt.timezone.utc), run_id="r", series="s", episode="ep01", asset="panels",
                item="p01", reusable=False, provider="bfl", endpoint="bfl/flux-2-pro", request_key="k",
                status=status, billed_usd=Decimal(billed), list_usd=Decimal(listed), credits=Decimal(0))
    return LedgerRow(**{**base, **kw})


def write_rows(layout: DataLayout, *rows: LedgerRow) -> None:
    ledger = Ledger(layout.ledger_dir)
    try:
        for r in rows:
            ledger.append(r)
    finally:
        ledger.close()


def test_bfl_cost_against_the_books_quote(layout, capsys):
    rows = [bfl_row("0.045", "0.045"), bfl_row("0.06", "0.045"), bfl_row("0.046", "0.045"),
            bfl_row("0", "0.045", status="failed"),  # unbilled: no price to compare
            bfl_row("0.05", "0.045", time=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))]  # before --since
    write_rows(layout, *rows)
    code, out, err = reconcile(capsys, "--since", (dt.date.today() - dt.timedelta(days=1)).isoformat())
    assert code == RECONCILE_DRIFT, out + err
    lines = [line for line in out.splitlines() if "bfl_cost " in line and "row " in line]
    assert len(lines) == 2 and lines[0].lstrip().startswith("DRIFT") and rows[1].id in lines[0]
    assert "ledger $0.045  platform $0.06  difference +$0.015" in lines[0]
    assert lines[1].lstrip().startswith("ok") and rows[2].id in lines[1]
    assert re.search(r"bfl_cost +3 row\(s\) +2 +1 +\+\$0\.016 +\+\$0\.015", out), out
    assert "fal_usage  not compared: no fal rows to compare" in out
    got = {r["row_id"]: r for r in records(layout)}
    assert set(got) == {rows[1].id, rows[2].id} and got[rows[1].id]["drift"] is True
    assert cost_sql(layout, "SELECT count(*), count(*) FILTER (WHERE drift) FROM reconciliation "
                            "WHERE source = 'bfl_cost'") == [(2, 1)]


def fal_row(**kw) -> LedgerRow:
    base = dict(time=dt.datetime.now(dt.timezone.utc), run_id="r", series="s", episode="ep01", asset="panels",
                item="p01", reusable=False, provider="fal", endpoint=FLASH, request_key="k", status="generated",
                billed_usd=PAID, list_usd=PAID, credits=Decimal(0), units=Decimal(1), unit="megapixel",
                billable_units=Decimal(1), provider_request_id="rq")
    return LedgerRow(**{**base, **kw})


def test_without_an_admin_key_usage_is_skipped_and_a_refused_key_is_said(layout, fake_fal, monkeypatch, capsys):
    lost = fal_row(status="unknown", provider_request_id=None, billable_units=None)  # a lost submission answer
    write_rows(layout, fal_row(), lost)
    code, out, err = reconcile(capsys)
    assert code == 1 and "still counted at $0.005: no request id, and no usage report (set FAL_ADMIN_KEY)" in out
    assert "fal_usage  not compared: FAL_ADMIN_KEY is not set" in out
    assert "0 difference(s), 0 drift" in out and not layout.reconciliation_path.exists()
    fake_fal.configure(admin_key=ADMIN_KEY)
    monkeypatch.setenv("FAL_ADMIN_KEY", "not-the-admin-key")
    code, out, err = reconcile(capsys)
    assert code == 1 and "still counted at $0.005: fal's usage API: fal refused the key (401" in out
    assert "fal_usage  not compared: fal's usage API: fal refused the key (401" in out and "FAL_ADMIN_KEY" in err
    assert "Traceback" not in err and "not-the-admin-key" not in out + err
    monkeypatch.setenv("FAL_ADMIN_KEY", ADMIN_KEY)  # fal billed nothing here: the unknown is settled at -$0.005,
    code, out, err = reconcile(capsys)  # and the hand-written row it never billed is a difference within tolerance
    assert code == 0 and "not_billed (correction $-0.005)" in out, out + err
    assert re.search(rf"ok +fal_usage +{FLASH} .* ledger \$0\.005 +platform \$0\.00 +difference -\$0\.005", out)


def test_usage_buckets_edges_and_corrections():
    """Per bucket: a request fal billed at 10:59:59 and the ledger recorded at 11:00:01 is two
    differences that cancel (not drift); an unknown row counts with the correction settling it;
    a rule without a single unit price prices units at the row's list price per unit."""
    t = dt.datetime(2026, 11, 22, 10, 30, tzinfo=dt.timezone.utc)
    unknown = fal_row(time=t, status="unknown", billable_units=None, units=None, provider_request_id=None)
    rows = [fal_row(time=t.replace(minute=59, second=58)),
            fal_row(time=t.replace(hour=11, minute=0, second=1)),  # billed by fal at 10:59:59
            unknown, fal_row(time=t + dt.timedelta(days=3), status="reconciled", billed_usd=-PAID,
                             settles=unknown.id, units=None, billable_units=None),  # not billed after all
            fal_row(time=t, endpoint="fal-ai/flux-2-pro", units=Decimal(2), billable_units=Decimal(3),
                    billed_usd=Decimal("0.045"), list_usd=Decimal("0.045"))]

    class Usage:
        def usage_buckets(self, endpoints, start, end, timeframe="hour"):
            hour = t.replace(minute=0)
            return [UsageBucket(FLASH, hour, Decimal(2), "megapixels", 2 * PAID),
                    UsageBucket("fal-ai/flux-2-pro", hour, Decimal(3), "megapixels", Decimal("0.0675")),
                    UsageBucket(FLASH, hour + dt.timedelta(days=5), Decimal(1), "megapixels", PAID)]  # after `until`

    c = compare_with_platforms(rows, load_pricebook(REPO_ROOT / "data" / "pricebook.yaml"), Usage(),
                               since=t - dt.timedelta(hours=1), until=t + dt.timedelta(hours=2),
                               tolerance=Tolerance(Decimal("0.001"), Decimal(0)))
    usage = {(d.endpoint, d.bucket.hour): d for d in c.differences if d.source == "fal_usage"}
    assert {k: d.difference_usd for k, d in usage.items()} == {(FLASH, 10): PAID, (FLASH, 11): -PAID,
                                                              ("fal-ai/flux-2-pro", 10): Decimal("0.0225")}
    assert not usage[(FLASH, 10)].drift and not usage[(FLASH, 11)].drift and "edge of two buckets" in \
        usage[(FLASH, 10)].note
    assert usage[("fal-ai/flux-2-pro", 10)].drift
    (units,) = [d for d in c.differences if d.source == "fal_units"]
    assert units.endpoint == "fal-ai/flux-2-pro" and units.difference_usd == Decimal("0.0225")  # 0.045 / 2 per MP
    assert c.checks["fal_usage"].compared == 3


def test_a_damaged_reconciliation_line_is_left_out_and_named(layout, capsys):
    write_rows(layout, bfl_row("0.06", "0.045"))
    assert reconcile(capsys)[0] == RECONCILE_DRIFT
    with layout.reconciliation_path.open("a") as f:
        f.write('{"source": "bfl_cost", "checked_at": "yesterday"}\n{"torn')
    rows, problems = read_differences(layout.reconciliation_path)
    assert len(rows) == 1 and [p.split(": ", 1)[0].rsplit(":", 1)[1] for p in problems] == ["2", "3"]
    code, out, err = reconcile(capsys)  # appends on a line of its own; the refresh names the bad lines
    assert code == RECONCILE_DRIFT and "reconciliation.jsonl:2: not a reconciliation record" in err
    assert cost_sql(layout, "SELECT count(*) FROM reconciliation") == [(2,)]
