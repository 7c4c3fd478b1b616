"""The code location loads as Dagster loads it: `dagster definitions validate` on the workspace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from webtoon_assets.paths import REPO_ROOT


def test_dagster_definitions_validate(tmp_path: Path):
    dagster = Path(sys.executable).parent / "dagster"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def test_every_series_gets_its_assets_job_and_sensor(defs):
    keys = {"/".join(k.path) for k in defs.resolve_all_asset_keys()}
    assert keys == {f"lantern_street/{a}" for a in
                    ("style_sheet", "character_sheets", "backgrounds", "storyboard", "panels", "episode_strip")}
    assert defs.resolve_job_def("lantern_street__season")
    assert defs.resolve_sensor_def("lantern_street__new_episodes")
