"""The training engine on tiny models: three clients, two rounds."""

import dataclasses

import numpy as np
import pytest

from fedlab.config import PRESETS, ExperimentConfig
from fedlab.learning.engine import Experiment
from fedlab.learning.runtime import running_worker_pids
from fedlab.learning.stopping import early_stopping

TINY = dict(gru_units=8, embedding_dim=4, rounds=2, epochs=2, batch_size=8, client_lr=0.05, dropout=0.0)


def _run(config, tiny_data, build_cache):
    experiment = Experiment(config, data=tiny_data, cache=build_cache)
    try:
        experiment.prepare()
        records = list(experiment.rounds())
        return records, experiment.test(), experiment.baselines()
    finally:
        experiment.close()


@pytest.fixture(scope="module")
def federated_run(tiny_data, build_cache):
    return _run(ExperimentConfig(data=tiny_data.config, **TINY), tiny_data, build_cache)


@pytest.mark.tff
def test_generator_yields_one_record_per_round(federated_run):
    records, _, _ = federated_run
    assert [r.round for r in records] == [1, 2]
    assert all(r.clients == 3 and r.seconds > 0 for r in records)
    assert records[0].is_best


@pytest.mark.tff
def test_training_loss_falls(federated_run):
    records, _, _ = federated_run
    assert records[1].train_loss < records[0].train_loss


@pytest.mark.tff
def test_same_seed_same_metrics(federated_run, tiny_data, build_cache):
    again, _, _ = _run(ExperimentConfig(data=tiny_data.config, **TINY), tiny_data, build_cache)
    first, _ = federated_run[0], None
    np.testing.assert_allclose([r.val_loss for r in again], [r.val_loss for r in first], rtol=1e-4)


@pytest.mark.tff
def test_test_scores_every_test_target(federated_run, tiny_data):
    _, report, baselines = federated_run
    assert report.examples == tiny_data.test.targets.size
    assert 0 <= report.accuracy <= report.top5_accuracy <= 1
    assert set(report.per_client) <= set(tiny_data.client_ids)
    assert report.personalized is None  # no fine-tuning asked for
    assert set(baselines) == {"majority", "repeat_last", "user_most_frequent", "markov", "user_markov"}


@pytest.mark.tff
def test_a_run_of_the_same_processes_reuses_the_warm_worker_to_the_same_figures(federated_run, tiny_data, build_cache):
    # build_cache keeps the last run's runtime, as the dashboard's does (federated_run built the processes).
    config = ExperimentConfig(data=tiny_data.config, **TINY)
    first, _, _ = _run(config, tiny_data, build_cache)
    (warm,) = running_worker_pids()
    again, _, _ = _run(config, tiny_data, build_cache)
    assert running_worker_pids() == [warm]
    assert [r.val_loss for r in again] == [r.val_loss for r in first]
    build_cache.close()
    assert running_worker_pids() == []


@pytest.mark.tff
def test_a_new_runtime_runs_what_the_cache_compiled_before_without_compiling_it_again(
    federated_run, tiny_data, build_cache, monkeypatch
):
    from fedlab.learning import tff_internals

    build_cache.close()  # no warm runtime: the run below gets a new one, with a new TFF context
    compiler = tff_internals.modules().compiler
    compiled = []
    native = compiler.desugar_and_transform_to_native
    monkeypatch.setattr(compiler, "desugar_and_transform_to_native", lambda comp: compiled.append(comp) or native(comp))
    records, report, _ = _run(ExperimentConfig(data=tiny_data.config, **TINY), tiny_data, build_cache)
    assert compiled == []
    assert [r.val_loss for r in records] == [r.val_loss for r in federated_run[0]]
    assert report.loss == federated_run[1].loss


@pytest.mark.tff
def test_a_warm_up_leaves_a_worker_that_ran_the_processes_and_the_next_run_unchanged(
    federated_run, tiny_data, build_cache
):
    # What the dashboard's pre-build does for the Train defaults (engine.prebuild(..., warm=True)).
    config = ExperimentConfig(data=tiny_data.config, **TINY)
    warming = Experiment(config, data=tiny_data, cache=build_cache)
    warming.build()
    warming.warm_up()
    (warm,) = running_worker_pids()
    records, _, _ = _run(config, tiny_data, build_cache)
    assert running_worker_pids() == [warm]  # the run started on the warmed runtime
    assert [r.val_loss for r in records] == [r.val_loss for r in federated_run[0]]  # and the warm-up left no trace


