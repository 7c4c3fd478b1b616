"""The price book (data/pricebook.yaml): one entry per endpoint, with its rule, source and date.
Prices live here, never in code."""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from webtoon_assets.bible.errors import BibleError
from webtoon_assets.bible.yaml_strict import load_yaml
from webtoon_assets.paths import data_root
from webtoon_assets.pricing.arguments import Schema, argument_problems
from webtoon_assets.pricing.fit import Ref, RequestShape, fit_request
from webtoon_assets.pricing.rules import PriceRule

Kind = Literal["image", "video", "audio", "text", "training"]


class PriceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    endpoint: str
    platform: str = Field(description="who sells it: fal, bfl, gemini, together, replicate, byteplus")
    model: str = Field(description="the model's name; an endpoint and its /edit share one")
    kind: Kind
    max_references: int = Field(0, ge=0, description="reference images it accepts (0: text-to-image)")
    price: PriceRule
    accepts: str | None = Field(None, description="its argument schema (argument_schemas); none: no extras")
    request: RequestShape = Field(default_factory=RequestShape, description="how it takes the canonical request")
    source: str
    read: dt.date
    retired: dt.date | None = Field(None, description="the day the platform shut it down: kept to price old "
                                                      "ledger rows, refused for anything new")
    replaced_by: str | None = None
    notes: str = ""

    def fit(self, arguments: dict[str, Any], references: Sequence[Ref]) -> tuple[dict[str, Any], list[Ref]]:
        """The canonical request's arguments and references as this endpoint takes them."""
        return fit_request(self.request, self.max_references, arguments, references)


class PriceBook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    credits_per_usd: Decimal = Decimal(120)
    argument_schemas: dict[str, Schema] = Field(default_factory=dict)
    entries: list[PriceEntry]

    _by_endpoint: dict[str, PriceEntry] = PrivateAttr(default_factory=dict)  # every request looks one up

    @model_validator(mode="after")
    def _unique(self) -> "PriceBook":
        seen = self._by_endpoint
        for e in self.entries:
            if e.endpoint in seen:
                raise ValueError(f"endpoint {e.endpoint!r} is listed twice")
            seen[e.endpoint] = e
            if e.accepts is not None and e.accepts not in self.argument_schemas:
                raise ValueError(f"{e.endpoint}: accepts {e.accepts!r} names no schema in argument_schemas; "
                                 f"expected one of {sorted(self.argument_schemas)}")
        return self

    def argument_problems(self, endpoint: str, arguments: dict[str, Any]) -> dict[str, str]:
        """Argument name -> what is wrong with it for ``endpoint`` (which must be in the book)."""
        accepts = self.entry(endpoint).accepts
        return argument_problems(endpoint, self.argument_schemas.get(accepts or ""), arguments)

    def entry(self, endpoint: str) -> PriceEntry:
        try:
            return self._by_endpoint[endpoint]
        except KeyError:
            raise UnknownEndpoint(endpoint) from None

    def has(self, endpoint: str) -> bool:
        return endpoint in self._by_endpoint

    def endpoint_problem(self, endpoint: str, today: dt.date | None = None) -> str | None:
        """Why nothing new may be asked of ``endpoint`` (not in the book, or retired), or None."""
        if not self.has(endpoint):
            return f"{endpoint!r} has no entry in the price book; expected one of its endpoints"
        e = self.entry(endpoint)
        if e.retired is not None and e.retired <= (today or dt.date.today()):
            instead = f"; use {e.replaced_by}" if e.replaced_by else ""
            return f"{endpoint!r} was retired by {e.platform} on {e.retired}{instead}"
        return None

    def usable(self, endpoint: str) -> PriceEntry:
        """The entry of an endpoint a new request may use; RetiredEndpoint for a retired one."""
        entry = self.entry(endpoint)
        if (problem := self.endpoint_problem(endpoint)) is not None:
            raise RetiredEndpoint(problem)
        return entry


class RetiredEndpoint(ValueError):
    """An endpoint its platform has shut down: asking it would only fail (or be refused) after paying."""


class UnknownEndpoint(KeyError):
    def __init__(self, endpoint: str):
        super().__init__(endpoint)
        self.endpoint = endpoint

    def __str__(self) -> str:
        return (f"unknown endpoint {self.endpoint!r}: it has no entry in the price book "
                f"({pricebook_path()}); add one (rule, source, date read) before using it")


def pricebook_path() -> Path:
    return Path(os.environ.get("WEBTOON_PRICEBOOK", data_root() / "pricebook.yaml"))


@lru_cache(maxsize=8)
def _load(path: Path, mtime: float) -> PriceBook:
    raw, lines = load_yaml(path)  # size-checked, no anchors, no duplicate keys
    try:
        return PriceBook.model_validate(raw)
    except ValidationError as e:
        raise BibleError.from_validation(path, e, lines=lines) from e


def load_pricebook(path: Path | None = None) -> PriceBook:
    """The price book, re-read when the file changes. ``WEBTOON_CREDITS_PER_USD`` overrides the rate."""
    path = (path or pricebook_path()).resolve()
    if not path.is_file():
        raise BibleError(path, ["expected the price book here (see README, 'Prices')"])
    book = _load(path, path.stat().st_mtime)
    if rate := os.environ.get("WEBTOON_CREDITS_PER_USD"):
        book = book.model_copy(update={"credits_per_usd": Decimal(rate)})
    return book
