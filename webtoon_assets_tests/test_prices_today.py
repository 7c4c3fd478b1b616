"""The price book as of 2026-11 (issue 12's figures) and the request each endpoint family is sent."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from PIL import Image

from webtoon_assets.bible import BibleError, load_series
from webtoon_assets.gateway import Attribution, GenerationRequest, Reference
from webtoon_assets.gateway.gateway import Gateway
from webtoon_assets.gateway.providers import LocalProvider, NoProvider, Providers
from webtoon_assets.gateway.store import ImageStore
from webtoon_assets.ledger import Ledger, read_rows
from webtoon_assets.pricing import RetiredEndpoint, load_pricebook, quote
from webtoon_assets_tests.conftest import SAMPLE

BOOK = load_pricebook()


def usd(endpoint: str, request: dict) -> Decimal:
    return quote(endpoint, request, book=BOOK).usd


def refs(*sizes: tuple[int, int]) -> dict:
    return {"image_urls": [f"r{i}" for i in range(len(sizes))],
            "input_image_sizes": [{"width": w, "height": h} for w, h in sizes]}


def px(w: int, h: int) -> dict:
    return {"image_size": {"width": w, "height": h}}


# -- FLUX.2 on fal ---------------------------------------------------------------------------------------
def test_a_fal_flux2_input_above_4_mp_is_billed_as_4_mp():
    # a 1 MP panel with one 6 MP reference (3000x2000 = ceil 5.7 = 6 MP of 1024^2): 1 + 4 MP, not 1 + 6
    assert usd("fal-ai/flux-2/flash/edit", {**px(1024, 1024), **refs((3000, 2000))}) == Decimal("0.025")
    assert usd("fal-ai/flux-2/edit", {**px(1024, 1024), **refs((3000, 2000))}) == Decimal("0.060")
    # a 3 MP input stays 3 MP
    assert usd("fal-ai/flux-2/flash/edit", {**px(1024, 1024), **refs((2048, 1536))}) == Decimal("0.020")


def test_fal_flux2_pro_edit_counts_up_to_nine_inputs():
    nine = refs(*[(1024, 1024)] * 9)
    assert usd("fal-ai/flux-2-pro/edit", {**px(1024, 1024), **nine}) == Decimal("0.03") + 9 * Decimal("0.015")
    ten = refs(*[(1024, 1024)] * 10)  # the tenth is not read, so not billed
    assert usd("fal-ai/flux-2-pro/edit", {**px(1024, 1024), **ten}) == Decimal("0.165")


# -- BFL: first MP + (further output MP + input MP) x rate, MP to two decimals ----------------------------
@pytest.mark.parametrize("model, first, rate", [("klein-4b", "0.014", "0.001"), ("klein-9b", "0.015", "0.002"),
                                                ("pro", "0.03", "0.015"), ("max", "0.07", "0.03"),
                                                ("flex", "0.05", "0.05")])
def test_bfl_prices_are_first_megapixel_plus_further_and_input_megapixels(model, first, rate):
    first, rate = Decimal(first), Decimal(rate)
    endpoint = f"bfl/flux-2-{model}"
    assert usd(endpoint, px(1000, 1000)) == first  # exactly 1 MP out, no input
    assert usd(endpoint, {**px(1000, 1000), **refs((1000, 1000))}) == first + rate  # "from" price of an edit
    # 2 MP out (1 further) and two 1024x768 inputs (0.79 MP each, as BFL reports them)
    assert usd(endpoint, {**px(2000, 1000), **refs((1024, 768), (1024, 768))}) == first + (1 + Decimal("1.58")) * rate


def test_bfl_megapixels_are_reported_to_two_decimals_not_rounded_up():
    q = quote("bfl/flux-2-klein-9b", {**px(1024, 1024), **refs((768, 1024))}, book=BOOK)
    # 1024x1024 = 1.048576 -> 1.05 MP; 768x1024 = 0.786432 -> 0.79 MP (fal would bill 1 + 1)
    assert q.megapixels == Decimal("1.84")
    assert q.usd == Decimal("0.015") + (Decimal("0.05") + Decimal("0.79")) * Decimal("0.002")
    assert q.credits == q.usd * BOOK.credits_per_usd
    # an output under 1 MP is still one first megapixel, never less
    assert usd("bfl/flux-2-klein-4b", px(768, 1024)) == Decimal("0.014")


# -- Nano Banana 2, the trainer, retired models --------------------------------------------------------
def test_nano_banana_2_edit_is_8_cents_times_its_resolution_tier():
    e = "fal-ai/nano-banana-2/edit"
    assert usd(e, {"aspect_ratio": "3:4"}) == Decimal("0.08")
    assert usd(e, {"aspect_ratio": "3:4", "resolution": "1K"}) == Decimal("0.08")
    assert usd(e, {"aspect_ratio": "3:4", "resolution": "0.5K"}) == Decimal("0.08") * Decimal("0.75")
    assert usd(e, {"aspect_ratio": "3:4", "resolution": "2K"}) == Decimal("0.08") * Decimal("1.5")
    assert usd(e, {"aspect_ratio": "3:4", "resolution": "4K"}) == Decimal("0.08") * 2


def test_the_flux2_trainer_is_priced_per_step():
    assert usd("fal-ai/flux-2-trainer", {}) == Decimal("6.4")  # its default 1000 steps
    assert usd("fal-ai/flux-2-trainer", {"steps": 500}) == Decimal("0.0064") * 500


def test_every_entry_names_its_source_and_the_day_it_was_read():
    for e in BOOK.entries:
        assert e.source and e.read <= dt.date(2026, 11, 22), e.endpoint
    today = [e.endpoint for e in BOOK.entries if e.read == dt.date(2026, 11, 22)]
    assert {"bfl/flux-2-klein-4b", "fal-ai/nano-banana-2/edit", "fal-ai/flux-2-trainer", "fal-ai/flux-2-pro/edit"} <= set(today)


def test_retired_models_are_refused_before_any_spend(layout):
    retired = BOOK.entry("gemini/gemini-2.5-flash-image")
    assert retired.retired == dt.date(2026, 10, 2)
    with pytest.raises(RetiredEndpoint, match="retired by gemini on 2026-10-02; use gemini/gemini-3-pro-image"):
        BOOK.usable("gemini/gemini-2.5-flash-image")
    assert "google/gemini-2.5-flash" not in json.dumps({k: v.model_dump(mode="json") for k, v in BOOK.argument_schemas["any_llm"].items()})
    series = layout.series_dir(SAMPLE) / "series.yaml"
    series.write_text(series.read_text() + "\ntrial:\n  candidates: [fal-ai/flux-2/flash/edit, gemini/gemini-2.5-flash-image]\n")
    with pytest.raises(BibleError) as e:
        load_series(layout, SAMPLE, book=BOOK)
    assert "trial.candidates[1]: 'gemini/gemini-2.5-flash-image' was retired by gemini on 2026-10-02" in str(e.value)
    assert f"line {len(series.read_text().splitlines())}" in str(e.value)


# -- the request each endpoint family is sent -------------------------------------------------------------
def fitted(endpoint: str, arguments: dict, n_refs: int = 0) -> tuple[dict, list[int]]:
    return BOOK.entry(endpoint).fit(arguments, list(range(n_refs)))


def test_nano_banana_takes_an_aspect_ratio_and_a_resolution_not_image_size():
    args, _ = fitted("fal-ai/nano-banana/edit", {"prompt": "p", "image_size": "portrait_4_3", "seed": 1})
    assert args == {"prompt": "p", "aspect_ratio": "3:4", "seed": 1}  # v1 has no resolution
    args, _ = fitted("fal-ai/nano-banana-pro/edit", {"image_size": "landscape_16_9"})
    assert args == {"aspect_ratio": "16:9", "resolution": "1K"}
    args, _ = fitted("fal-ai/nano-banana-2/edit", {"image_size": "square"})  # 512 px: the 0.5K tier
    assert args == {"aspect_ratio": "1:1", "resolution": "0.5K"}
    args, _ = fitted("fal-ai/nano-banana-pro", {"image_size": {"width": 2000, "height": 1000}, "resolution": "4K"})
    assert args == {"aspect_ratio": "21:9", "resolution": "4K"} or args == {"aspect_ratio": "16:9", "resolution": "4K"}
    assert args["resolution"] == "4K"  # the series' own choice wins


def test_seedream_45_sides_are_1920_to_4096_and_seedream_keeps_the_last_10_references():
    args, kept = fitted("fal-ai/bytedance/seedream/v4.5/edit", {"image_size": "portrait_4_3"}, 12)
    assert args["image_size"] == {"width": 1920, "height": 2560}
    assert kept == list(range(2, 12))
    args, _ = fitted("fal-ai/bytedance/seedream/v4.5/text-to-image", {"image_size": {"width": 1000, "height": 4000}})
    assert 1920 <= min(args["image_size"].values()) and max(args["image_size"].values()) <= 4096
    _, kept = fitted("fal-ai/bytedance/seedream/v4/edit", {"image_size": "portrait_4_3"}, 11)
    assert kept == list(range(1, 11))


def test_flux2_pro_edit_reads_9_references_in_png_and_flash_turbo_dev_edit_read_the_first_4():
    args, kept = fitted("fal-ai/flux-2-pro/edit", {"image_size": "portrait_4_3"}, 11)
    assert kept == list(range(9)) and args["output_format"] == "png"
    args, kept = fitted("fal-ai/flux-2-pro/edit", {"image_size": "portrait_4_3", "output_format": "jpeg"}, 2)
    assert args["output_format"] == "jpeg"  # asked for in series.yaml: kept
    for endpoint in ("fal-ai/flux-2/flash/edit", "fal-ai/flux-2/turbo/edit", "fal-ai/flux-2/edit"):
        args, kept = fitted(endpoint, {"image_size": "portrait_4_3"}, 6)
        assert kept == [0, 1, 2, 3] and args == {"image_size": "portrait_4_3"}  # nothing else changes


def test_bfl_sizes_are_multiples_of_16_at_most_4_mp():
    args, kept = fitted("bfl/flux-2-klein-9b", {"image_size": {"width": 3000, "height": 2000}}, 6)
    w, h = args["image_size"]["width"], args["image_size"]["height"]
    assert w % 16 == 0 and h % 16 == 0 and w * h <= 4_000_000 and abs(w / h - 1.5) < 0.02
    assert len(kept) == 4  # klein reads 4 references, pro/flex/max 8
    assert len(fitted("bfl/flux-2-pro", {"image_size": "square_hd"}, 10)[1]) == 8
    assert fitted("bfl/flux-2-pro", {"image_size": "portrait_4_3"})[0] == {"image_size": "portrait_4_3"}


def test_the_gateway_sends_prices_and_keys_the_fitted_request(tmp_path):
    """Offline, the renderer draws what the endpoint would be asked for; the ledger prices the same
    references and size; an endpoint of a platform without a provider is refused before any spend."""
    store = ImageStore(tmp_path / "store")
    ledger = Ledger(tmp_path / "ledger")
    ref_path = tmp_path / "ref.png"
    Image.new("RGB", (1024, 768), "white").save(ref_path)
    references = [Reference(role=f"character:c{i}", path=str(ref_path), sha256=f"{i:064x}", width=1024, height=768)
                  for i in range(12)]
    who = Attribution(series="s", episode="ep01", asset="panels", item="p1")
    gw = Gateway(store, LocalProvider(), ledger, BOOK, run_id="t")
    result = gw.generate(GenerationRequest(endpoint="fal-ai/bytedance/seedream/v4.5/edit", attribution=who,
                                           arguments={"prompt": "p", "image_size": "portrait_4_3", "seed": 1},
                                           references=references))
    assert (result.width, result.height) == (1920, 2560)
    assert [r.role for r in result.request.references] == [f"character:c{i}" for i in range(2, 12)]
    result = gw.generate(GenerationRequest(endpoint="bfl/flux-2-klein-9b", attribution=who,
                                           arguments={"prompt": "p", "image_size": "portrait_4_3", "seed": 1},
                                           references=references))
    row = result.row
    assert row.list_usd == Decimal("0.015") + 4 * Decimal("0.79") * Decimal("0.002")  # 0.79 MP out, 4 inputs
    assert row.inputs == [(1024, 768)] * 4 and row.provider == "local"
    ledger.close()
    assert [r.endpoint for r in read_rows(tmp_path / "ledger")] == ["fal-ai/bytedance/seedream/v4.5/edit",
                                                                    "bfl/flux-2-klein-9b"]
    online = Gateway(store, Providers({"fal": LocalProvider()}), Ledger(tmp_path / "ledger2"), BOOK, run_id="t")
    with pytest.raises(NoProvider, match="bfl/flux-2-pro is made by bfl.*set BFL_API_KEY"):
        online.generate(GenerationRequest(endpoint="bfl/flux-2-pro", attribution=who,
                                          arguments={"prompt": "p", "image_size": "square_hd", "seed": 1}))
    assert not list((tmp_path / "ledger2").glob("*.jsonl")) or not read_rows(tmp_path / "ledger2")
