"""A new user's first minutes, through AppTest with training faked: the demo runs queued at start (again after
an interrupted or failed one), what Home says about them in each state, the default model pre-built once they
are done, and Compare opening on two finished runs.
"""

from __future__ import annotations

import importlib
import os
import time

import pytest

from fedlab.config import ALL_FEATURES
from fedlab.errors import FedlabError
from fedlab.runs.store import RunStore
from fedlab.teaching.demo import demo_runs
from tests import fakes
from tests.helpers import assert_clean
from tests.pages_support import WAIT, app, db, store_run, texts, wait_for_runs  # noqa: F401

CENTRAL, BIGGEST = "Demo · central", "Demo · biggest"
ENDED = ("finished", "stopped", "failed", "interrupted")


class FailingExperiment(fakes.FakeExperiment):
    def prepare(self) -> None:
        raise FedlabError("no check-ins left")


class PrebuildingExperiment(fakes.FakeExperiment):
    """The fake engine, with a pre-build that records what it was asked to build and which runs had ended."""

    calls: list = []
    store_path = None

    @staticmethod
    def prebuild(config, cache) -> None:
        statuses = {run.name: run.status for run in RunStore(PrebuildingExperiment.store_path).list_runs()}
        PrebuildingExperiment.calls.append((config, cache, statuses))


class FakeSharedCache:
    def get(self):
        return "the app's build cache"


@pytest.fixture
def demos_on(monkeypatch):
    monkeypatch.setenv("FEDLAB_DEMO_RUNS", "1")
    monkeypatch.setenv("FEDLAB_PREBUILD", "0")  # tests of the pre-build switch it on


@pytest.fixture
def slow_rounds(monkeypatch):
    monkeypatch.setattr(fakes, "ROUND_SECONDS", 0.2)  # still training when Home first draws


def add_demo_run(db, name: str, status: str, *, error: str | None = None) -> str:
    store = RunStore(db)
    run_id = store.create_run(dict(demo_runs())[name], name=name)
    store.set_status(run_id, status, error=error)
    return run_id


@pytest.fixture
def experiment(db, monkeypatch):
    """Sets FEDLAB_EXPERIMENT; afterwards shuts down the job manager made for it (the db fixture ends the
    default one)."""
    yield lambda spec: monkeypatch.setenv("FEDLAB_EXPERIMENT", spec)
    shut_down(db)


def shut_down(db) -> None:
    """Ends this 'process' of the app: its job manager and cached resources, as a stopped app would."""
    import streamlit as st

    from fedlab.dashboard import state

    state._start_jobs(str(db.resolve()), os.environ["FEDLAB_EXPERIMENT"]).shutdown(timeout=WAIT)
    st.cache_resource.clear()


def warnings(at) -> list[str]:
    return [w.value for w in at.warning]


# ----- which demo runs a start queues -----


@pytest.mark.parametrize(
    ("status", "queued"), [("interrupted", True), ("failed", True), ("stopped", False), ("finished", False)]
)
def test_a_start_queues_a_demo_run_again_only_after_it_was_interrupted_or_failed(tmp_path, status, queued):
    from fedlab.dashboard.state import demo_runs_to_queue

    db = tmp_path / "fedlab.db"
    store_run(db, "my own run")
    add_demo_run(db, CENTRAL, status)
    store = RunStore(db)
    from fedlab.teaching.demo import missing_demo_runs

    names = [name for name, _ in demo_runs_to_queue(store.list_runs(), missing_demo_runs(store))]
    assert names == ([CENTRAL] if queued else [])  # the biggest demo was deleted: it stays deleted


def test_an_empty_store_queues_every_demo_run(tmp_path):
    from fedlab.dashboard.state import demo_runs_to_queue
    from fedlab.teaching.demo import missing_demo_runs

    store = RunStore(tmp_path / "fedlab.db")
    assert demo_runs_to_queue([], missing_demo_runs(store)) == demo_runs()


def test_the_newest_run_of_a_name_decides(tmp_path):
    from fedlab.dashboard.state import demo_runs_to_queue
    from fedlab.teaching.demo import missing_demo_runs

    db = tmp_path / "fedlab.db"
    add_demo_run(db, CENTRAL, "interrupted")
    add_demo_run(db, CENTRAL, "stopped")  # stopped by the user after it was queued again
    store = RunStore(db)
    assert demo_runs_to_queue(store.list_runs(), missing_demo_runs(store)) == []


# ----- Home, with the demo runs in each state -----


def test_interrupted_demo_runs_are_queued_again_and_home_says_so(db, demos_on, slow_rounds, monkeypatch):
    for name in (CENTRAL, BIGGEST):
        add_demo_run(db, name, "interrupted")  # the app stopped while it prepared them
    at = app()
    assert any("Demo runs are being prepared" in i.value for i in at.info)
    said = texts(at)
    assert f"{CENTRAL} was interrupted: the app stopped before it finished; it is queued again." in said
    assert "have finished" not in said
    assert len(at.dataframe[0].value) == 2  # the newest run of each name
    monkeypatch.setattr(fakes, "ROUND_SECONDS", 0.0)
    runs = wait_for_runs(db, 4, statuses=ENDED)
    assert sorted((run.name, run.status) for run in runs) == sorted(
        [(CENTRAL, "finished"), (BIGGEST, "finished"), (CENTRAL, "interrupted"), (BIGGEST, "interrupted")]
    )
    at.run()
    assert_clean(at)
    assert "The demo runs have finished" in texts(at) and not warnings(at)
    assert set(at.dataframe[0].value["status"]) == {"finished"}
    at.switch_page("pages/runs.py").run()
    assert len(RunStore(db).list_runs()) == 4  # queued again once per start, not on every page


