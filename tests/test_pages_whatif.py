"""The dashboard for a class or a meeting, through AppTest with training faked: what-if controls (client
dropout, differential privacy and its live budget), presentation mode, the round explained, fairness
across clients, the comparison report, and demo runs at first start.
"""

from __future__ import annotations

import sys
import types

import pytest

from fedlab.config import ALL_FEATURES, ExperimentConfig
from fedlab.results.privacy import dp_epsilon
from fedlab.runs.store import RunStore
from tests import fakes
from tests.helpers import assert_clean
from tests.pages_support import app, chart_specs, db, store_run, texts, wait_for_round, wait_for_runs  # noqa: F401

DEMOS = [
    ("Demo · central", ExperimentConfig(rounds=2, gru_units=8, name="Demo · central")),
    ("Demo · biggest", ExperimentConfig(features=ALL_FEATURES, rounds=2, gru_units=8, name="Demo · biggest")),
]


def budget_texts(at) -> list[str]:
    return [i.value for i in at.info if "Privacy budget" in i.value]


# ----- what-if controls -----


def test_dropout_and_dp_settings_reach_the_run_config_and_its_summary(db):
    at = app("train")
    at.number_input(key="train_rounds").set_value(2)
    at.number_input(key="train_client_dropout").set_value(0.2)
    at.checkbox(key="train_dp").check().run()
    at.number_input(key="train_dp_clip").set_value(0.5)
    at.number_input(key="train_dp_noise").set_value(1.5)
    at.button(key="train_btn_run").click().run()
    assert_clean(at)
    (run,) = wait_for_runs(db, 1)
    assert (run.config.client_dropout, run.config.dp_clip, run.config.dp_noise) == (0.2, 0.5, 1.5)
    at.run()
    assert any("client dropout 20% · DP clip 0.5 noise 1.5" in c.value for c in at.caption)


def test_fedadam_and_fine_tuning_reach_the_run_and_its_results(db):
    at = app("train")
    at.number_input(key="train_rounds").set_value(2)
    at.button(key="train_btn_fedadam").click().run()
    assert at.selectbox(key="train_client_optimizer").value == "sgd"
    at.number_input(key="train_personalize_epochs").set_value(3)
    at.button(key="train_btn_run").click().run()
    assert_clean(at)
    (run,) = wait_for_runs(db, 1)
    config = run.config
    assert (config.client_optimizer, config.client_lr, config.server_optimizer, config.server_lr) == (
        "sgd",
        0.3,
        "adam",
        0.01,
    )
    assert config.personalize_epochs == 3
    at.run()
    assert any("after 3 epochs of fine-tuning" in c.value and "50.1%" in c.value for c in at.caption)
    assert at.table[0].value.loc["acc@1 after local fine-tuning"].iloc[0] == "50.1% (3 epochs per client)"


def test_dp_off_sends_no_clipping_or_noise(db):
    at = app("train")
    at.number_input(key="train_rounds").set_value(1)
    at.number_input(key="train_dp_noise").set_value(3.0)  # typed while DP is off: not used
    at.button(key="train_btn_run").click().run()
    (run,) = wait_for_runs(db, 1)
    assert (run.config.client_dropout, run.config.dp_clip, run.config.dp_noise) == (0.0, None, 0.0)


def test_the_privacy_budget_shows_while_dp_is_on_and_follows_the_settings(db):
    at = app("train")
    assert not budget_texts(at)
    at.checkbox(key="train_dp").check().run()
    budget = dp_epsilon(noise_multiplier=1.0, clients_per_round=None, total_clients=100, rounds=10)
    (text,) = budget_texts(at)
    assert f"ε = {budget.epsilon:.2f} at δ = {budget.delta:.1e}" in text and "100 of 100 clients" in text
    at.number_input(key="train_clients_per_round").set_value(10)
    at.number_input(key="train_rounds").set_value(5).run()
    fewer = dp_epsilon(noise_multiplier=1.0, clients_per_round=10, total_clients=100, rounds=5)
    (text,) = budget_texts(at)
    assert f"ε = {fewer.epsilon:.2f}" in text and "all 5 rounds" in text and fewer.epsilon < budget.epsilon
    at.number_input(key="train_dp_noise").set_value(0.0).run()
    assert "ε = ∞" in budget_texts(at)[0]
    at.number_input(key="train_top_users").set_value(1).run()
    assert not budget_texts(at) and any("needs at least 2 users" in c.value for c in at.caption)
    at.checkbox(key="train_dp").uncheck().run()
    assert not budget_texts(at)


