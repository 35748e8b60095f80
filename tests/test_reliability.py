"""Reliability: bad input, two users at once, crashes mid-run, and nothing lost.

- Every case of the bad-input table (the README, "Bad input") through the CLI (one line on stderr, exit
  status 2) and through the dashboard (AppTest: a message box, no exception, and the app keeps working).
- Two browser sessions start runs at once; Stop ends a run within one round; the app process killed
  with SIGKILL mid-run leaves an interrupted run with its rounds and a sound store; 20 runs in a row
  leave no thread behind; tiny real runs leave no worker_binary and keep memory flat.
- Uploads are stored under a name made from their content; a typed data path is only read.

Training is faked (tests.fakes.FakeExperiment) except in the tiny real runs. The "app process" of the
kill test is a helper process that runs app.py with Streamlit's AppTest (the real pages, run store and
job manager, no browser) and starts the run by pressing Run on the Train page.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from fedlab import cli
from fedlab.config import ExperimentConfig
from fedlab.data.loader import CSV_HEADER, format_utc
from fedlab.data.synthetic import generate_city, write_raw
from fedlab.runs.jobs import JobManager
from fedlab.runs.store import RunStore
from tests import fakes
from tests.helpers import assert_clean

ROOT = Path(__file__).resolve().parents[1]
FAKE = "tests.fakes:FakeExperiment"
RUN_TIMEOUT = 60  # seconds for one AppTest script run
WAIT = 20.0  # upper bound for a fake run to end; they take well under a second
TIME = "Tue Apr 03 18:00:09 +0000 2012"


# ----- the bad-input cases ---------------------------------------------------------------------------


def _row(
    user="1", venue="v1", cat_id="c1", category="Bar", lat="40.7", lon="-73.9", tz="-240", time=TIME, sep="\t"
) -> str:
    return sep.join([user, venue, cat_id, category, lat, lon, tz, time])


def make_files(folder: Path) -> dict[str, Path]:
    """One file per data case, made from a small synthetic city (5 users, 405 check-ins)."""
    city = generate_city(users=5, days=90, seed=3)
    good_path = folder / "good.txt"
    write_raw(city, good_path)
    good = good_path.read_text(encoding="latin-1").splitlines()
    top = city["user"].value_counts().index[0]
    mine = [line for line in good if line.split("\t")[0] == top]
    header = ",".join(CSV_HEADER)
    texts: dict[str, str | bytes | list[str]] = {
        "empty.txt": b"",
        "binary.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,
        "windows-1252.txt": good[:5] + [_row(category="Joe\x92s Bar")],  # \x92: a curly quote in Windows-1252
        "utf-16.txt": ("\n".join(good[:5]) + "\n").encode("utf-16"),
        "semicolons.txt": [line.replace("\t", ";") for line in good[:20]],
        "seven-columns.txt": good[:3] + ["\t".join(good[3].split("\t")[:7])] + good[4:20],
        "nine-columns.txt": good[:3] + [good[3] + "\tnote"] + good[4:20],
        "header-without-latitude.csv": [",".join(h for h in CSV_HEADER if h != "latitude")],
        "header-with-extra.csv": [header + ",comment", _row(sep=",") + ",hi"],
        "latitude-text.txt": good[:3] + [_row(lat="north")],
        "longitude-range.txt": good[:3] + [_row(lon="-200.5")],
        "latitude-range.txt": good[:3] + [_row(lat="91")],
        "timestamp-text.txt": good[:3] + [_row(time="2012-04-03 18:00:09")],
        "timestamp-impossible.txt": good[:3] + [_row(time="Thu Feb 30 18:00:09 +0000 2012")],
        "duplicates.txt": good + good[:40],
        "few-checkins.txt": [
            line
            for user in sorted(city["user"].unique())[:3]
            for line in [g for g in good if g.split("\t")[0] == user][:5]
        ],
        "single-user.txt": mine,
        "single-user-26.txt": mine[:26],
    }
    paths = {"good.txt": good_path}
    for name, content in texts.items():
        if isinstance(content, list):
            content = ("\n".join(content) + "\n").encode("latin-1")
        paths[name] = folder / name
        paths[name].write_bytes(content)
    paths["folder"] = folder / "a-folder"
    paths["folder"].mkdir()
    paths["missing.txt"] = folder / "missing.txt"
    paths["device"] = Path(os.devnull)
    return paths


@dataclass(frozen=True)
class Case:
    """One row of the bad-input table.

    `file` is a name from make_files; `cli` and `shown` are fragments of the CLI's and the dashboard's
    message (None: no error, the input is accepted). `route` is where the dashboard shows it:
    "source" (the sidebar's data source), "data" (the Data page), "train" (the Train page's Run).
    """

    id: str
    file: str = "good.txt"
    args: tuple[str, ...] = ()
    command: str = "data-stats"
    cli: str | None = None
    route: str = "source"
    settings: dict = field(default_factory=dict)
    shown: str | None = None


CASES = [
    Case("empty file", "empty.txt", cli="the file is empty", shown="the file is empty"),
    Case("binary file", "binary.png", cli="not text (it holds binary data)", shown="not text"),
    Case("unknown encoding", "windows-1252.txt", cli="neither UTF-8 nor Latin-1", shown="neither UTF-8 nor Latin-1"),
    Case("UTF-16 text", "utf-16.txt", cli="UTF-16 text", shown="UTF-16 text"),
    Case("wrong delimiter", "semicolons.txt", cli="separated by semicolons", shown="separated by semicolons"),
    Case(
        "missing column in a row",
        "seven-columns.txt",
        cli="7 tab-separated columns but 8 are expected",
        shown="7 tab-separated columns but 8 are expected",
    ),
    Case(
        "extra column in a row",
        "nine-columns.txt",
        cli="9 tab-separated columns but 8 are expected",
        shown="9 tab-separated columns",
    ),
    Case(
        "missing column in the header",
        "header-without-latitude.csv",
        cli="the header lacks column latitude",
        shown="the header lacks column latitude",
    ),
    Case(
        "extra column in the header",
        "header-with-extra.csv",
        cli="unexpected column 'comment'",
        shown="unexpected column 'comment'",
    ),
    Case(
        "non-numeric coordinate",
        "latitude-text.txt",
        cli="non-numeric latitude 'north'",
        shown="non-numeric latitude 'north'",
    ),
    Case(
        "longitude out of range",
        "longitude-range.txt",
        cli="longitude out of range",
        shown="longitude must be between -180 and 180",
    ),
    Case("latitude out of range", "latitude-range.txt", cli="latitude out of range", shown="latitude out of range"),
    Case(
        "unparseable timestamp",
        "timestamp-text.txt",
        cli="unparseable timestamp '2012-04-03 18:00:09'",
        shown="unparseable timestamp",
    ),
    Case("impossible timestamp", "timestamp-impossible.txt", cli="impossible timestamp", shown="impossible timestamp"),
    Case("no file at the path", "missing.txt", cli="no file at", shown="there is no file at"),
    Case("a folder instead of a file", "folder", cli="is a folder", shown="is a folder"),
    Case("a device instead of a file", "device", cli="the file is empty", shown="is not a regular file"),
    Case("duplicate rows", "duplicates.txt", args=("--n", "9"), route="data", shown="40 rows were dropped"),
    Case(
        "no user has N check-ins",
        "few-checkins.txt",
        cli="no client has enough check-ins for sequences of N=17",
        route="train",
        shown="no client has enough check-ins for sequences of N=17",
    ),
    Case("a single user", "single-user.txt", args=("--n", "9"), route="train", settings={"n": 9}),
    Case(
        "a single user too short for validation",
        "single-user-26.txt",
        args=("--n", "5"),
        cli="validation sequence of N=5",
        route="train",
        settings={"n": 5},
        shown="validation sequence of N=5",
    ),
    Case(
        "N of 1",
        args=("--n", "1"),
        cli="N must be a whole number of at least 2",
        route="train",
        settings={"n": 1},
        shown="Sequence length N (check-ins) must be between 2 and 500, not 1",
    ),
    Case(
        "N larger than every sequence",
        args=("--n", "400"),
        cli="sequences of N=400",
        route="train",
        settings={"n": 400},
        shown="no client has enough check-ins for sequences of N=400",
    ),
    # Accepted: the CLI's settings check passes it (command "settings": parsed, not trained, to save
    # time); a federated run with one client and this batch size trains in test_real_runs_* below.
    Case(
        "batch size larger than any client's data",
        "single-user.txt",
        args=("--n", "9", "--batch-size", "4096"),
        command="settings",
        route="train",
        settings={"n": 9, "batch_size": 4096},
    ),
    Case(
        "zero rounds",
        args=("--rounds", "0"),
        command="run",
        cli="rounds must be a whole number of at least 1, not 0",
        route="train",
        settings={"rounds": 0},
        shown="Rounds must be between 1 and 1,000, not 0",
    ),
    Case(
        "negative rounds",
        args=("--rounds", "-5"),
        command="run",
        cli="rounds must be a whole number of at least 1",
        route="train",
        settings={"rounds": -5},
        shown="Rounds must be between 1 and 1,000, not -5",
    ),
    Case(
        "zero local epochs",
        args=("--epochs", "0"),
        command="run",
        cli="local epochs must be a whole number",
        route="train",
        settings={"epochs": 0},
        shown="Local epochs per round must be between 1 and 100, not 0",
    ),
    Case(
        "negative local epochs",
        args=("--epochs", "-1"),
        command="run",
        cli="local epochs must be a whole number",
        route="train",
        settings={"epochs": -1},
        shown="Local epochs per round must be between 1 and 100, not -1",
    ),
    Case(
        "zero learning rate",
        args=("--client-lr", "0"),
        command="run",
        cli="client learning rate must be a number above 0, not 0.0",
        route="train",
        settings={"client_lr": 0.0},
        shown="client learning rate must be a number above 0, not 0.0",
    ),
    Case(
        "negative learning rate",
        args=("--server-lr", "-1"),
        command="run",
        cli="server learning rate must be a number above 0, not -1.0",
        route="train",
        settings={"server_lr": -1.0},
        shown="Server learning rate must be between 0.0 and 100.0, not -1.0",
    ),
    Case(
        "empty feature list",
        args=("--features", ""),
        command="run",
        cli="choose at least one feature",
        route="train",
        settings={"features": []},
        shown="choose at least one feature",
    ),
    Case(
        "a feature that does not exist",
        args=("--features", "cat_id,warp_speed"),
        command="run",
        cli="unknown feature 'warp_speed'",
        route="settings",
        settings={"features": ["cat_id", "warp_speed"]},
        shown="unknown feature 'warp_speed'",
    ),
]
CASE_IDS = [case.id.replace(" ", "-").replace("'", "") for case in CASES]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return make_files(tmp_path_factory.mktemp("bad-input"))


# ----- through the CLI -----


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def record(case: Case, where: str, message: str) -> None:
    """With FEDLAB_RECORD_MESSAGES=<file>, notes each message as seen (the README's bad-input table quotes them)."""
    target = os.environ.get("FEDLAB_RECORD_MESSAGES")
    if target:
        with open(target, "a", encoding="utf-8") as sink:
            sink.write(json.dumps({"case": case.id, "where": where, "message": message}) + "\n")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bad_input_through_the_cli(case: Case, files, capsys):
    if case.command == "settings":  # `run` up to its settings check, which comes before TensorFlow
        args = cli.build_parser().parse_args(["run", "--data", str(files[case.file]), *case.args])
        assert cli.experiment_config_from(args).batch_size == 4096
        return
    code, out, err = run_cli([case.command, "--data", str(files[case.file]), *case.args], capsys)
    record(case, "cli", err.strip() or f"exit status {code}; {out.strip().splitlines()[-1] if out.strip() else ''}")
    if case.cli is None:
        assert (code, err) == (0, ""), err
        return
    assert code == 2
    assert err.startswith("fedlab: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert case.cli in err and "Traceback" not in err


def test_duplicate_rows_are_dropped_and_counted_by_the_cli(files, capsys):
    code, out, _ = run_cli(["data-stats", "--json", "--data", str(files["duplicates.txt"]), "--n", "9"], capsys)
    clean = run_cli(["data-stats", "--json", "--data", str(files["good.txt"]), "--n", "9"], capsys)[1]
    assert code == 0
    stats, expected = json.loads(out), json.loads(clean)
    assert stats["skipped_rows"] == 40 and stats["rows"] == expected["rows"]


def test_a_single_user_is_one_client(files, capsys):
    code, out, _ = run_cli(["data-stats", "--json", "--data", str(files["single-user.txt"]), "--n", "9"], capsys)
    assert code == 0 and json.loads(out)["clients"] == 1


@pytest.mark.parametrize(
    "name, fragment", [("binary.png", "not text"), ("single-user-26.txt", "validation sequence of N=5")]
)
def test_bad_input_as_a_real_process(files, name, fragment):
    """The same path end to end in a process of its own: stderr, exit status 2, no traceback."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-m", "fedlab", "data-stats", "--data", str(files[name]), "--n", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and fragment in out.stderr and "Traceback" not in out.stderr


# ----- through the dashboard -----


@pytest.fixture
def db(tmp_path, monkeypatch) -> Iterator[Path]:
    """A run store of its own, training faked, the job manager shut down afterwards (as in test_pages)."""
    path = tmp_path / "runs" / "fedlab.db"
    monkeypatch.setenv("FEDLAB_DB", str(path))
    monkeypatch.setenv("FEDLAB_EXPERIMENT", FAKE)
    monkeypatch.chdir(ROOT)
    yield path
    shutdown_app(path)


def shutdown_app(path: Path) -> None:
    from fedlab.dashboard import state as app_state

    if path.exists():
        app_state._start_jobs(str(path.resolve()), FAKE).shutdown(timeout=WAIT)
    st.cache_resource.clear()


@pytest.fixture
def preparing(monkeypatch):
    """The fake loads and prepares its data as the engine does, so data problems fail the run as they would."""
    from fedlab.data.pipeline import load_and_prepare

    def prepare(self):
        self.data = load_and_prepare(self.config.data)
        self.timing["preprocess_seconds"] = 0.0

    monkeypatch.setattr(fakes.FakeExperiment, "prepare", prepare)


def app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=RUN_TIMEOUT)
    at.run()
    assert_clean(at)
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def choose_path(at: AppTest, path: Path) -> None:
    at.sidebar.radio(key="source_kind").set_value("path").run()
    at.sidebar.text_input(key="source_path").set_value(str(path))
    at.sidebar.button(key="source_btn_path").click().run()
    assert_clean(at)


def in_use(at: AppTest) -> str:
    return at.sidebar.caption[-1].value


def set_settings(at: AppTest, settings: dict, prefix: str = "train") -> None:
    for name, value in settings.items():
        key = f"{prefix}_{name}"
        if name == "features":
            at.session_state[key] = value  # the multiselect offers known features only; set the state directly
        else:
            at.number_input(key=key).set_value(value)


def wait_until_ended(db: Path, count: int = 1) -> list:
    store = RunStore(db)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        runs = store.list_runs()
        if len(runs) >= count and not any(run.is_active for run in runs):
            return runs
        time.sleep(0.02)
    raise AssertionError(f"runs did not end: {[(r.name, r.status) for r in store.list_runs()]}")


SOURCE_CASES = [case for case in CASES if case.route == "source"]
OTHER_CASES = [case for case in CASES if case.route != "source"]


def test_every_bad_file_chosen_by_path_in_one_session(db, files):
    """The file cases one after another in one browser session: each gets its message in the sidebar,
    the data in use stays the synthetic city, and every page still works afterwards."""
    at = app()
    for case in SOURCE_CASES:
        choose_path(at, files[case.file])
        shown = [message for message in errors(at.sidebar) if case.shown in message]
        assert len(shown) == 1, (case.id, errors(at))
        record(case, "dashboard", shown[0])
        assert "Synthetic" in in_use(at)
    at.sidebar.text_input(key="source_path").set_value("bad\x00path")  # pasted junk
    at.sidebar.button(key="source_btn_path").click().run()
    assert_clean(at)
    assert any(message.startswith("cannot use that path") for message in errors(at.sidebar)), errors(at)
    for page in ("train", "runs"):
        at.switch_page(f"pages/{page}.py").run()
        assert_clean(at)
    choose_path(at, files["good.txt"])
    assert not errors(at.sidebar) and "good.txt" in in_use(at)


@pytest.mark.parametrize("case", OTHER_CASES, ids=[CASE_IDS[CASES.index(case)] for case in OTHER_CASES])
def test_bad_input_through_the_dashboard(case: Case, files, db, preparing):
    if case.route == "settings":
        # The feature list offers known features only; a config naming another is refused by name.
        from fedlab.dashboard import settings
        from fedlab.dashboard.state import SYNTHETIC
        from fedlab.errors import ConfigError

        values = {**settings.default_settings(), **case.settings}
        with pytest.raises(ConfigError, match=case.shown) as caught:
            settings.config_from_settings(values, SYNTHETIC, False)
        record(case, "dashboard", str(caught.value))
        return
    at = app()
    choose_path(at, files[case.file])
    assert not errors(at), errors(at)
    assert files[case.file].name in in_use(at)
    if case.route == "data":
        at.switch_page("pages/data.py").run()
        assert_clean(at)
        shown = [caption.value for caption in at.caption if case.shown in caption.value]
        assert shown
        record(case, "dashboard", shown[0])
        return
    at.switch_page("pages/train.py").run()
    at.number_input(key="train_rounds").set_value(2)
    set_settings(at, case.settings)
    at.run()
    assert_clean(at)
    if case.shown is not None and any(case.shown in message for message in errors(at)):
        # A value outside the widget's limits: put back in range, with a message; the page still works.
        record(case, "dashboard", next(message for message in errors(at) if case.shown in message))
        at.button(key="train_btn_run")
        return
    at.button(key="train_btn_run").click().run()
    assert_clean(at)
    if case.shown is None:  # accepted: the run trains to the end
        (run,) = wait_until_ended(db)
        assert run.status == "finished", run.error
        at.run()
        record(case, "dashboard", next(s.value for s in at.success))
        return
    if RunStore(db).list_runs():  # the settings were fine; the data problem shows when the run starts
        (run,) = wait_until_ended(db)
        assert run.status == "failed" and case.shown in run.error
        at.run()
        assert_clean(at)
        shown = [message for message in errors(at) if message.startswith("The run failed: ")]
        assert len(shown) == 1 and case.shown in shown[0]
    else:  # refused before queuing
        shown = [message for message in errors(at) if case.shown in message]
        assert shown, errors(at)
    record(case, "dashboard", shown[0])
    at.switch_page("pages/runs.py").run()  # the app keeps working
    assert_clean(at)


@dataclass
class FakeUpload:
    """What st.file_uploader returns, as far as fedlab.dashboard.sources uses it."""

    name: str
    data: bytes
    file_id: str = field(default_factory=lambda: os.urandom(8).hex())

    def getvalue(self) -> bytes:
        return self.data


@pytest.fixture
def uploads(monkeypatch, tmp_path) -> dict:
    """Replaces st.file_uploader (AppTest cannot upload) and the app's upload folder."""
    from fedlab.dashboard import sources

    state = {"upload": None, "folder": tmp_path / "app-data" / "uploads"}
    monkeypatch.setattr(sources, "UPLOAD_DIR", state["folder"])
    monkeypatch.setattr(st, "file_uploader", lambda *args, **kwargs: state["upload"])
    return state


def upload(at: AppTest, uploads: dict, name: str, data: bytes) -> None:
    uploads["upload"] = FakeUpload(name, data)
    if at.sidebar.radio(key="source_kind").value != "upload":
        at.sidebar.radio(key="source_kind").set_value("upload")
    at.run()
    assert_clean(at)


def test_every_bad_file_uploaded_in_one_session_and_the_app_keeps_working(db, files, uploads):
    at = app()
    for case in [case for case in SOURCE_CASES if case.file not in ("missing.txt", "folder", "device")]:
        upload(at, uploads, case.file, files[case.file].read_bytes())
        assert any(case.shown in message for message in errors(at.sidebar)), (case.id, errors(at))
        assert "Synthetic" in in_use(at)
    upload(at, uploads, "good.txt", files["good.txt"].read_bytes())
    assert not errors(at.sidebar) and "uploaded file good.txt" in in_use(at)
    at.switch_page("pages/data.py").run()
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["users"] == "5"


def test_an_upload_larger_than_the_configured_limit(db, files, uploads):
    from streamlit import config

    limit = config.get_option("server.maxUploadSize")
    config.set_option("server.maxUploadSize", 1)  # MB, as in .streamlit/config.toml
    try:
        at = app()
        upload(at, uploads, "big.txt", files["good.txt"].read_bytes() * 40)  # 1.9 MB
        shown = [message for message in errors(at.sidebar) if "more than the 1 MB limit" in message]
        assert shown, errors(at)
        record(Case("an upload larger than the configured limit"), "dashboard", shown[0])
        bomb = gzip.compress(files["good.txt"].read_bytes() * 100)  # small, but 3.7 MB unpacked
        assert len(bomb) < 2**20
        upload(at, uploads, "bomb.txt.gz", bomb)
        expected = "the decompressed content of the gzip file is more than the 1.0 MB limit"
        shown = [message for message in errors(at.sidebar) if expected in message]
        assert shown, errors(at)
        record(Case("a small .gz upload that unpacks past the limit"), "dashboard", shown[0])
        assert "Synthetic" in in_use(at)
    finally:
        config.set_option("server.maxUploadSize", limit)
    saved = list(uploads["folder"].iterdir()) if uploads["folder"].exists() else []
    assert all(p.stat().st_size <= 2**20 for p in saved)  # the one over the limit was not kept


def test_a_settings_mistake_then_a_good_run_in_the_same_session(db):
    at = app()
    at.switch_page("pages/train.py").run()
    at.number_input(key="train_rounds").set_value(0).run()
    assert any("Rounds must be between" in message for message in errors(at))
    assert at.number_input(key="train_rounds").value == 1  # put back in range
    at.session_state["train_features"] = []
    at.button(key="train_btn_run").click().run()
    assert any("choose at least one feature" in message for message in errors(at))
    at.session_state["train_features"] = ["cat_id"]
    at.number_input(key="train_rounds").set_value(2)
    at.button(key="train_btn_run").click().run()
    assert_clean(at)
    (run,) = wait_until_ended(db)
    assert run.status == "finished"


# ----- a file of a million rows -----


def million_row_file(path: Path, rows: int = 1_000_000, users: int = 1_000) -> int:
    """A raw TSMC2014 file built as a byte matrix (seconds, not minutes); returns its size in bytes."""
    rng = np.random.default_rng(0)
    names = np.array(
        [
            name.ljust(16).encode()
            for name in (
                "Bar",
                "Coffee Shop",
                "Subway",
                "Office",
                "Home (private)",
                "Gym / Fitness",
                "Park",
                "Food Truck",
                "Bus Station",
                "Deli / Bodega",
                "Pizza Place",
                "Train Station",
            )
        ]
    )

    def digits(values: np.ndarray, width: int) -> np.ndarray:
        return (48 + values[:, None] // 10 ** np.arange(width - 1, -1, -1) % 10).astype(np.uint8)

    def text(value: bytes) -> np.ndarray:
        return np.broadcast_to(np.frombuffer(value, np.uint8), (rows, len(value)))

    def hex_ids(values: np.ndarray) -> np.ndarray:  # 24 hex digits, like Foursquare's venue ids
        hashed = values.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        nibbles = (hashed[:, None] >> np.arange(60, -4, -4, dtype=np.uint64)) & np.uint64(15)
        return np.hstack([text(b"4bf58dd8"), np.frombuffer(b"0123456789abcdef", np.uint8)[nibbles.astype(np.int64)]])

    category = rng.integers(0, len(names), rows)
    seconds = rng.integers(0, 300 * 86400, rows)
    times = format_utc(np.datetime64("2012-04-03", "s") + seconds.astype("timedelta64[s]"))
    parts = [
        digits(rng.integers(1, users + 1, rows), 4),
        text(b"\t"),
        hex_ids(rng.integers(0, 40_000, rows)),
        text(b"\tc"),
        digits(category, 3),
        text(b"\t"),
        np.frombuffer(names[category].tobytes(), np.uint8).reshape(rows, 16),
        text(b"\t40."),
        digits(rng.integers(0, 10**6, rows), 6),
        text(b"\t-73."),
        digits(rng.integers(0, 10**6, rows), 6),
        text(b"\t-240\t"),
        np.frombuffer(times.astype("S30").tobytes(), np.uint8).reshape(rows, 30),
        text(b"\n"),
    ]
    data = np.hstack(parts).tobytes()
    path.write_bytes(data)
    return len(data)


_MEASURED_LOAD = textwrap.dedent("""
    import json, sys, time
    from fedlab.data.loader import load_checkins

    def high_water():  # this process's peak RSS; unlike ru_maxrss it does not inherit the parent's peak
        line = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    before = high_water()
    started = time.perf_counter()
    result = load_checkins(sys.argv[1])
    seconds = time.perf_counter() - started
    peak = high_water()
    print(json.dumps({"rows": len(result.frame), "skipped": result.skipped, "before": before, "peak": peak,
                      "users": int(result.frame["user"].nunique()), "seconds": seconds}))
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from /proc")
def test_a_file_of_a_million_rows_loads_within_memory(tmp_path):
    """Peak memory above the interpreter's own: the file's bytes, the byte spans of its fields, pandas'
    parse and the canonical columns (4.3x the file, measured); the bound, 6x, leaves 40% for allocator
    differences. (Before the loader freed its spans and parsed table early, the peak was 5.8x.)"""
    import json

    path = tmp_path / "million.txt"
    size = million_row_file(path)
    out = subprocess.run(
        [sys.executable, "-c", _MEASURED_LOAD, str(path)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["rows"] + sum(result["skipped"].values()) == 1_000_000 and result["rows"] > 999_000
    assert result["users"] == 1_000
    assert result["peak"] - result["before"] < 6 * size, (result, size)
    record(
        Case("a file of a million rows"),
        "loader",
        f"{result['rows']:,} rows from a {size / 2**20:.0f} MB file in {result['seconds']:.1f} s, "
        f"peak memory {(result['peak'] - result['before']) / 2**20:.0f} MB above the interpreter's",
    )


# ----- two sessions at once, stop, a kill mid-run -------------------------------------------------------


def test_two_sessions_start_runs_at_once_and_each_sees_only_its_own(db, monkeypatch):
    """Two browser sessions press Run one right after the other, so both runs are active together.

    (AppTest cannot run two scripts at the same instant in one process; the next test submits from two
    threads at the same instant to the job manager itself.)"""
    monkeypatch.setattr(fakes, "ROUND_SECONDS", 0.25)
    sessions = {}
    for name in ("alice", "bob"):
        at = app()
        at.switch_page("pages/train.py").run()
        at.number_input(key="train_rounds").set_value(6)
        at.text_input(key="train_name").set_value(f"{name}'s run")
        sessions[name] = at
    for at in sessions.values():
        at.button(key="train_btn_run").click().run()
        assert_clean(at)
    assert any("Queued (1 run(s) ahead" in i.value for i in sessions["bob"].info)  # behind alice's, not lost
    store = RunStore(db)
    runs = {run.name: run for run in store.list_runs()}
    assert set(runs) == {"alice's run", "bob's run"}

    wait_until_ended(db, 2)
    for name, at in sessions.items():
        at.run()
        assert_clean(at)
        mine, theirs = f"{name}'s run", ({"alice", "bob"} - {name}).pop() + "'s run"
        assert [s.value for s in at.subheader][:1] == [mine]
        traces = {trace.get("name", "") for chart in at.get("plotly_chart") for trace in _spec(chart)["data"]}
        assert mine in traces and not any(theirs in trace for trace in traces)
        assert at.query_params["run"] == [runs[mine].id]
    runs_page = app()
    runs_page.switch_page("pages/runs.py").run()
    assert_clean(runs_page)
    table = runs_page.dataframe[0].value
    assert set(table["name"]) == set(runs) and set(table["status"]) == {"finished"}
    assert set(table["rounds"]) == {6}
    for run in runs.values():
        assert store.rounds(run.id)["round"].tolist() == [1, 2, 3, 4, 5, 6]
    first, second = sorted(store.list_runs(), key=lambda run: run.started_at)
    assert second.created_at < first.finished_at  # queued while the other trained
    assert first.finished_at <= second.started_at  # and run after it: one at a time


def test_two_runs_submitted_at_the_same_instant_both_run_with_their_own_rounds(tmp_path):
    store = RunStore(tmp_path / "fedlab.db")
    jobs = JobManager(store, experiment_factory=fakes.FakeExperiment)
    start = threading.Barrier(2)
    ids: dict[str, str] = {}

    def submit(session: str, rounds: int) -> None:
        start.wait(WAIT)
        ids[session] = jobs.submit(ExperimentConfig(rounds=rounds, gru_units=8), session_id=session)

    threads = [threading.Thread(target=submit, args=args) for args in (("alice", 3), ("bob", 5))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert jobs.wait_idle(WAIT)
    finally:
        jobs.shutdown(timeout=WAIT)
    assert [run.id for run in store.list_runs(session_id="alice")] == [ids["alice"]]
    assert [run.id for run in store.list_runs(session_id="bob")] == [ids["bob"]]
    assert store.rounds(ids["alice"])["round"].tolist() == [1, 2, 3]
    assert store.rounds(ids["bob"])["round"].tolist() == [1, 2, 3, 4, 5]
    assert {store.get_run(run_id).status for run_id in ids.values()} == {"finished"}


def _spec(chart) -> dict:
    return json.loads(chart.proto.spec)


def test_stop_ends_the_run_within_one_round_and_keeps_its_rounds(db, monkeypatch):
    """Rounds are let through one at a time, so Stop lands in the middle of round 4 for sure."""
    gate = threading.Semaphore(0)
    original = fakes.FakeExperiment.rounds

    def gated_rounds(self):
        for record in original(self):
            assert gate.acquire(timeout=WAIT), "the test never let the round finish"
            yield record

    monkeypatch.setattr(fakes, "ROUND_SECONDS", 0.0)
    monkeypatch.setattr(fakes.FakeExperiment, "rounds", gated_rounds)
    at = app()
    at.switch_page("pages/train.py").run()
    at.number_input(key="train_rounds").set_value(50)
    at.button(key="train_btn_run").click().run()
    store = RunStore(db)
    (run,) = store.list_runs()
    for _ in range(3):
        gate.release()
    deadline = time.monotonic() + WAIT
    while len(store.rounds(run.id)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    at.run()
    at.button(key=f"stop_{run.id}").click().run()  # while round 4 trains
    assert_clean(at)
    gate.release()  # round 4 ends; the run must end with it
    (run,) = wait_until_ended(db)
    assert run.status == "stopped"
    assert store.rounds(run.id)["round"].tolist() == [1, 2, 3, 4]
    assert run.test is not None  # the kept model was tested
    at.run()
    assert any("Stopped after 4 round(s); the rounds so far are kept" in w.value for w in at.warning)


_APP_PROCESS = textwrap.dedent("""
    # The app process of the kill test: app.py under AppTest, Run pressed on the Train page, then it
    # reports each round as it lands in the run store until it is killed.
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from streamlit.testing.v1 import AppTest
    from fedlab.runs.store import RunStore
    from tests import fakes

    fakes.ROUND_SECONDS = 0.15
    at = AppTest.from_file(sys.argv[1] + "/app.py", default_timeout=60)
    at.run()
    at.switch_page("pages/train.py").run()
    at.number_input(key="train_rounds").set_value(200)
    at.text_input(key="train_name").set_value("killed mid-run")
    at.button(key="train_btn_run").click().run()
    assert not at.exception, at.exception
    store = RunStore(os.environ["FEDLAB_DB"])
    (run,) = store.list_runs()
    print("run", run.id, flush=True)
    seen = 0
    while True:
        done = len(store.rounds(run.id))
        if done > seen:
            seen = done
            print("round", done, flush=True)
        time.sleep(0.01)
""")


@pytest.mark.timeout(300)
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_the_app_killed_mid_run_restarts_with_the_run_interrupted_and_its_rounds(tmp_path, monkeypatch):
    path = tmp_path / "runs" / "fedlab.db"
    env = {**os.environ, "FEDLAB_DB": str(path), "FEDLAB_EXPERIMENT": FAKE}
    log = tmp_path / "app.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", _APP_PROCESS, str(ROOT)],
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            env=env,
            cwd=ROOT,
        )
    seen = 0
    try:
        first = process.stdout.readline().split()
        assert first[:1] == ["run"], f"the app process ended before starting its run: {log.read_text()[-2000:]}"
        run_id = first[1]
        for line in process.stdout:
            seen = int(line.split()[1])
            if seen >= 2:
                break
        os.kill(process.pid, signal.SIGKILL)  # in the middle of a later round
        assert process.wait(30) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait(30)
        process.stdout.close()
    assert seen >= 2

    with sqlite3.connect(path) as conn:  # before anything of ours opens it
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        (status,) = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    assert status == "running"  # as the killed process left it

    # Restart: a new app process (this one) opens the same store.
    monkeypatch.setenv("FEDLAB_DB", str(path))
    monkeypatch.setenv("FEDLAB_EXPERIMENT", FAKE)
    monkeypatch.chdir(ROOT)
    try:
        at = app()
        at.switch_page("pages/runs.py").run()
        assert_clean(at)
        store = RunStore(path)
        run = store.get_run(run_id)
        rounds = store.rounds(run_id)["round"].tolist()
        assert run.status == "interrupted"
        assert rounds == list(range(1, len(rounds) + 1)) and len(rounds) >= seen  # every finished round
        assert any(f"Interrupted after {len(rounds)} round(s)" in w.value for w in at.warning)
        table = at.dataframe[0].value
        assert table.loc[table["id"] == run_id, "status"].tolist() == ["interrupted"]
    finally:
        shutdown_app(path)


# ----- many runs in one process ------------------------------------------------------------------------


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def test_twenty_runs_in_a_row_leave_no_thread_and_memory_flat(tmp_path, monkeypatch):
    monkeypatch.setattr(fakes, "ROUND_SECONDS", 0.0)
    before = set(threading.enumerate())
    store = RunStore(tmp_path / "fedlab.db")
    jobs = JobManager(store, experiment_factory=fakes.FakeExperiment, model_dir=tmp_path / "models")
    most_threads = 0
    rss = []
    try:
        for number in range(20):
            jobs.submit(ExperimentConfig(rounds=3, gru_units=8), session_id=f"s{number % 2}")
            assert jobs.wait_idle(WAIT)
            most_threads = max(most_threads, len(set(threading.enumerate()) - before))
            if number in (4, 19):
                rss.append(_rss())
    finally:
        jobs.shutdown(timeout=WAIT)
    runs = store.list_runs()
    assert len(runs) == 20 and {run.status for run in runs} == {"finished"}
    assert all(len(store.rounds(run.id)) == 3 for run in runs)
    assert most_threads == 1  # the one training thread, reused by every run
    assert not set(threading.enumerate()) - before
    assert rss[1] - rss[0] < 20 * 2**20  # runs 6-20 add less than 20 MB (none kept in memory)


# ----- tiny real runs: no worker_binary, no thread, memory flat -----

REAL_RUNS = 3  # the first builds the TFF processes (most of the cost); the others reuse them, as in the app


@pytest.fixture(scope="module")
def real_runs() -> dict:
    """Tiny real federated runs one after another in this process, sharing one BuildCache that keeps the last
    run's runtime warm (as the app does), which is then closed.

    One user (one client) and a batch size of 4096, larger than the client's 10 training sequences:
    FedAvg allows it (the client trains on one partial batch), so these also cover those two cases.
    """
    from fedlab.data.pipeline import prepare
    from fedlab.learning.engine import BuildCache, Experiment
    from fedlab.learning.runtime import running_worker_pids

    data = prepare(generate_city(users=12, days=120, seed=1), _tiny_data_config())
    cache = BuildCache(keep_runtime=True)
    found = {"records": [], "tests": [], "workers": [], "threads": []}
    for _ in range(REAL_RUNS):
        experiment = Experiment(
            ExperimentConfig(data=data.config, gru_units=8, embedding_dim=4, rounds=1, epochs=1, batch_size=4096),
            data=data,
            cache=cache,
        )
        try:
            experiment.prepare()
            found["records"].append(list(experiment.rounds()))
            found["tests"].append(experiment.test())
        finally:
            experiment.close()
        del experiment
        found["workers"].append(running_worker_pids())
        found["threads"].append(_python_threads())
    cache.close()
    found["workers_after_close"] = running_worker_pids()
    found["clients"] = len(data.client_ids)
    found["train_sequences"] = len(data.train)
    return found


def _tiny_data_config():
    from fedlab.config import DataConfig

    return DataConfig(top_users=1, n=9)


def _python_threads() -> set:
    return {thread for thread in threading.enumerate() if thread.is_alive()}


@pytest.mark.tff
def test_real_runs_with_one_user_and_a_batch_larger_than_its_data_train(real_runs):
    assert real_runs["clients"] == 1 and real_runs["train_sequences"] < 4096
    assert all(len(records) == 1 and records[0].clients == 1 for records in real_runs["records"])
    assert all(np.isfinite(records[0].train_loss) for records in real_runs["records"])
    assert all(report.examples > 0 for report in real_runs["tests"])


@pytest.mark.tff
def test_real_runs_share_one_warm_worker_binary_and_leave_none_once_closed(real_runs):
    (warm,) = real_runs["workers"][0]
    assert real_runs["workers"] == [[warm]] * REAL_RUNS
    assert real_runs["workers_after_close"] == []


@pytest.mark.tff
def test_real_runs_leave_no_thread(real_runs):
    """Threads alive after the last run that were not after run 1 (TFF's global context starts in run 1)."""
    threads = real_runs["threads"]
    assert not threads[-1] - threads[0], sorted(thread.name for thread in threads[-1] - threads[0])


# ----- uploads and typed paths ----------------------------------------------------------------------------


def test_an_upload_is_saved_under_a_name_from_its_content_never_its_own(db, files, uploads, tmp_path):
    hostile = "../../etc/passwd"
    data = files["good.txt"].read_bytes()
    at = app()
    upload(at, uploads, hostile, data)
    assert not errors(at.sidebar), errors(at)
    saved = list(uploads["folder"].iterdir())
    assert [p.name for p in saved] == [f"{hashlib.sha256(data).hexdigest()[:24]}.txt"]
    assert saved[0].read_bytes() == data
    assert not (uploads["folder"].parent.parent / "etc").exists()  # nothing at the path the upload chose
    assert not any(p.name == "passwd" for p in tmp_path.rglob("*"))
    assert "uploaded file .._.._etc_passwd" in in_use(at)
    at.switch_page("pages/data.py").run()
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["users"] == "5"


def test_a_typed_data_path_is_only_read_never_written(db, files, tmp_path, preparing):
    folder = tmp_path / "readonly-data"
    folder.mkdir()
    path = folder / "checkins.txt"
    path.write_bytes(files["good.txt"].read_bytes())
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before = (path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in folder.iterdir()))
    at = app()
    choose_path(at, path)
    assert not errors(at) and "checkins.txt" in in_use(at)
    at.switch_page("pages/data.py").run()
    assert_clean(at)
    at.switch_page("pages/train.py").run()
    at.number_input(key="train_rounds").set_value(1)
    at.number_input(key="train_n").set_value(9)
    at.button(key="train_btn_run").click().run()
    (run,) = wait_until_ended(db)
    assert run.status == "finished" and run.config.data.data == str(path.resolve())
    after = (path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in folder.iterdir()))
    assert after == before
