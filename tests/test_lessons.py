"""Lessons without the dashboard: the what-to-notice texts from hand-built numbers, finding stored runs with
equal settings, and `fedlab lessons --prepare` (training faked) skipping what is stored.
"""

from __future__ import annotations

import dataclasses

import pytest

from fedlab.errors import ConfigError
from fedlab.results.privacy import dp_epsilon
from fedlab.runs.store import RunStore
from fedlab.teaching import lesson_notes as notes
from fedlab.teaching.lesson_notes import RunNumbers
from fedlab.teaching.lesson_prepare import describe, prepare
from fedlab.teaching.lessons import (
    BASE,
    all_configs,
    lesson_by_key,
    lesson_numbers,
    lesson_state,
    lessons,
    what_to_notice,
)
from tests import fakes


def numbers(accuracy: float, **changes) -> RunNumbers:
    return RunNumbers(accuracy=accuracy, **changes)


# ----- the lessons themselves -----


def test_every_topic_has_a_lesson_with_a_reference_and_one_or_two_what_ifs_on_small_synthetic_runs():
    keys = [lesson.key for lesson in lessons()]
    for topic in (
        "non_iid",
        "drift",
        "participation",
        "privacy",
        "personalisation",
        "fairness",
        "fedprox",
        "compression",
        "secure_aggregation",
    ):
        assert topic in keys
    for lesson in lessons():
        assert 2 <= len(lesson.runs) <= 3 and lesson.runs[0].config == BASE, lesson.key
        for run in lesson.runs:
            assert run.config.data.data is None and run.config.data.top_users <= 10 and run.config.gru_units <= 32


def test_shared_runs_are_trained_once():
    configs = all_configs()
    assert sum(1 for c in configs if c.replace(name="") == BASE.replace(name="")) == 1
    assert len(configs) == len({repr(c.replace(name="")) for c in configs})


# ----- what to notice, from hand-built numbers -----


def test_non_iid_note_states_both_accuracies_and_the_gap_in_points():
    text = notes.non_iid({"IID clients": numbers(0.31), "non-IID clients": numbers(0.25)})
    assert "31.0%" in text and "25.0%" in text and "+6.0 points" in text and "cost accuracy" in text
    flipped = notes.non_iid({"IID clients": numbers(0.22), "non-IID clients": numbers(0.25)})
    assert "-3.0 points" in flipped and "non-IID run did better" in flipped


def test_a_gap_under_a_point_is_called_too_small_to_read():
    text = notes.non_iid({"IID clients": numbers(0.255), "non-IID clients": numbers(0.25)})
    assert "+0.5 points" in text and "too little to read anything into" in text


def test_participation_note_counts_the_clients_averaged_per_round():
    text = notes.participation(
        {
            "every client": numbers(0.30, mean_clients=10.0),
            "3 clients per round": numbers(0.26, mean_clients=3.0),
            "half drop out": numbers(0.28, mean_clients=5.5),
        }
    )
    assert "3.0 clients averaged per round against 10.0" in text and "5.5 clients" in text
    assert "3 clients per round lost the most" in text


def test_privacy_note_gives_each_runs_epsilon_from_the_accountant():
    lesson = lesson_by_key("privacy")
    configs = {run.label: run.config for run in lesson.runs}
    runs = {
        label: numbers(acc, config=configs[label], rounds=6, total_clients=10)
        for label, acc in (("no DP", 0.3), ("DP noise 0.5", 0.2), ("DP noise 2", 0.1))
    }
    text = notes.privacy(runs)
    budget = dp_epsilon(noise_multiplier=2.0, clients_per_round=None, total_clients=10, rounds=6)
    assert f"ε = {budget.epsilon:.1f}" in text and "-20.0 points" in text and "smaller ε with accuracy" in text


def test_personalisation_note_compares_shared_and_fine_tuned_accuracy():
    text = notes.personalisation(
        {"shared model only": numbers(0.25), "fine-tuned 3 epochs": numbers(0.25, personalized_accuracy=0.32)}
    )
    assert "scored 25.0%" in text and "32.0%" in text and "+7.0 points" in text
    assert "no fine-tuned test results" in notes.personalisation(
        {"shared model only": numbers(0.25), "fine-tuned 3 epochs": numbers(0.25)}
    )