def test_dp_on_a_centralized_run_is_a_short_error(db):
    at = app("train")
    at.radio(key="train_mode").set_value("centralized")
    at.checkbox(key="train_dp").check()
    at.button(key="train_btn_run").click().run()
    assert_clean(at)
    assert any("apply to federated runs only" in e.value for e in at.error)
    assert RunStore(db).list_runs() == []


# ----- presentation mode -----


def test_presentation_mode_hides_the_settings_enlarges_charts_and_stays_on_across_pages(db):
    run_id = store_run(db, "on the projector")
    at = app("train", run=run_id)
    at.number_input(key="train_rounds").set_value(3)
    normal = next(s for s in chart_specs(at) if s["layout"]["title"]["text"].startswith("Loss"))
    at.sidebar.toggle(key="presentation").set_value(True).run()
    assert_clean(at)
    assert not at.main.multiselect and not at.main.number_input and not at.main.button
    (style,) = at.get("html")
    assert "font-size" in style.proto.body
    big = next(s for s in chart_specs(at) if s["layout"]["title"]["text"].startswith("Loss"))
    assert big["layout"]["font"]["size"] > normal["layout"].get("font", {}).get("size", 12)
    assert big["layout"]["height"] > 450
    at.switch_page("pages/compare.py").run()
    assert at.sidebar.toggle(key="presentation").value is True
    assert not at.main.multiselect and not at.main.radio and not at.main.button
    at.sidebar.toggle(key="presentation").set_value(False).run()
    at.switch_page("pages/train.py").run()
    assert_clean(at)
    assert at.number_input(key="train_rounds").value == 3  # settings kept while hidden
    assert not at.get("html")


def test_compare_settings_survive_a_look_at_history_and_presentation_mode(db):
    at = app("compare")
    at.number_input(key="cmp_a_rounds").set_value(5)
    at.checkbox(key="cmp_b_dp").check()
    at.radio(key="cmp_mode").set_value("history").run()
    assert not at.main.number_input
    at.radio(key="cmp_mode").set_value("new").run()
    at.sidebar.toggle(key="presentation").set_value(True).run()
    at.sidebar.toggle(key="presentation").set_value(False).run()
    assert_clean(at)
    assert at.number_input(key="cmp_a_rounds").value == 5 and at.checkbox(key="cmp_b_dp").value is True
    assert at.multiselect(key="cmp_b_features").value == list(ALL_FEATURES)


# ----- explain while it runs -----


def test_the_explain_panel_fills_in_the_latest_rounds_figures(db):
    run_id = store_run(db, "explained", client_dropout=0.25, clients_per_round=3)
    at = app("train", run=run_id)
    panel = next(m.value for m in at.markdown if m.value.startswith("**Round 3** of at most 3"))
    assert "3 of the 4 clients" in panel and "probability 25%" in panel and "**4 reported back**" in panel
    assert "4 local epochs" in panel and "N = 17" in panel and "16 sequences per batch" in panel
    assert "weighted by that client's number of training examples" in panel
    assert "SGD with learning rate 1" in panel
    assert f"training loss averaged {2.0 / 3:.3f}, accuracy 35.0%" in panel
    assert f"validation loss {2.2 / 3:.3f}, accuracy 30.0%" in panel


