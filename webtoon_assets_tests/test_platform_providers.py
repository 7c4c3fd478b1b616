"""The BFL, Gemini, Together and Replicate providers, each driven directly against the loopback
fake of its API (one process for all four, over TLS): the image they write, what they bill, and
how every fault is classified (retryable, billed, unknown, nsfw, resumable)."""

from __future__ import annotations

import json
import ssl
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from webtoon_assets.gateway.providers.base import ProviderError, ProviderResult
from webtoon_assets.gateway.providers.bfl import BflProvider, BflSettings
from webtoon_assets.gateway.providers.gemini import GeminiProvider, GeminiSettings
from webtoon_assets.gateway.providers.replicate import ReplicateProvider, ReplicateSettings
from webtoon_assets.gateway.providers.together import TogetherProvider, TogetherSettings
from webtoon_assets.gateway.request import Attribution, GenerationRequest, Reference
from webtoon_assets.gateway.store import sha256_file
from webtoon_assets.gateway.submissions import Submission, Submissions
from webtoon_assets_tests.fake_platforms import PLATFORMS, TEST_KEYS
from webtoon_assets_tests.platform_harness import KEY_ENV, FakePlatforms, start_fake_platforms

CLASSES = {"bfl": (BflProvider, BflSettings), "gemini": (GeminiProvider, GeminiSettings),
           "together": (TogetherProvider, TogetherSettings), "replicate": (ReplicateProvider, ReplicateSettings)}
DEFAULTS = {  # the real hosts and concurrency, without WEBTOON_<PLATFORM>_* set
    "bfl": ("https://api.bfl.ai", 8), "gemini": ("https://generativelanguage.googleapis.com", 4),
    "together": ("https://api.together.xyz", 1), "replicate": ("https://api.replicate.com", 4)}
REQUESTS = {  # an endpoint and its fitted arguments per platform (small images)
    "bfl": ("bfl/flux-2-klein-4b", {"image_size": {"width": 512, "height": 512}}),
    "gemini": ("gemini/gemini-3-pro-image", {"aspect_ratio": "1:1", "resolution": "1K"}),
    "together": ("together/flux-1-schnell-free", {"image_size": {"width": 512, "height": 512}}),
    "replicate": ("replicate/black-forest-labs/flux-schnell", {"aspect_ratio": "1:1"}),
}
SIZES = {"bfl": (512, 512), "gemini": (1024, 1024), "together": (512, 512), "replicate": (1024, 1024)}
PROMPT = "a lantern shop at night"
ALL_KEYS = list(TEST_KEYS.values())


def request(platform: str, prompt: str = PROMPT, seed: int = 11, endpoint: str | None = None,
            references: list[Reference] = (), **arguments: Any) -> GenerationRequest:
    default_endpoint, args = REQUESTS[platform]
    return GenerationRequest(endpoint=endpoint or default_endpoint, references=list(references),
                             arguments={"prompt": prompt, "seed": seed, **args, **arguments},
                             attribution=Attribution(series="s", episode="ep01", asset="panels", item="p01"))


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory) -> FakePlatforms:
    fake = start_fake_platforms(tmp_path_factory.mktemp("fake-platforms"))
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_server: FakePlatforms, monkeypatch: pytest.MonkeyPatch) -> FakePlatforms:
    """The fake, reset, with this process pointed at it through WEBTOON_<PLATFORM>_BASE_URL."""
    fake_server.reset()
    for k, v in fake_server.env().items():
        monkeypatch.setenv(k, v)
    for p in PLATFORMS:
        for name, value in {"POLL_SECONDS": "0.02", "RETRY_BASE_SECONDS": "0.01", "TIMEOUT_SECONDS": "10"}.items():
            monkeypatch.setenv(f"WEBTOON_{p.upper()}_{name}", value)
    monkeypatch.setenv("WEBTOON_REPLICATE_WAIT_SECONDS", "5")
    return fake_server