@pytest.mark.tff
def test_the_cache_keeps_one_warm_runtime_for_its_processes_and_none_that_failed():
    from fedlab.learning.engine import BuildCache
    from fedlab.learning.runtime import Runtime

    local = ExperimentConfig()
    BuildCache().keep_warm(object(), Runtime())  # the default cache (the CLI's) closes it
    assert running_worker_pids() == []
    cache, these, those = BuildCache(keep_runtime=True), object(), object()
    first, second = Runtime(), Runtime()
    cache.keep_warm(these, first)
    cache.keep_warm(those, second)  # one kept at most: the first stops
    assert running_worker_pids() == second.pids
    assert cache.runtime(those, local) is second  # handed out for its own processes ...
    cache.keep_warm(those, second)
    other = cache.runtime(these, local)  # ... and stopped for others
    assert other is not second and running_worker_pids() == other.pids
    with pytest.raises(RuntimeError), other.activate():
        raise RuntimeError("a round failed")
    cache.keep_warm(these, other)
    assert running_worker_pids() == []


@pytest.mark.tff
def test_habits_preset_trains_federated(tiny_data, build_cache):
    # Every feature of the study plus the per-step habit vectors, through TFF.
    config = ExperimentConfig(data=tiny_data.config, features=PRESETS["habits"], **{**TINY, "rounds": 1})
    records, report, _ = _run(config, tiny_data, build_cache)
    assert len(records) == 1 and report.examples == tiny_data.test.targets.size


def test_habits_need_data_prepared_with_them(small_city, build_cache):
    from fedlab.config import DataConfig
    from fedlab.data.pipeline import prepare
    from fedlab.errors import ConfigError

    data = prepare(small_city, DataConfig(top_users=3, n=9))
    experiment = Experiment(
        ExperimentConfig(data=data.config, features=PRESETS["habits"], **TINY), data=data, cache=build_cache
    )
    with pytest.raises(ConfigError, match="user_habits"):
        experiment.prepare()


def test_centralized_twin_yields_one_record_per_epoch(tiny_data, build_cache):
    config = ExperimentConfig(data=tiny_data.config, mode="centralized", personalize_epochs=1, **{**TINY, "rounds": 3})
    records, report, _ = _run(config, tiny_data, build_cache)
    assert [r.round for r in records] == [1, 2, 3]
    assert records[-1].train_loss < records[0].train_loss
    assert report.examples == tiny_data.test.targets.size
    # Fine-tuned figures come beside the shared model's, on the same targets.
    tuned = report.personalized
    assert tuned["examples"] == report.examples and tuned["epochs"] == 1 and tuned["loss"] != report.loss


@pytest.mark.tff
def test_client_sampling_takes_the_asked_number(tiny_data, build_cache):
    config = ExperimentConfig(data=tiny_data.config, clients_per_round=2, **{**TINY, "rounds": 1})
    records, _, _ = _run(config, tiny_data, build_cache)
    assert records[0].clients == 2


def test_early_stopping_keeps_the_best_round(tiny_data):
    """The loop itself, without TFF: validation losses 1.0, 0.5, 0.6, 0.7, 0.8 with patience 2."""
    from fedlab.learning.engine import RoundTiming, _Step

    experiment = Experiment(
        ExperimentConfig(data=tiny_data.config, mode="centralized", rounds=5, patience=2), data=tiny_data
    )
    losses = [1.0, 0.5, 0.6, 0.7, 0.8]

    def fake_epochs():
        for i, loss in enumerate(losses):
            yield _Step(
                train_loss=1.0,
                train_accuracy=0.5,
                val_loss=loss,
                val_accuracy=0.5,
                clients=3,
                weights=[np.full(1, i)],
                seconds=0.01,
                timing=RoundTiming(0.01, 0.0, 0.0),
            )

    experiment._centralized_epochs = fake_epochs
    records = list(experiment.rounds())
    assert [r.round for r in records] == [1, 2, 3, 4]
    assert [r.is_best for r in records] == [True, True, False, False]
    assert experiment._best_weights[0][0] == 1  # the weights of round 2
    assert len(experiment.round_timings) == 4


