"""The fal provider: fal-client's queue API (AsyncClient) on one background event loop.

One call of ``generate`` is one attempt: submit (or resume), poll, fetch the result, download and
check the image. What fal-client already retries (408/409/429, dropped connections, ingress 5xx:
up to 10 times with backoff) is not retried again here; everything else is reported as a
``ProviderError`` saying whether it may be retried and whether fal charged for it, and the
gateway decides (and writes a ledger row per attempt).

Never pay twice: the gateway hands every attempt its key's journal entry (see
``gateway/submissions.py``). The provider writes an intent before it sends a submission and the
request's handle the moment fal accepts it; an entry with a handle is resumed (polled, fetched)
instead of submitted again. A submission is sent once: it is repeated only when it provably never
reached fal (the connection was refused, or fal *answered* 429/408/409 or an ingress 5xx). When
the answer to a submission is lost, fal may have queued and billed it: that attempt is reported as
``unknown`` (the gateway records it, priced at its quote, for ``webtoon reconcile``), never resent.
Results are downloaded at once (fal keeps files about a week), streamed with a byte cap, and
decoded by Pillow after a pixel cap check, before anything is stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import fal_client
import fal_client.client as fal_http
from fal_client._headers import add_fal_app_context_headers
import httpx
from pydantic import BaseModel, Field

from webtoon_assets.files import write_text_atomic
from webtoon_assets.gateway.providers.base import ProviderError, ProviderFile, ProviderResult, ProviderText
from webtoon_assets.gateway.providers.http import BadImage as _BadImage
from webtoon_assets.gateway.providers.http import TooLarge as _TooLarge
from webtoon_assets.gateway.providers.http import adownload_image
from webtoon_assets.gateway.request import GenerationRequest, Lora, Reference
from webtoon_assets.gateway.submissions import Submission


class FalSettings(BaseModel):
    concurrency: int = Field(2, ge=1, le=40, description="requests in progress at once: the account's "
                                                         "concurrency (a new fal account has 2)")
    queue_ahead: int | None = Field(None, ge=0, le=40, description="requests kept waiting in fal's queue beyond "
                                                                   "`concurrency`, so one starts the moment a "
                                                                   "slot frees (default: a quarter of it, >= 1)")
    references: Literal["upload", "inline"] = "upload"
    poll_seconds: float = Field(0.25, gt=0, description="status poll interval (fal-client's default is 0.1)")
    timeout_seconds: float = Field(600, gt=0, description="a request still unfinished after this is cancelled")
    base_url: str | None = Field(None, description="a fal-compatible host (the loopback fake in tests)")
    upload_ttl_seconds: float = 24 * 3600
    max_image_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 64 * 1024 * 1024
    max_file_bytes: int = Field(2 * 1024 ** 3, description="a file result's cap (a FLUX.2 LoRA: hundreds of MB)")
    fetch_attempts: int = Field(3, ge=1, description="tries to read a finished result or download an image")

    @property
    def ahead(self) -> int:
        return self.queue_ahead if self.queue_ahead is not None else max(1, self.concurrency // 4)

    @classmethod
    def from_env(cls) -> "FalSettings":
        env = {
            "concurrency": "WEBTOON_FAL_CONCURRENCY", "queue_ahead": "WEBTOON_FAL_QUEUE_AHEAD",
            "references": "WEBTOON_FAL_REFERENCES",
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
        # fal counts only the requests in progress against an account's concurrency; the others wait
        # in its queue, and none is refused for concurrency. So `concurrency` requests run and
        # `queue_ahead` more wait at fal, each starting the moment a slot frees rather than a poll
        # and a submission later. Fetching, downloading and storing a result come after a request
        # leaves fal, so the gateway runs enough workers for those to overlap the next requests.
        on_fal = settings.concurrency + settings.ahead
        self.concurrency = on_fal + settings.concurrency
        self._on_fal = asyncio.Semaphore(on_fal)
        self._key = key
        self._uploads = state_dir / "uploads"
        if settings.base_url:
            _point_client_at(settings.base_url)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fal-provider", daemon=True)
        self._thread.start()
        self._client = fal_client.AsyncClient(key=key)
        self._queue: httpx.AsyncClient | None = None
        self._downloads: httpx.AsyncClient | None = None
        self._upload_locks: dict[str, asyncio.Lock] = {}
        self._inline: dict[str, str] = {}  # data URIs by content hash: encoded once per provider

    def _queue_client(self) -> httpx.AsyncClient:
        """The HTTP client of the queue calls (submit, status, result, cancel), fal-client's own
        transport (with its backup domain) and headers, with a pool that keeps a connection per
        request on fal: httpx keeps 20 by default, so at a higher concurrency every status poll
        would open (and shake hands on) a new connection."""
        if self._queue is None:
            keep = self.concurrency + 4
            transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=keep,
                                                                     max_keepalive_connections=keep))
            self._queue = httpx.AsyncClient(
                transport=fal_http.AsyncBackupDomainTransport(transport=transport),
                headers={"Authorization": f"Key {self._key}", "User-Agent": fal_http.USER_AGENT},
                timeout=self._client.default_timeout)
        return self._queue

    # -- the gateway's entry point ---------------------------------------------------------------
    def generate(self, request: GenerationRequest, dest: Path, key: str, submission: Submission) -> ProviderResult:
        return self._run(self._generate(request, dest, submission))

    def generate_text(self, request: GenerationRequest, key: str, submission: Submission) -> ProviderText:
        return self._run(self._generate_text(request, submission))

    def generate_file(self, request: GenerationRequest, dest: Path, key: str, submission: Submission) -> ProviderFile:
        return self._run(self._generate_file(request, dest, submission))

    def refetch(self, request: GenerationRequest, record: dict[str, Any], dest: Path) -> bool:
        """Download the stored image's result file again (fal keeps it about a week): free."""
        images = (record.get("response") or {}).get("images") or []
        if not images or not images[0].get("url"):
            return False
        try:
            self._run(self._download(images[0]["url"], dest, str(record.get("provider_request_id"))))
            return True
        except ProviderError:
            return False

    def _run(self, coro: Any) -> Any:
        """Run one attempt on the provider's loop; errors leave with the key redacted."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except ProviderError as e:
            raise ProviderError(self._redact(str(e)), retryable=e.retryable, billed=e.billed,
                                request_id=e.request_id, nsfw=e.nsfw, unknown=e.unknown,
                                resumable=e.resumable) from None

    async def _generate_text(self, request: GenerationRequest, submission: Submission) -> ProviderText:
        args = dict(request.arguments)
        if request.references:  # a vision model is shown the images
            args["image_urls"] = await self._reference_urls(request)
        handle, resumed = await self._on_fal_until_done(request.endpoint, args, submission)
        result, _ = await self._result(handle)
        text = result.get("output")
        if not isinstance(text, str) or result.get("error"):
            raise ProviderError(f"fal request {handle.request_id} gave no text: {result.get('error') or 'no output'}",
                                retryable=False, billed=True, request_id=handle.request_id)
        return ProviderText(text=text, response=result, request_id=handle.request_id, billed=True, resumed=resumed)

    def close(self) -> None:
        async def _close() -> None:
            for client in (self._downloads, self._queue):
                if client is not None:
                    await client.aclose()
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    # -- one attempt -----------------------------------------------------------------------------
    async def _generate(self, request: GenerationRequest, dest: Path, submission: Submission) -> ProviderResult:
        args = dict(request.arguments)
        if request.references:
            args["image_urls"] = await self._reference_urls(request)
        if request.loras:  # each LoRA file uploaded once per content hash; fal reads its URL
            urls = await asyncio.gather(*(self._reference_url(lo, "application/octet-stream", ".safetensors")
                                          for lo in request.loras))
            args["loras"] = [{"path": url, "scale": lo.scale} for url, lo in zip(urls, request.loras)]
        handle, resumed = await self._on_fal_until_done(request.endpoint, args, submission)
        result, units = await self._result(handle)
        images = result.get("images") or []
        if not images or not images[0].get("url"):
            raise ProviderError(f"fal returned no image for request {handle.request_id}", retryable=True,
                                billed=False, request_id=handle.request_id)
        if any(result.get("has_nsfw_concepts") or []):
            raise ProviderError(f"fal flagged the output of request {handle.request_id} as NSFW (seed "
                                f"{args.get('seed')})", retryable=True, billed=True, request_id=handle.request_id,
                                nsfw=True)
        width, height = await self._download(images[0]["url"], dest, handle.request_id)
        response = {k: v for k, v in result.items() if k != "prompt"}
        return ProviderResult(width=width, height=height, response=response, request_id=handle.request_id,
                              billed=True, billable_units=units, resumed=resumed)

    async def _generate_file(self, request: GenerationRequest, dest: Path, submission: Submission) -> ProviderFile:
        """A training request: the zip uploaded and sent as ``image_data_url``; the trained weights
        (``diffusers_lora_file``) downloaded at once, under the file byte cap."""
        args = dict(request.arguments)
        if request.training_data is not None:
            args["image_data_url"] = await self._reference_url(request.training_data, "application/zip", ".zip")
        handle, resumed = await self._on_fal_until_done(request.endpoint, args, submission)
        result, units = await self._result(handle)
        lora = result.get("diffusers_lora_file") or {}
        if not isinstance(lora, dict) or not lora.get("url"):
            raise ProviderError(f"fal returned no diffusers_lora_file for request {handle.request_id}",
                                retryable=False, billed=True, request_id=handle.request_id)
        await self._download_file(lora["url"], dest, handle.request_id)
        return ProviderFile(response=result, request_id=handle.request_id, billed=True, billable_units=units,
                            resumed=resumed)

    async def _download_file(self, url: str, dest: Path, request_id: str) -> None:
        if self._downloads is None:
            self._downloads = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=30.0))
        last = ""
        for attempt in range(self.settings.fetch_attempts):
            try:
                cap, size = self.settings.max_file_bytes, 0
                async with self._downloads.stream("GET", url) as response:
                    response.raise_for_status()
                    if int(response.headers.get("content-length") or 0) > cap:
                        raise _TooLarge(f"{response.headers['content-length']} bytes is over the {cap}-byte cap")
                    with open(dest, "wb") as out:
                        async for chunk in response.aiter_bytes():
                            size += len(chunk)
                            if size > cap:
                                raise _TooLarge(f"more than the {cap}-byte cap")
                            out.write(chunk)
                return
            except _TooLarge as e:
                raise ProviderError(f"refused the file of fal request {request_id}: {e}", retryable=False,
                                    billed=True, request_id=request_id) from None
            except (httpx.TransportError, httpx.TimeoutException, httpx.HTTPStatusError) as e:
                last = f"{type(e).__name__}: {e}"
            await asyncio.sleep(min(2.0, 0.2 * 2 ** attempt))
        raise ProviderError(f"could not download the file of fal request {request_id}: {last}",
                            retryable=False, billed=True, request_id=request_id)

    async def _on_fal_until_done(self, endpoint: str, args: dict[str, Any], submission: Submission
                                 ) -> tuple[fal_client.AsyncRequestHandle, bool]:
        """Resume the journalled request, or journal an intent, submit once and journal the handle;
        wait until fal has finished it. Holds one of the account's concurrency slots meanwhile."""
        async with self._on_fal:
            handle = await self._resume(submission.resume) if submission.resume else None
            if handle is None:  # journal writes are fsynced: off the loop, so other requests' polls go on
                await asyncio.to_thread(submission.submitting, endpoint, args.get("seed"))
                handle = await self._submit(endpoint, args)
                await asyncio.to_thread(submission.accepted, {
                    "request_id": handle.request_id, "response_url": handle.response_url,
                    "status_url": handle.status_url, "cancel_url": handle.cancel_url})
            await self._wait(handle)
        return handle, submission.resume is not None and handle.request_id == submission.resume["request_id"]

    async def _submit(self, endpoint: str, args: dict[str, Any]) -> fal_client.AsyncRequestHandle:
        """POST the submission (as fal-client's ``submit`` does), repeating it only while it provably
        never reached fal. fal-client's own submit would resend after a lost answer, and pay twice."""
        client = self._queue_client()
        headers: dict[str, str] = {}
        add_fal_app_context_headers(headers)
        url = fal_http.QUEUE_URL_FORMAT + endpoint
        last = ""
        for attempt in range(1, SUBMIT_TRIES + 1):
            try:
                response = await client.post(url, json=args, headers=headers, timeout=self._client.default_timeout)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
                last = f"{type(e).__name__}: {e}"  # no connection: nothing was sent
            except (httpx.TransportError, httpx.TimeoutException) as e:
                raise ProviderError(
                    f"the answer to the submission of {endpoint} was lost ({type(e).__name__}: {e}); fal may "
                    "have queued and billed it, so it is not sent again: outcome unknown until `webtoon "
                    "reconcile`", retryable=False, billed=False, unknown=True) from None
            else:
                if response.status_code < 400:
                    try:
                        data = response.json()
                        return fal_client.AsyncRequestHandle(
                            request_id=data["request_id"], response_url=data["response_url"],
                            status_url=data["status_url"], cancel_url=data["cancel_url"], client=client)
                    except (ValueError, KeyError, TypeError) as e:
                        raise ProviderError(f"fal accepted the submission of {endpoint} but its answer is unreadable "
                                            f"({type(e).__name__}: {e}): outcome unknown until `webtoon reconcile`",
                                            retryable=False, billed=False, unknown=True,
                                            request_id=response.headers.get("x-fal-request-id")) from None
                if not _refused_unqueued(response):
                    raise _http_error("submitting to " + endpoint, _as_fal_error(response)) from None
                last = f"HTTP {response.status_code}"
            if attempt < SUBMIT_TRIES:
                await asyncio.sleep(min(10.0, 0.1 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
        raise ProviderError(f"fal did not take the submission of {endpoint} after {SUBMIT_TRIES} tries ({last}); "
                            "none of them reached a queue", retryable=False, billed=False)

    async def _wait(self, handle: fal_client.AsyncRequestHandle) -> None:
        started = time.monotonic()
        deadline = started + self.settings.timeout_seconds
        polls = 0
        while True:
            try:
                status = await handle.status()
            except fal_client.FalClientHTTPError as e:
                err = _http_error(f"polling request {handle.request_id}", e, handle.request_id)
                err.resumable = e.status_code != 404  # 404: fal no longer knows it; else poll it again later
                raise err from None
            except (httpx.TransportError, httpx.TimeoutException, ValueError) as e:
                raise ProviderError(f"lost request {handle.request_id} while polling: {type(e).__name__}: {e}",
                                    retryable=True, billed=False, request_id=handle.request_id,
                                    resumable=True) from None
            if isinstance(status, fal_client.Completed):
                if status.error:
                    raise ProviderError(f"fal request {handle.request_id} failed: {status.error}"
                                        f" ({status.error_type or 'error'})", retryable=True, billed=False,
                                        request_id=handle.request_id)
                return
            if time.monotonic() > deadline:
                await self._cancel(handle)
            # Polls on a fixed grid from the submission, so round-trip times do not add up.
            polls += 1
            await asyncio.sleep(max(0.0, started + polls * self.settings.poll_seconds - time.monotonic()))

    async def _cancel(self, handle: fal_client.AsyncRequestHandle) -> None:
        """Cancel a request past the timeout. Only a cancellation fal confirmed is known unbilled."""
        timeout = f"fal request {handle.request_id} timed out after {self.settings.timeout_seconds:g}s"
        try:
            await handle.cancel()
        except Exception as e:  # noqa: BLE001 - any failure leaves the request's fate unknown
            raise ProviderError(f"{timeout} and could not be cancelled ({type(e).__name__}: {e}): it may still "
                                "finish and be billed: outcome unknown until `webtoon reconcile`", retryable=False,
                                billed=False, request_id=handle.request_id, unknown=True) from None
        raise ProviderError(f"{timeout} and was cancelled", retryable=True, billed=False, request_id=handle.request_id)

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
        # fal finished (and charged) but the result cannot be read: one failed row keeps the charge,
        # and the journal entry is retired so no later run bills this request again.
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
        return await adownload_image(self._downloads, url, dest, self.settings.max_image_bytes,
                                     self.settings.max_image_pixels)

    # -- reference images ------------------------------------------------------------------------
    async def _reference_urls(self, request: GenerationRequest) -> list[str]:
        """The request's references as fal reads them, uploaded side by side (each once per content
        hash, under its lock), in the request's order."""
        return list(await asyncio.gather(*(self._reference_url(r) for r in request.references)))

    async def _reference_url(self, ref: Reference | Lora, content_type: str = "image/png",
                             suffix: str = ".png") -> str:
        if self.settings.references == "inline" and content_type == "image/png":
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
                url = await self._client.upload(data, content_type, file_name=f"{ref.sha256[:16]}{suffix}")
            except Exception as e:  # noqa: BLE001 - any upload failure stops this attempt, retryably
                raise ProviderError(f"could not upload reference {ref.role}: {type(e).__name__}: {e}",
                                    retryable=True, billed=False) from None
            write_text_atomic(record, json.dumps({"url": url, "uploaded_at": time.time(), "role": ref.role}))
            return url

    # -- resuming a journalled request ------------------------------------------------------------
    async def _resume(self, known: dict[str, Any]) -> fal_client.AsyncRequestHandle:
        client = self._queue_client()
        return fal_client.AsyncRequestHandle(request_id=known["request_id"], response_url=known["response_url"],
                                             status_url=known["status_url"], cancel_url=known["cancel_url"],
                                             client=client)


def _units(header: str | None) -> Decimal | None:
    try:
        return Decimal(header) if header else None
    except InvalidOperation:
        return None


SUBMIT_TRIES = 10  # as fal-client: for answers that queued nothing (429, 408, 409, ingress 5xx)


def _refused_unqueued(response: httpx.Response) -> bool:
    """fal answered without queueing the request: safe to send it again."""
    code = response.status_code
    return code in fal_http.RETRY_CODES or (code in fal_http.INGRESS_ERROR_CODES
                                            and "x-fal-request-id" not in response.headers)


def _as_fal_error(response: httpx.Response) -> fal_client.FalClientHTTPError:
    try:
        fal_http._raise_for_status(response)
    except fal_client.FalClientHTTPError as e:
        return e
    raise AssertionError("not an error response")


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
        return ProviderError(f"fal kept answering {code} while {doing}, through the client's retries: {detail}",
                             retryable=False, billed=False, request_id=rid)
    if code >= 500:  # not charged; fal-client does not retry 500 or a 5xx carrying a request id
        return ProviderError(f"fal answered {code} while {doing}: {detail}", retryable=True, billed=False,
                             request_id=rid)
    return ProviderError(f"fal answered {code} while {doing}: {detail}", retryable=False, billed=False, request_id=rid)