class Opened:
    """Providers made from the environment, closed after the test."""

    def __init__(self, tmp_path: Path):
        self.tmp_path, self.made = tmp_path, []

    def __call__(self, platform: str, key: str | None = None, **settings: Any):
        cls, settings_cls = CLASSES[platform]
        provider = cls(key or TEST_KEYS[platform], settings_cls.from_env().model_copy(update=settings),
                       self.tmp_path / "state")
        self.made.append(provider)
        return provider


@pytest.fixture
def open_provider(tmp_path: Path):
    opened = Opened(tmp_path)
    yield opened
    for p in opened.made:
        p.close()


def journal(tmp_path: Path, key: str = "k1") -> Submission:
    return Submissions(tmp_path / "pending").open(key)


def make(provider, req: GenerationRequest, tmp_path: Path, key: str = "k1") -> tuple[ProviderResult, Path]:
    dest = tmp_path / f"{key}.png"
    sub = journal(tmp_path, key)
    result = provider.generate(req, dest, key, sub)
    assert_clean(result.response, sub.path.read_text() if sub.path.exists() else "")
    return result, dest


def fail(provider, req: GenerationRequest, tmp_path: Path, key: str = "k1") -> ProviderError:
    sub = journal(tmp_path, key)
    with pytest.raises(ProviderError) as e:
        provider.generate(req, tmp_path / f"{key}.png", key, sub)
    assert_clean(str(e.value), sub.path.read_text() if sub.path.exists() else "")
    return e.value


def assert_clean(*things: Any) -> None:
    """No key of any platform in an error, an answer or a journal entry."""
    text = " ".join(t if isinstance(t, str) else json.dumps(t, default=str) for t in things)
    for key in ALL_KEYS:
        assert key not in text


def flags(e: ProviderError) -> dict[str, bool]:
    return {k: getattr(e, k) for k in ("retryable", "billed", "unknown", "nsfw", "resumable")}


def ref(tmp_path: Path, name: str, w: int, h: int) -> Reference:
    path = tmp_path / f"{name}.png"
    Image.new("RGB", (w, h), "teal").save(path)
    return Reference(role=f"character:{name}", path=str(path), sha256=sha256_file(path), width=w, height=h)


class Crash(BaseException):
    """The process dying right after the journal entry is written."""


class CrashAfterAccepted(Submission):
    def accepted(self, handle: dict[str, Any]) -> None:
        super().accepted(handle)
        raise Crash


# -- a clean request ------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_clean_request_writes_a_png_of_the_real_size(fake, open_provider, tmp_path, platform):
    provider = open_provider(platform)
    result, dest = make(provider, request(platform), tmp_path)
    with Image.open(dest) as im:
        assert im.format == "PNG" and im.size == SIZES[platform] == (result.width, result.height)
    assert result.billed and not result.resumed and result.request_id
    assert result.response["images"] == [{**result.response["images"][0], "width": result.width,
                                          "height": result.height, "content_type": "image/png"}]
    s = fake.stats(platform)
    assert s["submissions"] == s["billed"] == 1 and s["connections"] >= 1
    body = s["last_body"]
    if platform == "bfl":
        assert (body["width"], body["height"], body["seed"], body["output_format"]) == (512, 512, 11, "png")
        assert result.billed_usd == Decimal("0.014")  # klein 4B, 0.26 MP: the first megapixel's 1.4 credits
    if platform == "gemini":
        config = body["generationConfig"]
        assert config == {"responseModalities": ["IMAGE"], "seed": 11,
                          "imageConfig": {"aspectRatio": "1:1", "imageSize": "1K"}}
        assert result.response["usageMetadata"]["candidatesTokenCount"] == 1120  # the thought image is skipped
    if platform == "together":
        assert {k: body[k] for k in ("model", "steps", "n", "seed", "response_format", "width")} == {
            "model": "black-forest-labs/FLUX.1-schnell-Free", "steps": 4, "n": 1, "seed": 11,
            "response_format": "b64_json", "width": 512}
    if platform == "replicate":
        assert body == {"input": {"prompt": PROMPT, "seed": 11, "aspect_ratio": "1:1", "num_outputs": 1,
                                  "output_format": "png"}}
        assert s["last_headers"]["Prefer"] == "wait=5"
    if platform in ("gemini", "together", "replicate"):
        assert result.billed_usd is None  # the price book's quote is the bill
    assert float(fake.stats(platform)["billed_usd"]) == {"bfl": 0.014, "gemini": 0.134, "together": 0,
                                                         "replicate": 0.003}[platform]


