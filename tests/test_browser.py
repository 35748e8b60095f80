"""One end-to-end test in a real browser: the dashboard trains a tiny real TFF run on the synthetic city.

Starts `streamlit run app.py` on a free port, drives Debian's chromium through Playwright (never a
downloaded browser), recording every request the page makes: each must go to the app's own server.
With FEDLAB_SCREENSHOTS=1 it also saves a screenshot of every page under screenshots/ (git-ignored);
they cost about half a minute, so plain test runs skip them.
Skipped when /usr/bin/chromium is missing, unless FEDLAB_REQUIRE_BROWSER=1 (then it fails).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.tff, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "screenshots"
TRAIN_TIMEOUT_MS = 480_000  # building the TFF computations takes a minute or more on 2 busy cores
PAGE_TIMEOUT_MS = 60_000
VIEWPORT = {"width": 1400, "height": 1000}
# Streamlit scrolls inside its main pane (stMain), not the document.
PAGE_HEIGHT_JS = "() => (document.querySelector('[data-testid=stMain]') || document.body).scrollHeight"


def _require_browser() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("FEDLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{CHROMIUM} is missing and FEDLAB_REQUIRE_BROWSER=1 (install it: apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); set FEDLAB_REQUIRE_BROWSER=1 to fail instead")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"streamlit did not answer /_stcore/health within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop_server(server: subprocess.Popen) -> None:
    """Ends the whole process group (streamlit and any TFF worker_binary it started)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)  # stragglers in the group, if any
    except ProcessLookupError:
        pass
    server.wait(15)


def _group_members(pgid: int) -> dict[int, str]:
    """Live processes (pid -> command name) in a process group; zombies do not count."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        name, _, rest = stat.partition(" (")[2].rpartition(")")
        fields = rest.split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            out[int(proc.name)] = name
    return out


def _worker_binaries(pgid: int) -> set[int]:
    # Only our server's: other test sessions on this machine may run TFF workers of their own.
    return {pid for pid, name in _group_members(pgid).items() if name.startswith("worker_binar")}


def _leaves_the_app(url: str, port: int) -> bool:
    """A request to anywhere but the app's own server (inline data: and blob: URLs stay in the page)."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob"):
        return False
    return parts.hostname not in ("127.0.0.1", "localhost") or parts.port != port


def _record_requests(context, page) -> list[str]:
    """Every URL the page asks for from here on: documents, scripts, fonts, images, fetches, websockets."""
    urls: list[str] = []
    context.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda socket: urls.append(socket.url))
    return urls


def _open_page(page, name: str) -> None:
    page.get_by_role("link", name=re.compile(rf"(^|\s){name}$")).first.click()  # "map Data": icon, title


def _set_number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")  # Streamlit commits a number on Enter or blur
    page.wait_for_timeout(400)


