"""One server, a whole class: each signed-in user changes only their own runs, from any browser session, and
queues a few at most; the admin password locks after wrong tries; the Runs table reads every run's rounds in
one query. Two AppTest instances are two browser sessions."""

from __future__ import annotations

import sqlite3
import time

import pytest

from fedlab.dashboard import history
from fedlab.runs import access
from fedlab.runs.store import RunStore
from tests import fakes
from tests.helpers import assert_clean
from tests.pages_support import WAIT, app, button_keys, db, store_run, texts, wait_for_round  # noqa: F401

PASSWORD = "let-me-in"


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("FEDLAB_SHARED", "1")
    monkeypatch.delenv("FEDLAB_MAX_QUEUED_PER_SESSION", raising=False)
    return monkeypatch


def wait_for_status(store: RunStore, run_id: str, status: str) -> None:
    deadline = time.monotonic() + WAIT
    while store.get_run(run_id).status != status and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.get_run(run_id).status == status


def sign_in(at, name: str, password: str = "apples") -> None:
    at.sidebar.text_input(key="signin_name").set_value(name)
    at.sidebar.text_input(key="signin_password").set_value(password)
    at.sidebar.button(key="signin_btn").click().run()
    assert_clean(at)


def unlock(at, password: str) -> None:
    at.text_input(key="admin_password_input").set_value(password)
    at.button(key="admin_btn_unlock").click().run()
    assert_clean(at)


def test_another_users_run_is_read_only_until_shared_mode_is_off_or_an_admin_unlocks(db, shared):
    owner = app()
    sign_in(owner, "ana")
    run_id = store_run(db, "A's run", session_id="user:ana")
    actions = {f"runs_btn_rename_{run_id}", f"runs_btn_pin_{run_id}", f"runs_btn_delete_{run_id}"}

    owner.switch_page("pages/runs.py").run()
    assert actions <= button_keys(owner)
    second_tab = app("runs")  # the owner rules follow the user, not the browser session
    sign_in(second_tab, "ana")
    assert actions <= button_keys(second_tab)

    other = app("runs")
    assert not actions & button_keys(other)
    assert "Read-only: started by ana" in texts(other)
    assert f"runs_btn_watch_{run_id}" in button_keys(other)  # looking is for everyone

    shared.setenv("FEDLAB_SHARED", "0")  # one user: today's behaviour
    other.run()
    other.text_input(key=f"runs_name_{run_id}").set_value("renamed by B")
    other.button(key=f"runs_btn_rename_{run_id}").click().run()
    assert RunStore(db).get_run(run_id).name == "renamed by B"

    shared.setenv("FEDLAB_SHARED", "1")
    other.secrets["admin_password"] = PASSWORD
    other.run()
    assert not actions & button_keys(other)
    unlock(other, "wrong")
    assert "Wrong password." in [error.value for error in other.error]
    assert not actions & button_keys(other)
    unlock(other, PASSWORD)
    other.button(key=f"runs_btn_delete_{run_id}").click().run()
    other.button(key=f"runs_btn_confirm_{run_id}").click().run()
    assert_clean(other)
    assert RunStore(db).get_run(run_id) is None


def test_stop_is_only_for_the_sessions_own_run_unless_shared_mode_is_off_or_unlocked(db, shared):
    shared.setattr(fakes, "ROUND_SECONDS", 0.05)
    owner = app("train")
    sign_in(owner, "ana")
    owner.number_input(key="train_rounds").set_value(400)
    owner.button(key="train_btn_run").click().run()
    store = RunStore(db)
    (run,) = store.list_runs()
    wait_for_round(store, run.id, 1)
    owner.run()
    assert f"stop_{run.id}" in button_keys(owner)

    other = app("train", run=run.id)
    assert f"stop_{run.id}" not in button_keys(other)
    assert "Read-only: started by ana" in texts(other)
    again = app("train", run=run.id)  # the owner in a new tab, or after a reload
    sign_in(again, "ana")
    assert f"stop_{run.id}" in button_keys(again)

    shared.setenv("FEDLAB_SHARED", "0")
    other.run()
    assert f"stop_{run.id}" in button_keys(other)

    shared.setenv("FEDLAB_SHARED", "1")
    other.secrets["admin_password"] = PASSWORD
    other.switch_page("pages/runs.py").run()
    assert f"stop_{run.id}" not in button_keys(other)
    unlock(other, PASSWORD)
    other.button(key=f"stop_{run.id}").click().run()
    wait_for_status(store, run.id, "stopped")


def test_demo_and_terminal_runs_are_read_only_in_shared_mode(db, shared):
    run_id = store_run(db, "Demo · central", session_id="")
    page = app("runs")
    assert f"runs_btn_delete_{run_id}" not in button_keys(page)
    assert "a demo run" in texts(page)


