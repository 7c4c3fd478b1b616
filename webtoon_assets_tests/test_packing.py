"""Reference packing: a panel's references in fewer images, so fewer input megapixels are billed;
priced, quoted, made offline and on the fake fal, and re-priced on every model packed or not."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from PIL import Image

from webtoon_assets.cli import main
from webtoon_assets.compose.pack import SIDE, pack_references, plan_packs, planned
from webtoon_assets.definitions import build_definitions
from webtoon_assets.demo import run_season
from webtoon_assets.gateway import Reference
from webtoon_assets.gateway.store import ImageStore
from webtoon_assets.ledger import read_rows
from webtoon_assets.pricing import load_pricebook, quote
from webtoon_assets_tests.conftest import SAMPLE, cost_sql, fresh_data_root


def sheet(tmp_path: Path, name: str, size: tuple[int, int], colour: str) -> Reference:
    path = tmp_path / f"{name}.png"
    Image.new("RGB", size, colour).save(path)
    return Reference(role=name, path=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                     width=size[0], height=size[1])


@pytest.fixture
def refs(tmp_path):
    return [sheet(tmp_path, "character:mira", (1024, 768), "red"), sheet(tmp_path, "character:juno", (1024, 768), "blue"),
            sheet(tmp_path, "background:alley", (768, 1024), "green"), sheet(tmp_path, "style", (1024, 768), "gray")]


def test_lineup_packs_the_characters_and_the_setting_board_packs_all(refs, tmp_path):
    assert plan_packs(refs, "none") == refs
    lineup = pack_references(refs, "lineup", tmp_path / "packed")
    assert [r.role for r in lineup] == ["pack:characters(character:mira,character:juno)",
                                        "pack:setting(background:alley,style)"]
    board, = pack_references(refs, "board", tmp_path / "packed")
    for r in [*lineup, board]:
        with Image.open(r.path) as im:
            assert im.size == (r.width, r.height) and max(im.size) <= SIDE
    # two landscape sheets at their largest in 1024x1024: stacked, each 1024x768 -> 1024x1536 is too tall,
    # so they shrink to 682x512 side by side or stacked; either way within one fal megapixel
    assert lineup[0].width * lineup[0].height <= SIDE * SIDE
    # a group of one is sent as it is
    one = pack_references([refs[0], refs[2], refs[3]], "lineup", tmp_path / "packed")
    assert one[0] == refs[0] and one[1].role.startswith("pack:setting")


def test_a_pack_is_content_addressed_and_planned_without_writing(refs, tmp_path):
    a, = pack_references(refs, "board", tmp_path / "one")
    b, = pack_references(refs, "board", tmp_path / "two")
    assert a.sha256 == b.sha256 and Path(a.path).name == f"{a.sha256}.png" == Path(b.path).name
    # a quote: the members exist, so the pack's hash is known; nothing is written
    q, = planned(refs, "board")
    assert (q.sha256, q.width, q.height, q.path) == (a.sha256, a.width, a.height, "")
    assert not (tmp_path / "three").exists()
    # a member still to be made: the pack is planned by its size alone
    missing = [refs[0].model_copy(update={"sha256": "planned:x", "path": ""}), *refs[1:]]
    p, = planned(missing, "board")
    assert p.sha256.startswith("planned:") and (p.width, p.height) == (a.width, a.height)
    # a changed sheet is another pack
    other = sheet(tmp_path, "character:mira", (1024, 768), "yellow")
    c, = pack_references([other, *refs[1:]], "board", tmp_path / "one")
    assert c.sha256 != a.sha256


def test_packing_bills_fewer_input_megapixels(refs, tmp_path):
    book = load_pricebook()

    def usd(endpoint: str, references: list[Reference]) -> Decimal:
        return quote(endpoint, {"image_size": "portrait_4_3", "image_urls": [r.role for r in references],
                                "input_image_sizes": [{"width": r.width, "height": r.height} for r in references]},
                     book=book).usd
    lineup = pack_references(refs, "lineup", tmp_path / "p")
    board = pack_references(refs, "board", tmp_path / "p")
    assert usd("fal-ai/flux-2/flash/edit", refs) == Decimal("0.025")  # 1 MP out + 4 x 1 MP in
    assert usd("fal-ai/flux-2/flash/edit", lineup) == Decimal("0.015")
    assert usd("fal-ai/flux-2/flash/edit", board) == Decimal("0.010")


def packed_series(root: Path, packing: str) -> object:
    layout = fresh_data_root(root)
    path = layout.series_dir(SAMPLE) / "series.yaml"
    data = yaml.safe_load(path.read_text())
    data["models"]["panels"]["pack_references"] = packing
    path.write_text(yaml.safe_dump(data))
    return layout


def test_a_packed_season_offline_meets_the_studys_hope_every_input_counted(tmp_path):
    """The study hoped for $0.012 per panel on flash; with every character, background and style
    sent and counted, board packing makes it, amortised over the sample season."""
    layout = packed_series(tmp_path / "data", "board")
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as inst:
        run_season(inst, build_definitions(layout), layout, SAMPLE)
    rows = [r for r in read_rows(layout.ledger_dir) if r.asset == "panels" and r.status == "generated"]
    assert rows and all(len(r.inputs) == 1 and r.list_usd == Decimal("0.010") for r in rows)
    (panels, amortised), = cost_sql(layout, "SELECT sum(panels), sum(amortised_usd) FROM amortization")
    per_panel = amortised / panels
    assert per_panel <= Decimal("0.012"), per_panel
    # what-if: the same usage re-priced on every model, as made and packed
    (flash_packed,), = cost_sql(layout, "SELECT per_panel_usd FROM platform_whatif_packed "
                                        "WHERE model = 'FLUX.2 [flash]'")
    assert flash_packed <= Decimal("0.0125")
    # each pack is drawn once and kept by content: the files are exactly the packs the panels were sent
    store = ImageStore(layout.store)
    sent = {ref["sha256"] for r in rows for ref in store.get(r.request_key)["references"]}
    assert len(sent) >= 2 and {p.stem for p in (layout.store / "packed").glob("*.png")} == sent


def test_the_quote_prices_packs_before_the_sheets_exist(tmp_path, monkeypatch, capsys):
    layout = packed_series(tmp_path / "data", "lineup")
    monkeypatch.setenv("WEBTOON_DATA_DIR", str(layout.root))
    assert main(["quote", "--episode", "ep01", "--series", SAMPLE]) == 0
    out = capsys.readouterr().out
    # 10 panels, each 1 MP out + its characters' lineup (or one sheet; none in a panel without
    # characters) + the setting pack, at $0.005/MP: $0.145, against $0.215 unpacked
    panels_line = next(line for line in out.splitlines() if line.startswith("panels"))
    assert panels_line.split()[-3:] == ["10", "0", "$0.145"], out
    assert not (layout.store / "packed").exists()  # a quote writes nothing


def test_packed_references_on_the_fake_fal_are_sent_and_paid_once(tmp_path, fake_fal):
    layout = packed_series(tmp_path / "data", "board")
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as inst:
        run_season(inst, build_definitions(layout), layout, SAMPLE, ["ep01"])
    rows = [r for r in read_rows(layout.ledger_dir) if r.status == "generated"]
    panels = [r for r in rows if r.asset == "panels"]
    assert len(panels) == 10 and all(r.billed_usd == Decimal("0.010") for r in panels)
    counts = fake_fal.stats()["counts"]
    assert counts["paid"] == len(rows) == 15
    assert counts["image_urls_received"] == 10  # one board per panel


def test_the_trial_measures_cost_and_consistency_with_and_without_packing(tmp_path):
    from webtoon_assets.definitions import trial_job_name

    layout = packed_series(tmp_path / "data", "board")
    path = layout.series_dir(SAMPLE) / "series.yaml"
    data = yaml.safe_load(path.read_text())
    data["trial"] = {"candidates": ["fal-ai/flux-2/flash/edit"]}
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "dagster").mkdir()
    job = build_definitions(layout).resolve_job_def(trial_job_name(SAMPLE))
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as inst:
        assert job.execute_in_process(instance=inst, partition_key="fal-ai__flux-2__flash__edit").success
        assert build_definitions(layout).resolve_job_def("refresh_cost_tables").execute_in_process(instance=inst).success
    (none, lineup, board, packing, packed, plain), = cost_sql(
        layout, "SELECT cost_per_panel_usd, cost_per_panel_lineup_usd, cost_per_panel_board_usd, packing, "
                "consistency_packed, consistency FROM model_trials")
    assert none > lineup > board and board <= Decimal("0.0105") and packing == "board"
    assert 0 <= packed <= 100 and 0 <= plain <= 100
    rows = [r for r in read_rows(layout.ledger_dir) if r.status == "generated"]
    # the base, 5 variations with the base as sent, 5 with it packed into a board
    assert len(rows) == 11 and sum(":packed-v" in r.item for r in rows) == 5
    assert all(len(r.inputs) == 1 for r in rows if ":packed-v" in r.item)