@pytest.mark.parametrize("model, size, refs, credits", [
    ("flux-2-klein-4b", (512, 512), [], "1.4"),  # under 1 MP: the first megapixel's price
    ("flux-2-klein-9b", (1024, 1024), [], "1.51"),  # 1.05 MP: 1.5 + 0.05 x 0.2
    ("flux-2-pro", (1440, 1024), [(512, 512)], "4.095"),  # 1.47 MP out, 0.26 in: 3 + (0.47 + 0.26) x 1.5
    ("flux-2-max", (1024, 768), [(512, 512), (768, 768)], "9.55"),  # 0.79 out, 0.26 + 0.59 in: 7 + 0.85 x 3
    ("flux-2-flex", (1024, 1024), [(512, 512), (512, 512)], "7.85"),  # 5 + (0.05 + 0.52) x 5
])
def test_bfl_bills_the_cost_it_reports(fake, open_provider, tmp_path, model, size, refs, credits):
    references = [ref(tmp_path, f"r{i}", w, h) for i, (w, h) in enumerate(refs)]
    result, _ = make(open_provider("bfl"), request("bfl", endpoint=f"bfl/{model}", references=references,
                                                   image_size={"width": size[0], "height": size[1]}), tmp_path)
    s = fake.stats("bfl")
    (bill,) = s["bills"]
    assert result.billed_usd == Decimal(str(bill["cost"])) / 100 == Decimal(credits) / 100
    assert Decimal(str(result.response["cost"])) == Decimal(credits) and result.request_id == bill["id"]
    assert (result.width, result.height) == size
    assert s["counts"].get("references_received", 0) == len(refs)
    assert [k for k in s["last_body"] if k.startswith("input_image")] == ["input_image", "input_image_2"][: len(refs)]


def test_gemini_sends_references_as_inline_parts_after_the_text(fake, open_provider, tmp_path):
    refs = [ref(tmp_path, "mira", 64, 64), ref(tmp_path, "alley", 96, 64)]
    result, _ = make(open_provider("gemini"), request("gemini", references=refs, aspect_ratio="3:4",
                                                      resolution="2K"), tmp_path)
    assert (result.width, result.height) == (1792, 2400)
    parts = fake.stats("gemini")["last_body"]["contents"][0]["parts"]
    assert parts[0] == {"text": PROMPT} and [p["inline_data"]["mime_type"] for p in parts[1:]] == ["image/png"] * 2
    assert fake.stats("gemini")["billed_usd"] == "0.134"  # 2K costs what 1K does


def test_replicate_ignores_references_for_a_model_that_reads_none(fake, open_provider, tmp_path):
    make(open_provider("replicate"), request("replicate", references=[ref(tmp_path, "mira", 64, 64)],
                                             num_inference_steps=2), tmp_path)
    assert fake.stats("replicate")["last_body"]["input"] == {
        "prompt": PROMPT, "seed": 11, "aspect_ratio": "1:1", "num_outputs": 1, "output_format": "png",
        "num_inference_steps": 2}


def test_replicate_polls_a_prediction_that_is_not_finished_within_the_wait(fake, open_provider, tmp_path):
    fake.configure(replicate_wait=0)  # the answer comes back `starting`: poll urls.get
    result, _ = make(open_provider("replicate"), request("replicate"), tmp_path)
    s = fake.stats("replicate")
    assert result.billed and s["counts"]["polls"] >= 1 and s["submissions"] == 1


# -- answers that took nothing --------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("kind", ["429", "503"])
def test_an_answer_that_took_nothing_is_sent_again_within_the_attempt(fake, open_provider, tmp_path, platform, kind):
    fake.configure(faults=[{"kind": kind, "platform": platform, "count": 2, "retry_after": 0}])
    result, _ = make(open_provider(platform), request(platform), tmp_path)
    s = fake.stats(platform)
    assert result.billed and s["counts"][f"fault_{kind}"] == 2
    assert s["submit_attempts"] == 3 and s["submissions"] == s["billed"] == 1


