"""A loopback fake of fal's queue API, for tests and benchmarks, driven through the real fal-client.

It speaks HTTPS on 127.0.0.1 with a certificate from a test CA (point ``SSL_CERT_FILE`` at the
CA), and implements what fal-client uses: submit, status, result, cancel, the image URLs it
returns, and CDN uploads. Requests complete ``latency`` seconds after they start; at most ``slots``
run at once (a new fal account has 2), the rest wait in the queue. Faults are injected by
configuration and the fake counts everything it is asked, so a test can assert how many paid
calls happened.

Run it as its own process (it must outlive a pipeline killed with SIGKILL):

    python -m webtoon_assets_tests.fake_fal --cert server.pem [--latency 2] [--slots 8] [--key KEY]

It prints ``PORT <n>`` once listening. Control endpoints: GET /_fake/stats, POST /_fake/config
(JSON: latency, slots, faults), POST /_fake/reset.

A request carrying a ``system_prompt`` is a text model's: its result is ``{"output": text_output,
"usage": {...}}`` with ``text_output`` set by configuration; one asked for bounding boxes (its prompt
says "bounding boxes") answers ``detect_output`` instead, when that is set.

Billing follows fal: a request is billed when it completes successfully (whether or not anyone
fetches its result), never when it errors or is cancelled first. Its units are output megapixels
plus one per input image (each reference here is at most 1 MP), times ``prices[endpoint]``
(configurable); the result carries them as ``x-fal-billable-units``. ``/_fake/stats`` lists every
billed request; the platform API's usage report (``GET /v1/models/usage``, admin key) sums them by
endpoint and time window (``summary``) and per endpoint and ``timeframe`` bucket (``time_series``:
minute, hour (default) or day, buckets in UTC), as fal's does; ``phantom_bills`` (configurable: a
list of ``{"endpoint_id", "units"}``) adds charges with no request behind them, billed when
configured (fal once billed a user $40,500 by mistake: fal-ai/fal #1175).

The price list (``GET /v1/models/pricing?endpoint_id=…``, the key; several ids per call, paged by
``pricing_page_size``) answers ``{"prices": [{endpoint_id, unit_price, unit, currency}],
"next_cursor", "has_more"}`` for the endpoints it knows: ``pricing[endpoint]``
(``{"unit_price", "unit"}``, configurable; ``null`` removes one) else ``prices[endpoint]`` per
megapixel. Asked only for endpoints it does not know, it answers 404.

Fault kinds (``{"kind": K, "count": N, "match": "substring of the prompt"}``):
  submit phase:  429, 500, 503_id (503 with a request id), 503_nginx (ingress 503, no id), drop
                 (connection closed with no answer, nothing queued), accept_drop (the request is
                 queued, runs and is billed, but the connection closes before the answer), 422
  request phase: slow (runs ``seconds``, default 600), error (completes with an error),
                 nsfw (has_nsfw_concepts true), malformed_json (result body is broken once),
                 corrupt_image (image bytes are garbage; ``times`` downloads, default 1),
                 truncated_image (a PNG cut in half; ``times``), wrong_type (served as
                 application/octet-stream; ``times``), html_body (an HTML error page with status 200;
                 ``times``), oversized (image header claims 40000x40000 px: a decompression bomb),
                 gone (the result file 404s: fal no longer keeps it), no_cancel (cancel answers 500),
                 extra_units (fal counts ``units`` (default 1) more than the request's own units, bills
                 them and reports them in x-fal-billable-units)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import ssl
import struct
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

from PIL import Image

PRESETS = {"square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
           "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576)}
SUBMIT_FAULTS = {"429", "500", "503_id", "503_nginx", "drop", "accept_drop", "422"}
BAD_FILE_FAULTS = {"corrupt_image", "truncated_image", "wrong_type", "html_body"}  # for ``times`` downloads
REQUEST_FAULTS = {"slow", "error", "nsfw", "malformed_json", "oversized", "gone", "no_cancel", "extra_units",
                  *BAD_FILE_FAULTS}
BUCKETS = {"minute": {"second": 0, "microsecond": 0}, "hour": {"minute": 0, "second": 0, "microsecond": 0},
           "day": {"hour": 0, "minute": 0, "second": 0, "microsecond": 0}}  # usage time series, in UTC
DEFAULT_PRICES = {"fal-ai/flux-2/flash": "0.005", "fal-ai/flux-2/flash/edit": "0.005",
                  "fal-ai/flux-2/turbo": "0.008", "fal-ai/flux-2/turbo/edit": "0.008",
                  "fal-ai/flux-2": "0.012", "fal-ai/flux-2/edit": "0.012",
                  "fal-ai/flux-2/lora": "0.012", "fal-ai/flux-2/lora/edit": "0.012",
                  "fal-ai/flux-2-trainer": "0.0064"}  # the trainer per step
TRAINER_ENDPOINTS = {"fal-ai/flux-2-trainer"}  # take image_data_url (a zip upload), bill per step, return a LoRA


def lora_bytes(rid: str) -> bytes:
    """The weights a fake training run returns: deterministic per request."""
    return b"FAKE-SAFETENSORS:" + hashlib.sha256(rid.encode()).digest() * 64


@dataclass
class Req:
    id: str
    endpoint: str
    args: dict[str, Any]
    submitted: float
    faults: dict[str, dict[str, Any]]
    start: float | None = None
    done: float | None = None
    cancelled: bool = False
    result_fetches: int = 0
    bad_left: int = 0  # downloads still to be served wrong (BAD_FILE_FAULTS)

    def billed(self, now: float) -> bool:
        return (self.done is not None and self.done <= now and not self.cancelled
                and "error" not in self.faults)

    def units(self) -> int:
        extra = int(self.faults["extra_units"].get("units", 1)) if "extra_units" in self.faults else 0
        if "system_prompt" in self.args:
            return 1 + extra
        if self.endpoint in TRAINER_ENDPOINTS:
            return int(self.args.get("steps", 1000)) + extra
        w, h = size_of(self.args)
        return megapixels(w, h) * int(self.args.get("num_images", 1)) + len(self.args.get("image_urls") or []) + extra


@dataclass
class State:
    latency: float = 0.05
    slots: int | None = None
    key: str | None = None
    admin_key: str | None = None
    prices: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    faults: list[dict[str, Any]] = field(default_factory=list)
    requests: dict[str, Req] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    submissions_by_prompt: Counter = field(default_factory=Counter)
    paid_by_prompt: Counter = field(default_factory=Counter)
    uploads: dict[str, bytes] = field(default_factory=dict)
    text_output: str = '{"scenes": []}'  # what a text model "answers" (set by /_fake/config)
    detect_output: str = ""  # what a vision model asked for boxes answers ("": text_output)
    pricing: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # the price list, beyond `prices`
    pricing_page_size: int = 50
    phantoms: list[dict[str, Any]] = field(default_factory=list)  # charges with no request behind them
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, phase: set[str], prompt: str) -> dict[str, Any] | None:
        for f in self.faults:
            if f["kind"] in phase and f.get("count", 1) > 0 and f.get("match", "") in prompt:
                f["count"] = f.get("count", 1) - 1
                return dict(f)
        return None

    def bills(self, now: float) -> list[dict[str, Any]]:
        self.advance(now)
        out = []
        for r in self.requests.values():
            if r.billed(now):
                price = Decimal(self.prices.get(r.endpoint, "0"))
                out.append({"request_id": r.id, "endpoint_id": r.endpoint, "time": r.done, "units": r.units(),
                            "unit_price": str(price), "cost": str(price * r.units())})
        return out + [dict(p) for p in self.phantoms]

    def price_list(self, endpoint: str) -> dict[str, Any] | None:
        if endpoint in self.pricing:
            p = self.pricing[endpoint]
            return None if p is None else {"endpoint_id": endpoint, "currency": "USD", **p}
        if endpoint in self.prices:
            return {"endpoint_id": endpoint, "unit_price": float(self.prices[endpoint]), "unit": "megapixels",
                    "currency": "USD"}
        return None

    def duration(self, r: Req) -> float:
        return float(r.faults["slow"].get("seconds", 600)) if "slow" in r.faults else self.latency

    def advance(self, now: float) -> None:
        """Move the simulated queue forward to ``now``: finished requests free their slots at the
        moment they finished, and queued ones start then."""
        while True:
            finished = sorted((self.requests[i] for i in self.running if self.requests[i].done <= now),
                              key=lambda r: r.done)
            free_at = [r.done for r in finished]
            self.running = [i for i in self.running if self.requests[i].done > now]
            started = False
            while self.queue and (self.slots is None or len(self.running) < self.slots):
                r = self.requests[self.queue.pop(0)]
                r.start = max(r.submitted, free_at.pop(0) if free_at else r.submitted)
                r.done = r.start + self.duration(r)
                self.running.append(r.id)
                started = True
            if not started:
                return

    def status(self, r: Req, now: float) -> dict[str, Any]:
        self.advance(now)
        if r.cancelled:
            return {"status": "COMPLETED", "logs": [], "metrics": {}, "error": "Request was cancelled",
                    "error_type": "cancelled"}
        if r.start is None:
            return {"status": "IN_QUEUE", "queue_position": self.queue.index(r.id)}
        if r.done > now:
            return {"status": "IN_PROGRESS", "logs": []}
        if "error" in r.faults:
            return {"status": "COMPLETED", "logs": [], "metrics": {}, "error": "Internal error in the model",
                    "error_type": "runner_error"}
        return {"status": "COMPLETED", "logs": [], "metrics": {"inference_time": self.duration(r)}}


def size_of(args: dict[str, Any]) -> tuple[int, int]:
    s = args.get("image_size", "landscape_4_3")
    if isinstance(s, dict):
        return int(s["width"]), int(s["height"])
    return PRESETS.get(s, (1024, 768))


def png(width: int, height: int, seed: str) -> bytes:
    colour = tuple(hashlib.sha256(seed.encode()).digest()[:3])
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def bomb_png(width: int = 40000, height: int = 40000) -> bytes:
    """A PNG whose header claims a huge image: a decompression bomb to be refused unread."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _request_path(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return parts[parts.index("requests"):] if "requests" in parts and not parts[0].startswith("_") else parts


