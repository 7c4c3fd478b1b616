"""A loopback fake of four image platforms' APIs (BFL, Gemini, Together, Replicate), for tests.

One process speaks HTTPS on 127.0.0.1 with a certificate from a test CA (point ``SSL_CERT_FILE``
at the CA) and serves each platform under its own prefix, so each provider's base URL is
``https://127.0.0.1:<port>/<platform>``:

- ``/bfl``: ``POST /v1/<flux-2-model>`` (``x-key``) → ``{id, polling_url, cost, input_mp,
  output_mp}``; ``GET /v1/get_result?id=`` → Pending / Ready (``result.sample``) / Error /
  Request Moderated; ``GET /files/<id>.png`` (the signed sample URL, no key).
- ``/gemini``: ``POST /v1beta/models/<model>:generateContent`` (``x-goog-api-key``) → candidates
  with an interim "thought" image, then the image, as base64 ``inlineData``; ``usageMetadata``.
- ``/together``: ``POST /v1/images/generations`` (Bearer) → ``data[0].b64_json``.
- ``/replicate``: ``POST /v1/models/<owner>/<name>/predictions`` (Bearer, ``Prefer: wait=N``,
  held at most ``replicate_wait`` seconds) → a prediction; ``GET /v1/predictions/<id>``;
  ``POST /v1/predictions/<id>/cancel``; ``GET /files/<id>/out-0.png``.

Each platform needs its key (``TEST_KEYS``; 401 otherwise, echoing the offered key the way a
careless API might, so a test can check the provider redacts it). Requests finish ``latency``
seconds after they are taken.

Billing, computed here independently of the providers:
- BFL bills at submission: price = first MP + (further output MP + input MP) x rate, megapixels
  = w*h/1,000,000 to two decimals (half up), further output MP = output MP - 1 (>= 0); rates in
  cents per ``BFL_RATES``; ``cost`` is in credits of $0.01. More than ``bfl_limit`` (24)
  requests in flight are refused with 429.
- Gemini bills each image it answers with ($0.134 at 1K/2K, $0.24 at 4K); a blocked one is free.
- Together bills $0. Replicate bills a prediction that succeeds (flux-schnell $0.003 an image,
  flux-dev $0.025), never a failed or cancelled one.

Faults, by configuration (``{"kind": K, "platform": P, "count": N, "match": "in the prompt"}``;
without ``platform`` a fault serves any):
  before anything is taken: 429 (``Retry-After: retry_after``, default 1), 500, 503, 400 (an
      error answer that echoes the key), drop (the connection closes with no answer, nothing
      taken)
  after it is taken: accept_drop (taken and billed as the platform would bill it, connection
      closed before the answer)
  the request: slow (finishes after ``seconds``, default 600), error (BFL Error, Replicate
      failed), moderated (BFL ``status``, default Request Moderated; Gemini ``blockReason``, or
      ``finish`` for a candidate withheld with that finishReason; Replicate NSFW failure),
      expired (the result URL answers 403 (BFL) / 404 (Replicate)), corrupt_image (garbage image
      bytes, ``times`` downloads, default 1), no_cancel (Replicate's cancel answers 500)

Control: ``GET /_fake/stats`` (per platform: submit attempts, submissions and per distinct body
hash, billed requests and dollars, peak in flight, connections, polls, downloads, cancels,
faults served, the last body with long strings cut), ``POST /_fake/config`` (latency, keys,
faults, bfl_limit, replicate_wait, url_ttl), ``POST /_fake/reset`` (then the configuration it
carries), ``POST /_fake/finish`` (``{"platform", "id"}``: pending requests finish now),
``POST /_fake/expire`` (their result URLs die now, as BFL's do after 10 minutes and Replicate's
after an hour).

    python -m webtoon_assets_tests.fake_platforms --cert server.pem [--latency 0.05]

prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import parse_qs, urlparse

from PIL import Image

from webtoon_assets_tests.fake_fal import JsonHandler, fake_arguments, serve_tls

PLATFORMS = ("bfl", "gemini", "together", "replicate")
TEST_KEYS = {"bfl": "bfl-test-key-0123456789-SECRET", "gemini": "gemini-test-key-0123456789-SECRET",
             "together": "together-test-key-0123456789-SECRET", "replicate": "r8_replicate-test-key-0123456789-SECRET"}
BFL_RATES = {"flux-2-klein-4b": ("1.4", "0.1"), "flux-2-klein-9b": ("1.5", "0.2"), "flux-2-pro": ("3", "1.5"),
             "flux-2-max": ("7", "3"), "flux-2-flex": ("5", "5")}  # cents: first MP, each further MP
BFL_MAX_REFS = {"flux-2-klein-4b": 4, "flux-2-klein-9b": 4, "flux-2-pro": 8, "flux-2-max": 8, "flux-2-flex": 8}
GEMINI_SIZES = {"1:1": (1024, 1024), "2:3": (848, 1264), "3:2": (1264, 848), "3:4": (896, 1200), "4:3": (1200, 896),
                "4:5": (928, 1152), "5:4": (1152, 928), "9:16": (768, 1376), "16:9": (1376, 768), "21:9": (1584, 672)}
GEMINI_SCALE = {"1K": 1, "2K": 2, "4K": 4}
GEMINI_PRICES = {"1K": Decimal("0.134"), "2K": Decimal("0.134"), "4K": Decimal("0.24")}
TOGETHER_MODELS = {"black-forest-labs/FLUX.1-schnell-Free": 4}  # model: most steps
REPLICATE_PRICES = {"black-forest-labs/flux-schnell": Decimal("0.003"), "black-forest-labs/flux-dev": Decimal("0.025")}
REPLICATE_SIZES = {"1:1": (1024, 1024), "16:9": (1344, 768), "21:9": (1536, 640), "3:2": (1216, 832),
                   "2:3": (832, 1216), "4:5": (896, 1088), "5:4": (1088, 896), "3:4": (896, 1152),
                   "4:3": (1152, 896), "9:16": (768, 1344), "9:21": (640, 1536)}
SUBMIT_FAULTS = {"429", "500", "503", "400", "drop"}
REQUEST_FAULTS = {"accept_drop", "slow", "error", "moderated", "expired", "corrupt_image", "no_cancel"}
GARBAGE = b"\x89PNG\r\n\x1a\n not really an image"


def mp2(w: int, h: int) -> Decimal:
    """Megapixels as BFL reports them: two decimals."""
    return (Decimal(w * h) / Decimal(1_000_000)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def bfl_cost(model: str, out_mp: Decimal, in_mp: Decimal) -> Decimal:
    """BFL's price in credits (cents): the first MP, then each further output MP and input MP."""
    first, rate = (Decimal(x) for x in BFL_RATES[model])
    return first + (max(Decimal(0), out_mp - 1) + in_mp) * rate