@pytest.mark.parametrize("platform", PLATFORMS)
def test_persistent_429_is_retryable_and_unbilled(fake, open_provider, tmp_path, platform):
    fake.configure(faults=[{"kind": "429", "platform": platform, "count": 99, "retry_after": 0}])
    e = fail(open_provider(platform, submit_tries=3), request(platform), tmp_path)
    assert flags(e) == {"retryable": True, "billed": False, "unknown": False, "nsfw": False, "resumable": False}
    assert "after 3 tries" in str(e) and "429" in str(e)
    s = fake.stats(platform)
    assert s["submit_attempts"] == 3 and s["submissions"] == s["billed"] == 0


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_500_is_retryable_unbilled_and_left_to_the_gateway(fake, open_provider, tmp_path, platform):
    fake.configure(faults=[{"kind": "500", "platform": platform, "count": 1}])
    e = fail(open_provider(platform), request(platform), tmp_path)
    assert flags(e) == {"retryable": True, "billed": False, "unknown": False, "nsfw": False, "resumable": False}
    assert fake.stats(platform)["submit_attempts"] == 1  # the gateway decides on another attempt


def test_bfl_refuses_more_than_24_at_once_without_billing(fake, open_provider, tmp_path):
    fake.configure(faults=[{"kind": "slow", "platform": "bfl", "count": 24, "match": "hold"}])
    ctx = ssl.create_default_context(cafile=str(fake.ca_file))
    with httpx.Client(verify=ctx, headers={"x-key": TEST_KEYS["bfl"]}) as client:
        for i in range(24):
            client.post(f"{fake.base_url('bfl')}/v1/flux-2-klein-4b",
                        json={"prompt": f"hold {i}", "width": 512, "height": 512}).raise_for_status()
    e = fail(open_provider("bfl", submit_tries=2, retry_after_max_seconds=0), request("bfl"), tmp_path)
    assert flags(e)["retryable"] and not flags(e)["billed"] and "429" in str(e)
    s = fake.stats("bfl")
    assert s["peak_in_flight"] == 24 and s["counts"]["fault_limit_429"] == 2 and s["billed"] == 24
    fake.finish("bfl")  # the 24 finish: there is room again
    assert make(open_provider("bfl"), request("bfl"), tmp_path, key="k2")[0].billed


# -- lost answers: unknown, never resent ----------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("kind, billed_there", [("drop", 0), ("accept_drop", 1)])
def test_a_lost_answer_is_unknown_and_never_resent(fake, open_provider, tmp_path, platform, kind, billed_there):
    fake.configure(faults=[{"kind": kind, "platform": platform, "count": 1}])
    e = fail(open_provider(platform), request(platform), tmp_path)
    assert flags(e) == {"retryable": False, "billed": False, "unknown": True, "nsfw": False, "resumable": False}
    assert "outcome unknown" in str(e)
    fake.finish(platform)  # an accepted Replicate prediction runs on, and is billed when it succeeds
    s = fake.stats(platform)
    assert s["submit_attempts"] == 1 and s["billed"] == billed_there
    assert journal(tmp_path).entry["endpoint"] == REQUESTS[platform][0]  # the intent stays for the gateway


@pytest.mark.parametrize("platform", ["gemini", "together"])
def test_a_synchronous_call_past_the_timeout_is_unknown(fake, open_provider, tmp_path, platform):
    fake.configure(faults=[{"kind": "slow", "platform": platform, "count": 1}])
    e = fail(open_provider(platform, timeout_seconds=0.3), request(platform), tmp_path)
    assert flags(e)["unknown"] and not flags(e)["retryable"] and not flags(e)["billed"]
    assert fake.stats(platform)["submissions"] == 1


# -- BFL after acceptance: billed at submission ---------------------------------------------------


