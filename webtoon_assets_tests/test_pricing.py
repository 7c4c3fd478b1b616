"""Every price rule kind, with worked examples from the seeds and the brief."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from webtoon_assets.pricing import QuoteError, UnknownEndpoint, load_pricebook, quote
from webtoon_assets.paths import REPO_ROOT

BOOK = load_pricebook(REPO_ROOT / "data" / "pricebook.yaml")


def q(endpoint, request, response=None):
    return quote(endpoint, request, response, book=BOOK)


# -- per megapixel (FLUX.2 on fal) --------------------------------------------------------------

def test_megapixels_round_up_per_image_and_count_each_reference():
    # BRIEF: a 1 MP panel with three 1 MP references is billed as 4 MP.
    r = q("fal-ai/flux-2/flash/edit", {"image_size": "square_hd", "image_urls": ["a", "b", "c"]})
    assert (r.usd, r.units, r.unit, r.megapixels) == (Decimal("0.020"), 4, "megapixel", 4)
    assert r.credits == Decimal("2.4")  # 120 credits per USD
    # 768x1024 is 0.75 MP, billed as 1; a small reference still counts as 1 MP
    r = q("fal-ai/flux-2/turbo/edit", {"image_size": "portrait_4_3", "image_urls": ["a"],
                                       "input_image_sizes": [{"width": 256, "height": 256}]})
    assert r.units == 2 and r.usd == Decimal("0.016")
    # custom size 1600x2000 = 3.05 MP -> 4 MP; num_images multiplies
    r = q("fal-ai/flux-2", {"image_size": {"width": 1600, "height": 2000}, "num_images": 2})
    assert r.units == 8 and r.usd == Decimal("0.096")


def test_only_the_first_four_references_are_billed():
    r = q("fal-ai/flux-2/flash/edit", {"image_size": "square_hd", "image_urls": list("abcdef")})
    assert r.units == 5  # 1 output + 4 inputs


def test_response_sizes_win_over_the_request():
    r = q("fal-ai/flux-2/flash", {"image_size": "square_hd"},
          {"images": [{"url": "x", "width": 2048, "height": 2048}]})
    assert r.units == 4 and r.usd == Decimal("0.020")


def test_exact_rounding_uses_width_times_height_over_a_million(tmp_path):
    # seeds/003: "calculate width x height / 1,000,000" for FLUX image-to-image at $0.03/MP
    book = tmp_path / "book.yaml"
    book.write_text("entries:\n- {endpoint: x/exact, platform: fal, model: X, kind: image, source: s, read: 2026-01-01,\n"
                    "   price: {rule: per_megapixel, usd_per_mp: '0.03', rounding: exact}}\n")
    r = quote("x/exact", {"image_size": "landscape_4_3"}, book=load_pricebook(book))
    assert r.units == Decimal("0.786432") and r.usd == Decimal("0.02359296")


def test_flux1_dev_text_to_image_from_the_seed():
    assert q("fal-ai/flux/dev", {"image_size": "landscape_4_3"}).usd == Decimal("0.025")


# -- first megapixel plus extra (FLUX.2 pro) ----------------------------------------------------

def test_pro_first_megapixel_then_extra_including_inputs():
    assert q("fal-ai/flux-2-pro", {"image_size": "square_hd"}).usd == Decimal("0.03")
    # 1 MP out + 3 references: 0.03 + 3 x 0.015
    assert q("fal-ai/flux-2-pro/edit", {"image_size": "square_hd", "image_urls": list("abc")}).usd == Decimal("0.075")
    # a 2 MP output: 0.03 + 1 x 0.015; BFL's "from $0.045" editing = one 1 MP input
    assert q("fal-ai/flux-2-pro", {"image_size": {"width": 2048, "height": 1024}}).usd == Decimal("0.045")
    # BFL counts megapixels of 10^6 px to two decimals: a 1000x1000 edit with one 1 MP input is "from $0.045"
    assert q("bfl/flux-2-pro", {"image_size": {"width": 1000, "height": 1000}, "image_urls": ["a"]}).usd == Decimal("0.045")


# -- per output image ---------------------------------------------------------------------------

def test_seedream_counts_output_images():
    # seeds/003: $0.04/image = 4.8 credits; BytePlus counts the response's `data` array
    r = q("byteplus/seedream/multi-image-fusion", {}, {"data": [{"url": "a"}, {"url": "b"}]})
    assert (r.usd, r.credits, r.units, r.unit) == (Decimal("0.08"), Decimal("9.6"), 2, "image")
    assert q("fal-ai/bytedance/seedream/v4/edit", {"num_images": 3}).usd == Decimal("0.09")
    assert q("fal-ai/bytedance/seedream/v4.5/text-to-image", {}, {"images": [{"url": "a"}]}).usd == Decimal("0.04")


def test_nano_banana_pro_tiers_by_resolution():
    assert q("fal-ai/nano-banana-pro", {}).usd == Decimal("0.15")
    assert q("fal-ai/nano-banana-pro", {"resolution": "4K"}).usd == Decimal("0.30")
    # seeds/000: Gemini charges the same at 1K and 2K; only 4K costs more
    assert q("gemini/gemini-3-pro-image", {"resolution": "2K"}).usd == q("gemini/gemini-3-pro-image", {}).usd


# -- per second, with tiers --------------------------------------------------------------------

def test_kling_per_second_from_the_request():
    r = q("fal-ai/kling-video/o1/image-to-video", {"duration": "5"})
    assert (r.usd, r.credits, r.seconds) == (Decimal("0.420"), Decimal("50.400"), 5)  # 10.08 credits/s


def test_veo_tiers_by_resolution_and_audio():
    # seeds/003: 18/42 credits per second with audio, 12/36 without
    per_s = {(res, audio): q("fal-ai/veo3.1", {"duration": "1s", "resolution": res, "generate_audio": audio}).credits
             for res in ("720p", "1080p") for audio in (True, False)}
    assert per_s == {("720p", True): 18, ("720p", False): 12, ("1080p", True): 42, ("1080p", False): 36}
    assert q("fal-ai/veo3.1/image-to-video", {"duration": "8s"}).usd == Decimal("1.20")  # defaults: 720p, audio
    with pytest.raises(QuoteError, match="no price tier for resolution='1080p'"):
        q("fal-ai/veo3.1/video-to-video", {"duration": 4, "resolution": "1080p"})  # 720p only


def test_duration_only_the_response_knows():
    r = q("fal-ai/kling-video/video-to-video", {}, {"video": {"url": "v", "duration": 10}})
    assert r.usd == Decimal("1.260")
    with pytest.raises(QuoteError, match="needs a duration"):
        q("fal-ai/kling-video/ai-avatar", {})


def test_wan_tiers():
    assert q("fal-ai/wan/text-to-video", {"duration": 5, "resolution": "480p"}).usd == Decimal("0.50")
    assert q("fal-ai/wan/image-to-video", {"duration": 5}).usd == Decimal("0.75")


# -- per token ----------------------------------------------------------------------------------

def test_text_to_speech_per_token_estimated_from_characters():
    # seeds/003: ~1000 chars = 250 tokens at $240/1M = $0.06
    r = q("fal-ai/text-to-speech", {"prompt": "x" * 1000})
    assert (r.units, r.unit, r.usd) == (250, "token", Decimal("0.06"))
    assert q("fal-ai/text-to-speech", {"prompt": "x" * 1001}).units == 251  # rounded up
    r = q("fal-ai/text-to-speech", {"prompt": "ignored"}, {"usage": {"prompt_tokens": 500, "completion_tokens": 0}})
    assert r.units == 500 and r.usd == Decimal("0.12")


# -- per call, per minute in 15 s steps, video tokens -------------------------------------------

def test_voice_clone_per_call():
    r = q("fal-ai/voice-clone", {"audio_url": "x"})
    assert (r.usd, r.credits, r.unit) == (Decimal("1"), Decimal("120"), "call")


def test_podcast_rounds_duration_up_to_15_seconds():
    assert q("fal-ai/text-to-podcast", {}, {"duration_ms": 61000}).usd == Decimal("0.05")  # 75 s
    assert q("fal-ai/text-to-podcast", {}, {"duration_ms": 60000}).usd == Decimal("0.04")  # 60 s exactly
    with pytest.raises(QuoteError, match="duration_ms"):
        q("fal-ai/text-to-podcast", {})


def test_video_token_formula():
    # seeds/003: tokens = w x h x fps x s / 1024; $0.243 per 5 s at 1080p
    r = q("fal-ai/image-to-video", {"duration": 5})
    assert r.units == 243000 and r.usd == Decimal("0.243")
    assert q("fal-ai/image-to-video", {"duration": 5, "resolution": "720p", "fps": 30}).units == 135000


# -- errors and settings -----------------------------------------------------------------------

def test_unknown_endpoint_is_an_error_never_zero():
    with pytest.raises(UnknownEndpoint, match="unknown endpoint 'fal-ai/made-up'.*price book"):
        q("fal-ai/made-up", {})


def test_unpriceable_request_is_an_error():
    with pytest.raises(QuoteError, match="image_size: unknown preset 'huge'"):
        q("fal-ai/flux-2/flash", {"image_size": "huge"})
    with pytest.raises(QuoteError, match="expected a duration"):
        q("fal-ai/kling-video/o1/image-to-video", {"duration": "five"})


def test_credit_rate_is_configurable(monkeypatch):
    monkeypatch.setenv("WEBTOON_CREDITS_PER_USD", "100")
    book = load_pricebook(REPO_ROOT / "data" / "pricebook.yaml")
    assert quote("fal-ai/voice-clone", {}, book=book).credits == 100


def test_every_entry_has_a_source_and_date_and_the_study_models_are_priced():
    for e in BOOK.entries:
        assert e.source and e.read
    endpoints = {e.endpoint for e in BOOK.entries}
    for needed in ["fal-ai/flux-2/flash", "fal-ai/flux-2/flash/edit", "fal-ai/flux-2/turbo/edit", "fal-ai/flux-2/edit",
                   "fal-ai/flux-2-pro/edit", "fal-ai/flux/schnell", "fal-ai/flux/dev",
                   "fal-ai/bytedance/seedream/v4/edit", "fal-ai/bytedance/seedream/v4.5/edit",
                   "fal-ai/nano-banana/edit", "fal-ai/nano-banana-pro/edit"]:
        assert needed in endpoints
    assert {"fal", "bfl", "gemini", "together", "replicate", "byteplus"} <= {e.platform for e in BOOK.entries}


def test_a_broken_price_book_names_the_file_and_field(tmp_path):
    from webtoon_assets.bible import BibleError
    book = tmp_path / "pricebook.yaml"
    book.write_text("entries:\n- {endpoint: x, platform: fal, model: X, kind: image, source: s, read: 2026-01-01,\n"
                    "   price: {rule: per_megapixel}}\n")
    with pytest.raises(BibleError, match=r"(?s)pricebook.yaml.*entries\.0\.price\.per_megapixel\.usd_per_mp: Field required"):
        load_pricebook(book)


def test_cli_prints_the_quote_as_json():
    exe = Path(sys.executable).parent / "webtoon"
    out = subprocess.run([str(exe), "quote", "fal-ai/flux-2/flash/edit", "--request",
                          json.dumps({"image_size": "square_hd", "image_urls": ["a", "b", "c"]})],
                         capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert data["usd"] == "0.020" and data["units"] == "4" and data["unit"] == "megapixel" and data["breakdown"]
    bad = subprocess.run([str(exe), "quote", "nope/x", "--request", "{}"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown endpoint 'nope/x'" in bad.stderr
