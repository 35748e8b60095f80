"""Demo runs: their configs, which of them a store still lacks, and training the missing ones (with a fake)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedlab.config import PRESETS, ExperimentConfig
from fedlab.runs.store import RunStore, default_name
from fedlab.teaching.demo import DEMO_DATA, demo_runs, missing_demo_runs, run_demos
from tests.fakes import FakeExperiment

NAMES = ["Demo · central", "Demo · biggest"]


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "fedlab.db")


def add_run(store: RunStore, name: str, status: str) -> str:
    config = dict(demo_runs())[name] if name in NAMES else ExperimentConfig(rounds=1)
    run_id = store.create_run(config, name=name)
    if status != "queued":
        store.set_status(run_id, status)
    return run_id


# ----- the configs -----


def test_two_demo_runs_central_then_biggest():
    runs = demo_runs()
    assert [name for name, _ in runs] == NAMES
    assert [config.features for _, config in runs] == [PRESETS["central"], PRESETS["biggest"]]


def test_demo_runs_are_small_federated_runs_on_the_synthetic_city():
    from fedlab.config import SHARDS, ExperimentConfig, training_path

    for name, config in demo_runs():
        assert config.data.data is None  # the synthetic default city
        assert config.mode == "federated"
        # As many users as the Train page's default, on the shard path that trains them in a few TFF calls.
        assert config.data.top_users is not None and config.data.top_users <= ExperimentConfig().data.top_users
        assert training_path(config)[0] == SHARDS
        assert config.gru_units <= 64 and config.rounds <= 6
        assert config.rounds <= config.patience  # early stopping never cuts a demo curve short
        assert default_name(config) == name  # the store shows the demo name even without an explicit one


def test_demo_configs_survive_the_store(store: RunStore):
    for name, config in demo_runs():
        run = store.get_run(store.create_run(config, name=name))
        assert run.config == config and run.name == name


def test_demo_data_gives_every_client_training_and_validation_sequences():
    from fedlab.data.pipeline import load_and_prepare

    data = load_and_prepare(DEMO_DATA)
    assert len(data.client_ids) == DEMO_DATA.top_users
    assert (data.train.client_sizes() > 0).all()
    assert len(data.val) > 0


# ----- which are missing -----


def test_an_empty_store_misses_both(store: RunStore):
    assert missing_demo_runs(store) == demo_runs()


def test_a_finished_demo_run_is_no_longer_missing(store: RunStore):
    add_run(store, "Demo · central", "finished")
    assert [name for name, _ in missing_demo_runs(store)] == ["Demo · biggest"]
    add_run(store, "Demo · biggest", "finished")
    assert missing_demo_runs(store) == []


@pytest.mark.parametrize("status", ["queued", "running", "stopped", "failed", "interrupted"])
def test_a_demo_run_that_did_not_finish_is_still_missing(store: RunStore, status: str):
    add_run(store, "Demo · central", status)
    assert [name for name, _ in missing_demo_runs(store)] == NAMES


def test_other_runs_do_not_count(store: RunStore):
    add_run(store, "Demo", "finished")
    add_run(store, "demo · central", "finished")  # names match exactly
    assert [name for name, _ in missing_demo_runs(store)] == NAMES


# ----- training them (fake experiment) -----


def test_run_demos_trains_the_missing_ones_to_the_end(store: RunStore, tmp_path: Path):
    add_run(store, "Demo · central", "finished")
    done: list[str] = []
    run_ids = run_demos(
        store,
        model_dir=tmp_path / "models",
        tensorboard_dir=tmp_path / "tensorboard",
        experiment_factory=FakeExperiment,
        on_finished=done.append,
    )
    assert done == run_ids and len(run_ids) == 1
    run = store.get_run(run_ids[0])
    assert (run.name, run.status) == ("Demo · biggest", "finished")
    assert run.config == dict(demo_runs())["Demo · biggest"]
    assert store.rounds(run.id)["round"].tolist() == list(range(1, run.config.rounds + 1))
    assert Path(run.model_path) == tmp_path / "models" / f"{run.id}.keras"
    assert list((tmp_path / "tensorboard" / run.id).rglob("events.out.tfevents.*"))
    assert missing_demo_runs(store) == []


def test_run_demos_with_nothing_missing_starts_nothing(store: RunStore):
    for name in NAMES:
        add_run(store, name, "finished")
    before = len(store.list_runs())

    def no_experiment(config):
        raise AssertionError("no demo run should start")

    assert run_demos(store, experiment_factory=no_experiment) == []
    assert len(store.list_runs()) == before
