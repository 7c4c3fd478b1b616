"""Replicate's predictions API, for official models addressed as ``replicate/<owner>/<name>``.

``POST {base}/v1/models/<owner>/<name>/predictions`` (``Authorization: Bearer``, ``Prefer:
wait=N``) with ``{"input": {prompt, seed, aspect_ratio, num_outputs: 1, output_format: "png",
...}}``. Replicate holds the answer up to N seconds: it may come back finished, or still
``starting``/``processing``; then ``urls.get`` is polled until ``succeeded`` / ``failed`` /
``canceled``. The prediction's id and URLs are journalled the moment it is created and a
journalled prediction is polled again, never created twice. Outputs are deleted after an hour,
so the image is downloaded at once. A prediction past the timeout is cancelled; only a
cancellation Replicate confirmed is known unbilled (otherwise the outcome is ``unknown``).
Official models bill per output: a succeeded prediction is billed (the price book's quote is
the bill), a failed or cancelled one is not.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import Field

from webtoon_assets.gateway.providers.base import ProviderError, ProviderResult
from webtoon_assets.gateway.providers.http import (
    HttpProvider,
    PlatformSettings,
    detail_of,
    expires_at,
    reference_b64,
    reference_mime,
)
from webtoon_assets.gateway.request import GenerationRequest
from webtoon_assets.gateway.submissions import Submission

URL_TTL_SECONDS = 3600  # inputs and outputs are deleted after an hour
# Models that read reference images, and the input that takes them (with how many). Any other
# model (flux-schnell, flux-dev) reads none, and references are not sent.
REFERENCE_INPUTS: dict[str, tuple[str, int]] = {
    "black-forest-labs/flux-kontext-pro": ("input_image", 1),
    "black-forest-labs/flux-kontext-max": ("input_image", 1),
    "black-forest-labs/flux-2-pro": ("input_images", 8),
    "black-forest-labs/flux-2-flex": ("input_images", 10),
    "black-forest-labs/flux-2-max": ("input_images", 8),
}
FINISHED_UNBILLED = {"failed", "canceled", "aborted"}


class ReplicateSettings(PlatformSettings):
    platform: ClassVar[str] = "replicate"
    base_url: str = "https://api.replicate.com"
    concurrency: int = Field(4, ge=1, le=64)
    wait_seconds: int = Field(60, ge=1, le=60, description="Prefer: wait=N, how long Replicate may hold the answer")


class ReplicateProvider(HttpProvider):
    name = "replicate"
    key_env = "REPLICATE_API_TOKEN"
    trusted_hosts = ("api.replicate.com",)
    settings: ReplicateSettings  # its own fields (wait_seconds) beside the shared ones

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def _generate(self, request: GenerationRequest, dest: Path, submission: Submission) -> ProviderResult:
        model = _model(request.endpoint)
        handle = submission.resume
        resumed = handle is not None
        prediction: dict[str, Any] | None = None
        if handle is None:
            body = {"input": self._input(model, request)}
            submission.submitting(request.endpoint, request.arguments.get("seed"))
            s = self.settings
            _, prediction = self._submit(f"{self.base_url}/v1/models/{model}/predictions", body, request.endpoint,
                                         headers={"Prefer": f"wait={s.wait_seconds}"},
                                         timeout=s.wait_seconds + s.request_timeout_seconds)
            if not isinstance(prediction, dict) or not prediction.get("id"):
                raise ProviderError(f"replicate created a prediction for {request.endpoint} without an id: outcome "
                                    "unknown until `webtoon reconcile`", retryable=False, billed=False, unknown=True)
            urls = prediction.get("urls") or {}
            handle = {"request_id": str(prediction["id"]), "get_url": urls.get("get"),
                      "cancel_url": urls.get("cancel")}
            submission.accepted(handle)
        rid = str(handle["request_id"])
        prediction = self._wait(handle, prediction, request.arguments.get("seed"))
        output = prediction.get("output")
        url = output[0] if isinstance(output, list) and output else output
        if not isinstance(url, str) or not url:
            raise ProviderError(f"replicate prediction {rid} succeeded without an output", retryable=True,
                                billed=True, request_id=rid)
        width, height = self._fetch_image(url, dest, rid)
        response = {k: prediction.get(k) for k in ("id", "model", "version", "status", "metrics", "created_at",
                                                   "completed_at") if k in prediction}
        response["images"] = [{"url": url, "width": width, "height": height, "content_type": "image/png"}]
        response["url_expires_at"] = expires_at(URL_TTL_SECONDS, _timestamp(prediction.get("created_at")))
        return ProviderResult(width=width, height=height, response=response, request_id=rid, billed=True,
                              resumed=resumed)

    def _input(self, model: str, request: GenerationRequest) -> dict[str, Any]:
        args = dict(request.arguments)
        inp: dict[str, Any] = {"prompt": args.pop("prompt")}
        for k in ("seed", "aspect_ratio"):
            if k in args:
                inp[k] = args.pop(k)
        inp["num_outputs"] = 1
        inp["output_format"] = "png"
        inp.update(args)  # the endpoint's own: num_inference_steps, go_fast, output_format, ...
        if model in REFERENCE_INPUTS and request.references:
            field, most = REFERENCE_INPUTS[model]
            uris = [f"data:{reference_mime(r)};base64,{reference_b64(r)}" for r in request.references[:most]]
            inp[field] = uris if field.endswith("s") else uris[0]
        return inp

    def _url(self, handle: dict[str, Any], kind: str) -> str:
        url = handle.get(f"{kind}_url")
        if self._trusted(url):
            return str(url)
        rid = quote(str(handle["request_id"]))
        return f"{self.base_url}/v1/predictions/{rid}" + ("/cancel" if kind == "cancel" else "")

    def _wait(self, handle: dict[str, Any], prediction: dict[str, Any] | None, seed: Any) -> dict[str, Any]:
        """Poll the prediction until it succeeds (returned); its failure, cancellation or timeout raise."""
        rid = str(handle["request_id"])
        started = time.monotonic()
        deadline = started + self.settings.timeout_seconds
        polls = 0
        while True:
            if prediction is not None:
                status = prediction.get("status")
                if status == "succeeded":
                    return prediction
                if status in FINISHED_UNBILLED:
                    raise self._unfinished(rid, status, prediction, seed)
                if time.monotonic() > deadline:
                    prediction = self._cancel(handle)
                    continue
                polls += 1
                self._poll_pause(started, polls)
            response, data = self._get_json(self._url(handle, "get"), "polling", rid)
            if response.status_code == 404:
                raise ProviderError(f"replicate no longer knows prediction {rid} (404 while polling)",
                                    retryable=True, billed=False, request_id=rid)
            if response.status_code >= 400 or not isinstance(data, dict):
                err = self._http_error(response.status_code, response.content, f"polling prediction {rid}", rid)
                err.resumable = err.retryable  # poll it again later, when that may help
                raise err
            prediction = data

    def _unfinished(self, rid: str, status: str, prediction: dict[str, Any], seed: Any) -> ProviderError:
        error = str(prediction.get("error") or "")
        if "nsfw" in error.lower():
            return ProviderError(f"replicate prediction {rid} was flagged NSFW (seed {seed}): {error[:200]}; not "
                                 "billed", retryable=True, billed=False, request_id=rid, nsfw=True)
        return ProviderError(f"replicate prediction {rid} {status}: {error[:200] or 'no error given'}; not billed",
                             retryable=True, billed=False, request_id=rid)

    def _cancel(self, handle: dict[str, Any]) -> dict[str, Any]:
        """Cancel a prediction past the timeout. Only a cancellation Replicate confirmed is known
        unbilled; a prediction that finished meanwhile is returned (and fetched, billed)."""
        rid = str(handle["request_id"])
        timeout = f"replicate prediction {rid} timed out after {self.settings.timeout_seconds:g}s"
        try:
            response = self._api.post(self._url(handle, "cancel"))
        except (httpx.TransportError, httpx.TimeoutException) as e:
            raise ProviderError(f"{timeout} and could not be cancelled ({type(e).__name__}: {e}): it may still finish "
                                "and be billed: outcome unknown until `webtoon reconcile`", retryable=False,
                                billed=False, request_id=rid, unknown=True) from None
        if response.status_code >= 400:
            raise ProviderError(f"{timeout} and could not be cancelled (HTTP {response.status_code}: "
                                f"{detail_of(response.content)}): it may still finish and be billed: outcome unknown "
                                "until `webtoon reconcile`", retryable=False, billed=False, request_id=rid,
                                unknown=True)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if isinstance(answer, dict) and answer.get("status") == "succeeded":
            return answer  # it finished before the cancellation arrived: billed, and fetched
        raise ProviderError(f"{timeout} and was cancelled; not billed", retryable=True, billed=False, request_id=rid)


def _model(endpoint: str) -> str:
    name = endpoint.removeprefix("replicate/")
    parts = name.split("/")
    if not endpoint.startswith("replicate/") or len(parts) != 2 or not all(parts):
        raise ProviderError(f"replicate has no endpoint {endpoint!r}; expected replicate/<owner>/<name>",
                            retryable=False, billed=False)
    return name


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