def test_a_failed_demo_run_shows_its_error_and_the_next_start_queues_it_again(db, demos_on, experiment):
    experiment("tests.test_startup:FailingExperiment")
    app()
    wait_for_runs(db, 2, statuses=ENDED)
    at = app()
    assert_clean(at)
    said = warnings(at)
    assert f"{CENTRAL} failed: no check-ins left. It is queued again when the app next starts." in said
    assert f"{BIGGEST} failed: no check-ins left. It is queued again when the app next starts." in said
    assert "have finished" not in texts(at)
    assert len(RunStore(db).list_runs()) == 2  # not again in the same process

    shut_down(db)  # the app stops; it starts again with a working engine
    experiment("tests.fakes:FakeExperiment")
    app()
    runs = wait_for_runs(db, 4, statuses=ENDED)
    assert sorted(run.status for run in runs) == ["failed", "failed", "finished", "finished"]
    at = app()
    assert "The demo runs have finished" in texts(at) and not warnings(at)


def test_home_says_a_stopped_demo_run_stays_stopped(db, demos_on):
    add_demo_run(db, CENTRAL, "stopped")
    store_run(db, BIGGEST, features=ALL_FEATURES)
    at = app()
    said = texts(at)
    assert f"{CENTRAL} was stopped before it finished" in said
    assert f"{BIGGEST} finished" in said and "being prepared" not in said
    assert len(RunStore(db).list_runs()) == 2  # nothing queued


def test_with_demo_runs_switched_off_home_says_how_to_train_an_interrupted_one(db):
    add_demo_run(db, CENTRAL, "interrupted")
    at = app()
    (said,) = warnings(at)
    assert said.startswith(f"{CENTRAL} was interrupted") and "FEDLAB_DEMO_RUNS=0" in said
    assert len(RunStore(db).list_runs()) == 1


# ----- the default model, pre-built after the demo runs -----


def test_the_default_model_is_pre_built_once_after_the_demo_runs(db, demos_on, experiment, monkeypatch):
    from fedlab.dashboard import state

    monkeypatch.setenv("FEDLAB_PREBUILD", "1")
    experiment("tests.test_startup:PrebuildingExperiment")
    # The class the app imports by FEDLAB_EXPERIMENT's name (pytest may have imported this file by another).
    fake = importlib.import_module("tests.test_startup").PrebuildingExperiment
    monkeypatch.setattr(fake, "calls", [])
    monkeypatch.setattr(fake, "store_path", db)
    monkeypatch.setattr(state, "build_cache", FakeSharedCache)  # the real one would import TensorFlow
    at = app()
    wait_for_runs(db, 2)
    deadline = time.monotonic() + WAIT
    while not fake.calls and time.monotonic() < deadline:
        time.sleep(0.05)
    ((config, cache, statuses),) = fake.calls
    assert statuses == {CENTRAL: "finished", BIGGEST: "finished"}
    assert cache == "the app's build cache"

    at.switch_page("pages/train.py").run()
    at.button(key="train_btn_run").click().run()  # Run with the Train page's defaults
    assert_clean(at)
    mine = next(run for run in wait_for_runs(db, 3) if run.name not in (CENTRAL, BIGGEST))
    assert config == mine.config  # the model a first default run needs is the one pre-built
    at.switch_page("pages/home.py").run()
    assert len(fake.calls) == 1  # once per start


# ----- Compare opens on two finished runs -----


def test_compare_opens_on_the_two_demo_runs(db):
    central = store_run(db, CENTRAL)
    biggest = store_run(db, BIGGEST, features=ALL_FEATURES)
    store_run(db, "my newer run")
    at = app("compare")
    assert at.radio(key="cmp_mode").value == "history"
    assert (at.selectbox(key="cmp_hist_a").value, at.selectbox(key="cmp_hist_b").value) == (central, biggest)
    assert list(at.table[0].value.columns) == [CENTRAL, BIGGEST]


def test_compare_without_demo_runs_opens_on_the_two_newest(db):
    store_run(db, "oldest")
    older = store_run(db, "older", features=ALL_FEATURES)
    newest = store_run(db, "newest")
    at = app("compare")
    assert at.radio(key="cmp_mode").value == "history"
    assert (at.selectbox(key="cmp_hist_a").value, at.selectbox(key="cmp_hist_b").value) == (older, newest)


def test_compare_keeps_new_runs_when_there_is_one_finished_run_or_the_user_chose(db):
    store_run(db, "only one")
    at = app("compare")
    assert at.radio(key="cmp_mode").value == "new"
    store_run(db, "a second one")
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/compare.py").run()
    assert at.radio(key="cmp_mode").value == "history"  # nothing chosen yet: the pair shows once it exists
    at.radio(key="cmp_mode").set_value("new").run()
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/compare.py").run()
    assert_clean(at)
    assert at.radio(key="cmp_mode").value == "new"  # the user's choice stays
