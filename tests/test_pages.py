"""Every dashboard page through streamlit's AppTest, with training faked (tests.fakes.FakeExperiment).

The fixture and helpers are in tests/pages_support.py; the newer what-if, presentation, explanation,
fairness, report and demo behaviour is tested in tests/test_pages_whatif.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from fedlab.config import ALL_FEATURES, PRESETS, ExperimentConfig
from fedlab.records import RoundRecord
from fedlab.records import TestReport as Report  # not a pytest test class
from fedlab.runs.store import RunStore
from tests import fakes
from tests.helpers import assert_clean
from tests.pages_support import (  # noqa: F401
    ROOT,
    RUN_TIMEOUT,
    app,
    chart_specs,
    db,
    store_run,
    texts,
    values,
    wait_for_round,
    wait_for_runs,
)

# ----- Home and Data -----


def test_home_explains_fedavg_and_says_the_data_is_synthetic(db):
    at = app()
    assert "federated" in texts(at).lower()
    assert any("synthetic" in info.value.lower() for info in at.info)
    assert [m.label for m in at.metric] == ["check-ins", "users", "venues", "categories"]
    (diagram,) = chart_specs(at)
    assert any("Server" in a.get("text", "") for a in diagram["layout"]["annotations"])
    assert "Synthetic" in at.sidebar.caption[0].value


def test_home_lists_every_page_of_the_app_in_its_order(db):
    import re

    titles = re.findall(r'st\.Page\("pages/\w+\.py", title="(\w+)"', Path("app.py").read_text())
    listed = re.findall(r"\d\. \*\*(\w+)\*\*", texts(app()))
    assert "Lessons" in titles and listed == [title for title in titles if title != "Home"]


def test_data_page_shows_metrics_for_the_synthetic_city(db):
    from fedlab.data import explore
    from fedlab.data.synthetic import generate_city

    expected = explore.overview(generate_city())
    at = app("data")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["check-ins"] == f"{expected['rows']:,}" and metrics["users"] == f"{expected['users']:,}"
    assert metrics["venues"] == f"{expected['venues']:,}"
    assert metrics["categories"] == f"{expected['categories']:,}"
    assert {"clients", "train sequences", "validation sequences", "test sequences"} <= set(metrics)
    assert metrics["clients"] == "100"
    assert any("synthetic" in info.value.lower() for info in at.info)
    assert at.selectbox(key="data_grouping").value == "uber"
    assert at.number_input(key="data_n").value == 17
    titles = [spec["layout"]["title"]["text"] for spec in chart_specs(at)]
    assert len(titles) == 5 and any("non-IID" in t for t in titles)
    assert "non-IID" in texts(at)


def test_data_page_follows_grouping_users_and_n(db):
    at = app("data")
    at.selectbox(key="data_grouping").set_value("root")
    at.number_input(key="data_top_users").set_value(20)
    at.number_input(key="data_n").set_value(9)
    at.run()
    assert_clean(at)
    assert not at.error
    assert {m.label: m.value for m in at.metric}["clients"] == "20"
    categories = next(s for s in chart_specs(at) if s["layout"]["title"]["text"].startswith("Check-ins per category"))
    assert "Food" in categories["data"][0]["y"]  # a root category


def test_data_page_reports_an_impossible_n_as_a_message(db):
    at = app("data")
    at.number_input(key="data_n").set_value(500)
    at.run()
    assert_clean(at)
    assert any("smaller N" in e.value for e in at.error)


def test_a_file_path_can_be_chosen_in_the_sidebar(db, tmp_path):
    from fedlab.data.synthetic import generate_city, write_raw

    city = generate_city(users=12, days=365, seed=5)
    path = tmp_path / "small_city.txt"
    write_raw(city, path)
    at = app("data")
    at.sidebar.radio(key="source_kind").set_value("path").run()
    at.sidebar.text_input(key="source_path").set_value(str(path))
    at.sidebar.button(key="source_btn_path").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "small_city.txt" in at.sidebar.caption[-1].value
    assert {m.label: m.value for m in at.metric}["users"] == "12"
    assert not any("synthetic" in info.value.lower() for info in at.info)


def test_a_missing_file_path_is_a_short_error(db, tmp_path):
    at = app()
    at.sidebar.radio(key="source_kind").set_value("path").run()
    at.sidebar.text_input(key="source_path").set_value(str(tmp_path / "nope.txt"))
    at.sidebar.button(key="source_btn_path").click().run()
    assert_clean(at)
    assert any("no file at" in e.value for e in at.sidebar.error)
    assert "Synthetic" in at.sidebar.caption[-1].value  # still the synthetic city


# ----- Train -----


def test_train_widgets_exist_with_the_study_defaults_and_help(db):
    at = app("train")
    values = {w.key: w.value for w in at.number_input}
    assert values["train_n"] == 17 and values["train_epochs"] == 4 and values["train_batch_size"] == 16
    assert values["train_rounds"] == 10 and values["train_gru_units"] == 256
    assert values["train_clients_per_round"] is None  # all clients
    assert at.multiselect(key="train_features").value == list(PRESETS["central"])
    assert at.radio(key="train_mode").value == "federated"
    assert at.selectbox(key="train_client_optimizer").value == "adam"
    assert at.selectbox(key="train_server_optimizer").value == "sgd"
    widgets = [*at.number_input, *at.multiselect, *at.radio, *at.selectbox, *at.checkbox, *at.text_input, *at.button]
    for widget in widgets:
        if widget.key and widget.key.startswith("train_"):
            assert widget.label and widget.help, widget.key


def test_settings_survive_a_visit_to_another_page(db):
    at = app("train")
    at.number_input(key="train_rounds").set_value(3)
    at.button(key="train_btn_biggest").click().run()
    at.switch_page("pages/data.py").run()
    at.switch_page("pages/train.py").run()
    assert_clean(at)
    assert at.number_input(key="train_rounds").value == 3
    assert at.multiselect(key="train_features").value == list(ALL_FEATURES)


def test_each_setting_widget_defaults_to_the_value_it_shows(db):
    # A browser that loses its widget states sends their defaults back; they must be the form's values.
    at = app("train")
    at.number_input(key="train_rounds").set_value(3)
    at.button(key="train_btn_fedadam").click().run()
    at.button(key="train_btn_biggest").click().run()
    assert at.number_input(key="train_rounds").proto.default == 3
    assert at.number_input(key="train_server_lr").proto.default == pytest.approx(0.01)
    server = at.selectbox(key="train_server_optimizer")
    assert server.value == "adam" and server.proto.default == server.index
    assert list(at.multiselect(key="train_features").proto.default) == list(range(len(ALL_FEATURES)))


def test_preset_buttons_set_the_features(db):
    at = app("train")
    at.button(key="train_btn_biggest").click().run()
    assert at.multiselect(key="train_features").value == list(ALL_FEATURES)
    at.button(key="train_btn_habits").click().run()
    assert at.multiselect(key="train_features").value == [*ALL_FEATURES, "user_habits"]
    at.button(key="train_btn_central").click().run()
    assert at.multiselect(key="train_features").value == list(PRESETS["central"])


def test_run_trains_and_its_rounds_reach_the_charts_and_the_table(db):
    at = app("train")
    at.number_input(key="train_rounds").set_value(3)
    at.number_input(key="train_gru_units").set_value(8)
    at.button(key="train_btn_run").click().run()
    assert_clean(at)
    assert not at.error
    (run,) = wait_for_runs(db, 1)
    assert run.status == "finished" and run.config.rounds == 3 and run.config.gru_units == 8
    at.run()
    assert_clean(at)
    assert any("Finished after 3 round" in s.value for s in at.success)
    loss = next(s for s in chart_specs(at) if s["layout"]["yaxis"]["title"]["text"] == "cross-entropy loss (nats)")
    validation = next(t for t in loss["data"] if t["name"] == run.name)  # the solid validation line
    assert values(validation["y"]) == pytest.approx([2.2 / r for r in (1, 2, 3)])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["acc@1"] == "45.7%" and metrics["MRR"] == "0.610"
    table = at.table[0].value
    assert table.loc["acc@1 (test accuracy)"].iloc[0] == "45.7%"
    assert table.loc["baseline · Majority class"].iloc[0] == "10.0%"
    assert at.query_params["run"] == [run.id]
    assert any(s["layout"]["title"]["text"].startswith("Which features matter") for s in chart_specs(at))


def test_a_bad_setting_shows_an_error_not_an_exception(db):
    at = app("train")
    at.multiselect(key="train_features").set_value([])
    at.button(key="train_btn_run").click().run()
    assert_clean(at)
    assert any("choose at least one feature" in e.value for e in at.error)
    at.multiselect(key="train_features").set_value(["cat_id"])
    at.number_input(key="train_client_lr").set_value(0.0)
    at.button(key="train_btn_run").click().run()
    assert any("client learning rate must be a number above 0" in e.value for e in at.error)
    assert RunStore(db).list_runs() == []


def test_workers_are_off_by_default_and_a_bad_address_is_an_error(db):
    at = app("train")
    assert at.text_input(key="train_workers").value in ("", None)
    at.text_input(key="train_workers").set_value("localhost")
    at.button(key="train_btn_run").click().run()
    assert_clean(at)
    assert any("host:port" in e.value for e in at.error)
    assert RunStore(db).list_runs() == []


def test_a_running_run_shows_progress_and_can_be_stopped(db, monkeypatch):
    monkeypatch.setattr(fakes, "ROUND_SECONDS", 0.05)
    at = app("train")
    at.number_input(key="train_rounds").set_value(400)
    at.button(key="train_btn_run").click().run()
    store = RunStore(db)
    (run,) = store.list_runs()
    wait_for_round(store, run.id, 2)
    at.run()
    assert_clean(at)
    (bar,) = at.get("progress")
    assert "of at most 400" in bar.proto.text and "left" in bar.proto.text
    at.button(key=f"stop_{run.id}").click().run()
    (run,) = wait_for_runs(db, 1)
    assert run.status == "stopped" and 2 <= len(store.rounds(run.id)) < 400
    at.run()
    assert any("Stopped after" in w.value for w in at.warning)


def test_a_run_being_tested_says_so_and_offers_no_stop(db):
    store = RunStore(db)
    run_id = store.create_run(ExperimentConfig(rounds=4, gru_units=8, personalize_epochs=5), name="almost done")
    store.set_status(run_id, "running")
    for number, val_loss in enumerate([2.0, 1.5, 1.7, 1.6], start=1):  # round 2 is the one kept
        store.add_round(
            run_id,
            RoundRecord(
                round=number,
                train_loss=1.0,
                train_accuracy=0.3,
                val_loss=val_loss,
                val_accuracy=0.3,
                clients=3,
                seconds=0.1,
                is_best=number <= 2,
            ),
        )
    store.set_status(run_id, "testing")
    at = app("train", run=run_id)
    assert_clean(at)
    (bar,) = at.get("progress")
    assert "Testing the kept model (round 2)" in bar.proto.text
    assert "fine-tunes it for 5 epochs" in bar.proto.text
    assert not [b for b in at.button if b.key == f"stop_{run_id}"]


def test_a_reloaded_tab_shows_the_run_from_the_url(db):
    run_id = store_run(db, "kept from before")
    at = app("train", run=run_id)
    assert_clean(at)
    assert "kept from before" in [s.value for s in at.subheader]
    assert {m.label: m.value for m in at.metric}["acc@1"] == "45.7%"


def test_a_broken_experiment_setting_is_a_short_error(db, monkeypatch):
    monkeypatch.setenv("FEDLAB_EXPERIMENT", "tests.nowhere:Nothing")
    at = app("train")
    at.number_input(key="train_rounds").set_value(1)
    at.button(key="train_btn_run").click().run()
    assert_clean(at)
    assert any("FEDLAB_EXPERIMENT" in e.value for e in at.error)


# ----- Compare -----


def test_compare_defaults_to_central_against_biggest(db):
    at = app("compare")
    assert at.radio(key="cmp_mode").value == "new"
    assert at.multiselect(key="cmp_a_features").value == list(PRESETS["central"])
    assert at.multiselect(key="cmp_b_features").value == list(ALL_FEATURES)
    assert at.number_input(key="cmp_a_n").value == 17 and at.number_input(key="cmp_b_epochs").value == 4


def test_run_both_trains_two_runs_shown_together(db):
    at = app("compare")
    for side in ("a", "b"):
        at.number_input(key=f"cmp_{side}_rounds").set_value(2)
    at.button(key="cmp_btn_run").click().run()
    assert_clean(at)
    assert not at.error
    runs = wait_for_runs(db, 2)
    at.run()
    assert_clean(at)
    table = at.table[0].value
    assert list(table.columns) == [r.name for r in reversed(runs)]  # run A (central) first
    specs = chart_specs(at)
    loss = next(s for s in specs if s["layout"]["yaxis"]["title"]["text"] == "cross-entropy loss (nats)")
    colors = {t["name"]: t["line"]["color"] for t in loss["data"]}
    assert colors["central · federated · N17"] == colors["central · federated · N17 · train"] == "#2563eb"
    assert colors["biggest · federated · N17"] == colors["biggest · federated · N17 · train"] == "#f97316"
    titles = [s["layout"]["title"]["text"] for s in specs]
    assert sum(t.startswith("Confusion") for t in titles) == 2
    assert any("per true category" in t for t in titles) and "Test accuracy per client" in titles


def test_compare_reports_which_side_has_a_bad_setting(db):
    at = app("compare")
    at.multiselect(key="cmp_b_features").set_value([])
    at.button(key="cmp_btn_run").click().run()
    assert_clean(at)
    assert any(e.value.startswith("Run B: choose at least one feature") for e in at.error)
    assert RunStore(db).list_runs() == []


def test_compare_from_history(db):
    store_run(db, "central old")
    store_run(db, "biggest old", features=ALL_FEATURES)
    at = app("compare")
    at.radio(key="cmp_mode").set_value("history").run()
    assert_clean(at)
    table = at.table[0].value
    assert set(table.columns) == {"central old", "biggest old"}


# ----- Runs -----


def test_an_unusable_run_store_is_a_short_error(tmp_path, monkeypatch):
    bad = tmp_path / "not-a-database.db"
    bad.write_text("this is not sqlite " * 100)
    monkeypatch.setenv("FEDLAB_DB", str(bad))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=RUN_TIMEOUT)
    at.run()
    at.switch_page("pages/runs.py").run()
    assert_clean(at)
    assert any("run store" in e.value and "not a database" in e.value for e in at.error)


def test_runs_page_without_runs_says_how_to_start(db):
    at = app("runs")
    assert any("No runs yet" in i.value for i in at.info)


def test_runs_page_lists_every_run_and_opens_one(db):
    first = store_run(db, "first run")
    second = store_run(db, "second run")
    at = app("runs")
    table = at.dataframe[0].value
    assert list(table["name"]) == ["second run", "first run"] and list(table["id"]) == [second, first]
    assert table["test accuracy"].tolist() == pytest.approx([45.67, 45.67])  # shown as percent
    assert at.selectbox(key="runs_open").value == second
    at.selectbox(key="runs_open").set_value(first).run()
    assert "first run" in [s.value for s in at.subheader]
    labels = [d.proto.label for d in at.get("download_button")]
    assert labels == ["Export JSON", "Rounds CSV", "Model (.keras)", "Download report (HTML)"]


def test_rename_and_delete_with_confirmation(db):
    run_id = store_run(db, "old name")
    keep = store_run(db, "keep me", model=False)
    at = app("runs", run=run_id)
    assert at.selectbox(key="runs_open").value == run_id
    at.text_input(key=f"runs_name_{run_id}").set_value("new name")
    at.button(key=f"runs_btn_rename_{run_id}").click().run()
    assert RunStore(db).get_run(run_id).name == "new name"
    assert "new name" in list(at.dataframe[0].value["name"])

    at.button(key=f"runs_btn_delete_{run_id}").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    at.button(key=f"runs_btn_cancel_{run_id}").click().run()
    assert RunStore(db).get_run(run_id) is not None
    at.button(key=f"runs_btn_delete_{run_id}").click().run()
    at.button(key=f"runs_btn_confirm_{run_id}").click().run()
    assert_clean(at)
    assert RunStore(db).get_run(run_id) is None and not (db.parent / "models" / f"{run_id}.keras").exists()
    assert list(at.dataframe[0].value["id"]) == [keep]


def test_pin_as_reference_draws_it_faint_on_other_runs(db):
    reference = store_run(db, "the reference")
    other = store_run(db, "biggest now", features=ALL_FEATURES)
    at = app("runs", run=reference)
    at.button(key=f"runs_btn_pin_{reference}").click().run()
    assert RunStore(db).reference() == reference
    at.selectbox(key="runs_open").set_value(other).run()
    loss = next(s for s in chart_specs(at) if s["layout"]["yaxis"]["title"]["text"] == "cross-entropy loss (nats)")
    faint = [t for t in loss["data"] if t["name"].startswith("reference: the reference")]
    assert len(faint) == 2 and all(t["opacity"] == 0.3 for t in faint)


# ----- the dashboard helpers (fedlab.dashboard) -----


def test_uploads_are_saved_under_their_content_hash(tmp_path):
    import hashlib

    from fedlab.dashboard import sources

    data = b"\x1f\x8b" + b"pretend gzip"
    path = sources.save_upload(data, tmp_path / "uploads")
    assert path.name == f"{hashlib.sha256(data).hexdigest()[:24]}.gz"
    assert path.read_bytes() == data
    assert sources.save_upload(data, tmp_path / "uploads") == path  # same content, same file
    assert sources.save_upload(b"user,venue\n", tmp_path / "uploads").suffix == ".txt"


def test_pages_do_not_import_tensorflow():
    code = (
        "import sys; from fedlab.dashboard import access, comparison, history, presentation, results, settings, "
        "sources, state; "
        "import fedlab.results.charts, fedlab.data.explore, fedlab.results.explain, fedlab.results.fairness; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_progress_line_estimates_time_left():
    import pandas as pd

    from fedlab.dashboard import results

    store_config = ExperimentConfig(rounds=10)

    class FakeRun:
        config = store_config

    rounds = pd.DataFrame({"seconds": [2.0, 4.0]})
    fraction, text = results.progress_line(FakeRun(), rounds)
    assert fraction == pytest.approx(0.2) and text == "Round 2 of at most 10 · about 24 s left"
    assert results.progress_line(FakeRun(), rounds.iloc[:0])[0] == 0.0


def test_round_records_of_the_fake_match_the_engine_protocol():
    fake = fakes.FakeExperiment(ExperimentConfig(rounds=2))
    fake.prepare()
    records = list(fake.rounds())
    assert all(isinstance(r, RoundRecord) for r in records) and isinstance(fake.test(), Report)
