"""Ablation sweeps: their plan and refusals, the group in the store, its table, the queue, the CLI (training faked),
the Train and Runs pages (AppTest, training faked), and a tiny real federated sweep."""

import functools
import json
from pathlib import Path

import pytest

from fedlab.cli import main
from fedlab.config import ALL_FEATURES, PRESETS, ExperimentConfig
from fedlab.errors import ConfigError, FedlabError
from fedlab.results.sweep_table import stored_sweep, sweep_table, sweep_text
from fedlab.runs.jobs import JobManager
from fedlab.runs.store import RunStore
from fedlab.runs.sweeps import create_runs, list_sweeps, plan_sweep, train_sweep
from tests.fakes import FakeExperiment, FakeFactory
from tests.pages_support import app, assert_clean, chart_specs, db, texts, wait_for_runs  # noqa: F401

CENTRAL = ExperimentConfig(features=PRESETS["central"], rounds=2, gru_units=8)
WAIT = 15.0

# ----- the plan -----


def test_leave_one_out_plans_the_full_run_and_one_run_without_each_feature():
    plan = plan_sweep(CENTRAL, ["clock_sin", "cat_id"])
    assert [(p.role, p.feature) for p in plan.runs] == [
        ("reference", None),
        ("ablation", "clock_sin"),
        ("ablation", "cat_id"),
    ]
    assert plan.runs[0].config.features == CENTRAL.features
    assert plan.runs[1].config.features == tuple(f for f in CENTRAL.features if f != "clock_sin")
    assert plan.runs[2].config.features[0] == "clock_sin"  # the rest keep their order
    assert plan.runs[1].config.replace(features=CENTRAL.features, name="") == CENTRAL  # nothing else changes
    assert plan.runs[2].config.name == "leave-one-out sweep of central · without cat_id"


def test_add_one_plans_the_base_run_and_one_run_with_each_feature_added():
    plan = plan_sweep(CENTRAL, ["venue_id", "user_id"], kind="add-one", name="extras")
    assert [p.config.features[-1] for p in plan.runs[1:]] == ["venue_id", "user_id"]
    assert plan.runs[0].config.name == "extras · base run" and plan.runs[1].config.name == "extras · with venue_id"


