"""The fal provider: fal-client's queue API (AsyncClient) on one background event loop.

One call of ``generate`` is one attempt: submit (or resume), poll, fetch the result, download and
check the image. What fal-client already retries (408/409/429, dropped connections, ingress 5xx:
up to 10 times with backoff) is not retried again here; everything else is reported as a
``ProviderError`` saying whether it may be retried and whether fal charged for it, and the
gateway decides (and writes a ledger row per attempt).

Never pay twice: every submission is journalled under its request key the moment fal accepts it
(``store/pending/<key>.json``). A later attempt, or a run started after a crash, finds the entry
and polls or fetches that request instead of submitting it again. Results are downloaded at once
(fal keeps files about a week), streamed with a byte cap, and decoded by Pillow after a pixel
cap check, before anything is stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import fal_client
import fal_client.client as fal_http
import httpx
from PIL import Image
from pydantic import BaseModel, Field

from webtoon_assets.files import write_text_atomic
from webtoon_assets.gateway.providers.base import ProviderError, ProviderResult, ProviderText
from webtoon_assets.gateway.request import GenerationRequest, Reference


class FalSettings(BaseModel):
    concurrency: int = Field(2, ge=1, le=40, description="requests in flight; a new fal account allows 2")
    references: Literal["upload", "inline"] = "upload"
    poll_seconds: float = Field(0.25, gt=0, description="status poll interval (fal-client's default is 0.1)")
    timeout_seconds: float = Field(600, gt=0, description="a request still unfinished after this is cancelled")
    base_url: str | None = Field(None, description="a fal-compatible host (the loopback fake in tests)")
    upload_ttl_seconds: float = 24 * 3600
    max_image_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 64 * 1024 * 1024
    fetch_attempts: int = Field(3, ge=1, description="tries to read a finished result or download an image")

    @classmethod
    def from_env(cls) -> "FalSettings":
        env = {
            "concurrency": "WEBTOON_FAL_CONCURRENCY", "references": "WEBTOON_FAL_REFERENCES",
            "poll_seconds": "WEBTOON_FAL_POLL_SECONDS", "timeout_seconds": "WEBTOON_FAL_TIMEOUT_SECONDS",
            "base_url": "WEBTOON_FAL_BASE_URL",
        }
        return cls(**{k: os.environ[v] for k, v in env.items() if os.environ.get(v)})


def _point_client_at(base_url: str) -> None:
    """fal-client reads these module globals at call time (BRIEF.md): queue, REST and CDN hosts."""
    base = base_url.rstrip("/")
    fal_http.QUEUE_URL_FORMAT = f"{base}/"
    fal_http.REST_URL = base
    fal_http.CDN_URL = base


class FalProvider:
    name = "fal"

    def __init__(self, key: str, settings: FalSettings, state_dir: Path):
        if not key:
            raise ValueError("the fal provider needs FAL_KEY")
        self.settings = settings
        # fal counts a request against the account's concurrency from submit until it completes;
        # fetching, downloading and storing come after. So the gateway runs twice as many workers
        # and a semaphore holds exactly `concurrency` requests on fal: the next submission overlaps
        # the previous result's download instead of waiting for it.
        self.concurrency = 2 * settings.concurrency
        self._on_fal = asyncio.Semaphore(settings.concurrency)
        self._key = key
        self._pending = state_dir / "pending"
        self._uploads = state_dir / "uploads"
        if settings.base_url:
            _point_client_at(settings.base_url)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fal-provider", daemon=True)
        self._thread.start()
        self._client = fal_client.AsyncClient(key=key)
        self._downloads: httpx.AsyncClient | None = None
        self._upload_locks: dict[str, asyncio.Lock] = {}
        self._inline: dict[str, str] = {}  # data URIs by content hash: encoded once per provider

    # -- the gateway's entry point ---------------------------------------------------------------
    def generate(self, request: GenerationRequest, dest: Path, key: str = "") -> ProviderResult:
        return self._run(self._generate(request, dest, key))

    def generate_text(self, request: GenerationRequest, key: str = "") -> ProviderText:
        return self._run(self._generate_text(request, key))

    def _run(self, coro: Any) -> Any:
        """Run one attempt on the provider's loop; errors leave with the key redacted."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except ProviderError as e:
            raise ProviderError(self._redact(str(e)), retryable=e.retryable, billed=e.billed,
                                request_id=e.request_id, nsfw=e.nsfw) from None

    async def _generate_text(self, request: GenerationRequest, key: str) -> ProviderText:
        args = dict(request.arguments)
        if request.references:  # a vision model is shown the images
            args["image_urls"] = [await self._reference_url(r) for r in request.references]
        handle = await self._on_fal_until_done(request.endpoint, args, key)
        result, _ = await self._result(handle)
        self._forget(key)
        text = result.get("output")
        if not isinstance(text, str) or result.get("error"):
            raise ProviderError(f"fal request {handle.request_id} gave no text: {result.get('error') or 'no output'}",
                                retryable=False, billed=True, request_id=handle.request_id)
        return ProviderText(text=text, response=result, request_id=handle.request_id, billed=True)

    def close(self) -> None:
        async def _close() -> None:
            if self._downloads is not None:
                await self._downloads.aclose()
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    # -- one attempt -----------------------------------------------------------------------------
    async def _generate(self, request: GenerationRequest, dest: Path, key: str) -> ProviderResult:
        args = dict(request.arguments)
        if request.references:
            args["image_urls"] = [await self._reference_url(r) for r in request.references]
        handle = await self._on_fal_until_done(request.endpoint, args, key)
        result, units = await self._result(handle)
        images = result.get("images") or []
        if not images or not images[0].get("url"):
            self._forget(key)
            raise ProviderError(f"fal returned no image for request {handle.request_id}", retryable=True,
                                billed=False, request_id=handle.request_id)
        if any(result.get("has_nsfw_concepts") or []):
            self._forget(key)
            raise ProviderError(f"fal flagged the output of request {handle.request_id} as NSFW (seed "
                                f"{args.get('seed')})", retryable=True, billed=True, request_id=handle.request_id,
                                nsfw=True)
        width, height = await self._download(images[0]["url"], dest, handle.request_id)
        self._forget(key)
        response = {k: v for k, v in result.items() if k != "prompt"}
        return ProviderResult(width=width, height=height, response=response, request_id=handle.request_id,
                              billed=True, billable_units=units)

    async def _on_fal_until_done(self, endpoint: str, args: dict[str, Any], key: str) -> fal_client.AsyncRequestHandle:
        """Resume the journalled request for ``key``, or submit and journal a new one; wait until fal
        has finished it. Holds one of the account's concurrency slots meanwhile."""
        async with self._on_fal:
            handle = await self._resume(key, args) if key else None
            if handle is None:
                handle = await self._submit(endpoint, args)
                self._journal(key, endpoint, args, handle)
            await self._wait(handle, key)
        return handle

    async def _submit(self, endpoint: str, args: dict[str, Any]) -> fal_client.AsyncRequestHandle:
        try:
            return await self._client.submit(endpoint, args)
        except fal_client.FalClientHTTPError as e:
            raise _http_error("submitting to " + endpoint, e) from None
        except (httpx.TransportError, httpx.TimeoutException) as e:
            # fal-client has already retried this 10 times with backoff: do not multiply retries.
            raise ProviderError(f"could not reach fal to submit {endpoint} after fal-client's retries: "
                                f"{type(e).__name__}: {e}", retryable=False, billed=False) from None

    async def _wait(self, handle: fal_client.AsyncRequestHandle, key: str) -> None:
        started = time.monotonic()
        deadline = started + self.settings.timeout_seconds
        polls = 0
        while True:
            try:
                status = await handle.status()
            except fal_client.FalClientHTTPError as e:
                if e.status_code == 404:
                    self._forget(key)
                raise _http_error(f"polling request {handle.request_id}", e, handle.request_id) from None
            except (httpx.TransportError, httpx.TimeoutException, ValueError) as e:
                raise ProviderError(f"lost request {handle.request_id} while polling: {type(e).__name__}: {e}",
                                    retryable=True, billed=False, request_id=handle.request_id) from None
            if isinstance(status, fal_client.Completed):
                if status.error:
                    self._forget(key)
                    raise ProviderError(f"fal request {handle.request_id} failed: {status.error}"
                                        f" ({status.error_type or 'error'})", retryable=True, billed=False,
                                        request_id=handle.request_id)
                return
            if time.monotonic() > deadline:
                try:
                    await handle.cancel()
                except Exception:  # noqa: BLE001 - cancelling is best effort; the timeout is the error
                    pass
                self._forget(key)
                raise ProviderError(f"fal request {handle.request_id} timed out after "
                                    f"{self.settings.timeout_seconds:g}s and was cancelled", retryable=True,
                                    billed=False, request_id=handle.request_id)
            # Polls on a fixed grid from the submission, so round-trip times do not add up.
            polls += 1
            await asyncio.sleep(max(0.0, started + polls * self.settings.poll_seconds - time.monotonic()))

    async def _result(self, handle: fal_client.AsyncRequestHandle) -> tuple[dict[str, Any], Decimal | None]:
        """Fetch the finished result ourselves (fal-client drops the response headers, and
        ``x-fal-billable-units`` is one of them). Reading a result again is free: retried here."""
        last = ""
        for attempt in range(self.settings.fetch_attempts):
            try:
                response = await handle.client.get(handle.response_url, timeout=fal_http.QUEUE_POLL_TIMEOUT)
                if response.status_code >= 400:
                    last = f"HTTP {response.status_code}: {response.text[:200]}"
                else:
                    data = response.json()
                    if isinstance(data, dict):
                        return data, _units(response.headers.get("x-fal-billable-units"))
                    last = "the result is not a JSON object"
            except (httpx.TransportError, httpx.TimeoutException, ValueError) as e:
                last = f"{type(e).__name__}: {e}"
            await asyncio.sleep(min(2.0, 0.2 * 2 ** attempt))
        # fal finished (and charged) but we cannot read it: keep the journal entry so the next
        # attempt or run fetches this same result instead of paying for a new one.
        raise ProviderError(f"could not read the result of fal request {handle.request_id}: {last}",
                            retryable=False, billed=True, request_id=handle.request_id)

    async def _download(self, url: str, dest: Path, request_id: str) -> tuple[int, int]:
        if self._downloads is None:
            self._downloads = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=30.0))
        last = ""
        for attempt in range(self.settings.fetch_attempts):
            try:
                return await self._download_once(url, dest)
            except _TooLarge as e:
                raise ProviderError(f"refused the image of fal request {request_id}: {e}", retryable=False,
                                    billed=True, request_id=request_id) from None
            except (httpx.TransportError, httpx.TimeoutException, httpx.HTTPStatusError, _BadImage) as e:
                last = f"{type(e).__name__}: {e}"
            await asyncio.sleep(min(2.0, 0.2 * 2 ** attempt))
        raise ProviderError(f"could not download a valid image for fal request {request_id}: {last}",
                            retryable=False, billed=True, request_id=request_id)

    async def _download_once(self, url: str, dest: Path) -> tuple[int, int]:
        cap = self.settings.max_image_bytes
        async with self._downloads.stream("GET", url) as response:
            response.raise_for_status()
            ctype = response.headers.get("content-type", "")
            if not ctype.startswith("image/"):
                raise _BadImage(f"content type {ctype!r} is not an image")
            declared = int(response.headers.get("content-length") or 0)
            if declared > cap:
                raise _TooLarge(f"{declared} bytes is over the {cap}-byte cap")
            size = 0
            with open(dest, "wb") as f:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise _TooLarge(f"more than the {cap}-byte cap")
                    f.write(chunk)
        return await asyncio.to_thread(self._check_image, dest)

    def _check_image(self, path: Path) -> tuple[int, int]:
        try:
            try:
                im = Image.open(path)  # reads the header only
            except Image.DecompressionBombError as e:
                raise _TooLarge(f"over the pixel cap (a decompression bomb): {e}") from None
            with im:
                w, h = im.size
                if w * h > self.settings.max_image_pixels:
                    raise _TooLarge(f"{w}x{h} px is over the {self.settings.max_image_pixels}-pixel cap "
                                    "(a decompression bomb?)")
                im.load()  # decodes every byte: a truncated or corrupt file fails here
                if im.format != "PNG":  # the store keeps PNG
                    im.save(path, format="PNG")
                return w, h
        except _TooLarge:
            raise
        except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
            raise _BadImage(f"Pillow cannot decode it ({type(e).__name__}: {e})") from None

    # -- reference images ------------------------------------------------------------------------
    async def _reference_url(self, ref: Reference) -> str:
        if self.settings.references == "inline":
            if ref.sha256 not in self._inline:
                self._inline[ref.sha256] = await asyncio.to_thread(fal_client.encode_file, ref.path)
            return self._inline[ref.sha256]
        record = self._uploads / f"{ref.sha256}.json"
        lock = self._upload_locks.setdefault(ref.sha256, asyncio.Lock())
        async with lock:  # one upload per content hash, reused while it is valid
            if record.is_file():
                known = json.loads(record.read_text())
                if time.time() - known["uploaded_at"] < self.settings.upload_ttl_seconds:
                    return known["url"]
            data = await asyncio.to_thread(Path(ref.path).read_bytes)
            try:
                url = await self._client.upload(data, "image/png", file_name=f"{ref.sha256[:16]}.png")
            except Exception as e:  # noqa: BLE001 - any upload failure stops this attempt, retryably
                raise ProviderError(f"could not upload reference {ref.role}: {type(e).__name__}: {e}",
                                    retryable=True, billed=False) from None
            write_text_atomic(record, json.dumps({"url": url, "uploaded_at": time.time(), "role": ref.role}))
            return url

    # -- the journal of submitted requests --------------------------------------------------------
    def _journal(self, key: str, endpoint: str, args: dict[str, Any], handle: fal_client.AsyncRequestHandle) -> None:
        if key:
            write_text_atomic(self._pending / f"{key}.json", json.dumps({
                "request_id": handle.request_id, "response_url": handle.response_url,
                "status_url": handle.status_url, "cancel_url": handle.cancel_url,
                "endpoint": endpoint, "seed": args.get("seed"), "submitted_at": time.time()}))

    def _forget(self, key: str) -> None:
        if key:
            (self._pending / f"{key}.json").unlink(missing_ok=True)

    async def _resume(self, key: str, args: dict[str, Any]) -> fal_client.AsyncRequestHandle | None:
        path = self._pending / f"{key}.json"
        if not path.is_file():
            return None
        known = json.loads(path.read_text())
        if known.get("seed") != args.get("seed"):  # an NSFW retry asks for a new seed: a new request
            self._forget(key)
            return None
        client = await self._client._client  # the authenticated httpx client fal-client built
        return fal_client.AsyncRequestHandle(request_id=known["request_id"], response_url=known["response_url"],
                                             status_url=known["status_url"], cancel_url=known["cancel_url"],
                                             client=client)


