"""The sensor turns a new script into a partition and a run request; a broken one is reported."""

from __future__ import annotations

import shutil

from dagster import SensorResult, SkipReason, build_sensor_context

from webtoon_assets_tests.conftest import SAMPLE


def evaluate(defs, instance):
    sensor = defs.resolve_sensor_def(f"{SAMPLE}__new_episodes")
    return sensor, sensor(build_sensor_context(instance=instance, definitions=defs))


def apply(instance, result: SensorResult) -> None:
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))


def test_sensor_registers_new_episodes_and_requests_their_runs(defs, instance, layout):
    _, result = evaluate(defs, instance)
    assert isinstance(result, SensorResult)
    assert sorted(r.partition_key for r in result.run_requests) == ["ep01", "ep02", "ep03"]
    apply(instance, result)

    _, again = evaluate(defs, instance)
    assert isinstance(again, SkipReason)  # nothing new: nothing requested twice

    shutil.copy(layout.episodes_dir(SAMPLE) / "ep03.txt", layout.episodes_dir(SAMPLE) / "ep04.txt")
    _, result = evaluate(defs, instance)
    assert [r.partition_key for r in result.run_requests] == ["ep04"]
    assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [["ep04"]]
    apply(instance, result)
    assert "ep04" in instance.get_dynamic_partitions(f"{SAMPLE}__episodes")


def test_sensor_skips_a_broken_script_and_says_why(defs, instance, layout):
    _, result = evaluate(defs, instance)
    apply(instance, result)
    (layout.episodes_dir(SAMPLE) / "ep05.txt").write_text("Title: Broken\n\nSCENE nowhere:\nPANEL wide:\nx\n")
    _, result = evaluate(defs, instance)
    assert isinstance(result, SkipReason)
    assert "ep05.txt" in result.skip_message and "unknown location 'nowhere'" in result.skip_message
    assert "ep05" not in instance.get_dynamic_partitions(f"{SAMPLE}__episodes")


BROKEN = "Title: Broken\n\nSCENE nowhere:\nPANEL wide: bob\nx\nPANEL pov: carl\nPANEL wide: dave\nPANEL wide: erin\n"


def test_a_rejected_script_is_named_on_the_tick_even_beside_valid_ones(defs, instance, layout):
    """A tick cannot carry runs and a skip reason at once: the runs go ahead, and the rejected file
    with its first errors is in the tick's cursor (shown in the tick history) and its log."""
    _, result = evaluate(defs, instance)
    apply(instance, result)
    episodes = layout.episodes_dir(SAMPLE)
    shutil.copy(episodes / "ep03.txt", episodes / "ep04.txt")
    (episodes / "ep05.txt").write_text(BROKEN)
    _, tick = evaluate(defs, instance)
    assert isinstance(tick, SensorResult) and tick.skip_reason is None
    assert [r.partition_key for r in tick.run_requests] == ["ep04"]
    assert [list(r.partition_keys) for r in tick.dynamic_partitions_requests] == [["ep04"]]
    assert tick.cursor.startswith("not registered: ep05.txt rejected, 5 problem(s): ")
    assert "unknown location 'nowhere'" in tick.cursor and "(+2 more in the tick's log)" in tick.cursor
    apply(instance, tick)

    # the next tick has nothing valid to run: it skips, naming the file and its first errors
    _, result = evaluate(defs, instance)
    assert isinstance(result, SkipReason)
    assert result.skip_message.startswith("no new valid scripts: ep05.txt rejected, 5 problem(s): ")
    assert "unknown location 'nowhere'" in result.skip_message and "ep05" not in instance.get_dynamic_partitions(
        f"{SAMPLE}__episodes")

    # fixed: registered and run, and the cursor says nothing is rejected any more
    shutil.copy(episodes / "ep03.txt", episodes / "ep05.txt")
    sensor = defs.resolve_sensor_def(f"{SAMPLE}__new_episodes")
    fixed = sensor(build_sensor_context(instance=instance, definitions=defs, cursor=tick.cursor))
    assert [r.partition_key for r in fixed.run_requests] == ["ep05"] and fixed.cursor == "no rejected scripts"
