"""What the HTTP image platforms (BFL, Gemini, Together, Replicate) share, and fal's image check.

- ``PlatformSettings``: one settings model per platform, read from ``WEBTOON_<PLATFORM>_<FIELD>``
  (``WEBTOON_BFL_BASE_URL``, ``WEBTOON_GEMINI_CONCURRENCY``, ...).
- ``HttpProvider``: the Provider protocol over a platform's JSON API with httpx: a client that
  honours ``SSL_CERT_FILE`` (the loopback fake's CA in tests), a second client without the key
  for result files (a delivery host never sees it), one submission sent once, answers classified
  into ``ProviderError``, the key redacted from every error and answer.
- ``download_image`` / ``adownload_image`` / ``decode_image``: an image streamed (or decoded from
  base64) under a byte cap, its header checked against a pixel cap before Pillow decodes it, kept
  as PNG at ``dest``. fal's provider uses the same code.

Never pay twice. Before a paid submission the provider journals an intent
(``submission.submitting``); the submission is repeated only while it provably never reached the
platform: the connection was refused, or the platform *answered* 429 or 503. Once the request
may have been sent, a lost or unreadable answer is ``unknown`` (the gateway holds it at its
quote for ``webtoon reconcile``), never sent again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import mimetypes
import os
import random
import ssl
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, ClassVar
from urllib.parse import urlparse

import httpx
from PIL import Image
from pydantic import BaseModel, Field

from webtoon_assets.gateway.providers.base import ProviderError, ProviderResult, ProviderText
from webtoon_assets.gateway.request import GenerationRequest, Reference
from webtoon_assets.gateway.submissions import Submission

# -- images ----------------------------------------------------------------------------------------


class BadImage(Exception):
    """Not a readable image (corrupt, truncated, not an image at all): fetching again may help."""


class TooLarge(Exception):
    """Over the byte or pixel cap: refused unread, and it would come back the same."""


def check_image(path: Path, max_pixels: int) -> tuple[int, int]:
    """(width, height) of the image at ``path`` after a full decode; the pixel cap is checked on
    the header, before decoding. A non-PNG is rewritten as PNG (the store keeps PNG)."""
    try:
        try:
            im = Image.open(path)  # reads the header only
        except Image.DecompressionBombError as e:
            raise TooLarge(f"over the pixel cap (a decompression bomb): {e}") from None
        with im:
            w, h = im.size
            if w * h > max_pixels:
                raise TooLarge(f"{w}x{h} px is over the {max_pixels}-pixel cap (a decompression bomb?)")
            im.load()  # decodes every byte: a truncated or corrupt file fails here
            if im.format != "PNG":
                im.save(path, format="PNG")
            return w, h
    except TooLarge:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
        raise BadImage(f"Pillow cannot decode it ({type(e).__name__}: {e})") from None


class _CappedFile:
    """The download's destination: checks the answer's headers, then counts bytes against the cap."""

    def __init__(self, response: httpx.Response, dest: Path, max_bytes: int):
        ctype = response.headers.get("content-type", "")
        if not ctype.startswith("image/"):
            raise BadImage(f"content type {ctype!r} is not an image")
        declared = int(response.headers.get("content-length") or 0)
        if declared > max_bytes:
            raise TooLarge(f"{declared} bytes is over the {max_bytes}-byte cap")
        self.cap, self.size = max_bytes, 0
        self.file: BinaryIO = open(dest, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.cap:
            raise TooLarge(f"more than the {self.cap}-byte cap")
        self.file.write(chunk)

    def __enter__(self) -> "_CappedFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.file.close()


def download_image(client: httpx.Client, url: str, dest: Path, max_bytes: int, max_pixels: int) -> tuple[int, int]:
    """One download of an image to ``dest``: raises httpx errors (``HTTPStatusError`` for an
    error answer), ``BadImage`` or ``TooLarge``."""
    with client.stream("GET", url) as response:
        response.raise_for_status()
        with _CappedFile(response, dest, max_bytes) as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
    return check_image(dest, max_pixels)


async def adownload_image(client: httpx.AsyncClient, url: str, dest: Path, max_bytes: int,
                          max_pixels: int) -> tuple[int, int]:
    """``download_image`` on an event loop (fal's provider); the decode runs off the loop."""
    async with client.stream("GET", url) as response:
        response.raise_for_status()
        with _CappedFile(response, dest, max_bytes) as out:
            async for chunk in response.aiter_bytes():
                out.write(chunk)
    return await asyncio.to_thread(check_image, dest, max_pixels)


def decode_image(data: str, dest: Path, max_bytes: int, max_pixels: int) -> tuple[int, int]:
    """An image sent inline as base64: the byte cap is checked on the encoded length first."""
    if not isinstance(data, str) or not data:
        raise BadImage("no image data")
    if len(data) // 4 * 3 > max_bytes:
        raise TooLarge(f"about {len(data) // 4 * 3} bytes is over the {max_bytes}-byte cap")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadImage(f"the base64 image does not decode ({e})") from None
    dest.write_bytes(raw)
    return check_image(dest, max_pixels)


# -- settings ----------------------------------------------------------------------------------------


class PlatformSettings(BaseModel):
    """One platform's settings; each field is read from ``WEBTOON_<PLATFORM>_<FIELD NAME>``."""

    platform: ClassVar[str] = ""
    base_url: str = Field(description="the API host (the loopback fake in tests)")
    concurrency: int = Field(4, ge=1, le=64, description="requests usefully in flight at once")
    poll_seconds: float = Field(1.0, gt=0, description="status poll interval (submit-and-poll platforms)")
    timeout_seconds: float = Field(600, gt=0, description="a request unfinished after this is given up: "
                                                          "cancelled where the platform can cancel")
    request_timeout_seconds: float = Field(60, gt=0, description="one HTTP call's read timeout (submit, poll)")
    submit_tries: int = Field(5, ge=1, description="sends of a submission the platform provably did not take "
                                                   "(connection refused, an answer of 429 or 503)")
    retry_base_seconds: float = Field(0.5, ge=0, description="backoff between those sends (without Retry-After) "
                                                             "and between downloads of a result")
    retry_after_max_seconds: float = Field(60, ge=0, description="the longest Retry-After honoured")
    max_image_bytes: int = Field(50 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(64 * 1024 * 1024, gt=0)
    fetch_attempts: int = Field(3, ge=1, description="tries to download a result image (free)")

    @classmethod
    def env_name(cls, field: str) -> str:
        return f"WEBTOON_{cls.platform.upper()}_{field.upper()}"

    @classmethod
    def from_env(cls):  # noqa: ANN206 - the subclass
        values = {name: os.environ[cls.env_name(name)] for name in cls.model_fields
                  if os.environ.get(cls.env_name(name))}
        return cls(**values)


# -- the provider ------------------------------------------------------------------------------------

CONNECT_SECONDS = 30.0  # connecting, sending, waiting for a pooled connection
RETRY_SAME = {429, 503}  # the platform answered "not now": nothing was taken, send it again
GONE = {403, 404, 410}  # a result URL that answers these has expired (signed URLs answer 403)


def ssl_context() -> ssl.SSLContext | bool:
    """``SSL_CERT_FILE`` when set (the fake's test CA), else httpx's default (certifi)."""
    path = os.environ.get("SSL_CERT_FILE")
    return ssl.create_default_context(cafile=path) if path else True


def retry_after(response: httpx.Response, cap: float) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(cap, seconds))


def detail_of(body: bytes, limit: int = 300) -> str:
    """The platform's own words for an error answer, short."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:limit].decode("utf-8", "replace").strip() or "no detail"
    if isinstance(data, dict):
        for k in ("error", "detail", "message", "title"):
            v = data.get(k)
            if isinstance(v, dict):
                v = v.get("message") or v.get("status") or json.dumps(v)
            if v:
                return str(v)[:limit]
    return json.dumps(data)[:limit]


class HttpProvider:
    """The shared half of an HTTP image platform's provider. A subclass sets ``name``, ``key_env``
    and ``auth_headers`` and implements ``_generate`` (one attempt, under one of the provider's
    ``concurrency`` slots)."""

    name: ClassVar[str] = ""
    key_env: ClassVar[str] = ""  # where the key comes from, for messages
    trusted_hosts: ClassVar[tuple[str, ...]] = ()  # hosts (and their subdomains) given the key besides base_url's

    def __init__(self, key: str, settings: PlatformSettings, state_dir: Path):
        if not key:
            raise ValueError(f"the {self.name} provider needs {self.key_env}")
        self._key = key
        self.settings = settings
        self.state_dir = state_dir
        self.concurrency = settings.concurrency
        self.base_url = settings.base_url.rstrip("/")
        keep = settings.concurrency + 4
        limits = httpx.Limits(max_connections=keep, max_keepalive_connections=keep)
        timeout = httpx.Timeout(CONNECT_SECONDS, read=settings.request_timeout_seconds)
        verify = ssl_context()
        self._api = httpx.Client(verify=verify, limits=limits, timeout=timeout, headers=self.auth_headers(key),
                                 follow_redirects=False)
        # Result files live on delivery hosts: fetched by a client that never carries the key.
        self._files = httpx.Client(verify=verify, limits=limits, timeout=httpx.Timeout(120.0, connect=30.0),
                                   follow_redirects=True)
        self._slots = threading.BoundedSemaphore(settings.concurrency)

    # -- for the subclass ----------------------------------------------------------------------------
    def auth_headers(self, key: str) -> dict[str, str]:
        raise NotImplementedError

    def _generate(self, request: GenerationRequest, dest: Path, submission: Submission) -> ProviderResult:
        raise NotImplementedError

    # -- the Provider protocol -----------------------------------------------------------------------
    def generate(self, request: GenerationRequest, dest: Path, key: str, submission: Submission) -> ProviderResult:
        try:
            with self._slots:
                result = self._generate(request, dest, submission)
        except ProviderError as e:
            raise self._redacted(e) from None
        except Exception as e:  # noqa: BLE001 - anything else leaves as a plain failure, key redacted
            raise ProviderError(self._redact(f"{self.name}: {type(e).__name__}: {e}"), retryable=False,
                                billed=False) from None
        result.response = self._redact_obj(result.response)
        return result

    def generate_text(self, request: GenerationRequest, key: str, submission: Submission) -> ProviderText:
        raise ProviderError(f"{self.name} makes no text (asked {request.endpoint} for text)", retryable=False,
                            billed=False)

    def refetch(self, request: GenerationRequest, record: dict[str, Any], dest: Path) -> bool:
        """Download the stored record's result URL again, while the platform still serves it: free."""
        response = record.get("response") or {}
        images = response.get("images") or []
        url = images[0].get("url") if images and isinstance(images[0], dict) else None
        expires = response.get("url_expires_at")
        if not url or (expires is not None and time.time() >= float(expires)):
            return False
        try:
            self._fetch_image(url, dest, str(record.get("provider_request_id")))
            return True
        except ProviderError:
            return False

    def close(self) -> None:
        self._api.close()
        self._files.close()

    # -- redaction -----------------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _redact_obj(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, dict):
            return {k: self._redact_obj(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._redact_obj(v) for v in value]
        return value

    def _redacted(self, e: ProviderError) -> ProviderError:
        return ProviderError(self._redact(str(e)), retryable=e.retryable, billed=e.billed, request_id=e.request_id,
                             nsfw=e.nsfw, unknown=e.unknown, resumable=e.resumable, billed_usd=e.billed_usd)

    # -- HTTP ----------------------------------------------------------------------------------------
    def _trusted(self, url: str | None) -> bool:
        """Whether a URL the platform handed back may be sent the key: the base URL's host, or one
        of the platform's own hosts, over HTTPS."""
        if not url:
            return False
        u, base = urlparse(url), urlparse(self.base_url)
        if u.scheme != "https" and u.scheme != base.scheme:
            return False
        host = (u.hostname or "").lower()
        return host == (base.hostname or "").lower() or any(host == h or host.endswith("." + h)
                                                            for h in self.trusted_hosts)

    def _backoff(self, attempt: int) -> float:
        return min(10.0, self.settings.retry_base_seconds * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)

    def _submit(self, url: str, body: dict[str, Any], what: str, *, headers: dict[str, str] | None = None,
                timeout: float | None = None) -> tuple[httpx.Response, Any]:
        """POST a paid submission and read its JSON answer (under a byte cap), repeating it only
        while it provably never reached the platform. Returns the answer and its JSON."""
        s = self.settings
        # Only the wait for the answer is bounded by ``timeout``: a slow handshake is no lost answer.
        to = httpx.Timeout(CONNECT_SECONDS, read=timeout or s.request_timeout_seconds)
        cap = s.max_image_bytes * 4 // 3 + 1024 * 1024  # an inline base64 image and its envelope
        last = ""
        for attempt in range(1, s.submit_tries + 1):
            wait: float | None = None
            try:
                response = self._api.send(self._api.build_request("POST", url, json=body, headers=headers,
                                                                  timeout=to), stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
                last = f"{type(e).__name__}: {e}"  # no connection: nothing was sent
            except (httpx.TransportError, httpx.TimeoutException) as e:
                raise self._lost(what, e) from None
            else:
                try:
                    raw = _read_capped(response, cap)
                except (httpx.TransportError, httpx.TimeoutException, TooLarge) as e:
                    if response.status_code < 400:
                        raise self._lost(what, e) from None
                    raw = b""
                finally:
                    response.close()
                if response.status_code < 400:
                    try:
                        return response, json.loads(raw)
                    except ValueError as e:
                        raise ProviderError(f"{self.name} answered the submission of {what} unreadably ({e}): "
                                            "it may have taken and billed it: outcome unknown until `webtoon "
                                            "reconcile`", retryable=False, billed=False, unknown=True) from None
                if response.status_code not in RETRY_SAME:
                    raise self._http_error(response.status_code, raw, f"submitting {what}")
                last = f"HTTP {response.status_code}: {detail_of(raw, 120)}"
                wait = retry_after(response, s.retry_after_max_seconds)
            if attempt < s.submit_tries:
                time.sleep(self._backoff(attempt) if wait is None else wait)
        raise ProviderError(f"{self.name} did not take the submission of {what} after {s.submit_tries} tries "
                            f"({last}); none of them reached it, nothing was billed", retryable=True, billed=False)

    def _lost(self, what: str, e: Exception) -> ProviderError:
        return ProviderError(
            f"the answer to the submission of {what} was lost ({type(e).__name__}: {e}); {self.name} may have "
            "taken and billed it, so it is not sent again: outcome unknown until `webtoon reconcile`",
            retryable=False, billed=False, unknown=True)

    def _http_error(self, code: int, body: bytes, doing: str, request_id: str | None = None) -> ProviderError:
        """An error answer as a ProviderError (not billed: the caller says when it was). 5xx: the
        platform failed before charging (a 5xx never reached it, BRIEF), so it may be tried again."""
        detail = detail_of(body)
        if code in (401, 403):
            return ProviderError(f"{self.name} refused the key while {doing} ({code}: {detail}): check "
                                 f"{self.key_env}", retryable=False, billed=False, request_id=request_id)
        if code == 402:
            return ProviderError(f"{self.name} wants payment while {doing} (402: {detail}): add credits",
                                 retryable=False, billed=False, request_id=request_id)
        if code in (408, 409, 425, 429) or code >= 500:
            return ProviderError(f"{self.name} answered {code} while {doing}: {detail}", retryable=True,
                                 billed=False, request_id=request_id)
        return ProviderError(f"{self.name} rejected the request while {doing} ({code}): {detail}", retryable=False,
                             billed=False, request_id=request_id)

    def _get_json(self, url: str, what: str, request_id: str) -> tuple[httpx.Response, Any]:
        """A free read (a status poll): transport errors and unreadable answers are ProviderErrors
        that keep the journalled request resumable."""
        try:
            response = self._api.get(url)
            if response.status_code >= 400:
                return response, None
            return response, response.json()
        except (httpx.TransportError, httpx.TimeoutException, ValueError) as e:
            raise ProviderError(f"lost {self.name} request {request_id} while {what}: {type(e).__name__}: {e}",
                                retryable=True, billed=False, request_id=request_id, resumable=True) from None

    def _fetch_image(self, url: str, dest: Path, request_id: str) -> tuple[int, int]:
        """Download a finished result at once (its URL expires). Billed: the platform charged for it."""
        s = self.settings
        last = ""
        for attempt in range(s.fetch_attempts):
            try:
                return download_image(self._files, url, dest, s.max_image_bytes, s.max_image_pixels)
            except TooLarge as e:
                raise ProviderError(f"refused the image of {self.name} request {request_id}: {e}", retryable=False,
                                    billed=True, request_id=request_id) from None
            except httpx.HTTPStatusError as e:
                if e.response.status_code in GONE:
                    raise ProviderError(
                        f"the result of {self.name} request {request_id} is gone (HTTP {e.response.status_code}): "
                        "its URL expired before it was downloaded; it was billed, a new attempt pays again",
                        retryable=True, billed=True, request_id=request_id) from None
                last = f"HTTP {e.response.status_code}"
            except (httpx.TransportError, httpx.TimeoutException, BadImage) as e:
                last = f"{type(e).__name__}: {e}"
            if attempt + 1 < s.fetch_attempts:
                time.sleep(min(2.0, s.retry_base_seconds * 2 ** attempt))
        raise ProviderError(f"could not download a valid image for {self.name} request {request_id}: {last}",
                            retryable=False, billed=True, request_id=request_id)

    def _decode_image(self, data: Any, dest: Path, request_id: str | None, billed: bool = True) -> tuple[int, int]:
        """An inline (base64) result. A bad one cannot be fetched again: the attempt failed, billed."""
        s = self.settings
        try:
            return decode_image(data, dest, s.max_image_bytes, s.max_image_pixels)
        except TooLarge as e:
            raise ProviderError(f"refused the image of {self.name} request {request_id}: {e}", retryable=False,
                                billed=billed, request_id=request_id) from None
        except BadImage as e:
            raise ProviderError(f"{self.name} request {request_id} returned a bad image: {e}", retryable=True,
                                billed=billed, request_id=request_id) from None

    def _poll_pause(self, started: float, polls: int) -> None:
        """Polls on a fixed grid from the start, so round trips do not add up."""
        time.sleep(max(0.0, started + polls * self.settings.poll_seconds - time.monotonic()))


def _read_capped(response: httpx.Response, cap: int) -> bytes:
    declared = int(response.headers.get("content-length") or 0)
    if declared > cap:
        raise TooLarge(f"an answer of {declared} bytes is over the {cap}-byte cap")
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > cap:
            raise TooLarge(f"an answer of more than the {cap}-byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


def reference_b64(ref: Reference) -> str:
    return base64.b64encode(Path(ref.path).read_bytes()).decode("ascii")


def reference_mime(ref: Reference) -> str:
    return mimetypes.guess_type(ref.path)[0] or "image/png"


def expires_at(seconds: float, since: float | None = None) -> float:
    """When a result URL made at ``since`` (default now) stops being served."""
    return (since if since is not None else time.time()) + seconds
