"""Start the loopback fake of BFL, Gemini, Together and Replicate in its own process, and say how
to point the providers at it (keys, the test CA, one base URL per platform)."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from webtoon_assets.gateway.providers import PLATFORM_KEYS
from webtoon_assets_tests.fake_platforms import PLATFORMS, TEST_KEYS
from webtoon_assets_tests.fal_harness import start_fake_process

# Where each platform's key is read from: the gateway's own table.
KEY_ENV = {p: PLATFORM_KEYS[p] for p in PLATFORMS}


@dataclass
class FakePlatforms:
    proc: subprocess.Popen
    url: str  # https://127.0.0.1:<port>
    ca_file: Path
    _client: httpx.Client | None = field(default=None, repr=False)

    def base_url(self, platform: str) -> str:
        return f"{self.url}/{platform}"

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        if self._client is None:  # one connection for the control calls, not a handshake each
            self._client = httpx.Client(verify=ssl.create_default_context(cafile=str(self.ca_file)), timeout=30)
        r = self._client.request(method, f"{self.url}{path}", **kw)
        r.raise_for_status()
        return r.json()

    def configure(self, **config: Any) -> None:
        """latency, faults, keys, bfl_limit, replicate_wait, url_ttl (see fake_platforms)."""
        self._call("POST", "/_fake/config", json=config)

    def reset(self, latency: float = 0.05, **config: Any) -> None:
        self._call("POST", "/_fake/reset", json={"latency": latency, **config})

    def stats(self, platform: str | None = None) -> dict[str, Any]:
        s = self._call("GET", "/_fake/stats")
        return s[platform] if platform else s

    def finish(self, platform: str | None = None, request_id: str | None = None) -> None:
        """Pending requests finish now (a slow one included)."""
        self._call("POST", "/_fake/finish", json=_which(platform, request_id))

    def expire(self, platform: str | None = None, request_id: str | None = None) -> None:
        """Result URLs die now (BFL's after 10 minutes, Replicate's after an hour)."""
        self._call("POST", "/_fake/expire", json=_which(platform, request_id))

    def env(self) -> dict[str, str]:
        """What a process needs to use the four providers against this fake."""
        out = {"SSL_CERT_FILE": str(self.ca_file)}
        for p in PLATFORMS:
            out[KEY_ENV[p]] = TEST_KEYS[p]
            out[f"WEBTOON_{p.upper()}_BASE_URL"] = self.base_url(p)
        return out

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _which(platform: str | None, request_id: str | None) -> dict[str, str]:
    return {k: v for k, v in {"platform": platform, "id": request_id}.items() if v}


def start_fake_platforms(workdir: Path, latency: float = 0.05) -> FakePlatforms:
    """The fake on a free loopback port, with a test CA (see fal_harness.start_fake_process)."""
    return FakePlatforms(*start_fake_process(workdir, "webtoon_assets_tests.fake_platforms",
                                             ["--latency", str(latency)]))
