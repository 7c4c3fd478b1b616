"""Price rules: each kind reads what it needs from the request (and the response, when only the
response knows) and returns units, a price and a readable breakdown. All money is Decimal."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from webtoon_assets.sizes import ImageSizeError, requested_pixels

MP_PIXELS = 1024 * 1024  # fal rounds up to whole megapixels of 1024×1024 px


class Unpriceable(ValueError):
    """A request this rule cannot price: never silently $0."""


@dataclass(frozen=True, kw_only=True)
class Priced:
    """What a rule measured and what it costs."""

    usd: Decimal
    units: Decimal
    unit: str
    breakdown: list[str]
    megapixels: Decimal | None = None
    images: int | None = None
    seconds: Decimal | None = None


def dig(data: dict[str, Any] | None, path: str) -> Any:
    """``a.b.0.c`` into nested dicts/lists; None where absent."""
    cur: Any = data
    for part in path.split("."):
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
    return cur


def seconds_of(value: Any) -> Decimal:
    """5, 5.0, "5", "8s" → seconds."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return Decimal(str(value))
    if isinstance(value, str) and (m := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*s?\s*", value)):
        return Decimal(m[1])
    raise Unpriceable(f"expected a duration in seconds (5, '5', '8s'), got {value!r}")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Megapixels(Rule):
    inputs: bool = Field(False, description="bill each input/reference image too")
    max_inputs: int | None = Field(None, description="inputs beyond this are ignored by the model and unbilled")
    rounding: Literal["ceil", "exact", "two_decimals"] = Field(
        "ceil", description="ceil: whole MP of 1024² per image (fal); exact: w·h/10⁶; "
                            "two_decimals: w·h/10⁶ to two decimals, as BFL reports it")
    min_input_mp: Decimal = Field(Decimal(1), description="an input counts as at least this many MP")
    max_input_mp: Decimal | None = Field(None, description="a larger input is resized to, and billed as, this "
                                                           "many MP (FLUX.2 on fal: 4)")
    default_size: str = "landscape_4_3"

    def mp(self, w: int, h: int) -> Decimal:
        if self.rounding == "ceil":
            return Decimal(max(1, math.ceil(w * h / MP_PIXELS)))
        exact = Decimal(w * h) / Decimal(1_000_000)
        return exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) if self.rounding == "two_decimals" else exact

    def outputs(self, request: dict[str, Any], response: dict[str, Any] | None) -> list[tuple[int, int]]:
        try:
            w, h = requested_pixels(request, self.default_size)
        except ImageSizeError as e:
            raise Unpriceable(str(e)) from None
        images = dig(response, "images") if response else None
        if images:
            return [(int(i.get("width") or w), int(i.get("height") or h)) for i in images]
        return [(w, h)] * int(request.get("num_images", 1))

    def input_mps(self, request: dict[str, Any]) -> list[Decimal]:
        if not self.inputs:
            return []
        urls = list(request.get("image_urls") or ([request["image_url"]] if request.get("image_url") else []))
        sizes = list(request.get("input_image_sizes") or [])
        if self.max_inputs is not None:
            urls = urls[: self.max_inputs]
        out = []
        for i, _ in enumerate(urls):
            s = sizes[i] if i < len(sizes) else None
            # an input of unknown size counts as at least one megapixel: never priced at nothing
            mp = max(self.mp(int(s["width"]), int(s["height"])), self.min_input_mp) if s else max(self.min_input_mp, Decimal(1))
            out.append(min(mp, self.max_input_mp) if self.max_input_mp is not None else mp)
        return out


class PerMegapixel(_Megapixels):
    rule: Literal["per_megapixel"]
    usd_per_mp: Decimal

    def price(self, request: dict[str, Any], response: dict[str, Any] | None) -> Priced:
        outs = self.outputs(request, response)
        out_mp = sum((self.mp(w, h) for w, h in outs), Decimal(0))
        in_mps = self.input_mps(request)
        in_mp = sum(in_mps, Decimal(0))
        total = out_mp + in_mp
        lines = [f"{len(outs)} output image(s) {'+'.join(f'{w}x{h}' for w, h in outs)} = {out_mp} MP"]
        if in_mps:
            lines.append(f"{len(in_mps)} input image(s) = {in_mp} MP")
        lines.append(f"{total} MP x ${self.usd_per_mp}/MP")
        return Priced(usd=total * self.usd_per_mp, units=total, unit="megapixel", breakdown=lines, megapixels=total,
                      images=len(outs))


