"""End to end in a real browser: `dagster dev` (the project's workspace.yaml, as `make ui`) on a free
loopback port with a private instance and data root; episode ep01 materialized from the UI like a
user would; its cost and its checks read from the asset pages; its reader opened and its slices seen.

    Jobs > lantern_street__season > Materialize all… > Partition selection: ep01 > Launch 1 run
    Catalog > lantern_street / panels > Partitions > ep01            (cost metadata)
    Catalog > lantern_street / panels > Checks > <check> > Partitions > ep01   (check result)
    Catalog > lantern_street / episode_strip > Partitions > ep01 > reader      (the reader page)

Runs offline (the local provider: no key reaches the server). Skipped where Playwright or Chromium is
missing (.ci/run installs Debian's chromium; Playwright's own browser download is not used). On
failure, a screenshot, the page's text and the server's log are left in the test's tmp dir.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from webtoon_assets.demo import register_episodes
from webtoon_assets.instance import PROJECT_CONFIG, open_instance, render_config
from webtoon_assets.paths import REPO_ROOT
from webtoon_assets_tests.conftest import SAMPLE, fresh_data_root

# -- what the test reads (names as the UI shows them) ----------------------------------------------
SERIES = SAMPLE  # lantern_street
EPISODE = "ep01"
SEASON_JOB = f"{SERIES}__season"
# The cost metadata of a generating asset's materialization (here the panels'; README, "What the
# cost numbers mean"). Each is a tuple of the names accepted.
SPENT_KEYS = ("spent_usd",)  # billed: 0 offline
QUOTE_KEYS = ("quote_usd",)  # the list price of what was made: > 0 offline
SAVED_KEYS = ("saved_usd",)  # cache hits at list price
EPISODE_SPENT_KEYS = ("episode_spent_usd",)  # the episode to date, billed: 0 offline
EPISODE_QUOTE_KEYS = ("episode_quote_usd",)  # the episode to date at list price: all of ep01
EPISODE_LIST_USD = 0.240  # ep01 at list price: storyboard, style, characters, backgrounds and panels
READER_KEY = "reader"  # on episode_strip: a path, or a file:// link
SLICES_KEY = "slices"
CHECKS = ("cost_per_panel_target", "character_consistency")
CHECK_STATUS = "Passed"  # both pass offline: the cost is within the target; stand-ins are not measured

# -- time limits (seconds) -------------------------------------------------------------------------
OVERALL = 840  # the whole test, hard: the server's processes are killed then, whatever they are doing
SERVER_START = 180  # `dagster dev` answering (35-40 s on a quiet 2-core machine, 60-100 s on a busy one)
RUN = 540  # the ep01 run, from its page to its end: its steps run in the run's process (in_process
#            executor), about a minute here; a bound for a busy machine, not a timing
UI_STEP_MS = 45_000  # any single click or wait in the browser
STOP = 30  # graceful stop of `dagster dev` before the process group is killed

OFFLINE_UNSET = ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "WEBTOON_PROVIDER", "WEBTOON_MAX_RUN_USD",
                 "WEBTOON_CREDITS_PER_USD", "WEBTOON_PRICEBOOK")


def chromium_path() -> str | None:
    for candidate in (shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def private_instance(base: Path, layout) -> Path:
    """DAGSTER_HOME under ``base``, written from the project's dagster.yaml as `make init` does (its
    relative paths made absolute against ``base``, not the repository), with the sample's episodes
    registered as partitions. Registering them first means the episode sensor (on by default) finds
    nothing new and launches nothing: the only run is the one launched from the UI."""
    home = base / "data" / "dagster"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(render_config(PROJECT_CONFIG, base))
    (home / ".nux").mkdir()  # Dagster's "Join the community" pop-up, marked as seen
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    with open_instance(home) as instance:
        assert EPISODE in register_episodes(instance, layout, SERIES)
    return home


@contextmanager
def dagster_dev(home: Path, data_root: Path, log: Path, deadline: float) -> Iterator[str]:
    """`dagster dev` on a free loopback port, in its own process group; yields its URL once it
    answers. Always stopped: SIGTERM (Dagster's Ctrl-C), then the whole group is killed."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_UNSET}
    env.update(DAGSTER_HOME=str(home), WEBTOON_DATA_DIR=str(data_root), DAGSTER_DISABLE_TELEMETRY="1",
               PYTHONUNBUFFERED="1")
    dagster = Path(sys.executable).with_name("dagster")
    # `dagster dev` stops cleanly on SIGTERM only if SIGINT is not ignored (as it is under `make test &`)
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                                    cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the hard limit: whatever hangs, the server's processes do not outlive it
    watchdog = threading.Timer(max(1.0, deadline - time.monotonic()), _kill_group, (proc,))
    watchdog.daemon = True
    watchdog.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until = min(deadline, time.monotonic() + SERVER_START)
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dagster dev exited ({proc.returncode}) before answering:\n{tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > wait_until:
                pytest.fail(f"dagster dev did not answer on {url} within {SERVER_START}s:\n{tail(log)}")
            time.sleep(0.5)
        yield url
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=STOP)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        _kill_group(proc)  # what is left of the group: code servers, run workers
        proc.wait(timeout=10)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# -- the steps, in the browser ---------------------------------------------------------------------

def named(text: str) -> re.Pattern:
    """An accessible name holding ``text`` as whole words (Dagster prefixes names with icon names:
    the "Jobs" link is "column_lineage Jobs")."""
    escaped = re.escape(text).replace("\\ ", " ").replace("/", "\\/")  # as Playwright's selectors parse it
    return re.compile(rf"(^|\s){escaped}(\s|$)")


def nav(page, label: str):
    return page.get_by_role("navigation").get_by_role("link", name=named(label))


def launch_episode(page, expect, url: str, episode: str = EPISODE) -> str:
    """Jobs > lantern_street__season > Materialize all… > Partition selection: the episode >
    Launch 1 run; follows the toast's View link to the run's page and returns its URL."""
    page.goto(url)
    nav(page, "Jobs").click()
    page.get_by_role("link", name=named(SEASON_JOB)).click()
    page.get_by_role("button", name=named("Materialize all…")).click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    # straight to the launch dialog: no "Are you sure? ... upstream assets ... not materialized" first
    # (every upstream of the season job's assets is in the job)
    expect(dialog.get_by_text("Partition selection")).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem", name=named(episode)).click()
    expect(page.get_by_role("checkbox", name=named(episode))).to_be_checked()
    page.keyboard.press("Escape")  # closes the partition list, not the dialog
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    dialog.get_by_role("button", name="Launch 1 run", exact=True).click()
    expect(page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}$"))).to_be_visible()  # the toast
    page.get_by_role("link", name="View", exact=True).click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    expect(page.get_by_text(f"partition: {episode}", exact=True)).to_be_visible()
    return page.url


def wait_for_run(page, run_url: str, until: float) -> str:
    """Waits on the run's page (it follows the run live) for its end; returns the status shown."""
    from playwright.sync_api import Error as PlaywrightError

    ended = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).filter(visible=True).first
    while True:
        try:
            ended.wait_for(timeout=15_000)
            return ended.inner_text().strip()
        except PlaywrightError:
            if time.monotonic() > until:
                raise AssertionError(f"the run did not end in time: {run_url}") from None
            page.reload()  # a safety net should the live updates stall


