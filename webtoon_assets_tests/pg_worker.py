"""One machine of a studio, for test_postgres_money: its own Dagster home and data root, the store
and the coordination database the environment names (WEBTOON_STORE_DIR, WEBTOON_DATABASE_URL).

    python -m webtoon_assets_tests.pg_worker READY GO EPISODE...

Imports everything and loads the definitions, touches READY, waits for GO (so the machines start
at the same moment), then backfills EPISODE... of the sample series in process, one run per
episode (``webtoon demo``'s ``run_season``), and prints ``WORKER-DONE {json}`` with its run ids
and the seconds the backfill took. A failed step fails the process."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

SAMPLE = "lantern_street"


def main(argv: list[str] | None = None) -> int:
    ready, go, *episodes = argv if argv is not None else sys.argv[1:]
    from webtoon_assets.definitions import build_definitions
    from webtoon_assets.demo import run_season
    from webtoon_assets.instance import open_instance
    from webtoon_assets.paths import DataLayout

    layout = DataLayout.default()
    defs = build_definitions(layout)
    with open_instance(Path(os.environ["DAGSTER_HOME"])) as instance:
        Path(ready).touch()
        deadline = time.monotonic() + 300
        while not Path(go).exists():
            if time.monotonic() > deadline:
                print("WORKER: no go signal", flush=True)
                return 3
            time.sleep(0.002)
        started = time.monotonic()
        runs = run_season(instance, defs, layout, SAMPLE, episodes)
        print("WORKER-DONE " + json.dumps({"runs": runs, "seconds": round(time.monotonic() - started, 2)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