def test_a_running_run_explains_its_latest_round(db, monkeypatch):
    monkeypatch.setattr(fakes, "ROUND_SECONDS", 0.05)
    at = app("train")
    at.number_input(key="train_rounds").set_value(200)
    at.button(key="train_btn_run").click().run()
    store = RunStore(db)
    (run,) = store.list_runs()
    wait_for_round(store, run.id, 2)
    at.run()
    shown = next(m.value for m in at.markdown if m.value.startswith("**Round "))
    number = int(shown.split("**")[1].split()[1])
    assert number >= 2 and "of at most 200" in shown
    at.button(key=f"stop_{run.id}").click().run()
    wait_for_runs(db, 1)


# ----- fairness, and the comparison report -----


def test_train_results_name_the_best_and_worst_served_clients(db):
    run_id = store_run(db, "fair")
    at = app("train", run=run_id)
    best, worst = (frame.value for frame in at.dataframe[:2])
    assert list(best["client"]) == ["u8", "u7", "u6", "u5", "u4"]
    assert list(worst["client"]) == ["u1", "u2", "u3"]  # worst first
    assert list(worst["checkins"]) == [20, 40, 60] and worst["accuracy"].iloc[0] == pytest.approx(0.25)
    assert "Spearman) of accuracy with check-ins: +1.00" in texts(at)
    scatter = next(s for s in chart_specs(at) if s["layout"]["title"]["text"].startswith("Client accuracy against"))
    assert scatter["layout"]["xaxis"]["type"] == "log"


def test_compare_shows_fairness_of_both_runs_and_offers_the_comparison_report(db):
    store_run(db, "central old")
    store_run(db, "biggest old", features=ALL_FEATURES)
    at = app("compare")
    at.radio(key="cmp_mode").set_value("history").run()
    assert_clean(at)
    assert len(at.dataframe) == 4  # best and worst served, for each run
    scatter = next(s for s in chart_specs(at) if s["layout"]["title"]["text"].startswith("Client accuracy against"))
    assert {trace["name"] for trace in scatter["data"]} == {"central old", "biggest old"}
    (report,) = [b for b in at.get("download_button") if b.proto.label == "Download comparison report (HTML)"]
    assert report.proto.url


def test_the_comparison_report_holds_both_runs(db):
    from fedlab.dashboard import history

    a, b = store_run(db, "central old"), store_run(db, "biggest old", features=ALL_FEATURES)
    page = history.report_html((a, b), ("", ""))
    assert "fedlab report: central old vs biggest old" in page and 'id="fairness"' in page


# ----- demo runs at first start -----


@pytest.fixture
def demo(monkeypatch):
    """A stand-in for fedlab.teaching.demo with the agreed interface, and demo runs switched on."""

    def missing_demo_runs(store: RunStore):
        done = {run.name for run in store.list_runs(statuses=("finished",))}
        return [(name, config) for name, config in DEMOS if name not in done]

    module = types.ModuleType("fedlab.teaching.demo")
    module.demo_runs = lambda: list(DEMOS)
    module.missing_demo_runs = missing_demo_runs
    monkeypatch.setitem(sys.modules, "fedlab.teaching.demo", module)
    monkeypatch.setenv("FEDLAB_DEMO_RUNS", "1")
    monkeypatch.setattr(fakes, "ROUND_SECONDS", 0.2)  # still training when the home page first draws
    return module


def test_an_empty_store_gets_the_demo_runs_once_and_home_shows_them(db, demo):
    at = app()
    assert any("Demo runs are being prepared" in i.value for i in at.info)
    runs = wait_for_runs(db, 2)
    assert sorted(run.name for run in runs) == ["Demo · biggest", "Demo · central"]
    assert {run.config.rounds for run in runs} == {2}
    at.run()
    assert_clean(at)
    assert "The demo runs have finished" in texts(at)
    assert set(at.dataframe[0].value["name"]) == {"Demo · central", "Demo · biggest"}
    at.switch_page("pages/runs.py").run()
    assert len(RunStore(db).list_runs()) == 2  # queued once per process, not on every page


def test_a_store_with_runs_gets_no_demo_runs(db, demo):
    store_run(db, "my own run")
    at = app()
    assert "Demo runs" not in texts(at)
    assert [run.name for run in RunStore(db).list_runs()] == ["my own run"]