def open_partition(page, expect, asset: str, episode: str = EPISODE) -> None:
    """Catalog > <series> / <asset> > Partitions > the episode, waiting for its materialization."""
    nav(page, "Catalog").click()
    page.get_by_role("link", name=named(f"{SERIES} / {asset}")).first.click()
    page.get_by_role("tab", name="Partitions", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/assets/{SERIES}/{asset}\?.*view=partitions"))
    expect(page.get_by_placeholder("Filter by name")).to_be_visible()  # the list of partitions
    page.get_by_text(episode, exact=True).filter(visible=True).first.click()
    expect(page).to_have_url(re.compile(rf"/assets/{SERIES}/{asset}\?.*partition={episode}"))
    expect(page.get_by_text("Materialized", exact=True)).to_be_visible()


def metadata_table(page, wait_for: tuple[str, ...]) -> dict[str, dict]:
    """The metadata table on the page, once one of ``wait_for`` shows in it: key -> {"text": the
    value as shown, "href": its link, if any}."""
    key = page.locator("tr td:first-child").filter(has_text=re.compile(rf"^({'|'.join(map(re.escape, wait_for))})$"))
    key.first.wait_for()
    rows = page.evaluate("""() => Array.from(document.querySelectorAll('tr')).map(tr => {
        const cells = Array.from(tr.querySelectorAll('td'));
        if (cells.length < 2) return null;
        const a = cells[1].querySelector('a[href]');
        return [cells[0].innerText.trim(), cells[1].innerText.trim(), a ? a.href : null];
    }).filter(r => r !== null)""")
    return {k: {"text": text, "href": href} for k, text, href in rows}


def pick(table: dict[str, dict], names: tuple[str, ...], required: bool = True) -> tuple[str, str] | None:
    """(name, value shown) for the first of ``names`` in the table."""
    for name in names:
        if name in table:
            return name, table[name]["text"]
    if required:
        raise AssertionError(f"none of {names} in the metadata shown: {sorted(table)}")
    return None


def as_usd(text: str) -> float:
    return float(text.replace("$", "").replace(",", "").strip())


def check_result(page, expect, check: str, episode: str = EPISODE) -> tuple[str, str]:
    """On an asset's page: Checks > <check> > Partitions > the episode; returns (status, description)."""
    page.get_by_role("tab", name="Checks", exact=True).click()
    page.get_by_text(check, exact=True).filter(visible=True).first.click()
    expect(page).to_have_url(re.compile(rf"[?&]checkDetail={check}(&|$)"))
    # the check's own page opens on its Overview ("About"); then its Partitions tab, none selected yet
    expect(page.get_by_text("About", exact=True)).to_be_visible()
    partitions = page.get_by_role("tab", name="Partitions", exact=True)
    expect(partitions).to_have_count(2)  # the asset's tab, then the check's
    partitions.last.click()
    expect(page.get_by_text("Select a partition to view details")).to_be_visible()
    page.get_by_text(episode, exact=True).filter(visible=True).last.click()
    description = page.get_by_text(re.compile(rf"^{episode}: ")).filter(visible=True)
    expect(description).to_have_count(1)
    status = page.get_by_text(re.compile(r"^(Passed|Failed|Warning|Execution failed|Skipped)$")).filter(visible=True)
    expect(status).to_have_count(1)
    return status.inner_text().strip(), description.inner_text().strip()


def reader_images(page, expect, reader_url: str, episode: str = EPISODE) -> list[int]:
    """Opens the reader; returns each slice's natural width once every one is loaded."""
    page.goto(reader_url)
    expect(page.get_by_text(re.compile(rf"^{episode}\b")).first).to_be_visible()
    images = page.locator("main img")
    expect(images.first).to_be_attached()
    for i in range(images.count()):  # each slice in view (so it loads even if lazy), then decoded
        images.nth(i).scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=images.nth(i).element_handle())
    return page.evaluate("() => Array.from(document.querySelectorAll('main img')).map(i => i.naturalWidth)")