@pytest.mark.parametrize("fault, nsfw, retryable", [
    ({"kind": "error"}, False, True),
    ({"kind": "moderated"}, True, False),  # "Request Moderated": the input was refused, a new seed pays again
    ({"kind": "moderated", "status": "Content Moderated"}, True, True)])
def test_bfl_failures_after_acceptance_are_billed(fake, open_provider, tmp_path, fault, nsfw, retryable):
    fake.configure(faults=[{**fault, "platform": "bfl", "count": 1}])
    e = fail(open_provider("bfl"), request("bfl"), tmp_path)
    assert flags(e) == {"retryable": retryable, "billed": True, "unknown": False, "nsfw": nsfw, "resumable": False}
    bill, = fake.stats("bfl")["bills"]
    assert e.request_id == bill["id"] and e.billed_usd == Decimal(bill["usd"])  # BFL's cost, not the quote


def test_bfl_past_the_timeout_stays_journalled_and_is_resumed_without_paying_again(fake, open_provider, tmp_path):
    fake.configure(faults=[{"kind": "slow", "platform": "bfl", "count": 1}])
    e = fail(open_provider("bfl", timeout_seconds=0.2), request("bfl"), tmp_path)
    assert flags(e) == {"retryable": True, "billed": True, "unknown": False, "nsfw": False, "resumable": True}
    assert journal(tmp_path).resume["request_id"] == e.request_id
    fake.finish("bfl")
    result, _ = make(open_provider("bfl"), request("bfl"), tmp_path)
    s = fake.stats("bfl")
    assert result.resumed and result.request_id == e.request_id and result.billed_usd == Decimal("0.014")
    assert s["submissions"] == s["billed"] == s["max_same_body"] == 1


@pytest.mark.parametrize("platform", ["bfl", "replicate"])
def test_a_journalled_handle_is_resumed_after_a_crash_not_resubmitted(fake, open_provider, tmp_path, platform):
    sub = CrashAfterAccepted(tmp_path / "pending" / "k1.json", None)
    with pytest.raises(Crash):
        open_provider(platform).generate(request(platform), tmp_path / "k1.png", "k1", sub)
    handle = journal(tmp_path).resume
    assert handle and handle["endpoint"] == REQUESTS[platform][0]
    assert_clean(handle)
    result, dest = make(open_provider(platform), request(platform), tmp_path)  # a new run reads the journal
    s = fake.stats(platform)
    assert result.resumed and result.request_id == handle["request_id"] and dest.stat().st_size > 0
    assert s["submissions"] == s["max_same_body"] == s["billed"] == 1
    if platform == "bfl":
        assert result.billed_usd == Decimal(str(handle["cost"])) / 100


def test_a_resumed_bfl_request_whose_result_expired_is_billed_and_retired(fake, open_provider, tmp_path):
    sub = CrashAfterAccepted(tmp_path / "pending" / "k1.json", None)
    with pytest.raises(Crash):
        open_provider("bfl").generate(request("bfl"), tmp_path / "k1.png", "k1", sub)
    fake.finish("bfl")
    fake.expire("bfl")  # the run came back after 10 minutes
    e = fail(open_provider("bfl"), request("bfl"), tmp_path)
    assert flags(e) == {"retryable": True, "billed": True, "unknown": False, "nsfw": False, "resumable": False}
    assert "expired" in str(e) and "403" in str(e)
    assert fake.stats("bfl")["submissions"] == 1


# -- Replicate after acceptance: billed only when it succeeds -------------------------------------


@pytest.mark.parametrize("kind, nsfw", [("error", False), ("moderated", True)])
def test_a_failed_replicate_prediction_is_not_billed(fake, open_provider, tmp_path, kind, nsfw):
    fake.configure(faults=[{"kind": kind, "platform": "replicate", "count": 1}])
    e = fail(open_provider("replicate"), request("replicate"), tmp_path)
    assert flags(e) == {"retryable": True, "billed": False, "unknown": False, "nsfw": nsfw, "resumable": False}
    assert fake.stats("replicate")["billed"] == 0