# ----- pure helpers behind the pages -----


def test_config_from_settings_sends_dp_values_only_when_dp_is_on():
    from fedlab.dashboard import settings
    from fedlab.dashboard.state import SYNTHETIC

    values = {**settings.default_settings(), "client_dropout": 0.3, "dp_clip": 2.0, "dp_noise": 0.8}
    off = settings.config_from_settings(values, SYNTHETIC, False)
    assert (off.client_dropout, off.dp_clip, off.dp_noise) == (0.3, None, 0.0)
    on = settings.config_from_settings({**values, "dp": True}, SYNTHETIC, False)
    assert (on.dp_clip, on.dp_noise) == (2.0, 0.8)


def test_budget_text_states_epsilon_delta_rounds_and_clients():
    from fedlab.dashboard.settings import budget_text
    from fedlab.results.privacy import PrivacyBudget

    text = budget_text(PrivacyBudget(3.14159, 1e-5), rounds=20, clients_per_round=500, total_clients=100)
    assert "all 20 rounds" in text and "ε = 3.14 at δ = 1.0e-05" in text and "100 of 100 clients" in text
    assert "moderate" in text
    assert "ε = ∞" in budget_text(PrivacyBudget(float("inf"), 1e-5), rounds=1, clients_per_round=None, total_clients=9)


def test_the_settings_summary_names_the_what_if_settings_only_when_used():
    from fedlab.dashboard.results import settings_summary

    plain = settings_summary(ExperimentConfig())
    assert "dropout" not in plain and "DP" not in plain and "IID" not in plain
    used = settings_summary(ExperimentConfig(client_dropout=0.1, dp_clip=1.0, dp_noise=0.7).replace(iid=True))
    assert used.endswith("IID clients · client dropout 10% · DP clip 1 noise 0.7")


# ----- quick demo and the duration estimate -----


def test_quick_demo_sets_small_settings_and_the_estimate_follows(db):
    from fedlab.config import QUICK_DEMO

    at = app("train")
    before = next(c.value for c in at.caption if c.value.startswith("Estimate: about"))
    at.button(key="train_btn_quick").click().run()
    assert_clean(at)
    assert at.number_input(key="train_gru_units").value == QUICK_DEMO["gru_units"]
    assert at.number_input(key="train_top_users").value == QUICK_DEMO["top_users"]
    assert (at.number_input(key="train_rounds").value, at.number_input(key="train_epochs").value) == (
        QUICK_DEMO["rounds"],
        QUICK_DEMO["epochs"],
    )
    after = next(c.value for c in at.caption if c.value.startswith("Estimate: about"))
    assert "for all 5 rounds" in after and "default cost" in after and after != before


def test_the_best_fedrecon_button_fills_the_setting_chosen_on_validation(db):
    from fedlab.config import RECONSTRUCTION_BEST

    at = app("train")
    at.checkbox(key="train_reconstruction").check().run()
    at.number_input(key="train_reconstruction_lr").set_value(0.5).run()  # a choice of the user's, replaced
    at.button(key="train_btn_recon_best").click().run()
    assert_clean(at)
    assert at.checkbox(key="train_reconstruction").value is True
    assert at.multiselect(key="train_features").value == list(RECONSTRUCTION_BEST["features"])
    assert at.number_input(key="train_reconstruction_lr").value == RECONSTRUCTION_BEST["reconstruction_lr"]
    assert at.number_input(key="train_server_lr").value == RECONSTRUCTION_BEST["server_lr"]
    assert "docs/results.md" in at.button(key="train_btn_recon_best").help
    # A valid setting: Run is not refused.
    assert not any("not allowed" in e.value or "reconstruction" in e.value for e in at.error)


def test_the_estimate_learns_from_finished_runs(db):
    store_run(db, "earlier")
    at = app("train")
    assert any("from earlier runs" in c.value for c in at.caption if c.value.startswith("Estimate:"))