def test_a_fourth_queued_run_of_a_user_is_refused_in_one_line_whatever_the_sessions(db, shared):
    shared.setattr(fakes, "ROUND_SECONDS", 0.2)  # the first three stay queued or training meanwhile
    at = app("train")
    sign_in(at, "ana")
    at.number_input(key="train_rounds").set_value(400)
    for _ in range(4):
        at.button(key="train_btn_run").click().run()
    assert_clean(at)
    (message,) = [error.value for error in at.error]
    assert "at most 3 runs queued or training" in message and "\n" not in message
    assert len(RunStore(db).list_runs()) == 3
    # The same user in a new session (a reload, another tab) gains no room.
    again = app("train")
    sign_in(again, "ana")
    again.button(key="train_btn_run").click().run()
    assert "at most 3 runs queued or training" in [error.value for error in again.error][0]
    assert len(RunStore(db).list_runs()) == 3
    # Another user still has room.
    ben = app("train")
    sign_in(ben, "ben")
    ben.button(key="train_btn_run").click().run()
    runs = RunStore(db).list_runs()
    assert len(runs) == 4 and sorted({run.session_id for run in runs}) == ["user:ana", "user:ben"]


def test_on_a_shared_server_only_a_signed_in_user_queues_and_a_personal_machine_asks_nothing(db, shared):
    visitor = app("train")
    visitor.button(key="train_btn_run").click().run()
    (message,) = [error.value for error in visitor.error]
    assert message.startswith("Not queued: sign in first") and "\n" not in message
    assert RunStore(db).list_runs() == []
    assert "signin_btn" in button_keys(visitor)

    shared.setenv("FEDLAB_SHARED", "0")
    personal = app("train")
    assert not {"signin_btn", "signin_btn_out"} & button_keys(personal)
    personal.button(key="train_btn_run").click().run()
    (run,) = RunStore(db).list_runs()
    assert run.session_id == personal.session_state["session_id"]  # as before: the browser session's


def test_a_taken_name_needs_its_password(db, shared):
    first = app()
    sign_in(first, "ana")
    assert "Signed in as **ana**" in texts(first)
    other = app()
    sign_in(other, "Ana", "pears")
    assert [e.value for e in other.error][0].startswith("Wrong password for 'ana'")
    assert "signin_btn_out" not in button_keys(other)
    first.sidebar.button(key="signin_btn_out").click().run()
    assert "signin_btn" in button_keys(first)


def test_the_admin_password_locks_after_five_wrong_tries_per_user_and_address(db, shared):
    store_run(db, "a run to unlock on")
    page = app("runs")
    page.secrets["admin_password"] = PASSWORD
    page.run()
    for _ in range(5):
        unlock(page, "wrong")
        assert [e.value for e in page.error] == ["Wrong password."]
    unlock(page, PASSWORD)  # the right one, too late
    (message,) = [e.value for e in page.error]
    assert message.startswith("Too many wrong passwords: try again in 5 min") and "\n" not in message
    # Another session from the same address (loopback here) waits too.
    other = app("runs")
    other.secrets["admin_password"] = PASSWORD
    other.run()
    unlock(other, PASSWORD)
    assert [e.value for e in other.error][0].startswith("Too many wrong passwords")


def test_shared_mode_is_off_unless_fedlab_shared_is_1(monkeypatch: pytest.MonkeyPatch):
    from fedlab.errors import ConfigError

    monkeypatch.delenv("FEDLAB_SHARED", raising=False)
    assert access.shared_from_env() is False
    monkeypatch.setenv("FEDLAB_SHARED", "1")
    assert access.shared_from_env() is True
    monkeypatch.setenv("FEDLAB_SHARED", "yes")
    with pytest.raises(ConfigError, match="FEDLAB_SHARED"):
        access.shared_from_env()
    assert not access.password_matches("", None) and not access.password_matches("x", "")
    assert access.password_matches(PASSWORD, PASSWORD) and not access.password_matches("let-me-i", PASSWORD)


# ----- the Runs table: one query for every run's rounds -----


def test_runs_table_reads_the_rounds_of_any_number_of_runs_in_one_query(db, monkeypatch: pytest.MonkeyPatch):
    store = RunStore(db)
    statements: list[str] = []
    connect = RunStore._connect

    def traced(self) -> sqlite3.Connection:
        conn = connect(self)
        conn.set_trace_callback(statements.append)
        return conn

    counts = {}
    for total in (2, 12):
        while len(store.list_runs()) < total:
            store_run(db, f"run {len(store.list_runs())}", rounds=3, model=False)
        runs = store.list_runs()
        monkeypatch.setattr(RunStore, "_connect", traced)
        statements.clear()
        table = history.runs_table(store, runs)
        monkeypatch.setattr(RunStore, "_connect", connect)
        counts[total] = len(statements)
        assert table["rounds"].tolist() == [3] * total
        assert table["best val accuracy"].tolist() == pytest.approx([100 * (0.15 + 0.05 * 3)] * total)
    assert counts == {2: 1, 12: 1}


