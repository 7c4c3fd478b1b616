"""The `webtoon` CLI's `validate` (every problem of every file of the bible, exit 2 if any) and
`quote --episode` (what making an episode costs now: only the misses, per asset family, with no
effect on the budgets or the ledger, and no Dagster)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from dagster import AssetKey

from webtoon_assets.bible import load_episode, load_series
from webtoon_assets.cli import main
from webtoon_assets.assets.partitions import episode_partitions
from webtoon_assets.definitions import season_job_name
from webtoon_assets.gateway.store import ImageStore
from webtoon_assets.storyboard.prose import prose_request, split_prose
from webtoon_assets_tests.conftest import SAMPLE
from webtoon_assets_tests.test_prose import PROSE  # the same prose episode as the storyboard tests


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def quote_json(capsys, episode: str, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["quote", "--episode", episode, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file()}


# -- validate ---------------------------------------------------------------------------------------

def test_validate_the_sample_is_ok(layout, capsys):
    assert main(["validate"]) == 0
    out, err = capsys.readouterr()
    assert f"{SAMPLE}: OK: 3 episode(s), 30 panel(s) (ep01 10, ep02 11, ep03 9)" in out
    assert "OK: 1 series, 3 episode(s), 30 panel(s)" in out and err == ""
    assert main(["validate", "--series", SAMPLE]) == 0


def test_validate_lists_every_problem_of_every_file_without_a_traceback(layout, tmp_path):
    series_yaml = layout.series_dir(SAMPLE) / "series.yaml"
    episodes = layout.episodes_dir(SAMPLE)
    replace(series_yaml, "panels: {endpoint: fal-ai/flux-2/flash/edit", "panels: {endpoint: fal-ai/no-such-model")
    replace(episodes / "ep01.txt", "PANEL full: mira\n", "PANEL full: mira, zed\n")  # two problems, one file
    replace(episodes / "ep01.txt", "PANEL close-up: tomas\n", "PANEL sideways: tomas\n")
    ep03 = episodes / "ep03.txt"
    ep03.write_text(re.sub(r"^SCENE [a-z_]+", "SCENE nowhere", ep03.read_text(), count=1, flags=re.M))
    (episodes / "ep05.txt").write_text("Title: Odd\nFormat: poem\n\nRoses.\n")
    env = {**os.environ, "WEBTOON_DATA_DIR": str(layout.root), "DAGSTER_HOME": str(tmp_path / "dagster-cli")}

    done = subprocess.run([str(Path(sys.executable).parent / "webtoon"), "validate"], capture_output=True,
                          text=True, env=env, timeout=120)

    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr, done.stderr
    err = done.stderr
    for fragment in ("series.yaml", "models.panels.endpoint: 'fal-ai/no-such-model' has no entry in the price book",
                     "ep01.txt", "zed", "sideways", "ep03.txt", "nowhere", "ep05.txt", "format: expected 'panels' "
                     "or 'prose', got 'poem'"):
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    assert re.search(r"line \d+: ", err)  # problems name their line
    assert "in 4 file(s)" in err and "ep02.txt" not in err
    assert f"{SAMPLE}: 4 file(s) with problems: 4 episode(s), 11 panel(s) (ep02 11)" in done.stdout


def test_validate_a_broken_series_yaml_says_its_scripts_wait_for_it(layout, capsys):
    series_yaml = layout.series_dir(SAMPLE) / "series.yaml"
    replace(series_yaml, "planned_episodes: 10", "planned_episodes: ten")
    assert main(["validate"]) == 2
    out, err = capsys.readouterr()
    assert "series.yaml" in err and "planned_episodes" in err and "1 file(s)" in err
    assert "its episode scripts are checked against it, so once it loads" in out


def test_validate_a_bad_price_book_is_an_error_and_the_bible_is_still_checked(layout, capsys):
    layout.pricebook.write_text("entries: [\n")
    replace(layout.episodes_dir(SAMPLE) / "ep02.txt", "PANEL insert: juno", "PANEL insert: zed")
    assert main(["validate"]) == 2
    out, err = capsys.readouterr()
    assert str(layout.pricebook) in err and "ep02.txt" in err and "zed" in err and "2 file(s)" in err
    layout.pricebook.unlink()
    assert main(["validate"]) == 2
    assert "expected the price book here" in capsys.readouterr().err


def test_validate_unknown_series_and_odd_file_names(layout, capsys):
    assert main(["validate", "--series", "nope", "--series", "../etc"]) == 2
    err = capsys.readouterr().err
    assert "unknown series 'nope'" in err and "unknown series '../etc'" in err and "2 file(s)" in err
    (layout.episodes_dir(SAMPLE) / "Ep 4.txt").write_text("Title: x\n")
    assert main(["validate"]) == 0  # demo skips it too: a note, not a failure
    assert "Ep 4.txt is skipped" in capsys.readouterr().err


# -- quote --episode ------------------------------------------------------------------------------

def test_quote_fresh_sample_per_family(layout, capsys):
    before = snapshot(layout.root)
    plans = {e: quote_json(capsys, e) for e in ("ep01", "ep02", "ep03")}
    assert {e: p["total"]["usd"] for e, p in plans.items()} == {"ep01": "0.240", "ep02": "0.275", "ep03": "0.230"}
    ep01 = plans["ep01"]
    assert ep01["provider"] == "local" and ep01["complete"] and ep01["panels"] == 10
    assert [(f["family"], f["to_make"], f["made"], f["usd"]) for f in ep01["families"]] == [
        ("style_sheet", 1, 0, "0.005"), ("character_sheets", 2, 0, "0.010"), ("backgrounds", 2, 0, "0.010"),
        ("panels", 10, 0, "0.215")]
    assert ep01["total"] == {"to_make": 15, "made": 0, "usd": "0.240"}
    assert snapshot(layout.root) == before  # no ledger, no budgets database, no store: nothing written

    assert main(["quote", "--episode", "ep01", "--series", SAMPLE]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^panels\s+fal-ai/flux-2/flash/edit\s+10\s+0\s+\$0\.215$", out, re.M), out
    assert re.search(r"^total\s+15\s+0\s+\$0\.240$", out, re.M), out
    assert "provider local" in out and "list prices of the models it stands in for" in out


def make(instance, defs, episode: str, assets: tuple[str, ...]) -> dict:
    """Materialize some of the episode's assets; the storyboard step's metadata (its pre-flight quote)."""
    name = episode_partitions(SAMPLE).name
    if not instance.has_dynamic_partition(name, episode):
        instance.add_dynamic_partitions(name, [episode])
    result = defs.resolve_job_def(season_job_name(SAMPLE)).execute_in_process(
        instance=instance, partition_key=episode, asset_selection=[AssetKey([SAMPLE, a]) for a in assets])
    assert result.success
    return instance.get_latest_materialization_event(AssetKey([SAMPLE, "storyboard"])).asset_materialization.metadata


SHEETS = ("storyboard", "style_sheet", "character_sheets", "backgrounds")


def test_quote_equals_the_preflight_quote_and_counts_only_misses(layout, defs, instance, capsys):
    """Before an episode is made, its quote is what the storyboard step's pre-flight quote then
    finds; what is made is no longer counted (sheets are shared between episodes, panels are not);
    and a quote changes nothing on disk."""
    quoted = {}
    for episode in ("ep01", "ep02"):  # the sheets only: a few seconds, and enough to share
        quoted[episode] = quote_json(capsys, episode)
        meta = make(instance, defs, episode, SHEETS)
        # the step's pre-flight quote: `to_make_usd` (formerly `episode_quote_usd`, now the episode to date)
        preflight = meta["to_make_usd"] if "to_make_usd" in meta else meta["episode_quote_usd"]
        assert Decimal(str(preflight.value)) == Decimal(quoted[episode]["total"]["usd"])
        assert meta["to_make"].value == quoted[episode]["total"]["to_make"]
    assert quoted["ep01"]["total"]["usd"] == "0.240"
    assert quoted["ep02"]["total"]["usd"] == "0.255"  # the style sheet, mira, tomas and a plate came with ep01
    families = {f["family"]: (f["to_make"], f["made"]) for f in quoted["ep02"]["families"]}
    assert families == {"style_sheet": (0, 1), "character_sheets": (1, 2), "backgrounds": (1, 1), "panels": (11, 0)}

    capsys.readouterr()
    before = snapshot(layout.root)
    ep01 = quote_json(capsys, "ep01")
    assert [(f["family"], f["to_make"], f["made"]) for f in ep01["families"]] == [
        ("style_sheet", 0, 1), ("character_sheets", 0, 2), ("backgrounds", 0, 2), ("panels", 10, 0)]
    assert ep01["total"] == {"to_make": 10, "made": 5, "usd": "0.215"}  # only the panels are left to make
    assert quote_json(capsys, "ep03")["total"]["usd"] == "0.205"  # its sheets all came with ep01 and ep02
    assert snapshot(layout.root) == before  # no ledger row, no reservation, no store change


def test_quote_imports_no_dagster(layout):
    code = ("import sys; from webtoon_assets.cli import main; rc = main(['quote', '--episode', 'ep01', '--json']); "
            "assert 'dagster' not in sys.modules, 'dagster imported'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "WEBTOON_DATA_DIR": str(layout.root)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"]["usd"] == "0.240"


def test_quote_a_prose_episode(layout, capsys, monkeypatch):
    (layout.episodes_dir(SAMPLE) / "ep04.txt").write_text(PROSE)
    series = load_series(layout, SAMPLE)
    script = load_episode(layout, series, "ep04")

    # offline: the splitter's answer is known now, so are the panels; the text request is a miss
    offline = quote_json(capsys, "ep04")
    assert offline["complete"] and offline["panels"] > 0 and "offline splitter" in offline["panels_from"]
    text = offline["families"][0]
    assert (text["family"], text["endpoints"], text["to_make"], text["made"]) == (
        "storyboard", ["fal-ai/any-llm"], 1, 0)
    assert Decimal(text["usd"]) > 0
    assert [f["family"] for f in offline["families"]] == [
        "storyboard", "style_sheet", "character_sheets", "backgrounds", "panels"]

    # the answer in the store (as the storyboard step leaves it): the text request is made
    request = prose_request(series, script)
    ImageStore(layout.store).commit_text(request.key("local"), {"text": split_prose(script.text, request.context)})
    stored = quote_json(capsys, "ep04")
    assert stored["families"][0]["to_make"] == 0 and stored["families"][0]["made"] == 1
    assert stored["panels"] == offline["panels"] and "stored answer" in stored["panels_from"]
    assert Decimal(stored["total"]["usd"]) == Decimal(offline["total"]["usd"]) - Decimal(text["usd"])

    # on fal, before the storyboard is made: the panels are unknown; what can be quoted is, and it says so
    monkeypatch.setenv("WEBTOON_PROVIDER", "fal")
    monkeypatch.setenv("FAL_KEY", "test-not-a-key")  # never used: a quote sends nothing
    partial = quote_json(capsys, "ep04")
    assert partial["provider"] == "fal" and not partial["complete"] and partial["panels"] is None
    assert [(f["family"], f["to_make"]) for f in partial["families"]] == [("storyboard", 1), ("style_sheet", 1)]
    assert any("unknown until the storyboard is made" in n for n in partial["notes"])
    assert main(["quote", "--episode", "ep04"]) == 0
    out = capsys.readouterr().out
    assert "panels not known yet" in out and re.search(r"^total so far\s+2\s+0\s+\$", out, re.M), out

    # ... and with a storyboard.json made earlier, its panels are used, with a warning
    board = layout.output_dir(SAMPLE, "ep04") / "storyboard.json"
    board.parent.mkdir(parents=True)
    board.write_text(json.dumps({"series": SAMPLE, "episode": "ep04", "title": "x", "panels": []}))
    from_file = quote_json(capsys, "ep04")
    assert from_file["complete"] and from_file["panels"] == 0 and str(board) in from_file["panels_from"]
    assert any("may differ" in n for n in from_file["notes"])


def test_quote_user_mistakes_exit_2_with_a_message(layout, capsys, monkeypatch):
    assert main(["quote", "--episode", "ep99"]) == 2
    assert "unknown episode 'ep99'" in capsys.readouterr().err
    assert main(["quote", "--episode", "ep01", "--series", "nope"]) == 2
    assert "unknown series 'nope'" in capsys.readouterr().err
    monkeypatch.setenv("WEBTOON_PROVIDER", "fal")
    assert main(["quote", "--episode", "ep01"]) == 2
    assert "needs FAL_KEY" in capsys.readouterr().err
    monkeypatch.delenv("WEBTOON_PROVIDER")
    layout.pricebook.write_text("entries: [\n")
    assert main(["quote", "--episode", "ep01"]) == 2
    assert str(layout.pricebook) in capsys.readouterr().err
    (layout.series_root / "other").mkdir()
    (layout.series_root / "other" / "series.yaml").write_text("title: Other\n")
    assert main(["quote", "--episode", "ep01"]) == 2
    assert "name one with --series" in capsys.readouterr().err


def test_quote_one_request_still_works_and_the_modes_do_not_mix(layout, capsys):
    assert main(["quote", "fal-ai/flux-2/flash", "--request", '{"image_size": "square_hd"}']) == 0
    assert json.loads(capsys.readouterr().out)["usd"] == "0.005"
    assert main(["quote", "fal-ai/flux-2/flash", "--request", "{nope"]) == 2
    assert "expected JSON" in capsys.readouterr().err
    for argv in (["quote"], ["quote", "fal-ai/flux-2/flash"], ["quote", "--episode", "ep01", "fal-ai/flux-2/flash"],
                 ["quote", "--episode", "ep01", "--request", "{}"], ["quote", "fal-ai/flux-2/flash", "--json",
                                                                     "--request", "{}"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2, argv
        assert "usage:" in capsys.readouterr().err