class FirstMegapixelPlusExtra(_Megapixels):
    """FLUX.2 [pro]/[max]: the first megapixel of each output at one price, every further
    megapixel of output and input at another."""

    rule: Literal["first_mp_plus_extra"]
    usd_first_mp: Decimal
    usd_extra_mp: Decimal
    inputs: bool = True

    def price(self, request: dict[str, Any], response: dict[str, Any] | None) -> Priced:
        outs = self.outputs(request, response)
        out_mps = [self.mp(w, h) for w, h in outs]
        in_mp = sum(self.input_mps(request), Decimal(0))
        further = sum((max(m - 1, Decimal(0)) for m in out_mps), Decimal(0))  # an output under 1 MP is one first MP
        extra = further + in_mp
        usd = len(outs) * self.usd_first_mp + extra * self.usd_extra_mp
        total = sum(out_mps, Decimal(0)) + in_mp
        lines = [f"{len(outs)} first MP x ${self.usd_first_mp}",
                 f"{extra} extra MP (output beyond the first {further}, inputs {in_mp}) x ${self.usd_extra_mp}"]
        return Priced(usd=usd, units=total, unit="megapixel", breakdown=lines, megapixels=total, images=len(outs))


class PerImage(Rule):
    rule: Literal["per_image"]
    usd_per_image: Decimal
    count_path: str = Field("images", description="where the response lists its outputs (BytePlus: 'data')")
    tier_field: str | None = Field(None, description="request field choosing a tier, e.g. 'resolution'")
    tiers: dict[str, Decimal] = Field(default_factory=dict)

    def price(self, request: dict[str, Any], response: dict[str, Any] | None) -> Priced:
        listed = dig(response, self.count_path) if response else None
        count = len(listed) if isinstance(listed, list) else int(request.get("num_images", 1))
        unit_price = self.usd_per_image
        tier = request.get(self.tier_field) if self.tier_field else None
        if tier is not None and str(tier) in self.tiers:
            unit_price = self.tiers[str(tier)]
        src = "response" if isinstance(listed, list) else "request"
        return Priced(usd=count * unit_price, units=Decimal(count), unit="image",
                      breakdown=[f"{count} image(s) (from the {src}) x ${unit_price}" + (f" ({tier})" if tier else "")],
                      images=count)


class SecondTier(Rule):
    resolution: str | None = None
    audio: bool | None = None
    usd_per_second: Decimal


class PerSecond(Rule):
    rule: Literal["per_second"]
    tiers: list[SecondTier] = Field(min_length=1)
    duration_field: str | None = "duration"
    response_duration_path: str | None = Field(None, description="when only the response knows the duration")
    default_duration: Decimal | None = None
    resolution_field: str = "resolution"
    default_resolution: str | None = None
    audio_field: str = "generate_audio"
    default_audio: bool | None = None

    def price(self, request: dict[str, Any], response: dict[str, Any] | None) -> Priced:
        raw = request.get(self.duration_field) if self.duration_field else None
        if raw is None and self.response_duration_path:
            raw = dig(response, self.response_duration_path)
        if raw is None:
            raw = self.default_duration
        if raw is None:
            where = f"request.{self.duration_field}" if self.duration_field else ""
            if self.response_duration_path:
                where += f"{' or ' if where else ''}response.{self.response_duration_path}"
            raise Unpriceable(f"needs a duration ({where})")
        secs = seconds_of(raw)
        res = request.get(self.resolution_field, self.default_resolution)
        audio = request.get(self.audio_field, self.default_audio)
        for t in self.tiers:
            if (t.resolution is None or t.resolution == res) and (t.audio is None or t.audio == audio):
                tier = t
                break
        else:
            raise Unpriceable(f"no price tier for resolution={res!r}, audio={audio!r}; "
                              f"tiers: {[(t.resolution, t.audio) for t in self.tiers]}")
        label = ", ".join(x for x in [str(res) if res else "", "audio" if audio else ("no audio" if audio is False else "")] if x)
        return Priced(usd=secs * tier.usd_per_second, units=secs, unit="second",
                      breakdown=[f"{secs} s x ${tier.usd_per_second}/s" + (f" ({label})" if label else "")],
                      seconds=secs)


