"""Attacks and defences on the pages, through AppTest with training faked: the Train page's run view and Compare
show the attack figures beside the stored clean reference (or queue it), and the poisoning lesson queues its runs
and writes its note from their numbers.
"""

from __future__ import annotations

import pytest

from fedlab.config import ExperimentConfig
from fedlab.results import attack_view
from fedlab.results.metrics_table import CLEAN_HONEST_ROW, DEFENCE_ROW, HONEST_ROW
from fedlab.runs.store import RunStore
from fedlab.teaching.lessons import lesson_by_key
from tests import fakes
from tests.helpers import assert_clean
from tests.pages_support import app, chart_specs, db, texts, values, wait_for_runs  # noqa: F401
from tests.test_attack_view import ATTACK, store_finished

# The fake's test clients are u1..u8 (tests.fakes); u1 and u2 attack. On u3..u8 the fake's clean model scores
# 30.8 hits of 63 targets: 48.9%.
MALICIOUS = {key: value for key, value in ATTACK.items() if key not in ("pair", "success")} | {
    "kind": "label-flip",
    "malicious_clients": ["u1", "u2"],
    "honest_accuracy": 0.3,
}
CLEAN_HONEST = 30.8 / 63


def attacked_config(**changes) -> ExperimentConfig:
    base = ExperimentConfig(rounds=3, gru_units=8)
    return base.replace(**{"malicious_clients": 0.25, "attack": "label-flip", "defense": "robust", **changes})


def clean_test() -> dict:
    return fakes.FakeExperiment(attacked_config()).test().to_dict()


def store_attacked(db, name="poisoned", **changes) -> str:
    test = {**clean_test(), "accuracy": 0.25, "attack": MALICIOUS}
    return store_finished(RunStore(db), attacked_config(**changes), test, name=name)


def store_clean(db) -> str:
    return store_finished(RunStore(db), attack_view.clean_config(attacked_config()), clean_test(), name="clean")


def chart(at, title_start: str) -> dict:
    return next(spec for spec in chart_specs(at) if spec["layout"]["title"]["text"].startswith(title_start))


def test_the_train_page_shows_an_attacked_run_beside_its_clean_reference(db):
    store_clean(db)
    run_id = store_attacked(db)
    at = app("train", run=run_id)
    accuracy = chart(at, "Test accuracy under attack")
    by_name = {trace["name"]: values(trace["y"]) for trace in accuracy["data"]}
    assert by_name["poisoned"] == [0.25, 0.3]
    assert by_name["poisoned · clean reference"] == pytest.approx([clean_test()["accuracy"], CLEAN_HONEST])
    defence = chart(at, "What the defence did per round")
    assert values(next(t for t in defence["data"] if t["name"] == "poisoned")["y"]) == [2, 2, 2]
    table = at.table[0].value
    assert table.loc[HONEST_ROW].iloc[0] == "30.0%" and table.loc[CLEAN_HONEST_ROW].iloc[0] == "48.9%"
    assert table.loc[DEFENCE_ROW].iloc[0] == "6 / 1 (robust)"
    assert "**Attack and defence.** 25% of the clients are malicious" in texts(at)
    assert "no clean reference is stored" not in texts(at)


def test_without_a_clean_reference_the_run_view_says_so_and_queues_it(db):
    run_id = store_attacked(db)
    at = app("train", run=run_id)
    assert "poisoned: no clean reference is stored" in texts(at)
    at.button(key=f"run_{run_id}_clean_{run_id}").click().run()
    assert_clean(at)
    runs = wait_for_runs(db, 2)
    queued = next(run for run in runs if run.id != run_id)
    assert attack_view.is_clean_reference(queued.config, attacked_config()) and queued.status == "finished"
    at.run()
    assert "no clean reference is stored" not in texts(at)
    names = {trace["name"] for trace in chart(at, "Test accuracy under attack")["data"]}
    assert names == {"poisoned", "poisoned · clean reference"}


def test_compare_shows_the_attack_figures_of_both_runs(db):
    store_clean(db)
    store_attacked(db, name="robust")
    store_attacked(db, name="undefended", defense="none")
    at = app("compare")
    at.radio(key="cmp_mode").set_value("history").run()
    assert_clean(at)
    names = {trace["name"] for trace in chart(at, "Test accuracy under attack")["data"]}
    assert names == {"robust", "robust · clean reference", "undefended", "undefended · clean reference"}
    defended = {trace["legendgroup"] for trace in chart(at, "What the defence did per round")["data"]}
    assert defended == {"robust"}
    table = at.table[0].value  # run A is the older of the two newest runs
    assert list(table.columns) == ["robust", "undefended"]
    assert table.loc[DEFENCE_ROW].tolist() == ["6 / 1 (robust)", "no defence"]


def test_the_poisoning_lesson_queues_its_runs_and_writes_its_note_from_their_numbers(db):
    at = app("lessons")
    at.selectbox(key="lesson_key").select("poisoning").run()
    assert "**Poisoning and a defence**: 0 of 3 runs ready" in texts(at)
    at.button(key="lesson_btn_start").click().run()
    assert_clean(at)
    runs = wait_for_runs(db, 3)
    lesson = lesson_by_key("poisoning")
    assert {run.config.replace(name="") for run in runs} == {r.config.replace(name="") for r in lesson.runs}
    at.run()
    assert_clean(at)
    # The fake measures no attack: the note says so rather than invent a result.
    assert any("have no attack results" in info.value for info in at.info)


def test_the_poisoning_lesson_note_and_charts_come_from_the_stored_runs(db):
    store = RunStore(db)
    clean, attacked, defended = (run.config for run in lesson_by_key("poisoning").runs)
    test = clean_test()
    store_finished(store, clean, test, name="clean")
    store_finished(store, attacked, {**test, "accuracy": 0.3, "attack": MALICIOUS}, name="attacked")
    guarded = {**MALICIOUS, "honest_accuracy": 0.42}
    store_finished(store, defended, {**test, "accuracy": 0.4, "attack": guarded}, name="defended")
    at = app("lessons")
    at.selectbox(key="lesson_key").select("poisoning").run()
    note = next(info.value for info in at.info if "Look at" in info.value)
    assert "30.0% against 48.9% for the clean run on the same clients (-18.9 points)" in note
    assert "got 42.0%" in note and "+12.0 against no defence" in note and "it left out 1 update in 3" in note
    names = {trace["name"] for trace in chart(at, "Test accuracy under attack")["data"]}
    assert {"attacked", "defended", "defended · clean reference"} <= names  # the stored runs' names
