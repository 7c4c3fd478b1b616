"""The gateway's cache: canonical keys, hits, one generation per key across threads and processes."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from webtoon_assets.gateway import Attribution, Gateway, GenerationRequest, ImageStore, PreviewHints, Reference
from webtoon_assets.gateway.providers import LocalProvider, select_provider
from webtoon_assets.gateway.providers.base import ProviderResult
from webtoon_assets.gateway.retry import GenerationFailed
from webtoon_assets.ledger import Ledger, read_rows
from webtoon_assets.paths import REPO_ROOT
from webtoon_assets.pricing import load_pricebook


def make_gateway(root: Path, provider, **kw) -> Gateway:
    return Gateway(ImageStore(root / "store"), provider, Ledger(root / "ledger"),
                   load_pricebook(REPO_ROOT / "data" / "pricebook.yaml"), **kw)

WHO = Attribution(series="s", episode="ep01", asset="panels", item="p01")


def request(**overrides) -> GenerationRequest:
    base = dict(endpoint="fal-ai/flux-2/flash/edit",
                arguments={"prompt": "a lantern", "image_size": "square", "seed": 7},
                references=[Reference(role="style", path="/x/style.png", sha256="a" * 64)],
                preview=PreviewHints(kind="panel", title="t", palette=["#000000", "#ffffff"]),
                attribution=WHO)
    return GenerationRequest(**{**base, **overrides})


def test_key_is_the_canonical_request():
    r = request()
    assert r.key("local") == request(arguments={"seed": 7, "image_size": "square", "prompt": "a lantern"}).key("local")
    # who asked and where the reference lies do not matter; what it contains does
    assert r.key("local") == request(attribution=WHO.model_copy(update={"episode": "ep09"})).key("local")
    assert r.key("local") == request(references=[Reference(role="style", path="/y/z.png", sha256="a" * 64)]).key("local")
    different = [
        request(references=[Reference(role="style", path="/x/style.png", sha256="b" * 64)]),
        request(arguments={"prompt": "a lantern", "image_size": "square", "seed": 8}),
        request(endpoint="fal-ai/flux-2/turbo/edit"),
    ]
    assert len({r.key("local"), *(d.key("local") for d in different)}) == 4
    assert r.key("local") != r.key("fal")
    # preview hints only shape the offline renderer's output, so only its key depends on them
    hinted = request(preview=PreviewHints(kind="panel", title="other", palette=["#000000", "#ffffff"]))
    assert hinted.key("fal") == r.key("fal") and hinted.key("local") != r.key("local")


class CountingProvider:
    name = "local"
    concurrency = 4

    def __init__(self, delay: float = 0.0):
        self.calls = 0
        self.delay = delay
        self._lock = threading.Lock()

    def generate(self, req: GenerationRequest, dest: Path, key: str = "", submission=None) -> ProviderResult:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        Image.new("RGB", (64, 64), "red").save(dest, format="PNG")
        return ProviderResult(width=64, height=64)

    def refetch(self, req, record, dest) -> bool:
        return False

    def close(self) -> None:
        pass


def test_hit_costs_no_provider_call(tmp_path):
    provider = CountingProvider()
    gw = make_gateway(tmp_path, provider)
    first, second = gw.generate(request()), gw.generate(request())
    assert (first.status, second.status, provider.calls) == ("generated", "cached", 1)
    assert first.path == second.path and first.sha256 == second.sha256


def test_concurrent_requests_for_one_image_make_it_once(tmp_path):
    provider = CountingProvider(delay=0.2)
    gw = make_gateway(tmp_path, provider)
    results = list(gw.generate_many([request()] * 4 + [request(endpoint="fal-ai/flux-2/turbo/edit")]))
    assert provider.calls == 2
    assert sorted(r.status for r in results) == ["cached", "cached", "cached", "generated", "generated"]


def _generate_in_child(store: str, out: multiprocessing.Queue) -> None:
    provider = CountingProvider(delay=0.3)
    result = make_gateway(Path(store), provider).generate(request())
    out.put((result.status, provider.calls))


def test_two_processes_needing_one_image_make_it_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_generate_in_child, args=(str(tmp_path), q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = sorted(q.get(timeout=5) for _ in procs)
    assert outcomes == [("cached", 0), ("generated", 1)]


def test_a_failed_generation_leaves_nothing_behind(tmp_path):
    class Broken(CountingProvider):
        def generate(self, req, dest, key="", submission=None):
            dest.write_bytes(b"half an image")
            raise RuntimeError("provider fell over")

    gw = make_gateway(tmp_path, Broken())
    with pytest.raises(GenerationFailed, match="panels p01 of s/ep01 failed after 1 attempt"):
        gw.generate(request())
    assert gw.store.get(request().key("local")) is None
    assert not list((tmp_path / "store" / "images").rglob("*.png*"))
    rows = list(read_rows(tmp_path / "ledger"))
    assert [(r.status, r.billed_usd, r.error) for r in rows] == [("failed", 0, "RuntimeError: provider fell over")]
    assert make_gateway(tmp_path, CountingProvider()).generate(request()).status == "generated"


def test_local_preview_is_deterministic(tmp_path):
    provider = LocalProvider()
    req = request(arguments={"prompt": "p", "image_size": "portrait_4_3", "seed": 3}, references=[])
    a = provider.generate(req, tmp_path / "a.png")
    provider.generate(req, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with Image.open(tmp_path / "a.png") as im:
        assert im.size == (a.width, a.height) == (768, 1024)


def test_provider_selection(monkeypatch):
    for variable in ("FAL_KEY", "BFL_API_KEY", "GEMINI_API_KEY", "TOGETHER_API_KEY", "REPLICATE_API_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    assert select_provider().names == "local"
    monkeypatch.setenv("WEBTOON_PROVIDER", "nope")
    with pytest.raises(ValueError, match="WEBTOON_PROVIDER: unknown provider 'nope'"):
        select_provider()