class PerToken(Rule):
    """Text priced per token. Without usage in the response, tokens are estimated from the text
    at ``chars_per_token`` characters per token (English ≈ 4; the seed: ~1000 chars ≈ 250 tokens)."""

    rule: Literal["per_token"]
    usd_per_million_tokens: Decimal
    usd_per_million_output_tokens: Decimal | None = None
    text_field: str = "prompt"
    chars_per_token: Decimal = Decimal(4)
    input_tokens_path: str = "usage.prompt_tokens"
    output_tokens_path: str = "usage.completion_tokens"

    def price(self, request: dict[str, Any], response: dict[str, Any] | None) -> Priced:
        tin = dig(response, self.input_tokens_path) if response else None
        tout = dig(response, self.output_tokens_path) if response else None
        if tin is not None:
            tin, tout = Decimal(int(tin)), Decimal(int(tout or 0))
            how = "from the response's usage"
        else:
            text = request.get(self.text_field)
            if not isinstance(text, str):
                raise Unpriceable(f"needs text in request.{self.text_field} or usage in the response")
            tin = (Decimal(len(text)) / self.chars_per_token).to_integral_value(rounding=ROUND_CEILING)
            tout = Decimal(0)
            how = f"estimated: {len(text)} chars / {self.chars_per_token}"
        out_rate = self.usd_per_million_output_tokens or self.usd_per_million_tokens
        usd = (tin * self.usd_per_million_tokens + tout * out_rate) / Decimal(1_000_000)
        lines = [f"{tin} input tokens ({how}) x ${self.usd_per_million_tokens}/M"]
        if tout:
            lines.append(f"{tout} output tokens x ${out_rate}/M")
        return Priced(usd=usd, units=tin + tout, unit="token", breakdown=lines)


class PerCall(Rule):
    rule: Literal["per_call"]
    usd_per_call: Decimal

    def price(self, request: dict[str, Any], response: dict[str, Any] | None) -> Priced:
        return Priced(usd=self.usd_per_call, units=Decimal(1), unit="call", breakdown=[f"1 call x ${self.usd_per_call}"])


class PerMinuteSteps(Rule):
    """Per minute of output, the duration (response ``duration_ms``) rounded up to whole steps."""

    rule: Literal["per_minute"]
    usd_per_minute: Decimal
    step_seconds: int = 15
    duration_ms_path: str = "duration_ms"

    def price(self, request: dict[str, Any], response: dict[str, Any] | None) -> Priced:
        ms = dig(response, self.duration_ms_path) if response else None
        if ms is None:
            raise Unpriceable(f"needs the response's {self.duration_ms_path} (the duration is known only after)")
        secs = Decimal(math.ceil(int(ms) / (self.step_seconds * 1000)) * self.step_seconds)
        minutes = secs / Decimal(60)
        return Priced(usd=minutes * self.usd_per_minute, units=minutes, unit="minute", seconds=secs, breakdown=[
            f"{ms} ms -> {secs} s ({self.step_seconds} s steps) = {minutes} min x ${self.usd_per_minute}/min"])


class VideoTokens(Rule):
    """tokens = width × height × fps × seconds / 1024, priced per million tokens."""

    rule: Literal["video_tokens"]
    usd_per_million_tokens: Decimal
    resolutions: dict[str, tuple[int, int]]
    resolution_field: str = "resolution"
    default_resolution: str
    fps_field: str = "fps"
    default_fps: int = 24
    duration_field: str = "duration"
    default_duration: Decimal | None = None

    def price(self, request: dict[str, Any], response: dict[str, Any] | None) -> Priced:
        res = request.get(self.resolution_field, self.default_resolution)
        if res not in self.resolutions:
            raise Unpriceable(f"{self.resolution_field}: unknown {res!r}; expected one of {list(self.resolutions)}")
        w, h = self.resolutions[res]
        fps = int(request.get(self.fps_field, self.default_fps))
        raw = request.get(self.duration_field, self.default_duration)
        if raw is None:
            raise Unpriceable(f"needs request.{self.duration_field}")
        secs = seconds_of(raw)
        tokens = Decimal(w * h * fps) * secs / Decimal(1024)
        usd = tokens * self.usd_per_million_tokens / Decimal(1_000_000)
        return Priced(usd=usd, units=tokens, unit="token", seconds=secs, breakdown=[
            f"{w}x{h} x {fps} fps x {secs} s / 1024 = {tokens} tokens x ${self.usd_per_million_tokens}/M"])


class PerStep(Rule):
    """Training priced per step (fal's FLUX.2 trainer): ``steps`` from the request, else the default."""

    rule: Literal["per_step"]
    usd_per_step: Decimal
    steps_field: str = "steps"
    default_steps: int = Field(ge=1)

    def price(self, request: dict[str, Any], response: dict[str, Any] | None) -> Priced:
        steps = request.get(self.steps_field, self.default_steps)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise Unpriceable(f"{self.steps_field}: expected a whole number of steps, got {steps!r}")
        return Priced(usd=steps * self.usd_per_step, units=Decimal(steps), unit="step",
                      breakdown=[f"{steps} steps x ${self.usd_per_step}/step"])


PriceRule = Annotated[
    Union[PerMegapixel, FirstMegapixelPlusExtra, PerImage, PerSecond, PerToken, PerCall, PerMinuteSteps, VideoTokens,
          PerStep],
    Field(discriminator="rule"),
]
