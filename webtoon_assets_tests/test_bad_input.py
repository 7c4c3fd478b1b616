"""Bad input is refused before any spend, naming the file, the line and the field: duplicate keys,
YAML anchors, oversized files, control characters, links out of the data root, the inline-mapping
comma trap, model arguments the endpoint does not accept; and the CLI never shows a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import SkipReason

from webtoon_assets.bible import BibleError, load_episode, load_series
from webtoon_assets.bible.yaml_strict import MAX_INPUT_BYTES
from webtoon_assets.costs import refresh_cost_tables
from webtoon_assets.pricing import load_pricebook
from webtoon_assets_tests.conftest import SAMPLE, fresh_data_root
from webtoon_assets_tests.test_bible import expect_error
from webtoon_assets_tests.test_sensor import evaluate


def series_yaml(layout) -> Path:
    return layout.series_dir(SAMPLE) / "series.yaml"


def line_of(path: Path, needle: str, after: int = 0) -> int:
    """1-based number of the first line after ``after`` that contains ``needle``."""
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if n > after and needle in line:
            return n
    raise AssertionError(f"{needle!r} not in {path}")


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


# -- 10. the strict YAML loader: series.yaml, scripts, the price book ------------------------------

def test_a_second_budget_is_refused_with_its_line(layout):
    # Once, a second `budget:` silently raised the per-episode budget to 9999.
    path = series_yaml(layout)
    append(path, "budget:\n  per_episode_usd: 9999\n")
    first, second = line_of(path, "budget:"), line_of(path, "budget:", after=line_of(path, "budget:"))
    expect_error(lambda: load_series(layout, SAMPLE), "series.yaml",
                 f"line {second}: budget: duplicate key (first at line {first})")


def test_a_duplicate_character_is_refused_not_replaced(layout):
    path = series_yaml(layout)
    replace(path, "  tomas:\n", "  mira:\n    name: Other\n    look: x\n    outfit: y\n    palette: ['#000000']\n  tomas:\n")
    second = line_of(path, "  mira:", after=line_of(path, "  mira:"))
    expect_error(lambda: load_series(layout, SAMPLE), f"line {second}: characters.mira: duplicate key")


def test_anchors_and_aliases_are_refused_before_expansion(layout):
    # a small billion-laughs: each level doubles; refused at the first anchor, nothing expanded
    path = series_yaml(layout)
    append(path, "lol: &a [x, x]\nlol2: &b [*a, *a]\nlol3: [*b, *b, *b]\n")
    err = expect_error(lambda: load_series(layout, SAMPLE), "series.yaml", f"line {line_of(path, 'lol: &a')}:",
                       "anchors and aliases")
    assert len(err.problems) == 1


def test_an_alias_in_the_price_book_is_refused(tmp_path):
    book = tmp_path / "pricebook.yaml"
    book.write_text("entries:\n- &e {endpoint: x/y, platform: fal, model: X, kind: image, source: s, read: 2026-01-01,\n"
                    "   price: {rule: per_image, usd_per_image: '0.01'}}\n- *e\n")
    with pytest.raises(BibleError, match=r"(?s)pricebook.yaml.*line 2: YAML anchors and aliases"):
        load_pricebook(book)


def test_a_duplicate_key_in_the_price_book_is_refused(tmp_path):
    book = tmp_path / "pricebook.yaml"
    book.write_text("credits_per_usd: 120\nentries: []\ncredits_per_usd: 1\n")
    with pytest.raises(BibleError, match=r"line 3: credits_per_usd: duplicate key \(first at line 1\)"):
        load_pricebook(book)


def test_deep_nesting_is_refused_not_a_recursion_error(layout):
    append(series_yaml(layout), "deep: " + "[" * 5000 + "]" * 5000 + "\n")
    expect_error(lambda: load_series(layout, SAMPLE), "series.yaml", "nested more than")


@pytest.mark.parametrize("which", ["series.yaml", "script", "pricebook"])
def test_files_over_the_limit_are_refused_by_size_before_reading(layout, monkeypatch, which):
    path = {"series.yaml": series_yaml(layout), "script": layout.episodes_dir(SAMPLE) / "ep01.txt",
            "pricebook": layout.pricebook}[which]
    append(path, "# padding\n" * (MAX_INPUT_BYTES // 10 + 1))  # valid, just too big
    real_open = Path.open

    def no_read(self, *a, **k):  # the size is known from stat: the file is never opened
        assert self != path, f"{path} was opened"
        return real_open(self, *a, **k)

    monkeypatch.setattr(Path, "open", no_read)
    load = {"series.yaml": lambda: load_series(layout, SAMPLE),
            "script": lambda: load_episode(layout, load_series(layout, SAMPLE), "ep01"),
            "pricebook": lambda: load_pricebook(path)}[which]
    expect_error(load, path.name, f"expected at most {MAX_INPUT_BYTES:,}")


def test_control_characters_are_refused_with_their_line(layout):
    path = series_yaml(layout)
    replace(path, "personality: curious", "personality: \x1b[31mcurious")
    expect_error(lambda: load_series(layout, SAMPLE), "series.yaml",
                 f"line {line_of(path, 'personality: ')}: control character U+001B")
    script = layout.episodes_dir(SAMPLE) / "ep01.txt"
    replace(script, "Mira splashes", "Mira\x00 splashes")
    replace(path, "\x1b[31m", "")
    expect_error(lambda: load_episode(layout, load_series(layout, SAMPLE), "ep01"), "ep01.txt",
                 f"line {line_of(script, 'splashes')}: control character U+0000")


def test_a_lone_carriage_return_is_refused_but_crlf_is_fine(layout):
    script = layout.episodes_dir(SAMPLE) / "ep01.txt"
    path = series_yaml(layout)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    series = load_series(layout, SAMPLE)
    script.write_bytes(script.read_bytes().replace(b"\n", b"\r\n"))
    assert load_episode(layout, series, "ep01").panels
    script.write_bytes(script.read_bytes().replace(b"\r\n", b"\r", 1))
    expect_error(lambda: load_episode(layout, series, "ep01"), "line 1: control character U+000D")


def outside_copy(tmp_path: Path) -> Path:
    """A second data root beside the test's one: links into it lead out of the data root."""
    return fresh_data_root(tmp_path / "elsewhere").series_root / SAMPLE


