"""A shared server in a real browser: a reload and a new tab keep the signed-in user,
the owner of their runs and the cap on their queue (training faked, so it takes seconds, not minutes).
That a token outlives a restart of the server is tested in tests/test_users.py.

Skipped when /usr/bin/chromium is missing, unless FEDLAB_REQUIRE_BROWSER=1 (then it fails).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedlab.runs.store import RunStore
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, _free_port, _require_browser, _stop_server, _wait_healthy

pytestmark = [pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_MS = 20_000


def _serve(port: int, db: Path, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "FEDLAB_SHARED": "1",
        "FEDLAB_DB": str(db),
        "FEDLAB_EXPERIMENT": "tests.fakes:FakeExperiment",
        "FEDLAB_DEMO_RUNS": "0",
        "FEDLAB_MAX_QUEUED_PER_SESSION": "2",
        "PYTHONPATH": str(ROOT),
    }
    args = ["--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1"]
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", *args, "--browser.gatherUsageStats", "false"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _wait_for_runs(db: Path, count: int) -> list:
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while len(runs := RunStore(db).list_runs()) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return runs


@pytest.mark.timeout(180)
def test_shared_server_keeps_the_owner_and_the_cap_after_a_reload_and_in_a_new_tab(tmp_path):
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    port, db, log = _free_port(), tmp_path / "runs" / "fedlab.db", tmp_path / "streamlit.log"
    url = f"http://127.0.0.1:{port}"
    server = _serve(port, db, log)
    try:
        _wait_healthy(url, server, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                expect.set_options(timeout=TIMEOUT_MS)
                page.goto(f"{url}/train")
                page.get_by_label("Name", exact=True).fill("ana")
                page.get_by_label("Password", exact=True).fill("apples")
                page.get_by_role("button", name="Sign in").click()
                expect(page.get_by_text("Signed in as ana")).to_be_visible()
                rounds = page.get_by_label("Rounds", exact=True)
                rounds.fill("1000")
                rounds.press("Enter")
                run_button = page.get_by_role("button", name=re.compile(r"(^|\s)Run$"))
                for _ in range(2):  # the cap: two runs queued or training
                    run_button.click()
                    page.wait_for_timeout(700)
                expect(page.get_by_role("button", name="Stop").first).to_be_visible()
                runs = _wait_for_runs(db, 2)
                assert len(runs) == 2 and {run.session_id for run in runs} == {"user:ana"}

                page.reload()  # a new browser session: the cookie signs it in again
                expect(page.get_by_text("Signed in as ana")).to_be_visible()
                expect(page.get_by_role("button", name="Stop").first).to_be_visible()  # still the owner
                page.get_by_role("button", name=re.compile(r"(^|\s)Run$")).click()
                expect(page.get_by_text("at most 2 runs queued or training")).to_be_visible()  # the cap holds
                assert len(RunStore(db).list_runs()) == 2

                tab = context.new_page()  # a new tab of the same browser
                tab.goto(f"{url}/runs")
                expect(tab.get_by_text("Signed in as ana")).to_be_visible()
                expect(tab.get_by_role("button", name="Rename")).to_be_visible()

                stranger = browser.new_context().new_page()  # another student's browser
                stranger.goto(f"{url}/runs")
                expect(stranger.get_by_role("button", name="Sign in")).to_be_visible()
                expect(stranger.get_by_text("Read-only: started by ana").first).to_be_visible()
            finally:
                browser.close()
    finally:
        _stop_server(server)
    assert {run.session_id for run in RunStore(db).list_runs()} == {"user:ana"}
