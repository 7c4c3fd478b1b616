"""The generation gateway: the one path every image takes.

    cache ─► budget ─► provider ─► store ─► ledger

Assets describe what to make (a GenerationRequest); the gateway decides whether to pay. A
request whose key is in the store is a hit and costs nothing. Otherwise it takes the key's
cross-process lock, checks again (another run may have just made it), and only then calls the
provider, so two runs needing the same image pay for it once.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

from webtoon_assets.gateway.providers.base import Provider
from webtoon_assets.gateway.request import GenerationRequest
from webtoon_assets.gateway.store import ImageStore

Status = Literal["generated", "cached"]


@dataclass(frozen=True)
class GenerationResult:
    request: GenerationRequest
    key: str
    path: Path
    sha256: str
    status: Status
    width: int
    height: int
    provider: str
    seconds: float


class Gateway:
    def __init__(self, store: ImageStore, provider: Provider, run_id: str = "",
                 log: Callable[[str], None] | None = None):
        self.store = store
        self.provider = provider
        self.run_id = run_id
        self.log = log or (lambda _msg: None)

    def _result(self, request: GenerationRequest, key: str, record: dict, status: Status, started: float
                ) -> GenerationResult:
        return GenerationResult(
            request=request, key=key, path=self.store.image_path(key), sha256=record["sha256"], status=status,
            width=record["width"], height=record["height"], provider=self.provider.name,
            seconds=time.monotonic() - started,
        )

    def generate(self, request: GenerationRequest) -> GenerationResult:
        started = time.monotonic()
        key = request.key(self.provider.name)
        if (record := self.store.get(key)) is not None:
            return self._result(request, key, record, "cached", started)
        with self.store.lock(key):
            if (record := self.store.get(key)) is not None:  # made by another run while we waited
                return self._result(request, key, record, "cached", started)
            with self.store.staging(key) as staged:
                out = self.provider.generate(request, staged)
                record = self.store.commit(key, staged, {
                    "provider": self.provider.name,
                    "endpoint": request.endpoint,
                    "arguments": request.arguments,
                    "references": [r.model_dump() for r in request.references],
                    "width": out.width,
                    "height": out.height,
                    "response": out.response,
                    "provider_request_id": out.request_id,
                    "run_id": self.run_id,
                    "made_for": request.attribution.model_dump(),
                    "created": time.time(),
                })
        return self._result(request, key, record, "generated", started)

    def generate_many(self, requests: Iterable[GenerationRequest]) -> Iterator[GenerationResult]:
        """Results in completion order, up to the provider's concurrency at once."""
        requests = list(requests)
        if self.provider.concurrency <= 1 or len(requests) <= 1:
            yield from map(self.generate, requests)
            return
        with ThreadPoolExecutor(max_workers=self.provider.concurrency) as pool:
            futures = [pool.submit(self.generate, r) for r in requests]
            try:
                for f in as_completed(futures):
                    yield f.result()
            finally:
                for f in futures:
                    f.cancel()
