"""The HTML report: its charts, its tables, escaping, and the `report` command on a hand-filled store."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from markupsafe import escape

from fedlab.config import ExperimentConfig
from fedlab.errors import FedlabError
from fedlab.records import RoundRecord
from fedlab.records import TestReport as Report  # not collected by pytest as a test class
from fedlab.results.baselines import BASELINE_LABELS
from fedlab.results.fairness import FAIRNESS_CLIENTS, best_and_worst, client_table
from fedlab.results.report import add_report_parser, run_report_html, write_report
from fedlab.runs.store import RunStore

FIGURE_DIV = re.compile(r'<div id="[^"]+" class="plotly-graph-div"')
PLOTLY_BUNDLE = re.compile(r"plotly\.js v\d+\.\d+\.\d+")
BASELINES = {"majority": 0.21, "repeat_last": 0.333, "user_most_frequent": 0.287, "markov": 0.356, "user_markov": 0.372}
NASTY_NAME = "<script>alert('x')</script> & co"


def make_config(**changes) -> ExperimentConfig:
    return ExperimentConfig(**{"rounds": 3, "gru_units": 8, **changes})


def make_rounds(count: int = 3) -> list[RoundRecord]:
    return [
        RoundRecord(
            round=r,
            train_loss=2.0 / r,
            train_accuracy=0.1 * r,
            val_loss=2.5 / r,
            val_accuracy=0.09 * r,
            clients=5,
            seconds=0.25,
            is_best=True,
        )
        for r in range(1, count + 1)
    ]


def make_per_client(count: int = 12) -> dict[str, dict[str, float]]:
    # client c<i>: accuracy i/20, 10 targets, 40 + 10 i check-ins; c0 has no targets and is never listed.
    clients = {f"c{i}": {"accuracy": i / 20, "examples": 10, "checkins": 40 + 10 * i} for i in range(1, count + 1)}
    clients["c0"] = {"accuracy": 0.0, "examples": 0, "checkins": 5}
    return clients


def make_test_report(accuracy: float = 0.4125) -> Report:
    return Report(
        accuracy=accuracy,
        top5_accuracy=0.9,
        mrr=0.5678,
        loss=1.7,
        examples=120,
        per_client=make_per_client(),
        per_class={
            "Food": {"precision": 0.6, "recall": 0.5, "support": 30},
            "Shop": {"precision": 0.4, "recall": 0.7, "support": 20},
        },
        confusion=[[15, 15], [6, 14]],
        class_names=["Food", "Shop"],
    )


def add_finished_run(
    store: RunStore,
    *,
    name: str = "central",
    config: ExperimentConfig | None = None,
    accuracy: float = 0.4125,
    extra: dict | None = None,
) -> str:
    run_id = store.create_run(config or make_config(), name=name)
    store.set_status(run_id, "running")
    for record in make_rounds():
        store.add_round(run_id, record)
    store.finish(
        run_id,
        status="finished",
        test=make_test_report(accuracy),
        baselines=BASELINES,
        timing={"train_seconds": 1.0},
        model_path=None,
        extra={"clients": 12, **(extra or {})},
    )
    return run_id


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs" / "fedlab.db")


def report_of(store: RunStore, run_id: str, other_id: str | None = None) -> str:
    other = (store.get_run(other_id), store.rounds(other_id)) if other_id else None
    return run_report_html(store.get_run(run_id), store.rounds(run_id), other=other)


def section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, flags=re.S)
    assert match, f"no section {anchor!r}"
    return match.group(1)


# Building a page takes about a second (Plotly figures), so the full pages are built once per module.


@pytest.fixture(scope="module")
def module_store(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    return RunStore(tmp_path_factory.mktemp("report") / "fedlab.db")


@pytest.fixture(scope="module")
def single_page(module_store: RunStore) -> str:
    """One finished run without DP, test accuracy 40%."""
    return report_of(module_store, add_finished_run(module_store, name="central", accuracy=0.40))


@pytest.fixture(scope="module")
def pair_page(module_store: RunStore) -> str:
    """central (4 local epochs, no DP) against a run with a hostile name (2 epochs, DP clipping without noise)."""
    a = add_finished_run(module_store, name="central", config=make_config(epochs=4))
    b = add_finished_run(module_store, name=NASTY_NAME, config=make_config(epochs=2, dp_clip=1.0, dp_noise=0.0))
    return report_of(module_store, a, b)


@pytest.fixture(scope="module")
def dp_page(module_store: RunStore) -> str:
    """A DP run: noise 1, 6 of 12 clients per round, 3 rounds."""
    config = make_config(dp_clip=1.0, dp_noise=1.0, clients_per_round=6)
    return report_of(module_store, add_finished_run(module_store, name="private", config=config))


# ----- charts and plotly.js -----


def test_single_run_report_has_its_seven_charts(single_page: str):
    # loss, accuracy, vs baselines, per-class recall, one confusion matrix, per-client, accuracy vs check-ins
    assert len(FIGURE_DIV.findall(single_page)) == 7


def test_comparison_has_one_confusion_matrix_per_run(pair_page: str):
    assert len(FIGURE_DIV.findall(pair_page)) == 8
    assert len(FIGURE_DIV.findall(section(pair_page, "classes"))) == 3


def test_plotly_js_is_embedded_once_and_nothing_is_fetched(pair_page: str):
    assert len(PLOTLY_BUNDLE.findall(pair_page)) == 1
    assert not re.search(r"<script[^>]+src=", pair_page)


def test_plotly_js_comes_before_the_first_chart_uses_it(single_page: str):
    assert PLOTLY_BUNDLE.search(single_page).start() < single_page.index("Plotly.newPlot")


def test_run_without_rounds_or_test_has_no_charts_but_says_why(store: RunStore):
    page = report_of(store, store.create_run(make_config(), name="queued one"))
    assert FIGURE_DIV.findall(page) == [] and PLOTLY_BUNDLE.findall(page) == []
    assert "No round was recorded" in page and "queued one is queued" in page


# ----- tables -----


def test_metrics_table_shows_test_metrics(single_page: str):
    metrics = section(single_page, "metrics")
    for text in ("40.0%", "90.0%", "0.568", "1.700", "120"):
        assert f">{text}</td>" in metrics


def test_metrics_table_shows_every_baseline_with_its_value(single_page: str):
    metrics = section(single_page, "metrics")
    for key, label in BASELINE_LABELS.items():
        assert f'<th>baseline · {escape(label)}</th><td class="num">{BASELINES[key]:.1%}</td>' in metrics


def test_gain_over_best_baseline_is_in_points(single_page: str):
    assert ">+2.8 points<" in section(single_page, "metrics")  # 0.40 - 0.372


def test_comparison_highlights_settings_that_differ(pair_page: str):
    settings = section(pair_page, "settings")
    assert '<tr class="diff"><th>Local epochs per round</th><td>4</td><td>2</td></tr>' in settings
    assert "<tr><th>Batch size (sequences)</th><td>16</td><td>16</td></tr>" in settings


def test_run_ids_differ_but_are_not_highlighted_as_settings(pair_page: str):
    assert "<tr><th>run id</th>" in section(pair_page, "settings")


def test_runs_with_equal_names_get_their_ids_in_the_label(store: RunStore):
    a, b = (store.create_run(make_config(), name="same") for _ in range(2))
    page = report_of(store, a, b)
    assert f"same [{a[:6]}] vs same [{b[:6]}]" in page


# ----- fairness -----


def test_fairness_lists_best_and_worst_clients_with_check_ins(single_page: str):
    fairness = section(single_page, "fairness")
    # best c12 (60%, 160 check-ins), worst c1 (5%, 50 check-ins)
    assert '<td>c12</td><td class="num">60.0%</td><td class="num">10</td><td class="num">160</td>' in fairness
    assert '<td>c1</td><td class="num">5.0%</td><td class="num">10</td><td class="num">50</td>' in fairness
    assert "<td>c0</td>" not in fairness  # no targets: no accuracy to rank


def test_best_and_worst_do_not_overlap_and_worst_comes_first():
    best, worst = best_and_worst(client_table(make_per_client(7)), count=FAIRNESS_CLIENTS)
    assert list(best["client"]) == ["c7", "c6", "c5", "c4", "c3"]
    assert list(worst["client"]) == ["c1", "c2"]


def test_fairness_states_rank_correlation_of_accuracy_and_data_size(single_page: str):
    # accuracy grows with check-ins in make_per_client
    assert "Spearman) of accuracy with check-ins: +1.00" in section(single_page, "fairness")


# ----- privacy -----


def test_privacy_section_only_when_dp_was_on(single_page: str):
    assert 'id="privacy"' not in single_page


def test_privacy_section_shows_epsilon_and_delta(dp_page: str):
    from fedlab.results.privacy import dp_epsilon

    privacy = section(dp_page, "privacy")
    budget = dp_epsilon(noise_multiplier=1.0, clients_per_round=6, total_clients=12, rounds=3)
    assert f">{budget.epsilon:.2f}</td>" in privacy
    assert f">{budget.delta:.2e}</td>" in privacy
    assert ">50.0%</td>" in privacy  # 6 of 12 clients per round


def test_privacy_without_noise_says_epsilon_is_infinite(pair_page: str):
    privacy = section(pair_page, "privacy")
    assert '<th>ε (epsilon)</th><td class="num">—</td><td class="num">∞' in privacy  # no DP, then no noise


# ----- escaping -----


def test_run_name_is_escaped_everywhere(pair_page: str):
    assert NASTY_NAME not in pair_page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in pair_page
    assert "<script>alert(" not in pair_page  # not inside the chart data either


def test_a_script_in_a_run_name_is_shown_as_text_in_every_place_it_appears(store: RunStore, tmp_path: Path):
    run_id = add_finished_run(store, name="<script>alert(1)</script>")
    page = write_report(store, [run_id], tmp_path / "r.html").read_text(encoding="utf-8")
    shown = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"<title>fedlab report: {shown}</title>" in page and f"<h1>fedlab report: {shown}</h1>" in page
    assert f"<b>{shown}</b>" in page  # the legend
    assert f"<th>{shown}</th>" in section(page, "settings") and f"<th>{shown}</th>" in section(page, "metrics")
    assert f"<h3>{shown}</h3>" in section(page, "fairness")
    assert "<script>alert(1)" not in page


def test_error_message_is_escaped(store: RunStore):
    run_id = store.create_run(make_config(), name="broken")
    store.set_status(run_id, "running")
    store.set_status(run_id, "failed", error="ValueError: <img src=x onerror=alert(1)>")
    settings = section(report_of(store, run_id), "settings")
    assert "<tr><th>error</th><td>ValueError: &lt;img src=x onerror=alert(1)&gt;</td></tr>" in settings
    assert "<img" not in settings


def test_client_ids_are_escaped(store: RunStore):
    run_id = store.create_run(make_config(), name="r")
    test = Report(
        accuracy=0.5,
        top5_accuracy=0.9,
        mrr=0.6,
        loss=1.0,
        examples=10,
        per_client={"<b>u1</b>": {"accuracy": 0.5, "examples": 10, "checkins": 30}},
    )
    store.finish(run_id, status="finished", test=test, baselines={}, timing={}, model_path=None)
    page = report_of(store, run_id)
    assert "<td>&lt;b&gt;u1&lt;/b&gt;</td>" in page and "<b>u1</b>" not in page


# ----- writing and the command -----


def test_write_report_writes_a_comparison_to_the_file(store: RunStore, tmp_path: Path):
    a, b = store.create_run(make_config(), name="central"), store.create_run(make_config(), name="biggest")
    out = write_report(store, [a, b], tmp_path / "out" / "report.html")
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "central vs biggest" in page
    assert list(out.parent.iterdir()) == [out]  # no partial file left


def test_write_report_unknown_id_names_it(store: RunStore, tmp_path: Path):
    with pytest.raises(FedlabError, match="no run with id 'nope'"):
        write_report(store, [store.create_run(make_config()), "nope"], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_write_report_refuses_the_same_run_twice(store: RunStore, tmp_path: Path):
    run_id = store.create_run(make_config())
    with pytest.raises(FedlabError, match="twice"):
        write_report(store, [run_id, run_id], tmp_path / "r.html")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fedlab")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_report_command_writes_the_file_from_db(store: RunStore, tmp_path: Path, capsys):
    run_id = store.create_run(make_config(), name="central")
    out = tmp_path / "one.html"
    args = parse(["report", run_id, "--out", str(out), "--db", str(store.path)])
    assert args.func(args) == 0
    assert "fedlab report: central" in out.read_text(encoding="utf-8")
    assert f"wrote {out}" in capsys.readouterr().out


def test_report_command_defaults_to_fedlab_db(store: RunStore, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FEDLAB_DB", str(store.path))
    run_id = store.create_run(make_config())
    args = parse(["report", run_id, "--out", str(tmp_path / "r.html")])
    assert args.func(args) == 0 and (tmp_path / "r.html").is_file()


def test_report_command_unknown_id_is_a_fedlab_error(store: RunStore, tmp_path: Path):
    args = parse(["report", "missing1234", "--out", str(tmp_path / "r.html"), "--db", str(store.path)])
    with pytest.raises(FedlabError, match="no run with id 'missing1234'"):
        args.func(args)


def test_report_command_missing_store_is_a_fedlab_error_and_creates_nothing(tmp_path: Path):
    db = tmp_path / "nowhere" / "fedlab.db"
    args = parse(["report", "abc", "--out", str(tmp_path / "r.html"), "--db", str(db)])
    with pytest.raises(FedlabError, match="no run store"):
        args.func(args)
    assert not db.parent.exists()


def test_report_command_needs_out(store: RunStore):
    with pytest.raises(SystemExit):
        parse(["report", "abc"])


def test_the_settings_say_which_training_path_the_run_recorded(store: RunStore):
    sharded = add_finished_run(store, name="fast", extra={"training_path": "shards", "training_path_reason": "many"})
    per_user = add_finished_run(
        store,
        name="private",
        config=make_config(dp_clip=1.0),
        extra={"training_path": "per user", "training_path_reason": "DP clips each user's update"},
    )
    settings = section(report_of(store, sharded, per_user), "settings")
    assert "<th>training path</th><td>shards: many</td><td>per user: DP clips each user&#39;s update</td>" in settings
    assert "<th>training path</th><td>not recorded</td>" in section(
        report_of(store, add_finished_run(store)), "settings"
    )


def test_a_run_with_permutation_importance_gets_its_section(store: RunStore):
    from dataclasses import replace

    from tests.fakes import fake_importance

    run_id = store.create_run(make_config(), name="central")
    store.set_status(run_id, "running")
    store.finish(
        run_id,
        status="finished",
        test=replace(make_test_report(), importance=fake_importance(("cat_id", "clock_sin"))),
        baselines=BASELINES,
        timing={},
        model_path=None,
    )
    page = report_of(store, run_id)
    importance = section(page, "importance")
    assert len(FIGURE_DIV.findall(importance)) == 2  # acc@1 lost per feature, and who each feature helps
    assert "central: Shuffling clock_sin costs the most" in importance