def test_fairness_note_reports_each_runs_client_spread():
    wide = {f"u{i}": {"accuracy": 0.1 * i, "examples": 5, "checkins": 10 * i} for i in range(1, 6)}
    narrow = {f"u{i}": {"accuracy": 0.28 + 0.01 * i, "examples": 5, "checkins": 10 * i} for i in range(1, 6)}
    text = notes.fairness({"federated": numbers(0.3, per_client=wide), "centralized": numbers(0.3, per_client=narrow)})
    assert "from 10.0% to 50.0%, 2 of 5 below the overall 30.0%" in text
    assert "rank correlation with check-ins +1.00" in text and "spread is wider" in text


def test_compression_note_gives_megabytes_and_their_share():
    text = notes.compression(
        {
            "32-bit updates": numbers(0.3, mb_up=4.0),
            "8-bit updates": numbers(0.29, mb_up=1.0, mb_saved=3.0),
            "2-bit updates": numbers(0.2, mb_up=0.25, mb_saved=3.75),
        }
    )
    assert "4.000 MB up" in text and "1.000 MB up (25% of it), 3.000 MB saved" in text and "(6% of it)" in text


def test_secure_aggregation_note_gives_the_accuracy_and_the_extra_bytes_and_says_no_cryptography_ran():
    text = notes.secure_aggregation({"plain sum": numbers(0.3, mb_up=4.0), "secure sum": numbers(0.299, mb_up=4.0017)})
    assert "-0.1 points" in text and "4.002 MB up against 4.000 MB (1,700 bytes more" in text
    assert "does not run" in text


def test_the_note_waits_for_missing_runs_and_names_them():
    lesson = lesson_by_key("non_iid")
    text = what_to_notice(lesson, {"non-IID clients": numbers(0.25), "IID clients": None})
    assert text.startswith("Still training") and "IID clients" in text and "%" not in text


# ----- stored runs -----


def finished(store: RunStore, config, *, accuracy: float, name: str = "") -> str:
    fake = fakes.FakeExperiment(config)
    run_id = store.create_run(config, name=name)
    store.set_status(run_id, "running")
    for record in fake.rounds():
        store.add_round(run_id, record)
    store.finish(
        run_id,
        status="finished",
        test=dataclasses.replace(fake.test(), accuracy=accuracy),
        baselines=fake.baselines(),
        timing={},
        model_path=None,
        extra=fake.summary(),
    )
    return run_id


def test_a_finished_run_with_equal_settings_is_found_whatever_its_name(tmp_path):
    store = RunStore(tmp_path / "fedlab.db")
    run_id = finished(store, BASE.replace(name="someone's run"), accuracy=0.3)
    finished(store, BASE.replace(seed=1), accuracy=0.2)  # other settings: not a match
    failed = store.create_run(BASE)
    store.finish(failed, status="failed", test=None, baselines=None, timing={}, model_path=None)
    assert store.matching_run(BASE).id == run_id
    state = lesson_state(store, lesson_by_key("non_iid"))
    assert state["non-IID clients"].id == run_id and state["IID clients"] is None


def test_lesson_numbers_come_from_the_stored_runs(tmp_path):
    store = RunStore(tmp_path / "fedlab.db")
    lesson = lesson_by_key("non_iid")
    finished(store, lesson.runs[0].config, accuracy=0.25)
    finished(store, lesson.runs[1].config, accuracy=0.31)
    found = lesson_numbers(store, lesson)
    assert found["IID clients"].accuracy == 0.31 and found["IID clients"].rounds == BASE.rounds
    assert "+6.0 points" in what_to_notice(lesson, found)


@pytest.mark.parametrize("stored", [0, 1])
def test_prepare_trains_each_missing_run_once_with_a_line_each_and_then_skips_them(tmp_path, stored):
    store = RunStore(tmp_path / "fedlab.db")
    if stored:
        finished(store, BASE, accuracy=0.3, name="stored before")
    factory = fakes.FakeFactory(round_seconds=0.0)
    lines: list[str] = []
    counts = prepare(store, experiment_factory=factory, say=lines.append)
    total = len(all_configs())
    assert counts == {"trained": total - stored, "skipped": stored, "failed": 0}
    assert len(factory.made) == total - stored and all(e.closed for e in factory.made)
    assert len(lines) == total + 1 and lines[0].startswith(f"[1/{total}]")
    again: list[str] = []
    assert prepare(store, experiment_factory=factory, say=again.append)["skipped"] == total
    assert all("already stored" in line for line in again[:-1])
    assert all("of 3 runs ready" not in line or "3 of 3" in line for line in describe(store))