def test_a_replicate_prediction_past_the_timeout_is_cancelled(fake, open_provider, tmp_path):
    fake.configure(replicate_wait=0, faults=[{"kind": "slow", "platform": "replicate", "count": 1}])
    e = fail(open_provider("replicate", timeout_seconds=0.2), request("replicate"), tmp_path)
    assert flags(e) == {"retryable": True, "billed": False, "unknown": False, "nsfw": False, "resumable": False}
    assert "cancelled" in str(e)
    s = fake.stats("replicate")
    assert s["counts"]["cancels"] == 1 and s["billed"] == 0


def test_a_replicate_prediction_that_cannot_be_cancelled_is_unknown(fake, open_provider, tmp_path):
    fake.configure(replicate_wait=0, faults=[{"kind": "slow", "platform": "replicate", "count": 1},
                                             {"kind": "no_cancel", "platform": "replicate", "count": 1}])
    e = fail(open_provider("replicate", timeout_seconds=0.2), request("replicate"), tmp_path)
    assert flags(e) == {"retryable": False, "billed": False, "unknown": True, "nsfw": False, "resumable": False}


# -- result files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("platform, code", [("bfl", 403), ("replicate", 404)])
def test_an_expired_result_url_is_billed_and_retryable(fake, open_provider, tmp_path, platform, code):
    fake.configure(faults=[{"kind": "expired", "platform": platform, "count": 1}])
    e = fail(open_provider(platform), request(platform), tmp_path)
    assert flags(e) == {"retryable": True, "billed": True, "unknown": False, "nsfw": False, "resumable": False}
    assert f"HTTP {code}" in str(e) and "expired" in str(e)
    fake.finish(platform)
    assert fake.stats(platform)["billed"] == 1


@pytest.mark.parametrize("platform", ["bfl", "replicate"])
def test_a_corrupt_download_is_fetched_again(fake, open_provider, tmp_path, platform):
    fake.configure(faults=[{"kind": "corrupt_image", "platform": platform, "count": 1, "times": 1}])
    result, _ = make(open_provider(platform), request(platform), tmp_path)
    s = fake.stats(platform)
    assert result.billed and s["counts"]["downloads"] == 2 and s["submissions"] == 1


@pytest.mark.parametrize("platform", ["bfl", "replicate"])
def test_a_download_that_stays_corrupt_fails_billed(fake, open_provider, tmp_path, platform):
    fake.configure(faults=[{"kind": "corrupt_image", "platform": platform, "count": 1, "times": 9}])
    e = fail(open_provider(platform, fetch_attempts=2), request(platform), tmp_path)
    assert flags(e) == {"retryable": False, "billed": True, "unknown": False, "nsfw": False, "resumable": False}
    assert "could not download a valid image" in str(e)


@pytest.mark.parametrize("platform", ["gemini", "together"])
def test_a_corrupt_inline_image_fails_billed_and_retryable(fake, open_provider, tmp_path, platform):
    fake.configure(faults=[{"kind": "corrupt_image", "platform": platform, "count": 1}])
    e = fail(open_provider(platform), request(platform), tmp_path)
    assert flags(e) == {"retryable": True, "billed": True, "unknown": False, "nsfw": False, "resumable": False}
    assert "bad image" in str(e)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_an_image_over_the_byte_cap_is_refused(fake, open_provider, tmp_path, platform):
    e = fail(open_provider(platform, max_image_bytes=2000), request(platform), tmp_path)
    assert flags(e) == {"retryable": False, "billed": True, "unknown": False, "nsfw": False, "resumable": False}
    assert "2000-byte cap" in str(e)


@pytest.mark.parametrize("platform", ["bfl", "replicate"])
def test_refetch_downloads_the_result_again_while_its_url_lives(fake, open_provider, tmp_path, platform):
    provider = open_provider(platform)
    result, dest = make(provider, request(platform), tmp_path)
    record = {"response": result.response, "provider_request_id": result.request_id}
    again = tmp_path / "again.png"
    assert provider.refetch(request(platform), record, again) and again.read_bytes() == dest.read_bytes()
    fake.expire(platform)
    assert not provider.refetch(request(platform), record, tmp_path / "gone.png")
    downloads = fake.stats(platform)["counts"]["downloads"]
    stale = {**record, "response": {**result.response, "url_expires_at": 0}}
    assert not provider.refetch(request(platform), stale, tmp_path / "stale.png")
    assert fake.stats(platform)["counts"]["downloads"] == downloads  # not even asked


