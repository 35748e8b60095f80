"""The fair queue: users in turn, each user's runs in order, the admin's pick first (fedlab.runs.schedule), and
the job manager starting runs in that order."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedlab.config import ExperimentConfig
from fedlab.runs.jobs import JobManager
from fedlab.runs.schedule import Waiting, expected_starts, fair_order
from fedlab.runs.store import RunStore
from tests.fakes import FakeExperiment, FakeFactory

WAIT = 10.0


def queue(*owners: str) -> list[Waiting]:
    """Runs queued in this order by these owners, named <owner><their k-th run>: a1, a2, b1, ..."""
    counts: dict[str, int] = {}
    out = []
    for seq, owner in enumerate(owners):
        counts[owner] = counts.get(owner, 0) + 1
        out.append(Waiting(f"{owner}{counts[owner]}", owner, seq))
    return out


def ids(order: list[Waiting]) -> list[str]:
    return [w.run_id for w in order]


def test_one_run_each_starts_in_the_order_pressed():
    assert ids(fair_order(queue("a", "b", "c"), {})) == ["a1", "b1", "c1"]
    assert fair_order([], {}) == []


def test_a_user_who_queued_several_waits_for_everyone_elses_first():
    assert ids(fair_order(queue("a", "a", "a", "b", "c", "b"), {})) == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_runs_already_started_count_so_a_newcomer_goes_before_a_second_turn():
    # a's first run is training (served once): b's first comes before a's second, though queued later.
    assert ids(fair_order(queue("a", "a", "b"), {"a": 1})) == ["b1", "a1", "a2"]
    assert ids(fair_order(queue("a", "b"), {"a": 2, "b": 1})) == ["b1", "a1"]


def test_the_admins_pick_goes_first_the_last_moved_first():
    waiting = queue("a", "b", "c", "d")
    waiting[2] = Waiting("c1", "c", 2, front=0)
    waiting[3] = Waiting("d1", "d", 3, front=1)
    assert ids(fair_order(waiting, {})) == ["d1", "c1", "a1", "b1"]


def test_thirty_users_one_run_each_then_a_second_round():
    owners = [f"u{i:02d}" for i in range(30)]
    order = ids(fair_order(queue(*owners, *owners), {}))
    assert order == [f"{o}1" for o in owners] + [f"{o}2" for o in owners]


def test_expected_starts_add_up_the_runs_ahead():
    assert expected_starts([10.0, 20.0, 5.0], running_left=7.0) == [7.0, 17.0, 37.0]
    assert expected_starts([10.0], running_left=-3.0) == [0.0]
    assert expected_starts([], running_left=4.0) == []


# ----- the job manager serves in that order -----


@pytest.fixture
def held() -> tuple[FakeFactory, threading.Event]:
    factory = FakeFactory(round_seconds=0.001)
    release = threading.Event()

    def before_round(experiment: FakeExperiment, current: int) -> None:
        if experiment is factory.made[0]:
            assert release.wait(WAIT)

    factory.before_round = before_round
    return factory, release


@pytest.fixture
def manager(tmp_path: Path, held) -> Iterator[JobManager]:
    jobs = JobManager(RunStore(tmp_path / "fedlab.db"), experiment_factory=held[0], queue_limit=3)
    yield jobs
    jobs.shutdown(timeout=WAIT)


def test_the_manager_starts_runs_round_robin_and_the_admin_can_move_one_to_the_front(manager, held):
    factory, release = held
    config = ExperimentConfig(rounds=1, gru_units=8)
    first = manager.submit(config, session_id="user:a", name="a1")  # trains, held
    names = {first: "a1"}
    for owner, name in [("a", "a2"), ("a", "a3"), ("b", "b1"), ("c", "c1"), ("b", "b2")]:
        names[manager.submit(config, session_id=f"user:{owner}", name=name)] = name
    late = manager.submit(config, session_id="user:d", name="d1")
    names[late] = "d1"
    assert [names[r] for r in manager.active()] == ["a1", "b1", "c1", "d1", "a2", "b2", "a3"]
    assert manager.position(late) == 3  # 0 = training, then places 1, 2, ...
    assert manager.move_to_front(late) and manager.position(late) == 1
    assert not manager.move_to_front(first)  # training already
    release.set()
    assert manager.wait_idle(WAIT)
    started = [made.config for made in factory.made]
    store = manager.store
    order = sorted(store.list_runs(), key=lambda run: run.started_at)
    assert [run.name for run in order] == ["a1", "d1", "b1", "c1", "a2", "b2", "a3"]
    assert len(started) == 7 and {run.status for run in order} == {"finished"}  # each ran once