@pytest.mark.parametrize(
    "config, features, kind, message",
    [
        (CENTRAL, [], "leave-one-out", "a leave-one-out sweep needs at least one feature to leave out"),
        (CENTRAL, [" "], "add-one", "a add-one sweep needs at least one feature to add"),
        (CENTRAL, ["venue_id"], "leave-one-out", "cannot leave out venue_id: not among the run's features"),
        (CENTRAL, ["cat_id"], "add-one", "cannot add cat_id: already among the base features"),
        (CENTRAL.replace(features=("cat_id",)), ["cat_id"], "leave-one-out", "cannot leave out cat_id: choose at"),
        (
            CENTRAL.replace(features=ALL_FEATURES, reconstruction=True),
            ["venue_id", "user_id"],
            "leave-one-out",
            "cannot leave out user_id: reconstruction keeps the user part on the client",
        ),
        (CENTRAL, ["cat_id"], "all-but-one", "a sweep is leave-one-out or add-one"),
    ],
)
def test_what_cannot_run_is_refused_in_one_line(config, features, kind, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")) as caught:
        plan_sweep(config, features, kind=kind)
    assert "\n" not in str(caught.value)


# ----- the group, its table and its queue -----


def test_the_group_is_stored_and_loses_a_deleted_run(tmp_path: Path):
    store = RunStore(tmp_path / "fedlab.db")
    assert list_sweeps(store) == []  # a store without the sweep tables
    plan = plan_sweep(CENTRAL, ["clock_sin", "clock_cos"])
    sweep_id, run_ids = create_runs(store, plan)
    (sweep,) = list_sweeps(store)
    assert (sweep.id, sweep.kind, sweep.features) == (sweep_id, "leave-one-out", ("clock_sin", "clock_cos"))
    assert sweep.members == (
        (run_ids[0], "reference", None),
        (run_ids[1], "ablation", "clock_sin"),
        (run_ids[2], "ablation", "clock_cos"),
    )
    store.delete(run_ids[1])
    assert list_sweeps(store)[0].run_ids == [run_ids[0], run_ids[2]]
    assert RunStore(tmp_path / "fedlab.db").list_runs()  # the store opens as before with the extra tables


def test_the_table_gives_each_ablation_against_the_reference():
    rows = [
        {
            "run": "full run",
            "feature": "",
            "status": "finished",
            "accuracy": 0.5,
            "loss": 1.0,
            "megabytes": 2.0,
            "seconds": 3,
        },
        {
            "run": "without a",
            "feature": "a",
            "status": "finished",
            "accuracy": 0.4,
            "loss": 1.5,
            "megabytes": 1.5,
            "seconds": 2,
        },
        {
            "run": "without b",
            "feature": "b",
            "status": "finished",
            "accuracy": 0.52,
            "loss": 0.9,
            "megabytes": 1.0,
            "seconds": 2,
        },
        {
            "run": "without c",
            "feature": "c",
            "status": "queued",
            "accuracy": None,
            "loss": None,
            "megabytes": None,
            "seconds": None,
        },
    ]
    table = sweep_table(rows)
    assert table["accuracy_delta"].tolist()[:3] == pytest.approx([0.0, -0.1, 0.02])
    assert table["loss_delta"].tolist()[:3] == pytest.approx([0.0, 0.5, -0.1])
    assert table["megabytes_delta"].tolist()[:3] == pytest.approx([0.0, -0.5, -1.0])
    assert table["accuracy_delta"].isna().tolist()[3]
    text = sweep_text(table, "leave-one-out")
    assert text.startswith("Leaving out **a** moves acc@1 the most: -10.0 pts") and "Without b the model" in text


def test_a_sweep_counts_once_against_the_sessions_queue_limit(tmp_path: Path):
    store = RunStore(tmp_path / "fedlab.db")
    factory = FakeFactory(round_seconds=0.005)
    jobs = JobManager(store, experiment_factory=factory, queue_limit=2)
    try:
        jobs.submit(CENTRAL, session_id="a")
        for _ in range(4):  # four runs of one sweep: one more request
            jobs.submit(CENTRAL, session_id="a", group="s1")
        with pytest.raises(FedlabError, match="at most 2 runs"):
            jobs.submit(CENTRAL, session_id="a", group="s2")  # a second sweep is one request too many
        assert jobs.wait_idle(WAIT)
        assert {run.status for run in store.list_runs()} == {"finished"} and len(store.list_runs()) == 5
    finally:
        jobs.shutdown(timeout=WAIT)


# ----- the CLI, training faked -----


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import fedlab.learning.engine

    monkeypatch.setattr(fedlab.learning.engine, "experiment_factory", lambda cache=None: FakeExperiment)
    store = tmp_path / "store" / "fedlab.db"
    monkeypatch.setenv("FEDLAB_DB", str(store))
    return store


def test_the_cli_sweep_trains_the_group_and_prints_its_table(fake_training, tmp_path, capsys):
    out_file = tmp_path / "sweep.json"
    args = ["sweep", "--rounds", "2", "--sweep-features", "clock_sin,clock_cos", "--json-out", str(out_file)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[1/3] full run" in out and "[3/3] without clock_cos" in out and "total time" in out
    result = json.loads(out_file.read_text())
    assert [r["run"] for r in result["runs"]] == ["full run", "without clock_sin", "without clock_cos"]
    assert all(r["status"] == "finished" and r["accuracy"] == 0.4567 for r in result["runs"])
    assert result["sweep"]["kind"] == "leave-one-out" and result["total_seconds"] > 0
    (sweep,) = list_sweeps(RunStore(fake_training))
    runs = [RunStore(fake_training).get_run(i) for i in sweep.run_ids]
    assert [len(r.config.features) for r in runs] == [9, 8, 8] and all(r.test["importance"] for r in runs)


def test_the_cli_sweep_from_a_finished_run_repeats_its_settings(fake_training, capsys):
    assert main(["run", "--rounds", "3", "--preset", "biggest"]) == 0
    run_id = RunStore(fake_training).list_runs()[0].id
    assert main(["sweep", "--from", run_id, "--sweep-features", "venue_id"]) == 0
    sweep = list_sweeps(RunStore(fake_training))[0]
    full = RunStore(fake_training).get_run(sweep.run_ids[0])
    assert full.config.rounds == 3 and full.config.features == ALL_FEATURES


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sweep-features", ""], "needs at least one feature to leave out"),
        (["--kind", "add-one"], "needs at least one feature to add"),
        (["--preset", "biggest", "--reconstruction", "--sweep-features", "user_id"], "cannot leave out user_id"),
        (["--from", "nosuchrun"], "no run with id 'nosuchrun': there is no run store at"),
    ],
)
def test_the_cli_refuses_in_one_line_with_status_2(fake_training, capsys, args, message):
    assert main(["sweep", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not fake_training.exists()  # a refused sweep creates no store


def test_the_cli_refuses_a_sweep_from_a_run_that_did_not_finish(fake_training, capsys):
    store = RunStore(fake_training)
    run_id = store.create_run(CENTRAL)
    store.set_status(run_id, "failed", error="boom")
    assert main(["sweep", "--from", run_id]) == 2
    assert f"run {run_id} is failed, not finished" in capsys.readouterr().err


# ----- the pages, training faked -----


def test_one_click_on_train_queues_the_sweep_and_runs_shows_it(db):
    at = app("train")
    at.number_input(key="train_rounds").set_value(2)
    at.multiselect(key="train_features").set_value(["cat_id", "clock_sin", "clock_cos"]).run()
    (features,) = [m for m in at.multiselect if m.key.startswith("train_sweep_features_leave-one-out")]
    features.set_value(["clock_sin", "clock_cos"])
    at.button(key="train_btn_sweep").click().run()
    assert_clean(at)
    assert "Queued 3 runs" in texts(at)
    runs = wait_for_runs(db, 3)
    assert {r.name.split(" · ")[-1] for r in runs} == {"full run", "without clock_sin", "without clock_cos"}
    runs_page = app("runs")
    table = runs_page.dataframe[-1].value  # the sweeps come last on the page
    assert table["run"].tolist() == ["full run", "without clock_sin", "without clock_cos"]
    assert table["accuracy_delta"].tolist() == [0.0, 0.0, 0.0]
    titles = [s["layout"]["title"]["text"] for s in chart_specs(runs_page)]
    assert "Ablation sweep: test acc@1 of each run" in titles
    assert "3 of 3 runs finished; total time" in texts(runs_page)


def test_the_train_page_refuses_an_empty_sweep_in_one_line(db):
    at = app("train")
    (features,) = [m for m in at.multiselect if m.key.startswith("train_sweep_features_leave-one-out")]
    features.set_value([])
    at.button(key="train_btn_sweep").click().run()
    assert_clean(at)
    assert any("needs at least one feature to leave out" in e.value for e in at.error)
    assert RunStore(db).list_runs() == []


# ----- a tiny real federated sweep -----


@pytest.mark.tff
@pytest.mark.slow
def test_a_tiny_federated_leave_one_out_sweep(tiny_data, build_cache, tmp_path):
    from fedlab.learning.engine import Experiment
    from tests.helpers import TINY

    # The habits run's TFF processes are built by other tests of the session already; only "without" is new.
    store = RunStore(tmp_path / "fedlab.db")
    config = ExperimentConfig(data=tiny_data.config, features=PRESETS["habits"], **{**TINY, "rounds": 1})
    plan = plan_sweep(config, ["user_habits"])
    sweep_id, run_ids = create_runs(store, plan)
    factory = functools.partial(Experiment, data=tiny_data, cache=build_cache)
    assert train_sweep(store, plan, run_ids, factory) == ["finished", "finished"]
    table, baselines, seconds = stored_sweep(store, list_sweeps(store)[0])
    assert table["status"].tolist() == ["finished", "finished"] and seconds > 0 and baselines
    # Without the habit vectors the model has fewer weights to send: fewer megabytes.
    assert table["megabytes_delta"].iloc[1] < 0 and table["megabytes"].iloc[0] > 0
    assert set(store.get_run(run_ids[1]).test["importance"]["features"]) == set(PRESETS["biggest"])