def megapixels(w: int, h: int) -> int:
    return max(1, -(-w * h // (1024 * 1024)))


class JsonHandler(BaseHTTPRequestHandler):
    """The plumbing the fakes share: HTTP/1.1 keep-alive, quiet, bodies in, JSON (or bytes) out."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, code: int, body: bytes | dict | list, ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (a timeout): nothing to answer
            self.close_connection = True


class Handler(JsonHandler):
    state: State  # set on the class by serve()

    def _base(self) -> str:
        return f"https://{self.headers.get('Host')}"

    def _authorized(self) -> bool:
        key = self.state.key
        if key is None or self.headers.get("Authorization") == f"Key {key}":
            return True
        self._send(401, {"detail": "Invalid or missing key"})
        return False

    # -- routes -----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        path = urlparse(self.path).path
        st = self.state
        if path == "/_fake/stats":
            with st.lock:
                bills = st.bills(time.time())
                counts = {**st.counts, "paid": len(bills)}  # fal bills what completes successfully
                return self._send(200, {
                    "counts": counts, "billed": bills,
                    "billed_usd": str(sum((Decimal(b["cost"]) for b in bills), Decimal(0))),
                    "submissions_by_prompt": dict(st.submissions_by_prompt),
                    "paid_by_prompt": dict(st.paid_by_prompt),
                    "in_flight": len(st.queue) + len(st.running),
                    "running": len(st.running), "queued": len(st.queue),
                    # each request's (endpoint, submitted, started, finished) on this host's clock
                    "timeline": [[r.endpoint, r.submitted, r.start, r.done] for r in st.requests.values()],
                })
        if path.startswith("/files/"):
            return self._file(path.removeprefix("/files/"))
        if path == "/v1/models/usage":
            return self._usage()
        if path == "/v1/models/pricing":
            return self._pricing()
        parts = _request_path(path)  # fal-client also builds <owner>/<alias>/requests/<id>/...
        if len(parts) >= 2 and parts[0] == "requests":
            if not self._authorized():
                return
            with st.lock:
                r = st.requests.get(parts[1])
                if r is None:
                    return self._send(404, {"detail": "Request not found"})
                now = time.time()
                if len(parts) == 3 and parts[2] == "status":
                    st.counts["status"] += 1
                    return self._send(200, st.status(r, now), headers={"x-fal-request-id": r.id})
                st.counts["result_requests"] += 1
                s = st.status(r, now)
                if s["status"] != "COMPLETED" or s.get("error"):
                    return self._send(400, {"detail": s.get("error") or "Request is still in progress"},
                                      headers={"x-fal-request-id": r.id})
                if r.result_fetches == 0:
                    st.paid_by_prompt[r.args.get("prompt", "")] += 1
                r.result_fetches += 1
                if r.endpoint in TRAINER_ENDPOINTS:  # a training run: the LoRA's weights and its config
                    size = len(lora_bytes(r.id))
                    return self._send(200, {
                        "diffusers_lora_file": {"url": f"{self._base()}/files/{r.id}-lora.safetensors",
                                                "file_size": size, "content_type": "application/octet-stream"},
                        "config_file": {"url": f"{self._base()}/files/{r.id}-config.json", "file_size": 2}},
                        headers={"x-fal-billable-units": str(r.units()), "x-fal-request-id": r.id})
                if "system_prompt" in r.args:  # a text model: fal-ai/any-llm answers {"output": ...}
                    answer = (st.detect_output if st.detect_output and "bounding boxes" in r.args.get("prompt", "")
                              else st.text_output)
                    return self._send(200, {"output": answer, "partial": False, "error": None,
                                            "usage": {"prompt_tokens": len(r.args.get("prompt", "")) // 4,
                                                      "completion_tokens": len(answer) // 4}},
                                      headers={"x-fal-request-id": r.id})
                w, h = size_of(r.args)
                n = int(r.args.get("num_images", 1))
                result = {"images": [{"url": f"{self._base()}/files/{r.id}-{i}.png", "width": w, "height": h,
                                      "content_type": "image/png"} for i in range(n)],
                          "seed": r.args.get("seed"), "has_nsfw_concepts": [("nsfw" in r.faults)] * n,
                          "prompt": r.args.get("prompt", "")}
                units = str(r.units())  # what fal bills for it
                if "malformed_json" in r.faults and r.result_fetches == 1:
                    return self._send(200, b'{"images": [{"url": "', headers={"x-fal-billable-units": units})
                return self._send(200, result, headers={"x-fal-billable-units": units, "x-fal-request-id": r.id})
        self._send(404, {"detail": f"no route {path}"})

    def _file(self, name: str) -> None:
        st = self.state
        with st.lock:
            st.counts["downloads"] += 1
            if name.startswith("up-"):
                data = st.uploads.get(name)
                return self._send(200, data, "image/png") if data else self._send(404, {"detail": "no file"})
            rid = name.split("-")[0]
            r = st.requests.get(rid)
            if r is None:
                return self._send(404, {"detail": "no file"})
            if name.endswith(".safetensors"):
                st.counts["lora_downloads"] += 1
                return self._send(200, lora_bytes(rid), "application/octet-stream")
            if "oversized" in r.faults:
                return self._send(200, bomb_png(), "image/png")
            if "gone" in r.faults:
                return self._send(404, {"detail": "file expired"})
            w, h = size_of(r.args)
            seed = f"{r.args.get('prompt')}/{r.args.get('seed')}/{name}"
            bad = next((k for k in BAD_FILE_FAULTS if k in r.faults), None) if r.bad_left > 0 else None
            if bad:
                r.bad_left -= 1
        good = png(w, h, "black" if "nsfw" in r.faults else seed)
        if bad == "corrupt_image":
            return self._send(200, b"\x89PNG not really an image", "image/png")
        if bad == "truncated_image":
            return self._send(200, good[: len(good) // 2], "image/png")
        if bad == "wrong_type":
            return self._send(200, good, "application/octet-stream")
        if bad == "html_body":
            return self._send(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        self._send(200, good, "image/png")

    def _usage(self) -> None:
        """fal's platform usage report (admin key): quantity, unit price and cost per endpoint."""
        st = self.state
        if st.admin_key is None or self.headers.get("Authorization") != f"Key {st.admin_key}":
            return self._send(401, {"detail": "Admin API key required"})
        q = parse_qs(urlparse(self.path).query)
        endpoints = {e for v in q.get("endpoint_id", []) for e in v.split(",")}
        start = datetime.fromisoformat(q["start"][0]).timestamp() if "start" in q else 0.0
        end = datetime.fromisoformat(q["end"][0]).timestamp() if "end" in q else float("inf")
        with st.lock:
            st.counts["usage_requests"] += 1
            bills = [b for b in st.bills(time.time()) if (not endpoints or b["endpoint_id"] in endpoints)
                     and start <= b["time"] < end]
        summary: dict[str, dict[str, Any]] = {}
        for b in bills:
            row = summary.setdefault(b["endpoint_id"], {"endpoint_id": b["endpoint_id"], "unit": "megapixels",
                                                         "quantity": 0, "unit_price": float(b["unit_price"]),
                                                         "cost": Decimal(0)})
            row["quantity"] += b["units"]
            row["cost"] += Decimal(b["cost"])
        items = [{**r, "cost": float(r["cost"])} for r in summary.values()]
        timeframe = q.get("timeframe", ["hour"])[0]
        if timeframe not in BUCKETS:
            return self._send(422, {"detail": f"timeframe must be one of {sorted(BUCKETS)}"})
        buckets: dict[str, dict[str, dict[str, Any]]] = {}
        for b in bills:
            when = datetime.fromtimestamp(b["time"], timezone.utc).replace(**BUCKETS[timeframe])
            row = buckets.setdefault(when.isoformat(), {}).setdefault(b["endpoint_id"], {
                "endpoint_id": b["endpoint_id"], "unit": "megapixels", "quantity": 0,
                "unit_price": float(b["unit_price"]), "cost": Decimal(0)})
            row["quantity"] += b["units"]
            row["cost"] += Decimal(b["cost"])
        series = [{"bucket": k, "results": [{**r, "cost": float(r["cost"])} for r in v.values()]}
                  for k, v in sorted(buckets.items())]
        self._send(200, {"next_cursor": None, "has_more": False, "summary": items, "time_series": series})

    def _pricing(self) -> None:
        """fal's price list (the ordinary key): unit and unit price per endpoint it knows, paged."""
        st = self.state
        if not self._authorized():
            return
        q = parse_qs(urlparse(self.path).query)
        asked = list(dict.fromkeys(e for v in q.get("endpoint_id", []) for e in v.split(",") if e))
        with st.lock:
            st.counts["pricing_requests"] += 1
            known = [p for e in asked if (p := st.price_list(e)) is not None]
            size = max(1, int(st.pricing_page_size))
        if asked and not known:
            return self._send(404, {"detail": f"no pricing for {', '.join(asked)}"})
        start = int(q.get("cursor", ["0"])[0] or 0)
        page = known[start:start + size]
        more = start + size < len(known)
        self._send(200, {"prices": page, "next_cursor": str(start + size) if more else None, "has_more": more})

    def do_PUT(self) -> None:  # noqa: N802
        parts = _request_path(urlparse(self.path).path)
        if len(parts) == 3 and parts[0] == "requests" and parts[2] == "cancel":
            if not self._authorized():
                return
            with self.state.lock:
                r = self.state.requests.get(parts[1])
                if r is None:
                    return self._send(404, {"detail": "Request not found"})
                self.state.counts["cancels"] += 1
                if "no_cancel" in r.faults:
                    return self._send(500, {"detail": "could not cancel"})
                self.state.advance(time.time())
                if r.done is None or r.done > time.time():
                    r.cancelled = True
                    if r.id in self.state.queue:
                        self.state.queue.remove(r.id)
                    if r.id in self.state.running:
                        self.state.running.remove(r.id)
                return self._send(202, {"status": "CANCELLATION_REQUESTED"})
        self._send(404, {"detail": "no route"})

    def do_POST(self) -> None:  # noqa: N802
        path = urlparse(self.path).path
        st = self.state
        body = self._body()
        if path == "/_fake/config":
            cfg = json.loads(body or b"{}")
            with st.lock:
                for k in ("latency", "slots", "key", "admin_key", "prices", "text_output", "detect_output", "pricing_page_size"):
                    if k in cfg:
                        setattr(st, k, cfg[k])
                if "pricing" in cfg:
                    st.pricing.update(cfg["pricing"])
                for p in cfg.get("phantom_bills", []):  # billed now, at the endpoint's price
                    price = Decimal(st.prices.get(p["endpoint_id"], "0"))
                    st.phantoms.append({"request_id": None, "endpoint_id": p["endpoint_id"], "time": time.time(),
                                        "units": int(p["units"]), "unit_price": str(price),
                                        "cost": str(price * int(p["units"]))})
                if "faults" in cfg:
                    st.faults = [dict(f) for f in cfg["faults"]]
            return self._send(200, {"ok": True})
        if path == "/_fake/reset":
            with st.lock:
                st.faults.clear(), st.requests.clear(), st.queue.clear(), st.running.clear()
                st.counts.clear(), st.submissions_by_prompt.clear(), st.paid_by_prompt.clear()
                st.prices, st.pricing, st.pricing_page_size = dict(DEFAULT_PRICES), {}, 50
                st.phantoms.clear()
                st.detect_output = ""
            return self._send(200, {"ok": True})
        if path == "/storage/auth/token":  # fal-client's CDN token for uploads
            if not self._authorized():
                return
            return self._send(200, {"token": "cdn-token", "token_type": "Bearer", "base_url": self._base(),
                                    "expires_at": "2999-01-01T00:00:00+00:00"})
        if path == "/files/upload":
            if self.headers.get("Authorization") != "Bearer cdn-token":
                return self._send(401, {"detail": "bad CDN token"})
            name = f"up-{hashlib.sha256(body).hexdigest()[:16]}.png"
            with st.lock:
                st.uploads[name] = body
                st.counts["uploads"] += 1
            return self._send(200, {"access_url": f"{self._base()}/files/{name}"})
        return self._submit(path.strip("/"), body)

    def _drop(self) -> None:
        self.close_connection = True
        self.connection.shutdown(2)

    def _submit(self, endpoint: str, body: bytes) -> None:
        st = self.state
        if not self._authorized():
            return
        try:
            args = json.loads(body or b"{}")
        except ValueError:
            return self._send(400, {"detail": "body is not JSON"})
        prompt = str(args.get("prompt", ""))
        with st.lock:
            st.counts["submit_attempts"] += 1
            fault = st.take_fault(SUBMIT_FAULTS, prompt)
        if fault:
            kind = fault["kind"]
            st.counts[f"fault_{kind}"] += 1
            if kind == "drop":
                return self._drop()
            if kind == "429":
                return self._send(429, {"detail": "Too many requests"})
            if kind == "500":
                return self._send(500, {"detail": "Internal server error"})
            if kind == "503_id":
                return self._send(503, {"detail": "Service unavailable"}, headers={"x-fal-request-id": uuid.uuid4().hex})
            if kind == "503_nginx":
                return self._send(503, b"<html><body>503 Service Temporarily Unavailable<hr>nginx</body></html>",
                                  "text/html")
            if kind == "422":
                return self._send(422, {"detail": [{"loc": ["body", "prompt"], "msg": "prompt is too long",
                                                    "type": "value_error"}]})
        if endpoint in TRAINER_ENDPOINTS:
            with st.lock:
                data = st.uploads.get(str(args.get("image_data_url", "")).rsplit("/", 1)[-1], b"")
            if not data.startswith(b"PK"):
                return self._send(422, {"detail": [{"loc": ["body", "image_data_url"], "msg": "expected the URL "
                                                    "of an uploaded zip of images", "type": "value_error"}]})
        elif "prompt" not in args:
            return self._send(422, {"detail": [{"loc": ["body", "prompt"], "msg": "field required",
                                                "type": "value_error.missing"}]})
        rid = uuid.uuid4().hex
        with st.lock:
            faults = {}
            for kind in REQUEST_FAULTS:  # each kind at most once per submission
                if (f := st.take_fault({kind}, prompt)) is not None:
                    faults[kind] = f
            bad = next((faults[k] for k in BAD_FILE_FAULTS if k in faults), None)
            r = Req(rid, endpoint, args, time.time(), faults, bad_left=int(bad.get("times", 1)) if bad else 0)
            st.requests[rid] = r
            st.queue.append(rid)
            st.advance(time.time())
            # the most requests the account had on fal at once, running or waiting in its queue
            st.counts["peak_on_fal"] = max(st.counts["peak_on_fal"], len(st.queue) + len(st.running))
            st.counts["submitted"] += 1
            st.counts[f"submitted:{endpoint}"] += 1
            st.counts["image_urls_received"] += len(args.get("image_urls") or [])
            for lora in args.get("loras") or []:  # LoRA weights must be sent as uploaded files' URLs
                st.counts["loras_received"] += 1
                if str(lora.get("path", "")).rsplit("/", 1)[-1] in st.uploads:
                    st.counts["loras_resolved"] += 1
            st.submissions_by_prompt[prompt] += 1
        if fault and fault["kind"] == "accept_drop":  # queued (and so billed), but the answer is lost
            return self._drop()
        base = f"{self._base()}/requests/{rid}"
        self._send(200, {"request_id": rid, "response_url": base, "status_url": f"{base}/status",
                         "cancel_url": f"{base}/cancel", "queue_position": 0})


class TLSThreadingServer(ThreadingHTTPServer):
    """TLS handshakes in each connection's own thread, as a real server does them concurrently: a
    listening socket wrapped in TLS would shake hands inside accept(), one connection at a time.
    ``on_connection`` counts them (each a handshake: a client should reuse its connections)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, context: ssl.SSLContext,
                 on_connection: Callable[[], None] | None = None):
        super().__init__(address, handler)
        self.context = context
        self.on_connection = on_connection

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.on_connection is not None:
            self.on_connection()
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(tls, client_address)


def _count_connection() -> None:
    with Handler.state.lock:
        Handler.state.counts["connections"] += 1


def serve_tls(cert: str, port: int, handler: type, on_connection: Callable[[], None] | None = None) -> None:
    """Listen on 127.0.0.1 (a free port when 0), say ``PORT n`` on stdout, and serve until killed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert)
    server = TLSThreadingServer(("127.0.0.1", port), handler, ctx, on_connection=on_connection)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


def fake_arguments(doc: str) -> argparse.ArgumentParser:
    """What every fake takes: its certificate, a port and the latency of a request."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--cert", required=True, help="PEM with the server's private key and certificate chain")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.05)
    return p


def serve(cert: str, port: int = 0, latency: float = 0.05, slots: int | None = None, key: str | None = None) -> None:
    Handler.state = State(latency=latency, slots=slots, key=key)
    serve_tls(cert, port, Handler, on_connection=_count_connection)


def main() -> None:
    p = fake_arguments(__doc__)
    p.add_argument("--slots", type=int, default=None)
    p.add_argument("--key", default=None, help="the FAL_KEY to require (default: accept any)")
    a = p.parse_args()
    serve(a.cert, a.port, a.latency, a.slots, a.key)


if __name__ == "__main__":
    main()