def _shoot(page, name: str) -> None:
    """Screenshot of the whole page: the window is made as tall as the main pane's content."""
    if os.environ.get("FEDLAB_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(exist_ok=True)
    page.wait_for_timeout(2000)  # let the last rerun finish drawing
    for _ in range(2):  # charts redraw at the new size, which can change the height once more
        height = int(min(max(page.evaluate(PAGE_HEIGHT_JS), VIEWPORT["height"]), 9000))
        page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
        page.wait_for_timeout(1500)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    page.set_viewport_size(VIEWPORT)


@pytest.mark.timeout(900)
def test_train_a_tiny_real_run_in_the_browser(tmp_path):
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "streamlit.log"
    env = {
        **os.environ,
        "FEDLAB_DB": str(tmp_path / "runs" / "fedlab.db"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "FEDLAB_DEMO_RUNS": "0",
    }  # no demo runs queued ahead of the one trained here
    env.pop("FEDLAB_EXPERIMENT", None)  # the real engine
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.headless",
                "true",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # its own process group, so the finally block can end all of it
    try:
        _wait_healthy(url, server, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport=VIEWPORT)
                page = context.new_page()
                requests = _record_requests(context, page)
                page.set_default_timeout(PAGE_TIMEOUT_MS)
                expect.set_options(timeout=PAGE_TIMEOUT_MS)  # a fresh server builds the synthetic city first
                # A fresh server's first request goes straight to a page URL, as after a reload.
                page.goto(f"{url}/data")
                expect(page.get_by_text("Sequences for training")).to_be_visible()
                expect(page.get_by_text("train sequences")).to_be_visible()
                # Widgets here default to their session values on purpose; the config keeps Streamlit quiet on it.
                expect(page.get_by_text("set via the Session State API")).to_have_count(0)
                expect(page.get_by_role("link", name=re.compile(r"Home$"))).to_be_visible()  # app.py's navigation
                _shoot(page, "data")

                _open_page(page, "Home")
                expect(page.get_by_text("How federated averaging (FedAvg) works")).to_be_visible()
                expect(page.get_by_text("Synthetic city (generated)").first).to_be_visible()
                _shoot(page, "home")

                _open_page(page, "Train")
                expect(page.get_by_label("GRU units", exact=True)).to_have_value("256")
                _set_number(page, "Users (clients)", 3)
                _set_number(page, "Rounds", 2)
                _set_number(page, "Local epochs per round", 1)
                _set_number(page, "GRU units", 8)
                expect(page.get_by_label("GRU units", exact=True)).to_have_value("8")
                # The quick edits above must leave the preset's nine features selected (a widget-state race
                # in the settings form once emptied the list here).
                features = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Input features")
                expect(features.locator('[data-baseweb="tag"]')).to_have_count(9)
                # ... and every other setting valid: widgets that lost their state fell back to a minimum of 0.
                expect(page.get_by_text("a setting is not allowed")).to_have_count(0)
                expect(page.get_by_text(re.compile(r"^Estimate: about"))).to_be_visible()
                page.get_by_role("button", name=re.compile(r"(^|\s)Run$")).click()
                expect(page.get_by_text(re.compile(r"Preparing the data|Round \d of at most 2")).first).to_be_visible()
                expect(page.get_by_text(re.compile(r"Finished after \d round"))).to_be_visible(timeout=TRAIN_TIMEOUT_MS)
                expect(page.get_by_text("acc@5").first).to_be_visible()
                expect(page.locator(".js-plotly-plot").first).to_be_visible()
                _shoot(page, "train")
                page.reload()  # the run is in the URL, so a reloaded tab shows it again
                expect(page.get_by_text(re.compile(r"Finished after \d round"))).to_be_visible()

                _open_page(page, "Compare")
                expect(page.get_by_role("button", name="Run both").first).to_be_visible()
                _shoot(page, "compare")

                _open_page(page, "Lessons")
                expect(page.get_by_text("What to notice").first).to_be_visible()
                expect(page.get_by_text("Non-IID against IID clients").first).to_be_visible()
                _shoot(page, "lessons")

                _open_page(page, "Runs")
                expect(page.get_by_text("Open a run").first).to_be_visible()
                # The runs table is a canvas grid whose cells are hidden DOM nodes; the run name also shows visibly.
                expect(page.get_by_text("central · federated · N17").filter(visible=True).first).to_be_visible()
                # .first: while Streamlit reruns, the old copy of an element can linger for a moment.
                expect(page.get_by_role("button", name=re.compile(r"Model \(\.keras\)")).first).to_be_visible()
                _shoot(page, "runs")

                # Nothing leaves the app's host (the app must work offline, and tells no one who uses it): the
                # page icon is inline, and the icons on pages and buttons come from Streamlit's own font file.
                favicon = page.eval_on_selector("link[rel='shortcut icon']", "link => link.href")
                assert favicon.startswith("data:image/svg+xml"), favicon
                assert any("MaterialSymbols" in url and not _leaves_the_app(url, port) for url in requests)
                outside = sorted({url for url in requests if _leaves_the_app(url, port)})
                assert not outside, f"requests outside the app's server: {outside}"
            finally:
                browser.close()
    finally:
        pgid = server.pid
        _stop_server(server)
    deadline = time.monotonic() + 10
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _worker_binaries(pgid), "a TFF worker_binary survived the server"
    assert not _group_members(pgid), f"processes of the server's group survived: {_group_members(pgid)}"
