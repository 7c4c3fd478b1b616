"""A Dagster run in its own process, for the crash-and-restart tests: it opens the instance the
way `webtoon demo` does, optionally runs the demo's start-up, then runs a one-step job whose step
is in the image_generation pool and holds its slot until a release file appears.

    python -m webtoon_assets_tests.run_worker --home H --state DIR --name W1
        [--data-root D --start-up] [--untagged] [--go FILE --homes H1,H2,...]

or, without paying for the imports again, ``fork_worker(args, out)`` from a process that has them.

Writes ``DIR/<name>.holding`` (its pid) once its step has the slot, and waits for ``DIR/release``.
``--untagged`` runs it as a run started by other means would be (no webtoon/pid tag: its process
is known only from Dagster's own engine events). ``--go``: for each home of ``--homes`` in turn,
wait for ``<go>.<i>``, then open that brand-new instance and run the job (the first-open race).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

from dagster import DagsterInstance, job, op

from webtoon_assets.instance import open_instance
from webtoon_assets.runs import execute_run, start_up

GENERATION_POOL = "image_generation"  # the project's pool (assets/partitions.py; not imported: slow)
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def holding_job(state: Path, name: str):
    @op(pool=GENERATION_POOL)
    def generate() -> None:
        (state / f"{name}.holding").write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not (state / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    @job(name=f"hold_{name}")
    def hold():
        generate()

    return hold


def run_once(instance: DagsterInstance, state: Path, name: str, untagged: bool) -> bool:
    job_def = holding_job(state, name)
    if untagged:
        result = job_def.execute_in_process(instance=instance, run_config=RUN_CONFIG, raise_on_error=False)
    else:
        result = execute_run(job_def, instance, name, run_config=RUN_CONFIG, raise_on_error=False)
    print(f"{name}: run {result.run_id} {'succeeded' if result.success else 'failed'}", flush=True)
    return result.success


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--home")
    p.add_argument("--state", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--data-root")
    p.add_argument("--start-up", action="store_true")
    p.add_argument("--untagged", action="store_true")
    p.add_argument("--go")
    p.add_argument("--homes", default="")
    a = p.parse_args(argv)
    state = Path(a.state)
    if a.go:  # the first-open race: every worker opens each brand-new instance at the same moment
        ok = True
        (state / f"{a.name}.ready").write_text(str(os.getpid()))  # imported: the race can start
        for i, home in enumerate(a.homes.split(",")):
            go = Path(f"{a.go}.{i}")
            while not go.exists():
                time.sleep(0.002)
            try:
                with open_instance(Path(home)) as instance:
                    ok = run_once(instance, state, a.name, a.untagged) and ok
            except Exception as e:  # noqa: BLE001 - reported, and the next round still runs
                print(f"{a.name}: round {i} crashed: {type(e).__name__}: {e}", flush=True)
                ok = False
            (state / f"{a.name}.done.{i}").write_text("ok" if ok else "failed")
        return 0 if ok else 1
    with open_instance(Path(a.home)) as instance:
        if a.start_up:
            start_up(instance, Path(a.data_root))
        return 0 if run_once(instance, state, a.name, a.untagged) else 1


def _child(argv: list[str], out: str) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    code = 1
    try:
        code = main(argv)
    finally:
        sys.stdout.flush()
        os._exit(code)


def fork_worker(argv: list[str], out: Path) -> multiprocessing.Process:
    """``main(argv)`` in a forked child process (stdout and stderr to ``out``): a process of its own,
    as real for SIGKILL as a fresh interpreter, without importing Dagster again."""
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(argv, str(out)), daemon=False)
    proc.start()
    return proc


if __name__ == "__main__":
    sys.exit(main())
