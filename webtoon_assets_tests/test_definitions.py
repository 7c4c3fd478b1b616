"""The code location loads as Dagster loads it: `dagster definitions validate` on the workspace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from dagster import AssetCheckKey, AssetKey

from webtoon_assets.paths import REPO_ROOT


def test_dg_check_defs_loads_the_code_location(tmp_path: Path):
    """`dg check defs` (pyproject [tool.dg]) loads the same code location as `dagster dev -w workspace.yaml`."""
    dg = Path(sys.executable).parent / "dg"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.run([str(dg), "check", "defs"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr


def test_every_series_gets_its_assets_job_and_sensor(defs):
    keys = {"/".join(k.path) for k in defs.resolve_all_asset_keys()}
    assert keys == {f"lantern_street/{a}" for a in
                    ("style_sheet", "character_sheets", "character_loras", "prop_sheets", "backgrounds", "storyboard", "panels",
                     "lettered_panels", "episode_strip", "season_reader", "model_trial", "model_recommendation")} | {
        "cost_tables"}
    assert defs.resolve_job_def("lantern_street__trial").partitions_def.get_partition_keys() == [
        "fal-ai__flux-2__flash__edit", "fal-ai__flux-2__edit", "bfl__flux-2-klein-9b", "bfl__flux-2-pro"]
    assert defs.resolve_job_def("lantern_street__season")
    assert defs.resolve_sensor_def("lantern_street__new_episodes")


def test_the_projects_dagster_yaml_is_a_valid_instance(tmp_path: Path):
    """`make ui` and `make demo` use the top-level dagster.yaml; its paths are relative to the repo
    root, so it is loaded here from a copy in a temp dir."""
    shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run([str(dagster), "instance", "info"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "DAGSTER_HOME": str(tmp_path)}, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "max_concurrent_runs: 4" in out and "default_limit: 2" in out
    # runs whose process is gone are failed by the daemon, and their pool slots freed
    assert "class: LocalRunLauncher" in out and "run_monitoring:\n  enabled: true" in out
    assert (tmp_path / "data" / "dagster" / "storage").is_dir()  # state lands under data/, not beside the config


def test_make_ui_listens_where_told():
    """`make ui PORT=3001 HOST=0.0.0.0` (dry run: nothing is started); by default 127.0.0.1:3000."""
    make = shutil.which("make")
    assert make, "make is needed (see README)"

    def dry_run(*args: str) -> str:
        proc = subprocess.run([make, "-n", "ui", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return next(line for line in proc.stdout.splitlines() if "dagster dev" in line)

    assert dry_run("PORT=3001").endswith("-h 127.0.0.1 -p 3001")
    assert dry_run("PORT=3001", "HOST=0.0.0.0").endswith("-h 0.0.0.0 -p 3001")
    assert dry_run().endswith("-h 127.0.0.1 -p 3000")


def test_episode_checks_are_partitioned_like_their_assets(defs):
    graph = defs.resolve_asset_graph()
    for name, check in (("panels", "cost_per_panel_target"), ("panels", "character_consistency"),
                        ("episode_strip", "webtoon_canvas_limits")):
        key = AssetKey(["lantern_street", name])
        spec = graph.get_check_spec(AssetCheckKey(key, check))
        assert spec.partitions_def == graph.get(key).partitions_def
        assert spec.partitions_def.name == "lantern_street__episodes"
