"""What every benchmark row is: a measurement, its baseline measured in the same run, their ratio
and the goal; and how a measurement's peak memory is taken (a child process's high-water RSS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One line of the table. ``ratio`` = measured / baseline (both in the same run); ``goal`` is the
    largest ratio the issue accepts. Absolute limits (seconds, MB) go in ``limits`` as name -> (value, limit)."""

    what: str
    baseline: str  # what the baseline is, in words
    baseline_s: float
    measured_s: float
    goal: float | None = None
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.measured_s / self.baseline_s if self.baseline_s else float("inf")

    @property
    def met(self) -> bool:
        return (self.goal is None or self.ratio <= self.goal) and all(v <= lim for v, lim in self.limits.values())

    def as_json(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 4), "met": self.met,
                "limits": {k: {"value": v, "limit": lim} for k, (v, lim) in self.limits.items()}}


@dataclass
class Measured:
    seconds: float
    peak_mb: float
    stdout: str


def run_measured(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                 timeout: float = 3600) -> Measured:
    """Run a child process to completion: its wall time, and the peak resident memory it reports on
    stderr (``bench.peak`` prints it)."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=timeout)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n{err[-4000:]}")
    peak = _peak_from_stderr(err)
    return Measured(seconds, peak, out)


PEAK_MARK = "bench-peak-rss-kb="


def _peak_from_stderr(err: str) -> float:
    for line in reversed(err.splitlines()):
        if line.startswith(PEAK_MARK):
            return int(line[len(PEAK_MARK):]) / 1024
    return float("nan")


def python_measured(code_or_module: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                    timeout: float = 3600) -> Measured:
    """``python -m bench.peak <args>``: runs the module or script given and reports its own peak RSS
    (ru_maxrss of the process, which includes every thread; children it starts are added too)."""
    return run_measured([sys.executable, "-m", "bench.peak", *code_or_module], env=env, cwd=cwd or REPO,
                        timeout=timeout)


def write_results(rows: list[Row], path: Path, **context) -> None:
    path.write_text(json.dumps({**context, "rows": [r.as_json() for r in rows]}, indent=2, default=str) + "\n")


def table(rows: list[Row]) -> str:
    lines = ["| what | baseline | measured | ratio | goal | met |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        limits = "".join(f"; {k} {v:g} (≤ {lim:g})" for k, (v, lim) in r.limits.items())
        goal = f"≤ {r.goal:g}×" if r.goal is not None else "-"
        lines.append(f"| {r.what} | {r.baseline}: {r.baseline_s:.3f} s | {r.measured_s:.3f} s{limits} | "
                     f"{r.ratio:.3f} | {goal} | {'met' if r.met else 'MISSED'} |")
    return "\n".join(lines)
