"""Every fault of fal's queue API, through the real fal-client against the loopback fake:
what is retried (and by whom), what is charged, and what is written to the ledger."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from webtoon_assets.gateway import Attribution, Gateway, GenerationRequest, ImageStore
from webtoon_assets.gateway.providers import select_provider
from webtoon_assets.gateway.retry import GenerationFailed, AttemptPolicy
from webtoon_assets.ledger import Ledger, read_rows
from webtoon_assets.paths import REPO_ROOT
from webtoon_assets.pricing import load_pricebook

PROMPT = "a lantern shop at night"


def panel_request(prompt: str = PROMPT, seed: int = 11) -> GenerationRequest:
    return GenerationRequest(endpoint="fal-ai/flux-2/flash", attribution=Attribution(
        series="s", episode="ep01", asset="panels", item="p07"),
        arguments={"prompt": prompt, "image_size": "square_hd", "seed": seed})


@pytest.fixture
def gateway(fake_fal, tmp_path):
    gw = Gateway(ImageStore(tmp_path / "store"), select_provider("", None, tmp_path / "store"),
                 Ledger(tmp_path / "ledger"), load_pricebook(REPO_ROOT / "data" / "pricebook.yaml"),
                 retry=AttemptPolicy(attempts=3, base_seconds=0.01, nsfw_retries=2))
    yield gw
    gw.provider.close()


def rows(tmp_path: Path):
    return [(r.status, r.billed_usd) for r in read_rows(tmp_path / "ledger")]


PAID = Decimal("0.005")  # 1 MP on FLUX.2 [flash]


def test_a_clean_request_is_billed_with_fals_units(gateway, fake_fal, tmp_path):
    result = gateway.generate(panel_request())
    assert result.status == "generated" and (result.width, result.height) == (1024, 1024)
    row = next(read_rows(tmp_path / "ledger"))
    assert (row.billed_usd, row.list_usd, row.billable_units, row.unit) == (PAID, PAID, 1, "megapixel")
    assert row.provider == "fal" and row.provider_request_id
    assert fake_fal.stats()["counts"]["paid"] == 1


@pytest.mark.parametrize("kind, count", [("429", 3), ("503_nginx", 2)])
def test_answers_that_queued_nothing_are_sent_again_within_the_attempt(gateway, fake_fal, tmp_path, kind, count):
    fake_fal.configure(faults=[{"kind": kind, "count": count}])
    assert gateway.generate(panel_request()).status == "generated"
    c = fake_fal.stats()["counts"]
    assert c[f"fault_{kind}"] == count and c["submitted"] == 1 and c["paid"] == 1
    assert rows(tmp_path) == [("generated", PAID)]  # one attempt: fal answered, so nothing was queued


@pytest.mark.parametrize("kind", ["500", "503_id", "error"])
def test_server_errors_are_retried_by_us_and_not_charged(gateway, fake_fal, tmp_path, kind):
    fake_fal.configure(faults=[{"kind": kind, "count": 1}])
    assert gateway.generate(panel_request()).status == "generated"
    assert rows(tmp_path) == [("failed", 0), ("generated", PAID)]
    assert fake_fal.stats()["counts"]["paid"] == 1


def test_server_errors_give_up_after_the_bounded_attempts(gateway, fake_fal, tmp_path):
    fake_fal.configure(faults=[{"kind": "500", "count": 10}])
    with pytest.raises(GenerationFailed, match=r"panels p07 of s/ep01 failed after 3 attempt\(s\).*500"):
        gateway.generate(panel_request())
    assert rows(tmp_path) == [("failed", 0)] * 3
    assert fake_fal.stats()["counts"].get("paid", 0) == 0


def test_a_422_fails_at_once_with_fals_message(gateway, fake_fal, tmp_path):
    fake_fal.configure(faults=[{"kind": "422", "count": 1}])
    with pytest.raises(GenerationFailed, match=r"failed after 1 attempt.*422.*prompt is too long"):
        gateway.generate(panel_request())
    assert rows(tmp_path) == [("failed", 0)]
    assert fake_fal.stats()["counts"]["submit_attempts"] == 1  # never resubmitted


def test_a_request_past_the_timeout_is_cancelled_and_retried(gateway, fake_fal, tmp_path):
    gateway.provider.settings = gateway.provider.settings.model_copy(update={"timeout_seconds": 0.4})
    fake_fal.configure(faults=[{"kind": "slow", "count": 1, "seconds": 60}])
    assert gateway.generate(panel_request()).status == "generated"
    c = fake_fal.stats()["counts"]
    assert c["cancels"] == 1 and c["submitted"] == 2 and c["paid"] == 1
    failed = [r for r in read_rows(tmp_path / "ledger") if r.status == "failed"]
    assert len(failed) == 1 and "timed out" in failed[0].error and failed[0].billed_usd == 0


def test_malformed_result_json_is_fetched_again_not_resubmitted(gateway, fake_fal, tmp_path):
    fake_fal.configure(faults=[{"kind": "malformed_json", "count": 1}])
    assert gateway.generate(panel_request()).status == "generated"
    c = fake_fal.stats()["counts"]
    assert c["result_requests"] == 2 and c["submitted"] == 1 and c["paid"] == 1
    assert rows(tmp_path) == [("generated", PAID)]


def test_corrupt_image_bytes_are_downloaded_again(gateway, fake_fal, tmp_path):
    fake_fal.configure(faults=[{"kind": "corrupt_image", "count": 1, "times": 1}])
    result = gateway.generate(panel_request())
    assert result.status == "generated" and fake_fal.stats()["counts"]["downloads"] == 2
    assert rows(tmp_path) == [("generated", PAID)]


def test_an_oversized_image_is_refused_unread(gateway, fake_fal, tmp_path):
    fake_fal.configure(faults=[{"kind": "oversized", "count": 1}])
    with pytest.raises(GenerationFailed, match=r"refused the image of fal request .*(40000x40000 px is over the|over the pixel cap)"):
        gateway.generate(panel_request())
    assert rows(tmp_path) == [("failed", PAID)]
    assert fake_fal.stats()["counts"]["submitted"] == 1  # not retried: it would come back the same


def test_an_image_over_the_byte_cap_is_refused(gateway, fake_fal, tmp_path):
    gateway.provider.settings = gateway.provider.settings.model_copy(update={"max_image_bytes": 1000})
    with pytest.raises(GenerationFailed, match="over the 1000-byte cap|more than the 1000-byte cap"):
        gateway.generate(panel_request())


def test_nsfw_output_is_retried_with_a_new_seed(gateway, fake_fal, tmp_path):
    fake_fal.configure(faults=[{"kind": "nsfw", "count": 1}])
    result = gateway.generate(panel_request())
    assert result.status == "generated"
    assert rows(tmp_path) == [("failed", PAID), ("generated", PAID)]  # a flagged image is still charged
    record = gateway.store.get(result.key)
    assert record["arguments"]["seed"] == 11 and record["sent_seed"] != 11  # stored under the asked-for key
    assert "NSFW" in next(read_rows(tmp_path / "ledger")).error


def test_persistent_nsfw_fails_naming_the_panel(gateway, fake_fal, tmp_path):
    fake_fal.configure(faults=[{"kind": "nsfw", "count": 10}])
    with pytest.raises(GenerationFailed, match=r"panels p07 of s/ep01 failed after 3 attempt\(s\).*NSFW"):
        gateway.generate(panel_request())
    assert rows(tmp_path) == [("failed", PAID)] * 3
    assert fake_fal.stats()["counts"]["paid"] == 3


def test_references_upload_once_per_content_and_are_reused(fake_fal, tmp_path, monkeypatch):
    from PIL import Image

    from webtoon_assets.gateway import Reference
    from webtoon_assets.gateway.store import sha256_file
    monkeypatch.setenv("WEBTOON_FAL_REFERENCES", "upload")
    ref_path = tmp_path / "mira.png"
    Image.new("RGB", (64, 64), "teal").save(ref_path)
    ref = Reference(role="character:mira", path=str(ref_path), sha256=sha256_file(ref_path), width=64, height=64)
    gw = Gateway(ImageStore(tmp_path / "store"), select_provider("", None, tmp_path / "store"),
                 Ledger(tmp_path / "ledger"), load_pricebook(REPO_ROOT / "data" / "pricebook.yaml"))
    try:
        for i in range(3):
            gw.generate(panel_request(seed=i).model_copy(update={"endpoint": "fal-ai/flux-2/flash/edit",
                                                                 "references": [ref]}))
    finally:
        gw.provider.close()
    c = fake_fal.stats()["counts"]
    assert c["uploads"] == 1 and c["paid"] == 3
    rows_ = list(read_rows(tmp_path / "ledger"))
    assert all(r.megapixels == 2 and r.billed_usd == Decimal("0.010") for r in rows_)  # 1 MP out + 1 MP input


@pytest.mark.parametrize("ahead", [0, 2])
def test_requests_wait_in_fals_queue_beyond_the_accounts_concurrency(fake_fal, tmp_path, monkeypatch, ahead):
    """fal runs `concurrency` requests and queues the rest (none is refused for concurrency): the
    provider keeps `queue_ahead` more there, so the next starts when a slot frees, and no more."""
    monkeypatch.setenv("WEBTOON_FAL_CONCURRENCY", "2")
    monkeypatch.setenv("WEBTOON_FAL_QUEUE_AHEAD", str(ahead))
    fake_fal.configure(latency=0.2, slots=2)
    gw = Gateway(ImageStore(tmp_path / "store"), select_provider("", None, tmp_path / "store"),
                 Ledger(tmp_path / "ledger"), load_pricebook(REPO_ROOT / "data" / "pricebook.yaml"))
    try:
        made = list(gw.generate_many([panel_request(seed=s) for s in range(8)]))
    finally:
        gw.provider.close()
    c = fake_fal.stats()["counts"]
    assert len(made) == 8 and c["submitted"] == c["paid"] == 8
    assert c["peak_on_fal"] == 2 + ahead  # running plus waiting at fal, never more
