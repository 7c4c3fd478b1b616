"""How often the gateway tries again, and how long it waits: bounded, exponential, jittered."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class AttemptPolicy:
    """How the gateway retries one request (named apart from Dagster's RetryPolicy, which retries steps)."""

    attempts: int = 3  # tries in all for a retryable failure (5xx, timeouts, fal-side errors)
    base_seconds: float = 1.0
    max_seconds: float = 30.0
    nsfw_retries: int = 2  # further tries with a new seed after an NSFW-flagged output

    def delay(self, retry: int) -> float:
        return min(self.max_seconds, self.base_seconds * 2 ** (retry - 1)) * random.uniform(0.5, 1.5)

    @classmethod
    def from_env(cls) -> "AttemptPolicy":
        return cls(
            attempts=int(os.environ.get("WEBTOON_RETRY_ATTEMPTS", cls.attempts)),
            base_seconds=float(os.environ.get("WEBTOON_RETRY_BASE_SECONDS", cls.base_seconds)),
            nsfw_retries=int(os.environ.get("WEBTOON_NSFW_RETRIES", cls.nsfw_retries)),
        )


class GenerationFailed(RuntimeError):
    """Every allowed attempt at one image failed; each is in the ledger."""