class _BadImage(Exception):
    pass


class _TooLarge(Exception):
    pass


def _units(header: str | None) -> Decimal | None:
    try:
        return Decimal(header) if header else None
    except InvalidOperation:
        return None


def _http_error(doing: str, e: fal_client.FalClientHTTPError, request_id: str | None = None) -> ProviderError:
    code = e.status_code
    rid = request_id or e.response_headers.get("x-fal-request-id")
    detail = e.message if isinstance(e.message, str) else json.dumps(e.message)
    if code == 422:  # the request itself is wrong: resubmitting cannot help
        return ProviderError(f"fal rejected the request while {doing} (422): {detail}", retryable=False,
                             billed=False, request_id=rid)
    if code in (401, 403):
        return ProviderError(f"fal refused the key while {doing} ({code}): check FAL_KEY", retryable=False,
                             billed=False, request_id=rid)
    if code in (408, 409, 429):  # fal-client retried these 10 times already
        return ProviderError(f"fal kept answering {code} while {doing}, through fal-client's retries: {detail}",
                             retryable=False, billed=False, request_id=rid)
    if code >= 500:  # not charged; fal-client does not retry 500 or a 5xx carrying a request id
        return ProviderError(f"fal answered {code} while {doing}: {detail}", retryable=True, billed=False,
                             request_id=rid)
    return ProviderError(f"fal answered {code} while {doing}: {detail}", retryable=False, billed=False, request_id=rid)

