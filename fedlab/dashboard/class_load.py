"""A class under load: simulated students drive a real shared dashboard server over its websocket.

`python -m fedlab bench --shared-load` starts `streamlit run app.py` with FEDLAB_SHARED=1 on 127.0.0.1 (a
`make serve-class` server, bound to loopback), then USERS clients at once, each as a browser would: open the
Train page, sign in, press Quick demo, press Run, and keep the page open (answering its once-a-second refresh)
until its run ends. Each then reloads (a new session carrying the sign-in cookie) and presses Run again, which
must be refused by the cap (FEDLAB_MAX_QUEUED_PER_SESSION=1 here). Every connection goes to 127.0.0.1 only;
the number of clients and the time are bounded.

It measures each user's wait from Run to the start of their run (median and last), the server's CPU time and
peak memory (its whole process tree), and checks in the run store that no run was lost or trained twice and
that reloading never changed a run's owner or the cap.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

APP_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "class-load"
COOKIE = "fedlab_user"  # fedlab.dashboard.signin.COOKIE (not imported: that module needs a script run context)
SCRIPT_TIMEOUT_S = 600.0  # one script run of the Train page while 30 others run at once on two busy cores
_FINISHED_EARLY_FOR_RERUN = 2  # ForwardMsg.script_finished's status when st.rerun() ended the run
_FINISHED_SUCCESSFULLY = 0  # a whole-page run (a fragment's own run ends with 3)
FRAGMENT_TIMEOUT_S = 20.0  # a refresh of the run panel; a fragment gone meanwhile gets no answer


@dataclass
class Page:
    """What one script run drew, as far as the client needs it."""

    widget_ids: dict[str, str] = field(default_factory=dict)  # user key -> widget id
    texts: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    query: str = ""
    auto_rerun: tuple[float, str] | None = None  # (interval, fragment id)


class Client:
    """One browser session: a websocket to /_stcore/stream speaking Streamlit's protobuf messages."""

    def __init__(self, url: str, cookie: str | None = None):
        self.url, self.cookie = url, cookie
        self.conn = None
        self.page_hash = ""
        self.page = Page()

    async def open(self, page: str) -> Page:
        headers = {"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else {}
        request = HTTPRequest(
            self.url.replace("http", "ws") + "/_stcore/stream",
            headers=headers,
            connect_timeout=SCRIPT_TIMEOUT_S,  # a busy server answers the handshake late too
            request_timeout=SCRIPT_TIMEOUT_S,
        )
        self.conn = await websocket_connect(request, subprotocols=["streamlit"])
        return await self.rerun({}, page_name=page)

    async def rerun(self, widgets: dict[str, object], *, page_name: str = "", fragment: str = "") -> Page:
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = self.page.query
        state.page_script_hash = self.page_hash
        state.page_name = page_name
        if fragment:
            state.fragment_id, state.is_auto_rerun = fragment, True
        for key, value in widgets.items():
            widget = state.widget_states.widgets.add()
            widget.id = self.page.widget_ids[key]
            if value is True:
                widget.trigger_value = True
            else:
                widget.string_value = str(value)
        await self.conn.write_message(msg.SerializeToString(), binary=True)
        return await self._read_run(fragment)

    async def _read_run(self, fragment: str) -> Page:
        page = Page(query=self.page.query) if not fragment else self.page
        deadline = time.monotonic() + (FRAGMENT_TIMEOUT_S if fragment else SCRIPT_TIMEOUT_S)
        refreshed = False
        while True:
            raw = await asyncio.wait_for(self.conn.read_message(), max(deadline - time.monotonic(), 0.1))
            if raw is None:
                raise ConnectionError("the server closed the websocket")
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            kind = msg.WhichOneof("type")
            if kind == "new_session":
                self.page_hash = msg.new_session.page_script_hash or self.page_hash
            elif kind == "page_info_changed":
                page.query = msg.page_info_changed.query_string
            elif kind == "auto_rerun":
                page.auto_rerun, refreshed = (msg.auto_rerun.interval, msg.auto_rerun.fragment_id), True
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                _note(page, msg.delta.new_element)
            elif kind == "navigation" and msg.navigation.page_script_hash:
                self.page_hash = msg.navigation.page_script_hash  # the page this session shows
            elif kind == "script_finished":
                if msg.script_finished == _FINISHED_EARLY_FOR_RERUN:
                    continue  # a rerun follows (st.rerun); elements it leaves unchanged are not sent again
                if not fragment:
                    page.widget_ids = {**self.page.widget_ids, **page.widget_ids}
                    self.page = page
                elif msg.script_finished == _FINISHED_SUCCESSFULLY and not refreshed:
                    page.auto_rerun = None  # the run ended: the fragment redrew the whole page, which polls no more
                return page

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _note(page: Page, element) -> None:
    kind = element.WhichOneof("type")
    inner = getattr(element, kind)
    widget_id = getattr(inner, "id", "")
    if widget_id and "-" in widget_id:
        page.widget_ids[widget_id.rsplit("-", 1)[-1]] = widget_id
    for name in ("body", "label"):
        text = getattr(inner, name, "")
        if isinstance(text, str) and text:
            (page.html if kind == "html" else page.texts).append(text)


# ----- one student -----


@dataclass
class Student:
    name: str
    run_id: str = ""
    pressed_at: float = 0.0
    token: str = ""
    signed_in_again: bool = False
    refused_again: str = ""
    active_at_reload: bool = False
    reload_saw: int = 0  # texts drawn by the reloaded page's Run (0: the press drew nothing)
    error: str = ""


async def student(url: str, db: Path, me: Student, go: asyncio.Event, done: asyncio.Event) -> None:
    client = Client(url)
    try:
        await client.open("train")
        page = await client.rerun({"signin_name": me.name, "signin_password": PASSWORD, "signin_btn": True})
        me.token = _token(page)
        await client.rerun({"train_btn_quick": True})
        await go.wait()  # everyone presses Run at once
        me.pressed_at = time.time()
        page = await client.rerun({"train_btn_run": True})
        me.run_id = dict(part.split("=", 1) for part in page.query.split("&") if "=" in part).get("run", "")
        await reload(url, me, db)  # at once, while the run waits: the cap must hold in the new session
        await _keep_open(client, page, done)
    except Exception as exc:  # recorded, so one broken client does not hide the others' figures
        me.error = f"{type(exc).__name__}: {exc}"
    finally:
        await client.close()


async def _keep_open(client: Client, page: Page, done: asyncio.Event) -> None:
    """Answers the page's refresh (the run panel polls once a second) until the bench says stop."""
    while not done.is_set() and page.auto_rerun is not None:
        interval, fragment = page.auto_rerun
        try:
            await asyncio.wait_for(done.wait(), interval)
        except TimeoutError:
            pass
        if not done.is_set():
            try:
                page = await client.rerun({}, fragment=fragment)
            except TimeoutError:
                return


async def reload(url: str, me: Student, db: Path) -> None:
    """A reload: a new session with the cookie; presses Run, which the cap (1) must refuse while one of the
    user's runs is queued or training."""
    client = Client(url, cookie=me.token)
    try:
        page = await client.open("train")
        me.signed_in_again = any(f"Signed in as **{me.name}**" in text for text in page.texts)
        for _ in range(2):  # a run that already ended leaves room: then the second press meets the cap
            active = _active_runs(db, f"user:{me.name}")
            page = await client.rerun({"train_btn_run": True})
            me.reload_saw = len(page.texts)
            if active:
                me.active_at_reload = True
                me.refused_again = next((t for t in page.texts if t.startswith("Not queued")), "")
                break
    except Exception as exc:
        me.error = f"reload: {type(exc).__name__}: {exc}"
    finally:
        await client.close()


def _token(page: Page) -> str:
    for body in page.html:
        found = re.search(rf"{COOKIE}=([\w\-.]+);", body)
        if found:
            return found.group(1)
    raise RuntimeError("no sign-in cookie in the page (did the sign-in fail?)")


# ----- the server -----


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sampler:
    """CPU time and peak resident memory of a process tree, sampled every 0.5 s."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.peak_rss = 0
        self.cpu_seconds: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            rss = 0
            for proc in [self.root, *self.root.children(recursive=True)]:
                try:
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
                    self.cpu_seconds[proc.pid] = times.user + times.system + times.children_user + times.children_system
                except psutil.Error:
                    continue
            self.peak_rss = max(self.peak_rss, rss)

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu_seconds.values())


def serve(folder: Path, port: int, experiment: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "FEDLAB_SHARED": "1",
        "FEDLAB_DB": str(folder / "runs" / "fedlab.db"),
        "FEDLAB_DEMO_RUNS": "0",
        "FEDLAB_MAX_QUEUED_PER_SESSION": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(APP_ROOT),
    }
    env.pop("FEDLAB_EXPERIMENT", None)
    if experiment:
        env["FEDLAB_EXPERIMENT"] = experiment
    args = ["--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1"]
    log = open(folder / "streamlit.log", "wb")  # noqa: SIM115 (the server writes it until stopped)
    return subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", *args, "--browser.gatherUsageStats", "false"],
        cwd=APP_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("the server did not answer /_stcore/health")


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


def _runs(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        rows = [
            dict(row)
            for row in conn.execute("SELECT id, session_id, status, created_at, started_at, finished_at FROM runs")
        ]
        counts = dict(conn.execute("SELECT run_id, COUNT(*) FROM rounds GROUP BY run_id").fetchall())
    finally:
        conn.close()
    for row in rows:
        row["rounds"] = counts.get(row["id"], 0)
    return rows


def _active_runs(db: Path, owner: str) -> int:
    conn = sqlite3.connect(db)
    try:
        sql = "SELECT COUNT(*) FROM runs WHERE session_id = ? AND status IN ('queued', 'running', 'testing')"
        return conn.execute(sql, (owner,)).fetchone()[0]
    finally:
        conn.close()


def _median_span(runs: list[dict]) -> float | None:
    spans = [_stamp(r["finished_at"]) - _stamp(r["started_at"]) for r in runs if r["status"] == "finished"]
    return round(statistics.median(spans), 1) if spans else None


def _stamp(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


# ----- the whole measurement -----


async def _class(url: str, db: Path, users: int, limit_s: float) -> list[Student]:
    students = [Student(f"student{i:02d}") for i in range(1, users + 1)]
    go, done = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(student(url, db, me, go, done)) for me in students]
    await asyncio.sleep(0)
    # Everyone signs in and chooses Quick demo first; then all press Run together.
    deadline = time.monotonic() + min(limit_s, 600)
    while time.monotonic() < deadline and not all(me.token or me.error for me in students):
        await asyncio.sleep(0.2)
    go.set()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        runs = _runs(db)
        if len(runs) >= users and all(run["status"] in ("finished", "failed", "stopped") for run in runs):
            break
        await asyncio.sleep(1.0)
    done.set()
    await asyncio.gather(*tasks)
    return students


def shared_load(users: int = 30, *, experiment: str = "", limit_s: float = 1800.0) -> dict:
    """Runs the measurement (see the module docstring); returns its figures and checks."""
    users = max(1, min(int(users), 60))  # bounded
    with tempfile.TemporaryDirectory(prefix="fedlab-class-") as tmp:
        folder = Path(tmp)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        server = serve(folder, port, experiment)
        try:
            _wait_healthy(url, server)
            with Sampler(server.pid) as sampler:
                started = time.monotonic()
                students = asyncio.run(_class(url, folder / "runs" / "fedlab.db", users, limit_s))
                wall = time.monotonic() - started
            runs = _runs(folder / "runs" / "fedlab.db")
        finally:
            _stop(server)
            log_tail = (folder / "streamlit.log").read_text(errors="replace")[-2000:]
    return _figures(students, runs, wall, sampler, experiment, log_tail)


def _figures(students, runs, wall, sampler, experiment, log_tail) -> dict:
    by_id = {run["id"]: run for run in runs}
    for me in students:  # a client that timed out still queued its run: find it by its owner
        mine = sorted((r for r in runs if r["session_id"] == f"user:{me.name}"), key=lambda r: r["created_at"])
        if not me.run_id and mine:
            me.run_id = mine[0]["id"]
    waits = sorted(
        _stamp(by_id[me.run_id]["started_at"]) - me.pressed_at
        for me in students
        if me.run_id in by_id and by_id[me.run_id]["started_at"] and me.pressed_at
    )
    spans = sorted(
        (_stamp(r["started_at"]), _stamp(r["finished_at"])) for r in runs if r["started_at"] and r["finished_at"]
    )
    overlapping = sum(1 for (s1, e1), (s2, _) in zip(spans, spans[1:]) if s2 < e1 - 1e-3)
    owners = {me.run_id: f"user:{me.name}" for me in students if me.run_id}
    return {
        "users": len(students),
        "experiment": experiment or "the real engine (Quick demo)",
        "runs_stored": len(runs),
        "runs_finished": sum(1 for r in runs if r["status"] == "finished"),
        "runs_per_user": sorted({sum(1 for r in runs if r["session_id"] == f"user:{me.name}") for me in students}),
        "rounds_per_run": sorted({r["rounds"] for r in runs}),
        "runs_overlapping": overlapping,
        "owners_kept": all(by_id.get(run_id, {}).get("session_id") == owner for run_id, owner in owners.items()),
        "signed_in_after_reload": sum(me.signed_in_again for me in students),
        "active_at_reload": sum(me.active_at_reload for me in students),
        "refused_by_cap_after_reload": sum(bool(me.refused_again) for me in students),
        "cap_held": all(bool(me.refused_again) for me in students if me.active_at_reload),
        "reload_texts_seen": sorted({me.reload_saw for me in students}),
        "cap_message": next((me.refused_again for me in students if me.refused_again), ""),
        "runs_started": len(waits),
        "wait_median_s": round(statistics.median(waits), 1) if waits else None,
        "wait_last_s": round(waits[-1], 1) if waits else None,
        "wait_first_s": round(waits[0], 1) if waits else None,
        "wall_s": round(wall, 1),
        "server_cpu_s": round(sampler.cpu_total, 1),
        "server_peak_rss_mb": round(sampler.peak_rss / 2**20),
        "seconds_per_run_median": _median_span(runs),
        "errors": [f"{me.name}: {me.error}" for me in students if me.error],
        "server_log_tail": log_tail if any(me.error for me in students) else "",
    }