@pytest.mark.parametrize("platform", ["gemini", "together"])
def test_an_inline_result_cannot_be_fetched_again(fake, open_provider, tmp_path, platform):
    provider = open_provider(platform)
    result, _ = make(provider, request(platform), tmp_path)
    assert not provider.refetch(request(platform), {"response": result.response}, tmp_path / "again.png")


# -- moderation on the synchronous platforms ------------------------------------------------------


@pytest.mark.parametrize("fault", [{}, {"finish": "IMAGE_SAFETY"}])
def test_gemini_blocked_is_nsfw_and_not_billed(fake, open_provider, tmp_path, fault):
    fake.configure(faults=[{"kind": "moderated", "platform": "gemini", "count": 1, **fault}])
    e = fail(open_provider("gemini"), request("gemini"), tmp_path)
    assert flags(e) == {"retryable": True, "billed": False, "unknown": False, "nsfw": True, "resumable": False}
    assert (fault.get("finish") or "PROHIBITED_CONTENT") in str(e)
    assert fake.stats("gemini")["billed"] == 0


# -- keys, hosts, the interface -------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_refused_key_is_not_retried_and_never_repeated(fake, open_provider, tmp_path, platform):
    wrong = f"{platform}-wrong-key-SECRET-987"  # the fake echoes the key it was offered
    e = fail(open_provider(platform, key=wrong), request(platform), tmp_path)
    assert flags(e) == {"retryable": False, "billed": False, "unknown": False, "nsfw": False, "resumable": False}
    assert wrong not in str(e) and "***" in str(e) and KEY_ENV[platform] in str(e)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_an_error_answer_echoing_the_key_is_redacted(fake, open_provider, tmp_path, platform):
    fake.configure(faults=[{"kind": "400", "platform": platform, "count": 1}])
    e = fail(open_provider(platform), request(platform), tmp_path)
    assert flags(e) == {"retryable": False, "billed": False, "unknown": False, "nsfw": False, "resumable": False}
    assert "***" in str(e) and "400" in str(e)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_base_url_variable_points_the_provider_at_its_host(fake, monkeypatch, tmp_path, platform):
    cls, settings_cls = CLASSES[platform]
    assert settings_cls.from_env().base_url == fake.base_url(platform)
    monkeypatch.setenv(f"WEBTOON_{platform.upper()}_CONCURRENCY", "3")
    assert settings_cls.from_env().concurrency == 3
    for var in ("BASE_URL", "CONCURRENCY"):
        monkeypatch.delenv(f"WEBTOON_{platform.upper()}_{var}")
    settings = settings_cls.from_env()
    assert (settings.base_url, settings.concurrency) == DEFAULTS[platform]
    provider = cls(TEST_KEYS[platform], settings, tmp_path)
    assert provider.name == platform and provider.concurrency == DEFAULTS[platform][1]
    provider.close()
    with pytest.raises(ValueError, match=KEY_ENV[platform]):
        cls("", settings, tmp_path)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_no_text_and_no_foreign_endpoints(fake, open_provider, tmp_path, platform):
    provider = open_provider(platform)
    with pytest.raises(ProviderError, match=f"{platform} makes no text") as e:
        provider.generate_text(request(platform), "k1", journal(tmp_path))
    assert flags(e.value)["retryable"] is False and flags(e.value)["billed"] is False
    e = fail(provider, request(platform, endpoint="fal-ai/flux-2/flash"), tmp_path)
    assert not e.retryable and not e.billed and fake.stats(platform)["submit_attempts"] == 0


def test_together_runs_one_request_at_a_time(fake, open_provider, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    provider = open_provider("together")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: make(provider, request("together", seed=i), tmp_path, key=f"k{i}")[0],
                                range(4)))
    s = fake.stats("together")
    assert len(results) == 4 and s["submissions"] == 4 and s["peak_in_flight"] == 1