def png(width: int, height: int, seed: str) -> bytes:
    colour = tuple(hashlib.sha256(seed.encode()).digest()[:3])
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z") if t else None


def body_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def summary(value: Any) -> Any:
    """A body with long strings (base64 images) cut, for /_fake/stats."""
    if isinstance(value, str):
        return value if len(value) <= 200 else f"<{len(value)} chars>"
    if isinstance(value, dict):
        return {k: summary(v) for k, v in value.items()}
    if isinstance(value, list):
        return [summary(v) for v in value]
    return value


@dataclass
class Job:
    """One request a submit-and-poll platform took (BFL, Replicate)."""

    platform: str
    id: str
    model: str
    prompt: str
    seed: Any
    width: int
    height: int
    faults: dict[str, dict[str, Any]]
    submitted: float
    done_at: float
    usd: Decimal = Decimal(0)
    cancelled: bool = False
    expired: bool = False
    bad_left: int = 0
    input: dict[str, Any] = field(default_factory=dict)

    def finished(self, now: float) -> bool:
        return self.cancelled or now >= self.done_at

    def succeeded(self, now: float) -> bool:
        return (not self.cancelled and now >= self.done_at and "error" not in self.faults
                and "moderated" not in self.faults)


@dataclass
class Platform:
    counts: Counter = field(default_factory=Counter)
    by_body: Counter = field(default_factory=Counter)
    bills: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0  # synchronous platforms: answers being made
    peak: int = 0
    last_body: Any = None
    last_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class State:
    latency: float = 0.05
    keys: dict[str, str] = field(default_factory=lambda: dict(TEST_KEYS))
    faults: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, Job] = field(default_factory=dict)
    platforms: dict[str, Platform] = field(default_factory=lambda: {p: Platform() for p in PLATFORMS})
    bfl_limit: int = 24
    replicate_wait: float = 5.0  # the longest a Prefer: wait is held here (Replicate's own: 60 s)
    url_ttl: dict[str, float] = field(default_factory=lambda: {"bfl": 600.0, "replicate": 3600.0})
    generation: int = 0  # bumped by reset: sleeping handlers of the last test give up
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, platform: str, kinds: set[str], prompt: str) -> dict[str, Any] | None:
        for f in self.faults:
            if (f["kind"] in kinds and f.get("count", 1) > 0 and f.get("platform", platform) == platform
                    and f.get("match", "") in prompt):
                f["count"] = f.get("count", 1) - 1
                return dict(f)
        return None

    def request_faults(self, platform: str, prompt: str) -> dict[str, dict[str, Any]]:
        out = {}
        for kind in REQUEST_FAULTS:
            if (f := self.take_fault(platform, {kind}, prompt)) is not None:
                out[kind] = f
                self.platforms[platform].counts[f"fault_{kind}"] += 1
        return out

    def jobs_in_flight(self, platform: str, now: float) -> int:
        return sum(1 for j in self.jobs.values() if j.platform == platform and not j.finished(now))

    def bill(self, platform: str, rid: str, usd: Decimal, **extra: Any) -> None:
        self.platforms[platform].bills.append({"id": rid, "usd": str(usd), **extra})

    def stats(self, now: float) -> dict[str, Any]:
        out = {}
        for name, p in self.platforms.items():
            bills = list(p.bills)
            if name == "replicate":  # billed when it succeeds, whether or not anyone fetched it
                bills += [{"id": j.id, "usd": str(j.usd)} for j in self.jobs.values()
                          if j.platform == name and j.succeeded(now)]
            peak = p.peak
            out[name] = {
                "submit_attempts": p.counts["submit_attempts"], "submissions": p.counts["submissions"],
                "by_body": dict(p.by_body), "max_same_body": max(p.by_body.values(), default=0),
                "billed": len(bills), "billed_usd": str(sum((Decimal(b["usd"]) for b in bills), Decimal(0))),
                "bills": bills, "peak_in_flight": peak, "connections": p.counts["connections"],
                "counts": dict(p.counts), "last_body": p.last_body, "last_headers": p.last_headers,
            }
        return out