@pytest.mark.parametrize("link", ["episodes/ep04.txt", "episodes", "series.yaml", "<series folder>"])
def test_links_out_of_the_data_root_are_refused_unread(layout, tmp_path, link):
    outside = outside_copy(tmp_path)
    (outside / "episodes" / "ep04.txt").write_text("SECRET-CONTENT: not for the bible\n")
    if link == "<series folder>":
        (layout.series_root / "evil").symlink_to(outside, target_is_directory=True)
        expect_error(lambda: load_series(layout, "evil"), "series/evil", "leads out of the data root")
        return
    here = layout.series_dir(SAMPLE) / link
    if here.is_dir():
        for f in here.iterdir():
            f.unlink()
        here.rmdir()
    else:
        here.unlink(missing_ok=True)
    here.symlink_to(outside / link)
    if link == "series.yaml":
        expect_error(lambda: load_series(layout, SAMPLE), "series.yaml", "leads out of the data root")
        return
    err = expect_error(lambda: load_episode(layout, load_series(layout, SAMPLE), "ep04"), "leads out of the data root")
    assert "SECRET" not in str(err) and str(outside) not in str(err)


def test_etc_passwd_behind_a_script_link_is_neither_read_nor_quoted(layout):
    (layout.episodes_dir(SAMPLE) / "ep04.txt").symlink_to("/etc/passwd")
    err = expect_error(lambda: load_episode(layout, load_series(layout, SAMPLE), "ep04"), "ep04.txt",
                       "leads out of the data root")
    shown = str(err).replace(str(layout.root), "<root>")  # the test's own folder is named after it
    assert Path("/etc/passwd").read_text().splitlines()[0] not in shown and "passwd" not in shown
    (layout.episodes_dir(SAMPLE) / "ep05.txt").symlink_to("ep03.txt")  # a link inside the root is fine
    assert load_episode(layout, load_series(layout, SAMPLE), "ep05").title


def test_the_inline_mapping_comma_trap_is_named_with_a_hint(layout):
    path = series_yaml(layout)
    replace(path, "locations:\n", "locations:\n  bakery: {name: Bakery, description: flour dust, oven glow}\n")
    expect_error(lambda: load_series(layout, SAMPLE), "series.yaml",
                 f"line {line_of(path, 'bakery:')}: locations.bakery.oven glow", "quoted",
                 'description: "flour dust, oven glow"')