@pytest.mark.parametrize(
    "losses, patience, best, stop",
    [
        ([], 2, 0, False),
        ([1.0], 1, 1, False),
        ([1.0, 0.5, 0.6], 2, 2, False),
        ([1.0, 0.5, 0.6, 0.7], 2, 2, True),
        ([1.0, 1.0], 1, 1, True),  # an equal loss is no improvement: the first round stays kept
        ([float("nan"), 2.0], 5, 2, False),  # a NaN loss is never kept
        ([float("nan")], 1, 0, True),
    ],
)
def test_early_stopping_decision(losses, patience, best, stop):
    decision = early_stopping(losses, patience=patience)
    assert (decision.best_round, decision.stop) == (best, stop)


def test_federated_weights_cross_the_boundary_in_keras_order(tiny_data):
    # The habits preset has a frozen one-hot layer between trainable ones, so TFF's order differs from Keras'.
    from fedlab.learning.federated import WeightLayout
    from fedlab.learning.model import ModelSpec, build_model

    spec = ModelSpec.from_data(ExperimentConfig(data=tiny_data.config, features=PRESETS["habits"], **TINY), tiny_data)
    model = build_model(spec)
    layout = WeightLayout.of(model)
    assert sorted(layout.keras_index) != list(layout.keras_index) or not model.non_trainable_weights
    weights = [np.random.default_rng(i).random(w.shape).astype(np.float32) for i, w in enumerate(model.get_weights())]
    tff_weights = layout.to_tff(weights)
    assert [w.shape for w in tff_weights.trainable] == [tuple(v.shape) for v in model.trainable_weights]
    assert [w.shape for w in tff_weights.non_trainable] == [tuple(v.shape) for v in model.non_trainable_weights]
    for got, want in zip(layout.to_keras(tff_weights), weights):
        np.testing.assert_array_equal(got, want)


@pytest.mark.tff
def test_the_factory_shares_one_cache_and_prebuild_fills_it(tiny_data, monkeypatch):
    from fedlab.data import pipeline
    from fedlab.learning.engine import BuildCache, experiment_factory, prebuild

    loads = []
    monkeypatch.setattr(pipeline, "load_and_prepare", lambda config, **kw: loads.append(config) or tiny_data)
    cache = BuildCache()
    config = ExperimentConfig(data=tiny_data.config, **TINY)
    timing = prebuild(config, cache)
    assert timing["build_seconds"] > 0 and running_worker_pids() == []  # built, nothing started
    make = experiment_factory(cache)
    first, second = make(config), make(config.replace(rounds=1))
    for experiment in (first, second):
        experiment.build()
        assert experiment.data is tiny_data
    assert len(loads) == 1  # prepared once, by the pre-build
    assert first._processes is second._processes  # built once, by the pre-build


def test_the_cache_keys_prepared_data_on_the_seed_only_for_iid_clients(tiny_data, monkeypatch):
    from fedlab.data import pipeline
    from fedlab.learning.engine import BuildCache

    seeds = []
    monkeypatch.setattr(pipeline, "load_and_prepare", lambda config, *, habits, seed: seeds.append(seed) or tiny_data)
    cache = BuildCache()
    natural, iid = tiny_data.config, dataclasses.replace(tiny_data.config, iid=True)
    for seed in (1, 2, 1):
        cache.data(natural, seed=seed)
        cache.data(iid, seed=seed)
    assert seeds == [1, 1, 2]  # the natural clients once, the IID reshuffle once per seed


def test_client_datasets_skip_tf_data_rewrites_and_autotuning(tiny_data):
    from fedlab.learning.federated import client_dataset
    from fedlab.learning.model import ModelSpec

    spec = ModelSpec.from_data(ExperimentConfig(data=tiny_data.config, **TINY), tiny_data)
    inputs, targets = tiny_data.train.client(0)
    options = client_dataset(inputs, targets, spec, batch_size=8, epochs=2, shuffle_seed=1).options()
    assert options.experimental_optimization.apply_default_optimizations is False
    assert options.autotune.enabled is False
