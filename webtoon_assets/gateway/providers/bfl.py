"""Black Forest Labs' own API: FLUX.2 [klein 4B/9B, pro, flex, max], submit and poll.

``POST {base}/v1/<model>`` (header ``x-key``) with prompt, width, height, seed and the references
as ``input_image``, ``input_image_2``, ... (base64) answers ``{id, polling_url, cost, input_mp,
output_mp}``. BFL charges at submission and says what: ``cost`` is in credits of $0.01 and is
what the ledger bills (``ProviderResult.billed_usd``). So everything after acceptance is billed:
an ``Error``, a moderated request (nsfw), a result we could not fetch. The handle (id, polling
URL, cost) is journalled the moment BFL answers and a journalled handle is polled again, never
resubmitted. ``polling_url`` is polled until ``Ready``; ``result.sample`` is a signed URL that
expires after 10 minutes, so the image is downloaded at once. BFL has no cancel: a request past
the timeout stays journalled (resumable) and is polled again by the next attempt. More than 24
requests at once are refused with 429 (not billed; sent again after a pause).
"""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import Field

from webtoon_assets.gateway.providers.base import ProviderError, ProviderResult
from webtoon_assets.gateway.providers.http import HttpProvider, PlatformSettings, expires_at, reference_b64
from webtoon_assets.gateway.request import GenerationRequest
from webtoon_assets.gateway.submissions import Submission
from webtoon_assets.sizes import size_pixels

MODELS = {"flux-2-klein-4b": 4, "flux-2-klein-9b": 4, "flux-2-pro": 8, "flux-2-flex": 8, "flux-2-max": 8}  # refs read
URL_TTL_SECONDS = 600  # result.sample is served for 10 minutes
MODERATED = {"Request Moderated", "Content Moderated"}
FAILED = {"Error", "Failed"}


class BflSettings(PlatformSettings):
    platform: ClassVar[str] = "bfl"
    base_url: str = "https://api.bfl.ai"
    concurrency: int = Field(8, ge=1, le=24, description="requests at once (BFL takes 24; 429 beyond)")
    poll_seconds: float = Field(0.5, gt=0)
    timeout_seconds: float = Field(600, gt=0, description="polling stops after this; the request stays "
                                                          "journalled (BFL cannot cancel) and is resumed")


