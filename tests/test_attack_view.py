"""What an attack or a defence did, beside the clean reference, on hand-built runs: finding the reference in the
store, its figures, the charts, the metrics table rows, the HTML report, TensorBoard, the explain panel and the
poisoning lesson's note.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from fedlab.config import ExperimentConfig
from fedlab.records import RoundRecord
from fedlab.records import TestReport as Report  # not a pytest test class
from fedlab.results import attack_view, charts
from fedlab.results.attack_view import ALL, HONEST, SUCCESS
from fedlab.results.explain import round_explanation
from fedlab.results.metrics_table import (
    CLEAN_HONEST_ROW,
    CLEAN_ROW,
    CLEAN_SUCCESS_ROW,
    DEFENCE_ROW,
    HONEST_ROW,
    MALICIOUS_ROW,
    NOT_STORED,
    SUCCESS_ROW,
    metrics_table,
)
from fedlab.results.report import store_report_html
from fedlab.runs.store import RunStore
from fedlab.teaching import lesson_notes
from fedlab.teaching.lesson_notes import RunNumbers
from fedlab.teaching.lessons import lesson_by_key, lesson_numbers, what_to_notice

CLASSES = ["Bar", "Cafe", "Home"]
BASE = ExperimentConfig(rounds=3, gru_units=8, seed=3)
ATTACKED = BASE.replace(malicious_clients=0.5, attack="targeted", attack_classes="Bar:Cafe", defense="robust")
# c1 and c4 attack. Clean model on the honest c2, c3: (0.4·10 + 0.6·20) / 30 = 53.3%; it says Cafe for 2 of 10 Bars.
CLEAN_TEST = {
    "accuracy": 0.45,
    "per_client": {
        "c1": {"accuracy": 0.5, "examples": 10},
        "c2": {"accuracy": 0.4, "examples": 10},
        "c3": {"accuracy": 0.6, "examples": 20},
        "c4": {"accuracy": 0.2, "examples": 10},
    },
    "confusion": [[6, 2, 2], [1, 8, 1], [0, 1, 9]],
    "class_names": CLASSES,
}
ATTACK = {
    "kind": "targeted",
    "malicious_clients": ["c1", "c4"],
    "honest_accuracy": 0.4,
    "honest_examples": 30,
    "pair": ["Bar", "Cafe"],
    "success": 0.5,
}
ATTACKED_TEST = {**CLEAN_TEST, "accuracy": 0.3, "attack": ATTACK}


def report(test: dict) -> Report:
    return Report(**{"top5_accuracy": 0.8, "mrr": 0.5, "loss": 1.5, "examples": 50, **test})


def store_finished(store: RunStore, config: ExperimentConfig, test: dict, *, name: str, status="finished") -> str:
    """A run written straight into the store, 3 rounds; a defended one clipped 2 and zeroed round-1 updates."""
    run_id = store.create_run(config, name=name)
    store.set_status(run_id, "running")
    defended = config.defense != "none"
    for number in (1, 2, 3):
        store.add_round(
            run_id,
            RoundRecord(
                round=number,
                train_loss=1.0,
                train_accuracy=0.3,
                val_loss=1.1,
                val_accuracy=0.3,
                clients=4,
                seconds=0.1,
                clipped=2 if defended else 0,
                zeroed=int(defended and number == 1),
            ),
        )
    store.finish(run_id, status=status, test=report(test), baselines={}, timing={}, model_path=None)
    return run_id


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "fedlab.db")


# ----- the clean reference and its figures -----


def test_the_clean_reference_is_the_finished_run_with_equal_settings_but_no_attack_or_defence(store):
    store_finished(store, BASE.replace(seed=4), CLEAN_TEST, name="another seed")
    store_finished(store, BASE.replace(defense="clip"), CLEAN_TEST, name="defended, no attack")
    store_finished(store, BASE, CLEAN_TEST, name="failed clean", status="failed")
    # An attack's or defence's own settings do nothing in a clean run, so a different clipping norm still matches.
    clean = store_finished(store, BASE.replace(clip_norm=2.0), CLEAN_TEST, name="clean")
    store_finished(store, ATTACKED, ATTACKED_TEST, name="attacked")
    assert attack_view.clean_reference(store, ATTACKED).id == clean
    assert attack_view.clean_reference(store, ATTACKED.replace(seed=5)) is None
    config = attack_view.clean_config(ATTACKED, name="x")
    assert config.malicious_clients == 0 and config.defense == "none" and config.seed == ATTACKED.seed
    assert config.name == "x" and attack_view.is_clean_reference(config, ATTACKED)
    assert not attack_view.attacked_or_defended(BASE) and attack_view.attacked_or_defended(BASE.replace(defense="clip"))


def test_figures_put_the_run_beside_the_clean_model_on_the_same_honest_clients_and_class_pair():
    figures = attack_view.attack_figures(ATTACKED_TEST, CLEAN_TEST)
    assert list(figures.index) == [ALL, HONEST, SUCCESS]
    assert figures.loc[ALL, ["run", "clean"]].tolist() == [0.3, 0.45]
    assert figures.loc[HONEST, "run"] == 0.4 and figures.loc[HONEST, "clean"] == pytest.approx(16 / 30)
    assert figures.loc[SUCCESS, "label"] == "true Bar predicted Cafe"
    assert figures.loc[SUCCESS, ["run", "clean"]].tolist() == [0.5, 0.2]


def test_without_a_clean_reference_or_an_attack_the_figures_say_so():
    alone = attack_view.attack_figures(ATTACKED_TEST, None)
    assert alone["clean"].isna().all() and alone.loc[HONEST, "run"] == 0.4
    defended_only = attack_view.attack_figures({"accuracy": 0.35}, CLEAN_TEST)
    assert list(defended_only.index) == [ALL] and defended_only.loc[ALL, "clean"] == 0.45
    other_grouping = attack_view.attack_figures(ATTACKED_TEST, {**CLEAN_TEST, "class_names": ["A", "B", "C"]})
    assert math.isnan(other_grouping.loc[SUCCESS, "clean"])


# ----- charts -----


def test_the_attack_charts_draw_the_run_and_its_clean_reference():
    figures = {"attacked": attack_view.attack_figures(ATTACKED_TEST, CLEAN_TEST)}
    accuracy = charts.attack_accuracy(figures)
    assert [trace.name for trace in accuracy.data] == ["attacked", "attacked · clean reference"]
    assert list(accuracy.data[0].x) == ["test acc@1, all clients", "test acc@1, honest clients"]
    assert list(accuracy.data[0].y) == [0.3, 0.4] and accuracy.data[1].y[1] == pytest.approx(16 / 30)
    assert accuracy.data[1].opacity < 1 and accuracy.data[0].marker.color == accuracy.data[1].marker.color
    success = charts.targeted_success(figures)
    assert list(success.data[0].x) == ["true Bar predicted Cafe"] and list(success.data[1].y) == [0.2]
    # No clean reference stored: its bars are left out instead of drawn at 0.
    alone = charts.attack_accuracy({"attacked": attack_view.attack_figures(ATTACKED_TEST, None)})
    assert [trace.name for trace in alone.data] == ["attacked"]


def test_the_defence_chart_counts_clipped_and_zeroed_updates_per_round():
    rounds = pd.DataFrame({"round": [1, 2], "clients": [4, 4], "clipped": [3, 1], "zeroed": [1, 0]})
    fig = charts.defence_counts({"robust": rounds})
    by_name = {trace.name: trace for trace in fig.data}
    assert list(by_name["robust"].y) == [3, 1] and list(by_name["robust · updates zeroed"].y) == [1, 0]
    assert by_name["robust · updates zeroed"].line.dash == "dot"
    assert list(by_name["robust · updates averaged"].y) == [4, 4]
    assert fig.layout.yaxis.title.text == "client updates (count)"


# ----- the metrics table -----


def test_the_metrics_table_adds_the_attack_defence_and_clean_reference_rows():
    rounds = pd.DataFrame({"val_accuracy": [0.3, 0.3], "clipped": [2, 2], "zeroed": [1, 0]})
    table = metrics_table(
        {"attacked": ATTACKED_TEST, "clean": CLEAN_TEST},
        {},
        {"attacked": rounds},
        configs={"attacked": ATTACKED, "clean": BASE},
        clean={"attacked": CLEAN_TEST},
    )
    attacked, clean = table["attacked"], table["clean"]
    assert attacked[MALICIOUS_ROW] == "2 (targeted)" and clean[MALICIOUS_ROW] == "none"
    assert attacked[HONEST_ROW] == "40.0%" and attacked[SUCCESS_ROW] == "50.0% (Bar → Cafe)"
    assert attacked[DEFENCE_ROW] == "4 / 1 (robust)" and clean[DEFENCE_ROW] == "no defence"
    assert attacked[CLEAN_ROW] == "45.0%" and attacked[CLEAN_HONEST_ROW] == "53.3%"
    assert attacked[CLEAN_SUCCESS_ROW] == "20.0%" and clean[CLEAN_ROW] == "—"
    missing = metrics_table({"attacked": ATTACKED_TEST}, {}, {}, configs={"attacked": ATTACKED})["attacked"]
    assert missing[CLEAN_ROW] == NOT_STORED and missing[CLEAN_HONEST_ROW] == NOT_STORED
    assert MALICIOUS_ROW not in metrics_table({"clean": CLEAN_TEST}, {}, {}, configs={"clean": BASE}).index


# ----- the HTML report -----


def test_the_report_shows_the_attack_beside_its_stored_clean_reference(store):
    attacked = store_finished(store, ATTACKED, ATTACKED_TEST, name="attacked")
    missing = store_report_html(store, [attacked])
    assert "No clean reference is stored for attacked" in section(missing, "attack")
    assert f'<th>{CLEAN_ROW}</th><td class="num">{NOT_STORED}</td>' in section(missing, "metrics")
    clean = store_finished(store, BASE, CLEAN_TEST, name="clean run")
    page = store_report_html(store, [attacked])
    attack = section(page, "attack")
    assert f"Clean reference of attacked: clean run ({clean})" in attack and "No clean reference" not in attack
    assert len(re.findall(r'class="plotly-graph-div"', attack)) == 3  # accuracy, targeted success, defence
    metrics = section(page, "metrics")
    for row, value in ((HONEST_ROW, "40.0%"), (CLEAN_HONEST_ROW, "53.3%"), (DEFENCE_ROW, "6 / 1 (robust)")):
        assert f'<th>{row}</th><td class="num">{value}</td>' in metrics
    assert 'id="attack"' not in store_report_html(store, [clean])


def section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, flags=re.S)
    assert match, f"no section {anchor!r}"
    return match.group(1)


# ----- TensorBoard and the explain panel -----


def test_tensorboard_logs_clipped_and_zeroed_from_the_round_a_defence_first_acts(tmp_path: Path):
    from fedlab.runs.tblog import TensorBoardLog
    from tests.test_tblog import make_round, read_scalars

    counts = ((0, 0), (3, 1), (2, 0))
    with TensorBoardLog(tmp_path / "defended") as log:
        for number, (clipped, zeroed) in enumerate(counts, 1):
            log.write(RoundRecord(**{**make_round(number).to_dict(), "clipped": clipped, "zeroed": zeroed}))
    scalars = read_scalars(tmp_path / "defended" / "train")
    assert scalars["defense/clipped"] == [(1, 0.0), (2, 3.0), (3, 2.0)]
    assert scalars["defense/zeroed"] == [(1, 0.0), (2, 1.0), (3, 0.0)]
    with TensorBoardLog(tmp_path / "plain") as log:
        log.write(make_round(1))
    assert "defense/clipped" not in read_scalars(tmp_path / "plain" / "train")


def test_the_explain_panel_describes_the_attack_and_this_rounds_defence_counts():
    latest = {"round": 2, "clients": 4, "clipped": 3, "zeroed": 1, "val_loss": 1.0, "val_accuracy": 0.3}
    text = round_explanation(ATTACKED, latest, total_clients=4)
    assert "**Attack and defence.** 50% of the clients are malicious" in text
    assert "relabel every training target of class Bar as Cafe" in text
    assert "Defence **robust**" in text and "clipped 3 and zeroed 1 of the 4 updates" in text
    undefended = round_explanation(BASE.replace(malicious_clients=0.2), None)
    assert "one fixed permutation" in undefended and "No defence" in undefended
    assert "Attack and defence" not in round_explanation(BASE, latest)


# ----- the poisoning lesson -----


def lesson_runs(*, honest: float, defended: float, zeroed: int = 0) -> dict[str, RunNumbers]:
    attack = {key: value for key, value in ATTACK.items() if key not in ("pair", "success")} | {"kind": "label-flip"}

    def run(test, **changes):
        return RunNumbers(accuracy=test["accuracy"], test=test, rounds=6, total_clients=4, **changes)

    return {
        lesson_notes.CLEAN: run(CLEAN_TEST),
        lesson_notes.ATTACKED: run({**CLEAN_TEST, "accuracy": 0.3, "attack": {**attack, "honest_accuracy": honest}}),
        lesson_notes.DEFENDED: run(
            {**CLEAN_TEST, "accuracy": 0.32, "attack": {**attack, "honest_accuracy": defended}},
            clipped=20,
            zeroed=zeroed,
        ),
    }


def test_the_poisoning_note_follows_the_numbers():
    text = lesson_notes.poisoning(lesson_runs(honest=0.4, defended=0.5))
    assert "2 of 4 clients flipped their labels" in text
    assert "was 40.0% against 53.3% for the clean run on the same clients (-13.3 points)" in text
    assert "over all clients 30.0% against 45.0%" in text and "pulled the shared model away" in text
    assert "multi-krum defence the honest clients got 50.0% (-3.3 points against the clean run, +10.0 against" in text
    assert "it left out 0 updates in 6 rounds" in text
    assert "won back 10.0 of the 13.3 points" in text
    unchanged = lesson_notes.poisoning(lesson_runs(honest=0.53, defended=0.535, zeroed=2))
    assert "too little to read anything into" in unchanged and "less than a point" in unchanged
    assert "it left out 2 updates in 6 rounds" in unchanged
    worse = lesson_notes.poisoning(lesson_runs(honest=0.4, defended=0.3))
    assert "cost more than it saved" in worse
    harmless = lesson_notes.poisoning(lesson_runs(honest=0.6, defended=0.65))
    assert "did not hurt the honest clients" in harmless and "scored higher still" in harmless


def test_the_poisoning_lesson_reads_its_stored_runs(store):
    lesson = lesson_by_key("poisoning")
    clean, attacked, defended = (run.config for run in lesson.runs)
    assert attacked.malicious_clients == defended.malicious_clients > 0 and defended.defense == "multi-krum"
    assert attack_view.is_clean_reference(clean, attacked) and attack_view.is_clean_reference(clean, defended)
    store_finished(store, clean, CLEAN_TEST, name="clean")
    store_finished(store, attacked, {**ATTACKED_TEST, "attack": {**ATTACK, "honest_accuracy": 0.35}}, name="a")
    store_finished(store, defended, {**ATTACKED_TEST, "attack": {**ATTACK, "honest_accuracy": 0.45}}, name="d")
    numbers = lesson_numbers(store, lesson)
    assert numbers[lesson_notes.DEFENDED].clipped == 6 and numbers[lesson_notes.DEFENDED].zeroed == 1
    text = what_to_notice(lesson, numbers)
    assert "35.0% against 53.3%" in text and "it left out 1 update in 3 rounds" in text