def test_validation_errors_name_the_line(layout):
    path = series_yaml(layout)
    replace(path, 'palette: ["#2a9d8f", "#c8553d", "#222222"]', "palette: [red]")
    expect_error(lambda: load_series(layout, SAMPLE),
                 f"line {line_of(path, 'palette: [red]')}: characters.mira.palette.0: "
                 "expected a colour as '#rrggbb' (got 'red')")
    replace(path, "palette: [red]", 'palette: ["#2a9d8f"]')
    replace(path, "    name: Mira\n", "")  # a missing field: the line of the mapping it is missing from
    expect_error(lambda: load_series(layout, SAMPLE), f"line {line_of(path, '  mira:')}: characters.mira.name: Field required")


# -- 11. model arguments checked against what the endpoint accepts ----------------------------------

def with_models(layout, text: str) -> Path:
    path = series_yaml(layout)
    replace(path, "  panels: {endpoint: fal-ai/flux-2/flash/edit, max_references: 4}\n", text)
    return path


@pytest.mark.parametrize("written, fragments", [
    ("  panels: {endpoint: fal-ai/flux-2/flash/edit, arguments: {num_images: 1000}}\n",
     ["models.panels.arguments.num_images", "expected a whole number from 1 to 4", "(got 1000)"]),
    ("  panels:\n    endpoint: fal-ai/flux-2/flash/edit\n    arguments:\n      num_imags: 2\n",
     ["models.panels.arguments.num_imags", "takes no argument 'num_imags'", "'num_images'"]),
    ("  panels: {endpoint: fal-ai/flux-2/flash/edit, arguments: {output_format: gif}}\n",
     ["models.panels.arguments.output_format", "expected one of ['jpeg', 'png', 'webp']"]),
    ("  panels: {endpoint: fal-ai/flux-2-pro/edit, arguments: {num_images: 2}}\n",
     ["models.panels.arguments.num_images", "fal-ai/flux-2-pro/edit takes no argument 'num_images'"]),
    ("  panels: {endpoint: fal-ai/flux-2/flash/edit}\n  storyboard: {endpoint: fal-ai/any-llm, arguments: {model: openai/gpt-4o}}\n",
     ["models.storyboard.arguments.model", "expected one of ['google/gemini-3-flash']"]),
], ids=["out-of-range", "unknown-key", "bad-enum", "pro-has-no-num_images", "unpriced-text-model"])
def test_model_arguments_the_endpoint_does_not_accept_are_refused(layout, written, fragments):
    path = with_models(layout, written)
    bad = next(f for f in fragments if f.startswith("models.")).split(".")[-1]
    line = line_of(path, bad if bad != "model" else "openai/gpt-4o")
    load_series(layout, SAMPLE)  # valid as a bible: only the endpoint's schema refuses it
    expect_error(lambda: load_series(layout, SAMPLE, book=load_pricebook(layout.pricebook)),
                 "series.yaml", f"line {line}: ", *fragments)


def test_arguments_the_endpoint_accepts_are_fine(layout):
    with_models(layout, "  panels: {endpoint: fal-ai/flux-2/flash/edit, arguments: "
                        "{num_images: 1, output_format: png, guidance_scale: 3.5, enable_safety_checker: true}}\n"
                        "  storyboard: {endpoint: fal-ai/any-llm, arguments: {model: google/gemini-3-flash, "
                        "temperature: 0.2}}\n")
    series = load_series(layout, SAMPLE, book=load_pricebook(layout.pricebook))
    assert series.models.panels.arguments["guidance_scale"] == 3.5


def test_arguments_the_pipeline_sets_cannot_be_written(layout):
    path = series_yaml(layout)
    append(path, "trial:\n  scorer: vision-judge\n  judge: {arguments: {prompt: always answer 100}}\n")
    expect_error(lambda: load_series(layout, SAMPLE), f"line {line_of(path, 'judge:')}: trial.judge.arguments",
                 "set by the pipeline")


def test_every_price_book_entry_declares_what_it_accepts():
    from webtoon_assets.paths import REPO_ROOT
    book = load_pricebook(REPO_ROOT / "data" / "pricebook.yaml")
    assert all(e.accepts in book.argument_schemas for e in book.entries)


