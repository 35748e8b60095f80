"""The one final-metrics table (dashboard and report), on hand-built test results."""

import math

import pandas as pd

from fedlab.records import PERSONALIZED_ROW
from fedlab.results.baselines import BASELINE_LABELS
from fedlab.results.metrics_table import GAIN_ROW, metrics_table

TEST = {"accuracy": 0.40, "top5_accuracy": 0.9, "mrr": 0.5678, "loss": 1.7, "examples": 1200}
BASELINES = {key: 0.1 for key in BASELINE_LABELS} | {"user_markov": 0.372}
ROUNDS = pd.DataFrame({"val_accuracy": [0.2, 0.35, 0.3]})


def test_metrics_beside_the_baselines_and_the_gain_in_points():
    table = metrics_table({"a": TEST}, {"a": BASELINES}, {"a": ROUNDS})["a"]
    assert table["acc@1 (test accuracy)"] == "40.0%" and table["MRR (mean reciprocal rank)"] == "0.568"
    assert table["test targets scored"] == "1,200" and table["rounds trained"] == "3"
    assert table["best validation accuracy"] == "35.0%"
    assert table[GAIN_ROW] == "+2.8 points"  # 0.40 - 0.372
    assert table[f"baseline · {BASELINE_LABELS['user_markov']}"] == "37.2%"
    assert PERSONALIZED_ROW not in table.index  # no run fine-tuned


def test_nan_and_missing_values_show_as_a_dash():
    test = {**TEST, "accuracy": math.nan, "mrr": None}
    baselines = {**BASELINES, "markov": math.nan}
    table = metrics_table({"a": test}, {"a": baselines}, {})["a"]
    assert table["acc@1 (test accuracy)"] == "—" and table["MRR (mean reciprocal rank)"] == "—"
    assert table[f"baseline · {BASELINE_LABELS['markov']}"] == "—"
    assert table[GAIN_ROW] == "—" and table["rounds trained"] == "0"


def test_the_gain_ignores_a_nan_baseline():
    baselines = {**BASELINES, "markov": math.nan}
    assert metrics_table({"a": TEST}, {"a": baselines}, {})["a"][GAIN_ROW] == "+2.8 points"


def test_no_baselines_means_no_gain():
    assert metrics_table({"a": TEST}, {"a": None}, {})["a"][GAIN_ROW] == "—"


def test_the_fine_tuning_row_is_there_for_every_run_when_one_fine_tuned():
    tuned = {**TEST, "personalized": {"accuracy": 0.501, "epochs": 3, "top5_accuracy": 0.9, "mrr": 0.6}}
    table = metrics_table({"tuned": tuned, "plain": TEST}, {"tuned": BASELINES, "plain": BASELINES}, {})
    assert list(table.columns) == ["tuned", "plain"]
    assert table.loc[PERSONALIZED_ROW, "tuned"] == "50.1% (3 epochs per client)"
    assert table.loc[PERSONALIZED_ROW, "plain"] == "—"