def test_on_a_shared_server_only_an_admin_may_read_a_file_by_its_path(db, shared):
    path_label = "A file on the server (path)"  # a path reads any file the app's user can read
    store_run(db, "a run to unlock on")
    visitor = app("runs")
    assert path_label not in visitor.sidebar.radio(key="source_kind").options

    visitor.secrets["admin_password"] = PASSWORD
    visitor.run()
    unlock(visitor, PASSWORD)
    assert path_label in visitor.sidebar.radio(key="source_kind").options

    shared.setenv("FEDLAB_SHARED", "0")
    assert path_label in app().sidebar.radio(key="source_kind").options


def test_queued_runs_show_their_place_and_expected_start_and_the_admin_moves_one_to_the_front(db, shared):
    shared.setattr(fakes, "ROUND_SECONDS", 0.05)
    ana = app("train")
    sign_in(ana, "ana")
    ana.number_input(key="train_rounds").set_value(400)
    ana.button(key="train_btn_run").click().run()  # trains
    ana.button(key="train_btn_run").click().run()  # waits
    ben = app("train")
    sign_in(ben, "ben")
    ben.button(key="train_btn_run").click().run()
    store = RunStore(db)
    ben_run = next(run for run in store.list_runs() if run.session_id == "user:ben")
    ana_second = next(run for run in store.list_runs() if run.session_id == "user:ana" and run.status == "queued")
    (line,) = [i.value for i in ben.info if i.value.startswith("Queued")]
    # Users take turns: ben's first run goes before ana's second, though queued after it.
    assert line.startswith("Queued (1 run(s) ahead of it): place 1 in the queue, expected to start in about")

    runs = app("runs")
    runs.secrets["admin_password"] = PASSWORD
    runs.run()
    (queue,) = [frame.value for frame in runs.dataframe if list(frame.value.columns)[:2] == ["place", "run"]]
    assert queue["user"].tolist() == ["ben", "ana"] and queue["place"].tolist() == [1, 2]
    assert queue["expected start"].str.startswith("in about").all()
    assert "queue_btn_front" not in button_keys(runs)  # for the admin only
    unlock(runs, PASSWORD)
    runs.selectbox(key="queue_pick").set_value(ana_second.id)
    runs.button(key="queue_btn_front").click().run()
    assert_clean(runs)
    from fedlab.dashboard import state

    assert state.job_manager().position(ana_second.id) == 1 and state.job_manager().position(ben_run.id) == 2
    for run in store.list_runs():
        state.job_manager().stop(run.id)


def test_the_teachers_view_shows_a_run_on_the_projector_and_clears_the_room_keeping_demos_and_lessons(db, shared):
    ana = store_run(db, "ana's run", session_id="user:ana", model=False)
    ben = store_run(db, "ben's run", session_id="user:ben", model=False)
    tab = store_run(db, "a browser session's run", session_id="f" * 32, model=False)
    kept = {store_run(db, "Demo · central", session_id="", model=False)}
    kept.add(store_run(db, "Lesson · non-IID", session_id="", model=False))  # prepared by `fedlab lessons`
    page = app("runs")
    page.secrets["admin_password"] = PASSWORD
    page.run()
    assert "teacher_btn_clear" not in button_keys(page)  # the admin's only
    unlock(page, PASSWORD)
    (table,) = [frame.value for frame in page.dataframe if "user" in frame.value.columns and "status" in frame.value]
    assert sorted(table["user"]) == ["a browser session", "ana", "ben"]

    page.selectbox(key="teacher_pick").set_value(ben)
    page.button(key="teacher_btn_show").click().run()
    assert_clean(page)
    assert page.session_state["presentation"] is True
    assert "ben's run" in [header.value for header in page.subheader]  # the Train page, presenting ben's run
    assert "train_btn_run" not in button_keys(page)  # the projector shows results only

    page.session_state["presentation"] = False
    page.switch_page("pages/runs.py").run()
    page.button(key="teacher_btn_clear").click().run()
    assert "Delete all 3 run(s) of 3 user(s)?" in texts(page)
    assert {run.id for run in RunStore(db).list_runs()} == kept | {ana, ben, tab}  # not before the confirmation
    page.button(key="teacher_btn_yes").click().run()
    assert_clean(page)
    assert {run.id for run in RunStore(db).list_runs()} == kept