# -- the test --------------------------------------------------------------------------------------

def test_materialize_read_and_open_reader_in_the_browser(tmp_path: Path):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("playwright is not importable (uv sync installs it with the dev group)")
    chromium = chromium_path()
    if chromium is None:
        pytest.skip("no Chromium installed (apt-get install -y chromium; .ci/run does)")

    started = time.monotonic()
    deadline = started + OVERALL
    layout = fresh_data_root(tmp_path / "data")
    home = private_instance(tmp_path / "instance", layout)
    log = tmp_path / "dagster-dev.log"
    timings: dict[str, float] = {}

    with dagster_dev(home, layout.root, log, deadline) as url, sync_playwright() as pw:
        timings["server up"] = time.monotonic() - started
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(UI_STEP_MS)
        expect.set_options(timeout=UI_STEP_MS)
        try:
            # 1. launch ep01 from the UI; the daemon dequeues the run and the run launcher starts it
            run_url = launch_episode(page, expect, url)
            timings["launched"] = time.monotonic() - started
            status = wait_for_run(page, run_url, until=min(deadline - 60, time.monotonic() + RUN))
            assert status == "Success", f"the {EPISODE} run ended {status}: {run_url}"
            timings["run succeeded"] = time.monotonic() - started

            # 2. the episode's cost: the panels' ep01 materialization
            open_partition(page, expect, "panels")
            table = metadata_table(page, QUOTE_KEYS)
            (quote_key, quote), (spent_key, spent), (saved_key, saved) = (
                pick(table, QUOTE_KEYS), pick(table, SPENT_KEYS), pick(table, SAVED_KEYS))
            episode_quote, episode_spent = pick(table, EPISODE_QUOTE_KEYS), pick(table, EPISODE_SPENT_KEYS)
            shown = [(quote_key, quote), (spent_key, spent), (saved_key, saved), episode_spent, episode_quote]
            print(f"panels {EPISODE}: " + " ".join(f"{k}={v}" for k, v in filter(None, shown)))
            assert 0 < as_usd(quote) <= EPISODE_LIST_USD, f"{quote_key} {quote}"
            assert as_usd(spent) == 0, f"{spent_key} {spent}: nothing is billed offline"
            assert as_usd(saved) >= 0, f"{saved_key} {saved}"
            # the episode to date: the whole of ep01 at list price, nothing billed
            assert as_usd(episode_quote[1]) == EPISODE_LIST_USD, episode_quote
            assert as_usd(episode_spent[1]) == 0, episode_spent

            # 3. its checks, each for ep01
            for check in CHECKS:
                status, description = check_result(page, expect, check)
                print(f"{check} {EPISODE}: {status}: {description}")
                assert description.startswith(f"{EPISODE}: "), description
                assert status == CHECK_STATUS, f"{check}: {status}: {description}"

            # 4. the reader, linked from the episode_strip's ep01 materialization
            open_partition(page, expect, "episode_strip")
            table = metadata_table(page, (READER_KEY,))
            reader = table[READER_KEY]
            link = reader["href"] if (reader["href"] or "").startswith("file:") else reader["text"]
            reader_url = link if link.startswith("file:") else Path(link).as_uri()
            slices = int(table[SLICES_KEY]["text"]) if SLICES_KEY in table else None
            print(f"episode_strip {EPISODE}: {READER_KEY}={reader['text']} -> {reader_url}; {SLICES_KEY}={slices}")
            assert reader_url.startswith(layout.root.as_uri() + "/"), f"the reader is not in the data root: {reader_url}"
            widths = reader_images(page, expect, reader_url)
            assert widths and all(w > 0 for w in widths), widths
            if slices is not None:
                assert len(widths) == slices, f"{len(widths)} images on the reader, {slices} slices made"
            timings["done"] = time.monotonic() - started
            print("seconds from the start: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
        except BaseException as e:
            shot, text = tmp_path / "failure.png", tmp_path / "failure.txt"
            try:
                page.screenshot(path=str(shot), full_page=True)
                text.write_text(f"{page.url}\n\n{page.inner_text('body')}")
            except Exception:
                pass
            e.add_note(f"screenshot: {shot}; page text: {text}; dagster dev log: {log}\n"
                       f"seconds from the start: {timings}\n--- dagster dev log (tail) ---\n{tail(log, 40)}")
            raise
        finally:
            browser.close()