class Handler(JsonHandler):
    state: State  # set on the class by serve()

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _base(self, platform: str) -> str:
        return f"https://{self.headers.get('Host')}/{platform}"

    def _nap(self, seconds: float, until: float | None = None) -> bool:
        """Sleep (``seconds``, or until ``until``); False when a reset came meanwhile."""
        gen = self.state.generation
        end = until if until is not None else time.time() + seconds
        while time.time() < end:
            if self.state.generation != gen:
                return False
            time.sleep(min(0.02, max(0.0, end - time.time())))
        return self.state.generation == gen

    def _credential(self, platform: str) -> str:
        """The platform's credential header as sent (BFL and Gemini a key header, the others a bearer)."""
        return self.headers.get({"bfl": "x-key", "gemini": "x-goog-api-key"}.get(platform, "Authorization")) or ""

    def _authorized(self, platform: str) -> bool:
        key = self.state.keys[platform]
        offered = self._credential(platform).removeprefix("Bearer ")
        if offered == key:
            return True
        # Echoes the offered key, as a careless API might: the provider must redact it.
        self._send(401, {"error": {"code": 401, "message": f"API key not valid: {offered!r}",
                                   "status": "UNAUTHENTICATED"}})
        return False

    def _count_connection(self, platform: str) -> None:
        if not getattr(self, "_counted", False) and platform in PLATFORMS:
            self._counted = True
            with self.state.lock:
                self.state.platforms[platform].counts["connections"] += 1

    def _route(self) -> tuple[str, list[str], dict[str, list[str]]]:
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        platform = parts[0]
        self._count_connection(platform)
        return platform, parts[1:], parse_qs(url.query)

    def _submit_fault(self, platform: str, prompt: str) -> bool:
        """Serve a fault of the submit phase (nothing taken). True when one was served."""
        key_echo = self._credential(platform)
        st = self.state
        with st.lock:
            st.platforms[platform].counts["submit_attempts"] += 1
            fault = st.take_fault(platform, SUBMIT_FAULTS, prompt)
            if fault:
                st.platforms[platform].counts[f"fault_{fault['kind']}"] += 1
        if not fault:
            return False
        kind = fault["kind"]
        if kind == "drop":
            self._drop()
        elif kind == "429":
            self._send(429, {"error": {"code": 429, "message": "Too many requests", "status": "RESOURCE_EXHAUSTED"}},
                       headers={"Retry-After": str(fault.get("retry_after", 1))})
        elif kind == "400":
            self._send(400, {"error": {"code": 400, "message": f"bad request (sent with key {key_echo})",
                                       "status": "INVALID_ARGUMENT"}})
        else:
            self._send(int(kind), {"error": {"code": int(kind), "message": "the service is having a moment",
                                             "status": "UNAVAILABLE" if kind == "503" else "INTERNAL"}})
        return True

    def _taken(self, platform: str, body: Any) -> None:
        """Count a request the platform took (under the lock)."""
        p = self.state.platforms[platform]
        p.counts["submissions"] += 1
        p.by_body[body_hash(body)] += 1
        p.last_body = summary(body)
        p.last_headers = {k: v for k, v in self.headers.items() if k.lower() in ("prefer", "content-type")}

    def _image(self, job: Job) -> None:
        """A result file: dead when expired, garbage while a corrupt_image fault lasts."""
        st = self.state
        with st.lock:
            st.platforms[job.platform].counts["downloads"] += 1
            ttl = st.url_ttl.get(job.platform, float("inf"))
            dead = job.expired or "expired" in job.faults or time.time() - job.done_at > ttl
            bad = job.bad_left > 0
            if bad:
                job.bad_left -= 1
        if dead:
            if job.platform == "bfl":  # a signed URL past its expiry
                return self._send(403, b"<Error><Code>AuthenticationFailed</Code><Message>Signed expiry time has "
                                  b"passed</Message></Error>", "application/xml")
            return self._send(404, {"detail": "Not found"})
        if bad:
            return self._send(200, GARBAGE, "image/png")
        self._send(200, png(job.width, job.height, f"{job.prompt}/{job.seed}"), "image/png")

    # -- routes -----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        platform, parts, query = self._route()
        st = self.state
        if platform == "_fake" and parts == ["stats"]:
            with st.lock:
                return self._send(200, st.stats(time.time()))
        if platform == "bfl" and parts[:2] == ["v1", "get_result"]:
            return self._bfl_result(query.get("id", [""])[0])
        if platform in ("bfl", "replicate") and parts[:1] == ["files"] and len(parts) >= 2:
            job = st.jobs.get(parts[1].removesuffix(".png"))
            if job is None or job.platform != platform:
                return self._send(404, {"detail": "no such file"})
            return self._image(job)
        if platform == "replicate" and parts[:2] == ["v1", "predictions"] and len(parts) == 3:
            if not self._authorized(platform):
                return
            with st.lock:
                job = st.jobs.get(parts[2])
                st.platforms[platform].counts["polls"] += 1
            if job is None or job.platform != "replicate":
                return self._send(404, {"detail": "Not found."})
            return self._send(200, self._prediction(job))
        self._send(404, {"detail": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        platform, parts, _ = self._route()
        raw = self._body()
        if platform == "_fake":
            return self._control(parts[0] if parts else "", json.loads(raw or b"{}"))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._send(400, {"detail": "body is not JSON"})
        if platform == "bfl" and len(parts) == 2 and parts[0] == "v1":
            return self._bfl_submit(parts[1], body)
        if platform == "gemini" and len(parts) == 3 and parts[:2] == ["v1beta", "models"] \
                and parts[2].endswith(":generateContent"):
            return self._gemini(parts[2].removesuffix(":generateContent"), body)
        if platform == "together" and parts == ["v1", "images", "generations"]:
            return self._together(body)
        if platform == "replicate" and len(parts) == 5 and parts[:2] == ["v1", "models"] and parts[4] == "predictions":
            return self._replicate_submit(f"{parts[2]}/{parts[3]}", body)
        if platform == "replicate" and len(parts) == 4 and parts[:2] == ["v1", "predictions"] and parts[3] == "cancel":
            return self._replicate_cancel(parts[2])
        self._send(404, {"detail": f"no route {self.path}"})

    def _control(self, what: str, cfg: dict[str, Any]) -> None:
        st = self.state
        now = time.time()
        with st.lock:
            if what == "reset":  # then the configuration given with it
                st.generation += 1
                st.faults.clear()
                st.jobs.clear()
                st.platforms = {p: Platform() for p in PLATFORMS}
                st.keys = dict(TEST_KEYS)
                st.bfl_limit, st.replicate_wait = 24, 5.0
                st.url_ttl = {"bfl": 600.0, "replicate": 3600.0}
            if what in ("config", "reset"):
                for k in ("latency", "keys", "bfl_limit", "replicate_wait", "url_ttl"):
                    if k in cfg:
                        setattr(st, k, cfg[k])
                if "faults" in cfg:
                    st.faults = [dict(f) for f in cfg["faults"]]
            elif what in ("finish", "expire"):
                for j in st.jobs.values():
                    if cfg.get("platform", j.platform) == j.platform and cfg.get("id", j.id) == j.id:
                        if what == "finish" and not j.finished(now):
                            j.done_at = now
                            j.faults.pop("slow", None)
                        if what == "expire":
                            j.expired = True
            else:
                return self._send(404, {"detail": "no such control"})
        self._send(200, {"ok": True})

    # -- BFL --------------------------------------------------------------------------------------
    def _bfl_submit(self, model: str, body: dict[str, Any]) -> None:
        st = self.state
        if not self._authorized("bfl"):
            return
        prompt = str(body.get("prompt", ""))
        if self._submit_fault("bfl", prompt):
            return
        if model not in BFL_RATES:
            return self._send(404, {"detail": "Not Found"})
        w, h = int(body.get("width", 1024)), int(body.get("height", 768))
        problems = []
        if not prompt:
            problems.append("prompt is required")
        if w % 16 or h % 16 or w * h > 4 * 1024 * 1024:
            problems.append(f"{w}x{h}: width and height must be multiples of 16, at most 4 MP")
        refs = [k for k in body if k == "input_image" or k.startswith("input_image_")]
        if len(refs) > BFL_MAX_REFS[model]:
            problems.append(f"{model} reads at most {BFL_MAX_REFS[model]} input images")
        in_mp = Decimal(0)
        for k in refs:
            try:
                with Image.open(io.BytesIO(base64.b64decode(body[k], validate=True))) as im:
                    in_mp += mp2(*im.size)
            except Exception:  # noqa: BLE001
                problems.append(f"{k} is not a base64 image")
        if problems:
            return self._send(422, {"detail": [{"loc": ["body"], "msg": m, "type": "value_error"} for m in problems]})
        out_mp = mp2(w, h)
        cost = bfl_cost(model, out_mp, in_mp)
        rid = str(uuid.uuid4())
        with st.lock:
            now = time.time()
            if st.jobs_in_flight("bfl", now) >= st.bfl_limit:  # BFL: 24 at once
                st.platforms["bfl"].counts["fault_limit_429"] += 1
                return self._send(429, {"detail": f"more than {st.bfl_limit} active tasks"},
                                  headers={"Retry-After": "1"})
            faults = st.request_faults("bfl", prompt)
            latency = float(faults["slow"].get("seconds", 600)) if "slow" in faults else st.latency
            bad = faults.get("corrupt_image")
            job = Job("bfl", rid, model, prompt, body.get("seed"), w, h, faults, now, now + latency, cost / 100,
                      bad_left=int(bad.get("times", 1)) if bad else 0)
            st.jobs[rid] = job
            self._taken("bfl", body)
            st.platforms["bfl"].counts["references_received"] += len(refs)
            st.bill("bfl", rid, cost / 100, cost=float(cost), input_mp=float(in_mp), output_mp=float(out_mp))
            p = st.platforms["bfl"]
            p.peak = max(p.peak, st.jobs_in_flight("bfl", now))
        if "accept_drop" in faults:  # taken and billed; the answer is lost
            return self._drop()
        self._send(200, {"id": rid, "polling_url": f"{self._base('bfl')}/v1/get_result?id={rid}",
                         "cost": float(cost), "input_mp": float(in_mp), "output_mp": float(out_mp)})

    def _bfl_result(self, rid: str) -> None:
        st = self.state
        if not self._authorized("bfl"):
            return
        with st.lock:
            st.platforms["bfl"].counts["polls"] += 1
            job = st.jobs.get(rid)
            now = time.time()
        if job is None or job.platform != "bfl":
            return self._send(404, {"id": rid, "status": "Task not found"})
        if now < job.done_at:
            progress = round((now - job.submitted) / max(1e-6, job.done_at - job.submitted), 2)
            return self._send(200, {"id": rid, "status": "Pending", "result": None, "progress": progress})
        if "error" in job.faults:
            return self._send(200, {"id": rid, "status": "Error", "result": None,
                                    "details": {"error": "generation failed on the worker"}})
        if "moderated" in job.faults:
            status = job.faults["moderated"].get("status", "Request Moderated")
            return self._send(200, {"id": rid, "status": status, "result": None,
                                    "details": {"Moderation Reasons": ["Derivative Works Filter"]}})
        sample = f"{self._base('bfl')}/files/{rid}.png?se={int(job.done_at + 600)}&sig=fake"
        self._send(200, {"id": rid, "status": "Ready", "progress": None, "details": None,
                         "result": {"sample": sample, "prompt": job.prompt, "seed": job.seed,
                                    "start_time": job.submitted, "end_time": job.done_at,
                                    "duration": round(job.done_at - job.submitted, 3)}})

    # -- Gemini -----------------------------------------------------------------------------------
    def _gemini(self, model: str, body: dict[str, Any]) -> None:
        st = self.state
        if not self._authorized("gemini"):
            return
        parts = [p for c in body.get("contents") or [] for p in c.get("parts") or []]
        prompt = " ".join(str(p["text"]) for p in parts if "text" in p)
        if self._submit_fault("gemini", prompt):
            return
        if not model.startswith("gemini-") or "image" not in model:
            return self._send(404, {"error": {"code": 404, "message": f"models/{model} is not found",
                                              "status": "NOT_FOUND"}})
        config = body.get("generationConfig") or {}
        image_config = config.get("imageConfig") or {}
        ratio, size = image_config.get("aspectRatio", "1:1"), image_config.get("imageSize", "1K")
        refs = [p for p in parts if "inline_data" in p or "inlineData" in p]
        if ratio not in GEMINI_SIZES or size not in GEMINI_SCALE or not prompt or len(refs) > 14:
            return self._send(400, {"error": {"code": 400, "message": "invalid argument",
                                              "status": "INVALID_ARGUMENT"}})
        w, h = (x * GEMINI_SCALE[size] for x in GEMINI_SIZES[ratio])
        rid = uuid.uuid4().hex[:22]
        with st.lock:
            faults = st.request_faults("gemini", prompt)
            p = st.platforms["gemini"]
            self._taken("gemini", body)
            p.counts["references_received"] += len(refs)
            p.in_flight += 1
            p.peak = max(p.peak, p.in_flight)
        try:
            answer = self._gemini_answer(model, prompt, config, size, w, h, len(refs), faults, rid)
        finally:
            with st.lock:  # before answering: a client's next request must not overlap this one here
                st.platforms["gemini"].in_flight -= 1
        if answer is None:
            return self._drop()
        self._send(200, answer)

    def _gemini_answer(self, model: str, prompt: str, config: dict[str, Any], size: str, w: int, h: int,
                       refs: int, faults: dict[str, dict[str, Any]], rid: str) -> dict[str, Any] | None:
        """The answer, or None to close the connection without one."""
        st = self.state
        wait = float(faults["slow"].get("seconds", 600)) if "slow" in faults else st.latency
        if not self._nap(wait):
            return None
        usage = {"promptTokenCount": 10 + 258 * refs, "candidatesTokenCount": 2000 if size == "4K" else 1120}
        usage["totalTokenCount"] = usage["promptTokenCount"] + usage["candidatesTokenCount"]
        if "moderated" in faults:  # blocked: no image, not billed
            f = faults["moderated"]
            if "finish" in f:
                return {"candidates": [{"finishReason": f["finish"], "index": 0}], "usageMetadata": usage,
                        "modelVersion": model, "responseId": rid}
            return {"promptFeedback": {"blockReason": f.get("reason", "PROHIBITED_CONTENT")}, "usageMetadata": usage,
                    "modelVersion": model, "responseId": rid}
        with st.lock:
            st.bill("gemini", rid, GEMINI_PRICES[size], size=size)
        if "accept_drop" in faults:
            return None
        data = GARBAGE if "corrupt_image" in faults else png(w, h, f"{prompt}/{config.get('seed')}")
        thought = png(64, 64, "draft")
        return {"candidates": [{"content": {"role": "model", "parts": [
                    {"text": "Composing the panel.", "thought": True},
                    {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(thought).decode()},
                     "thought": True},
                    {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}},
                ]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": usage, "modelVersion": model, "responseId": rid}

    # -- Together ---------------------------------------------------------------------------------
    def _together(self, body: dict[str, Any]) -> None:
        st = self.state
        if not self._authorized("together"):
            return
        prompt = str(body.get("prompt", ""))
        if self._submit_fault("together", prompt):
            return
        model = body.get("model")
        if model not in TOGETHER_MODELS:
            return self._send(404, {"error": {"message": f"Unable to access model {model}",
                                              "type": "invalid_request_error"}})
        steps, n = int(body.get("steps", 4)), int(body.get("n", 1))
        w, h = int(body.get("width", 1024)), int(body.get("height", 768))
        if not prompt or not 1 <= steps <= TOGETHER_MODELS[model] or w % 16 or h % 16:
            return self._send(422, {"error": {"message": f"invalid request (steps must be 1-{TOGETHER_MODELS[model]}, "
                                              "sizes multiples of 16)", "type": "invalid_request_error"}})
        rid = f"tg-{uuid.uuid4().hex[:16]}"
        with st.lock:
            faults = st.request_faults("together", prompt)
            p = st.platforms["together"]
            self._taken("together", body)
            p.in_flight += 1
            p.peak = max(p.peak, p.in_flight)
        try:
            answer = self._together_answer(model, prompt, body, w, h, n, faults, rid)
        finally:
            with st.lock:  # before answering (see _gemini)
                st.platforms["together"].in_flight -= 1
        if answer is None:
            return self._drop()
        self._send(200, answer)

    def _together_answer(self, model: str, prompt: str, body: dict[str, Any], w: int, h: int, n: int,
                         faults: dict[str, dict[str, Any]], rid: str) -> dict[str, Any] | None:
        st = self.state
        wait = float(faults["slow"].get("seconds", 600)) if "slow" in faults else st.latency
        if not self._nap(wait):
            return None
        with st.lock:
            st.bill("together", rid, Decimal(0))
        if "accept_drop" in faults:
            return None
        data = GARBAGE if "corrupt_image" in faults else png(w, h, f"{prompt}/{body.get('seed')}")
        return {"id": rid, "model": model, "object": "list", "data": [
            {"index": i, "b64_json": base64.b64encode(data).decode(), "timings": {"inference": wait}}
            for i in range(n)]}

    # -- Replicate --------------------------------------------------------------------------------
    def _prediction(self, job: Job) -> dict[str, Any]:
        now = time.time()
        base = self._base("replicate")
        status, output, error, completed = "processing", None, None, None
        if job.cancelled:
            status, completed = "canceled", job.done_at
        elif now >= job.done_at:
            completed = job.done_at
            if "error" in job.faults:
                status, error = "failed", "Prediction failed: CUDA out of memory"
            elif "moderated" in job.faults:
                status, error = "failed", "NSFW content detected. Try running it again, or try a different prompt."
            else:
                status, output = "succeeded", [f"{base}/files/{job.id}/out-0.png"]
        elif now < job.submitted + min(0.01, job.done_at - job.submitted):
            status = "starting"
        return {"id": job.id, "model": job.model, "version": "hidden", "input": summary(job.input), "logs": "",
                "output": output, "error": error, "status": status, "created_at": iso(job.submitted),
                "started_at": iso(job.submitted), "completed_at": iso(completed),
                "urls": {"get": f"{base}/v1/predictions/{job.id}", "cancel": f"{base}/v1/predictions/{job.id}/cancel"},
                "metrics": {"predict_time": round(job.done_at - job.submitted, 3)} if completed else {}}

    def _replicate_submit(self, model: str, body: dict[str, Any]) -> None:
        st = self.state
        if not self._authorized("replicate"):
            return
        inp = body.get("input") or {}
        prompt = str(inp.get("prompt", ""))
        if self._submit_fault("replicate", prompt):
            return
        if model not in REPLICATE_PRICES:
            return self._send(404, {"detail": "The requested resource could not be found.", "status": 404})
        ratio = inp.get("aspect_ratio", "1:1")
        if not prompt or ratio not in REPLICATE_SIZES:
            return self._send(422, {"detail": "- input: invalid prompt or aspect_ratio", "status": 422})
        w, h = REPLICATE_SIZES[ratio]
        n = int(inp.get("num_outputs", 1))
        rid = uuid.uuid4().hex[:26]
        with st.lock:
            now = time.time()
            faults = st.request_faults("replicate", prompt)
            latency = float(faults["slow"].get("seconds", 600)) if "slow" in faults else st.latency
            bad = faults.get("corrupt_image")
            job = Job("replicate", rid, model, prompt, inp.get("seed"), w, h, faults, now, now + latency,
                      REPLICATE_PRICES[model] * n, bad_left=int(bad.get("times", 1)) if bad else 0, input=inp)
            st.jobs[rid] = job
            self._taken("replicate", body)
            p = st.platforms["replicate"]
            p.peak = max(p.peak, st.jobs_in_flight("replicate", now))
            hold = st.replicate_wait
        if "accept_drop" in faults:  # created (it runs, and is billed when it succeeds); the answer is lost
            return self._drop()
        prefer = self.headers.get("Prefer", "")
        if prefer.startswith("wait"):
            asked = prefer.partition("=")[2]
            hold = min(hold, float(asked) if asked else 60.0)
            self._nap(0, until=min(job.done_at, time.time() + hold))
        self._send(201, self._prediction(job))

    def _replicate_cancel(self, rid: str) -> None:
        st = self.state
        if not self._authorized("replicate"):
            return
        with st.lock:
            job = st.jobs.get(rid)
            st.platforms["replicate"].counts["cancels"] += 1
            if job is None or job.platform != "replicate":
                return self._send(404, {"detail": "Not found."})
            if "no_cancel" in job.faults:
                return self._send(500, {"detail": "could not cancel"})
            if not job.finished(time.time()):
                job.cancelled = True
                job.done_at = time.time()
        self._send(200, self._prediction(job))


def serve(cert: str, port: int = 0, latency: float = 0.05) -> None:
    Handler.state = State(latency=latency)
    serve_tls(cert, port, Handler)


def main() -> None:
    a = fake_arguments(__doc__).parse_args()
    serve(a.cert, a.port, a.latency)


if __name__ == "__main__":
    main()