class BflProvider(HttpProvider):
    name = "bfl"
    key_env = "BFL_API_KEY"
    trusted_hosts = ("bfl.ai",)  # polling URLs may be on a regional host (api.eu1.bfl.ai)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-key": key, "accept": "application/json"}

    def _generate(self, request: GenerationRequest, dest: Path, submission: Submission) -> ProviderResult:
        model = _model(request.endpoint)
        task = submission.resume
        resumed = task is not None
        if task is None:
            body = self._body(model, request)
            submission.submitting(request.endpoint, request.arguments.get("seed"))
            _, answer = self._submit(f"{self.base_url}/v1/{model}", body, request.endpoint)
            if not isinstance(answer, dict) or not answer.get("id"):
                raise ProviderError(f"bfl accepted the submission of {request.endpoint} without an id "
                                    f"({answer!r:.200}): outcome unknown until `webtoon reconcile`",
                                    retryable=False, billed=False, unknown=True)
            task = {"request_id": str(answer["id"]), "polling_url": answer.get("polling_url"),
                    **{k: answer.get(k) for k in ("cost", "input_mp", "output_mp")}}
            submission.accepted(task)
        rid = str(task["request_id"])
        try:
            ready, seen = self._wait(task, request.arguments.get("seed"))
            result = ready.get("result") or {}
            sample = result.get("sample") if isinstance(result, dict) else None
            if not sample:
                raise ProviderError(f"bfl request {rid} is Ready without an image", retryable=True, billed=True,
                                    request_id=rid)
            width, height = self._fetch_image(sample, dest, rid)
        except ProviderError as e:  # charged at submission: what BFL said, not the quote, is what it cost
            if e.billed and e.billed_usd is None:
                e.billed_usd = _usd(task.get("cost"))
            raise
        response = {
            "id": rid, "cost": task.get("cost"), "input_mp": task.get("input_mp"), "output_mp": task.get("output_mp"),
            "status": ready.get("status"), "seed": result.get("seed"),
            "images": [{"url": sample, "width": width, "height": height, "content_type": "image/png"}],
            "url_expires_at": expires_at(URL_TTL_SECONDS, seen),
        }
        for k in ("duration", "start_time", "end_time"):
            if k in result:
                response[k] = result[k]
        return ProviderResult(width=width, height=height, response=response, request_id=rid, billed=True,
                              billed_usd=_usd(task.get("cost")), resumed=resumed)

    def _body(self, model: str, request: GenerationRequest) -> dict[str, Any]:
        args = dict(request.arguments)
        body: dict[str, Any] = {"prompt": args.pop("prompt")}
        if "image_size" in args:
            body["width"], body["height"] = size_pixels(args.pop("image_size"))
        if "seed" in args:
            body["seed"] = args.pop("seed")
        body.update(args)  # the endpoint's own: safety_tolerance, output_format, ...
        body.setdefault("output_format", "png")  # the store keeps PNG (BFL's default is JPEG)
        for i, ref in enumerate(request.references[: MODELS[model]]):
            body["input_image" if i == 0 else f"input_image_{i + 1}"] = reference_b64(ref)
        return body

    def _poll_url(self, task: dict[str, Any]) -> str:
        url = task.get("polling_url")
        if self._trusted(url):
            return str(url)
        return f"{self.base_url}/v1/get_result?id={quote(str(task['request_id']))}"  # never send the key elsewhere

    def _wait(self, task: dict[str, Any], seed: Any) -> tuple[dict[str, Any], float]:
        """Poll until Ready: the answer and when it was seen. Every failure here was billed."""
        rid = str(task["request_id"])
        url = self._poll_url(task)
        started = time.monotonic()
        deadline = started + self.settings.timeout_seconds
        polls = 0
        status = "unpolled"
        while True:
            try:
                response, data = self._get_json(url, "polling", rid)
            except ProviderError as e:
                e.billed = True  # BFL charged at submission
                raise
            if response.status_code == 404:
                raise ProviderError(f"bfl no longer knows request {rid} (404 while polling); it was billed at "
                                    "submission", retryable=True, billed=True, request_id=rid)
            if response.status_code >= 400:
                err = self._http_error(response.status_code, response.content, f"polling request {rid}", rid)
                err.billed, err.resumable = True, err.retryable  # poll it again later, when that may help
                raise err
            status = str((data or {}).get("status", "")) if isinstance(data, dict) else ""
            if status == "Ready":
                return data, time.time() - self.settings.poll_seconds
            if status in MODERATED:
                # the prompt or a reference was refused: a new seed would pay again for the same answer
                # ("Request Moderated"); a moderated output may pass with another seed
                raise ProviderError(f"bfl moderated request {rid} ({status}; seed {seed}): it was "
                                    "billed at submission", retryable=status != "Request Moderated", billed=True,
                                    request_id=rid, nsfw=True)
            if status in FAILED:
                raise ProviderError(f"bfl request {rid} failed ({status}: {str(data.get('details') or '')[:200]}); "
                                    "it was billed at submission", retryable=True, billed=True, request_id=rid)
            if status == "Task not found":
                raise ProviderError(f"bfl no longer knows request {rid} (Task not found); it was billed at "
                                    "submission", retryable=True, billed=True, request_id=rid)
            polls += 1
            if time.monotonic() > deadline:
                raise ProviderError(
                    f"bfl request {rid} timed out after {self.settings.timeout_seconds:g}s, still {status}: BFL "
                    "charged it at submission and cannot cancel it; it stays journalled and the next attempt "
                    "polls it again", retryable=True, billed=True, request_id=rid, resumable=True)
            self._poll_pause(started, polls)


def _model(endpoint: str) -> str:
    model = endpoint.removeprefix("bfl/")
    if not endpoint.startswith("bfl/") or model not in MODELS:
        raise ProviderError(f"bfl has no endpoint {endpoint!r}; expected one of "
                            f"{['bfl/' + m for m in MODELS]}", retryable=False, billed=False)
    return model


def _usd(cost: Any) -> Decimal | None:
    """BFL's ``cost`` (credits of $0.01) in dollars."""
    if cost is None:
        return None
    try:
        return Decimal(str(cost)) / 100
    except InvalidOperation:
        return None
