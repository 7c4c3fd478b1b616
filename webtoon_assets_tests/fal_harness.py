"""Start the loopback fake of fal in its own process and point the real fal-client at it."""

from __future__ import annotations

import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trustme

from webtoon_assets.paths import REPO_ROOT

TEST_KEY = "fal-test-key-0123456789-SECRET"  # the fake requires it; tests check it never leaks


@dataclass
class FakeFal:
    proc: subprocess.Popen
    base_url: str
    ca_file: Path

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        r = httpx.request(method, f"{self.base_url}{path}", verify=ctx, timeout=30, **kw)
        r.raise_for_status()
        return r.json()

    def configure(self, **config: Any) -> None:
        self._call("POST", "/_fake/config", json=config)

    def reset(self, latency: float = 0.05, slots: int | None = None) -> None:
        self._call("POST", "/_fake/reset")
        self.configure(latency=latency, slots=slots, faults=[])

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_fake/stats")

    def env(self) -> dict[str, str]:
        """What a process needs to use the real fal-client against this fake."""
        return {"FAL_KEY": TEST_KEY, "SSL_CERT_FILE": str(self.ca_file), "WEBTOON_FAL_BASE_URL": self.base_url,
                "WEBTOON_PROVIDER": "fal"}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_fake_process(workdir: Path, module: str, args: list[str]) -> tuple[subprocess.Popen, str, Path]:
    """A test CA and a certificate for 127.0.0.1, and the fake ``module`` serving TLS on a free port
    in its own process (it must outlive a pipeline killed with SIGKILL): (process, base URL, CA file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    name = module.rsplit(".", 1)[-1].replace("_", "-")
    ca = trustme.CA()
    ca_file, server_pem = workdir / f"{name}-ca.pem", workdir / f"{name}-server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    proc = subprocess.Popen([sys.executable, "-m", module, "--cert", str(server_pem), *args], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"{module} did not start: {line!r}")
    return proc, f"https://127.0.0.1:{int(line.split()[1])}", ca_file


def start_fake_fal(workdir: Path, latency: float = 0.05, slots: int | None = None,
                   key: str | None = TEST_KEY) -> FakeFal:
    args = ["--latency", str(latency), *(["--slots", str(slots)] if slots else []), *(["--key", key] if key else [])]
    return FakeFal(*start_fake_process(workdir, "webtoon_assets_tests.fake_fal", args))