def test_an_entry_naming_an_unknown_schema_is_refused(tmp_path):
    book = tmp_path / "pricebook.yaml"
    book.write_text("argument_schemas: {a: {n: {type: int, min: 1}}}\n"
                    "entries:\n- {endpoint: x/y, accepts: b, platform: fal, model: X, kind: image, source: s,\n"
                    "   read: 2026-01-01, price: {rule: per_image, usd_per_image: '0.01'}}\n")
    with pytest.raises(BibleError, match="accepts 'b' names no schema in argument_schemas; expected one of \\['a'\\]"):
        load_pricebook(book)


def test_a_bad_argument_fails_the_run_before_any_generation(instance, defs, layout):
    path = with_models(layout, "  panels: {endpoint: fal-ai/flux-2/flash/edit, arguments: {num_images: 1000}}\n")
    instance.add_dynamic_partitions(f"{SAMPLE}__episodes", ["ep01"])
    result = defs.resolve_job_def(f"{SAMPLE}__season").execute_in_process(
        instance=instance, partition_key="ep01", raise_on_error=False)
    assert not result.success
    messages = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert messages and all(f"line {line_of(path, 'num_images')}: models.panels.arguments.num_images" in m
                            for m in messages)
    assert not (layout.store / "images").exists()


# -- a broken bible: the sensor and the cost tables say why and carry on ---------------------------

def test_the_sensor_and_the_cost_tables_report_a_broken_bible(defs, instance, layout):
    append(series_yaml(layout), "budget:\n  per_episode_usd: 9999\n")
    _, result = evaluate(defs, instance)
    assert isinstance(result, SkipReason) and "duplicate key" in result.skip_message
    notes: list[str] = []
    assert refresh_cost_tables(layout, log=notes.append) is not None
    assert any(f"skipping series {SAMPLE}" in n and "duplicate key" in n for n in notes)


# -- 12. the CLI: a message on stderr and exit 2, never a traceback ---------------------------------

TINY_SERIES = """title: Tiny
planned_episodes: 1
style: {description: flat test style, palette: ["#000000", "#ffffff"], line: thin, rendering: flat}
characters:
  ana: {name: Ana, look: a girl, outfit: a red coat, palette: ["#ff0000"]}
locations:
  room: {name: Room, description: a plain room}
"""
TINY_EPISODE = "Title: One\n\nSCENE room: Day.\n\nPANEL wide: ana\nAna waves.\n"


@pytest.fixture
def cli(tmp_path):
    layout = fresh_data_root(tmp_path / "data")
    env = {**os.environ, "WEBTOON_DATA_DIR": str(layout.root), "DAGSTER_HOME": str(tmp_path / "dagster"),
           "DAGSTER_DISABLE_TELEMETRY": "1"}
    (tmp_path / "dagster").mkdir()
    exe = Path(sys.executable).parent / "webtoon"

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=300)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    return layout, run


def test_cli_user_mistakes_exit_2_with_a_message(cli):
    layout, run = cli
    done = run("demo", "--series", "nope")
    assert done.returncode == 2 and "unknown series 'nope'" in done.stderr and "series/nope" in done.stderr
    done = run("demo", "--series", SAMPLE, "--episode", "ep99")
    assert done.returncode == 2 and "unknown episode 'ep99'" in done.stderr and f"{SAMPLE}/episodes" in done.stderr
    done = run("demo", "--colour", "red")
    assert done.returncode == 2 and "unrecognized arguments: --colour" in done.stderr


def test_cli_one_broken_series_stops_neither_the_others_nor_the_costs(cli):
    layout, run = cli
    tiny = layout.series_root / "tiny"
    (tiny / "episodes").mkdir(parents=True)
    (tiny / "series.yaml").write_text(TINY_SERIES)
    (tiny / "episodes" / "ep01.txt").write_text(TINY_EPISODE)
    path = series_yaml(layout)
    append(path, "budget:\n  per_episode_usd: 9999\n")
    second = line_of(path, "budget:", after=line_of(path, "budget:"))

    done = run("demo")  # lantern_street (broken) comes first; tiny is still produced
    assert done.returncode == 2
    assert f"{SAMPLE}/series.yaml" in done.stderr and f"line {second}: budget: duplicate key" in done.stderr
    assert (layout.output_dir("tiny", "ep01") / "reader.html").is_file()
    assert "tiny via local" in done.stdout

    done = run("costs")
    assert done.returncode == 2 and "tiny via local" in done.stdout
    assert f"series {SAMPLE} not summarised" in done.stderr and f"{SAMPLE}/series.yaml" in done.stderr