def test_prepare_in_two_processes_trains_each_missing_run_once_and_records_it(tmp_path):
    store = RunStore(tmp_path / "fedlab.db")
    finished(store, BASE, accuracy=0.3, name="stored before")
    lines: list[str] = []
    counts = prepare(store, experiment_factory="tests.fakes:FakeFactory", jobs=2, say=lines.append)
    total = len(all_configs())
    assert counts == {"trained": total - 1, "skipped": 1, "failed": 0}
    assert len(lines) == total + 1 and "2 processes side by side" in lines[-1]
    # Every lesson run is stored finished, each trained once: no two processes took the same run.
    assert all(store.matching_run(config) is not None for config in all_configs())
    assert len(store.list_runs()) == total and all(run.status == "finished" for run in store.list_runs())
    assert sum("finished in" in line for line in lines) == total - 1


def test_runs_of_one_model_shape_share_a_process_and_the_shares_stay_even():
    from fedlab.teaching.lesson_prepare import share_runs

    configs, todo = all_configs(), list(range(1, len(all_configs()) + 1))
    shares = share_runs(todo, 2)
    assert sorted(n for share in shares for n in share) == todo
    where = {n: i for i, share in enumerate(shares) for n in share}
    shape = {n: configs[n - 1].model_shape_key for n in todo}
    assert all(where[a] == where[b] for a in todo for b in todo if shape[a] == shape[b])
    assert abs(len(shares[0]) - len(shares[1])) <= 1
    assert sorted(share_runs([3, 1], 4)) == [[], [], [1], [3]]  # never more than one run a share needs


def test_prepare_in_several_processes_needs_the_factorys_import_path():
    with pytest.raises(ConfigError, match="needs the factory's import path"):
        prepare(RunStore(":memory:"), experiment_factory=fakes.FakeFactory(), jobs=2)


def test_features_note_sets_each_added_feature_against_its_permutation_importance():
    from fedlab.results.importance import importance_summary

    base_features = ("cat_id", "clock_sin")

    def report(features, cost):  # 2 clients of 10 targets; shuffling feature i loses cost[i] hits on each
        base = [8, 6]
        shuffled = [[[8 - c, 6 - c]] for c in cost]
        return {
            "importance": importance_summary(
                base_hits=base, shuffled_hits=shuffled, examples=[10, 10], features=features
            )
        }

    runs = {
        notes.FEATURES_BASE: numbers(0.30, test=report(base_features, [2, 0])),
        notes.WITH_USER: numbers(0.34, test=report((*base_features, "user_id"), [2, 0, 0])),
        notes.WITH_VENUE: numbers(0.305, test=report((*base_features, "venue_id"), [2, 0, 1])),
    }
    text = notes.features(runs)
    assert "with user_id reached test acc@1 34.0% against 30.0% (category and time): +4.0 points" in text
    assert "shuffling cat_id within each client costs the most: +20.0 points" in text and "helps 100%" in text
    # user_id is one value per client: its importance is 0 by construction, whatever adding it did.
    assert "Shuffling user_id costs exactly nothing" in text and "moved acc@1 +4.0 points" in text
    # venue_id: the kept model leans on it (10 points) while adding it gained half a point: they disagree.
    assert (
        "Shuffling venue_id costs +10.0 points of the run that has it, against +0.5 for adding it: they disagree"
        in text
    )


def test_the_features_lesson_is_an_add_one_sweep_from_the_lesson_base():
    lesson = lesson_by_key("features")
    assert [run.config.features for run in lesson.runs[1:]] == [
        (*BASE.features, "user_id"),
        (*BASE.features, "venue_id"),
    ]
    assert all(run.config.replace(features=BASE.features, name="") == BASE.replace(name="") for run in lesson.runs)


def test_a_killed_prepare_leaves_no_process_training_behind(tmp_path):
    # Killed outright (no Ctrl-C, no clean-up in it), `lessons --prepare` must not leave its trainers running on.
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil

    store = tmp_path / "fedlab.db"
    script = (
        "from fedlab.runs.store import RunStore; from fedlab.teaching.lesson_prepare import prepare; "
        f"prepare(RunStore({str(store)!r}), experiment_factory='tests.fakes:SlowFactory', jobs=2)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent)
    try:
        deadline = time.monotonic() + 120
        while not (store.exists() and any(run.status == "running" for run in RunStore(store).list_runs())):
            assert parent.poll() is None and time.monotonic() < deadline, "no lesson run started training"
            time.sleep(0.2)
        children = psutil.Process(parent.pid).children(recursive=True)
        assert len(children) >= 2  # the two trainers (and multiprocessing's resource tracker)
    finally:
        parent.kill()
        parent.wait()
    _, alive = psutil.wait_procs(children, timeout=15)
    left = [process.cmdline() for process in alive]
    for process in alive:  # a failure leaves nothing running either
        process.kill()
    assert not left, left
