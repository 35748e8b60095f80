"""fedlab.results.explain: the account of one round names the round's own figures and the run's settings."""

from __future__ import annotations

import math

import pandas as pd

from fedlab.config import PRESETS, ExperimentConfig
from fedlab.results.explain import round_explanation, sampled_clients


def latest(**changes) -> pd.Series:
    row = {
        "round": 4,
        "train_loss": 1.234,
        "train_accuracy": 0.41,
        "val_loss": 1.5,
        "val_accuracy": 0.375,
        "clients": 18,
        "seconds": 2.0,
        "is_best": True,
    }
    return pd.Series({**row, **changes})


def test_every_step_of_a_federated_round_with_its_figures():
    config = ExperimentConfig(
        rounds=10, clients_per_round=20, epochs=2, batch_size=8, client_lr=0.05, client_dropout=0.1
    )
    text = round_explanation(config, latest(), total_clients=100)
    assert text.startswith("**Round 4** of at most 10")
    assert "20 of the 100 clients" in text and "probability 10%" in text and "**18 reported back**" in text
    assert "2 local epochs" in text and "N = 17" in text and "8 sequences per batch" in text
    assert "Adam (learning rate 0.05)" in text
    assert "training loss averaged 1.234, accuracy 41.0%" in text
    assert "averaged the 18 updates, each weighted by that client's number of training examples" in text
    assert "SGD with learning rate 1" in text and "plain FedAvg" in text
    assert "validation loss 1.500, accuracy 37.5% — the best so far" in text
    assert [line[:3] for line in text.split("\n\n")[1].splitlines()] == ["1. ", "2. ", "3. ", "4. ", "5. "]


def test_no_dropout_no_dp_and_all_clients():
    text = round_explanation(
        ExperimentConfig(server_optimizer="adam", server_lr=0.5), latest(is_best=False), total_clients=12
    )
    assert "all 12 clients" in text and "reported back" not in text and "noise" not in text
    assert "Adam with learning rate 0.5" in text and "plain FedAvg" not in text and "best so far" not in text


def test_dp_explains_clipping_and_noise():
    text = round_explanation(ExperimentConfig(dp_clip=0.5, dp_noise=1.2), latest(), total_clients=12)
    assert "clipped to length 0.5" in text and "noise (multiplier 1.2)" in text


def test_before_the_first_round_the_settings_are_explained_without_figures():
    config = ExperimentConfig(rounds=3, client_dropout=0.2)
    text = round_explanation(config, None)
    assert text.startswith("**Waiting for round 1** of at most 3")
    assert "all 100 clients" in text  # the settings' user count, until the run knows its clients
    assert "probability 20%" in text and "reported back" not in text and "validation loss" not in text


def test_a_round_without_validation_figures_leaves_the_check_out():
    text = round_explanation(ExperimentConfig(), latest(val_loss=math.nan), total_clients=5)
    assert "**Check.**" not in text and "4. **Server step.**" in text


def test_centralized_runs_are_explained_as_epochs_on_pooled_data():
    text = round_explanation(ExperimentConfig(mode="centralized", batch_size=32), latest(round=2), total_clients=5)
    assert text.startswith("**Epoch 2** of at most 10 (centralized)")
    assert "pooled" in text and "batches of 32" in text and "validation loss 1.500" in text


def test_sampled_clients_caps_at_the_population():
    assert sampled_clients(ExperimentConfig(clients_per_round=50), 10) == 10
    assert sampled_clients(ExperimentConfig(clients_per_round=5), None) == 5
    assert sampled_clients(ExperimentConfig(), 7) == 7


def test_the_algorithm_server_optimizer_and_compression_are_named():
    config = ExperimentConfig(algorithm="fedprox", prox_mu=0.1, server_optimizer="yogi", compression_bits=8)
    text = round_explanation(config, latest(), total_clients=12)
    assert "proximal term of strength mu = 0.1" in text
    assert "Yogi with learning rate 1" in text and "plain FedAvg" not in text
    assert "compressed to 8 bits a value" in text


def test_the_average_says_what_the_server_sees_and_what_secure_aggregation_would_cost():
    text = round_explanation(ExperimentConfig(), latest())
    assert "saw each client's update on its own" in text and "only their sum" in text
    assert all(cost in text for cost in ("clipped to bounds", "bit width", "extra bytes"))
    assert "Secure aggregation" not in round_explanation(ExperimentConfig(mode="centralized"), latest())


def test_the_panel_says_how_tff_ran_the_clients_and_why():
    text = round_explanation(ExperimentConfig(), latest(), total_clients=12)
    assert "**How TFF ran it: shards.**" in text and "the same FedAvg as one TFF client per user" in text
    text = round_explanation(ExperimentConfig(dp_clip=0.5), latest(), total_clients=12)
    assert "**How TFF ran it: one TFF client per user**, because DP clips each user's update." in text
    text = round_explanation(ExperimentConfig(one_client_per_user=True), latest(), total_clients=12)
    assert "because one TFF client per user was asked for" in text
    recon = ExperimentConfig(features=PRESETS["habits"], reconstruction=True)
    text = round_explanation(recon, latest(), total_clients=12)
    assert "**How TFF ran it: shards.**" in text and "the same FedRecon as one TFF client per user" in text
    assert "local part at its initial values, re-learnt first" in text


def test_a_secure_run_says_the_server_saw_only_the_sum_and_that_no_cryptography_ran():
    text = round_explanation(ExperimentConfig(secure_aggregation=True), latest())
    assert "saw only the sum" in text and "32-bit integers" in text and "no key exchange or masking ran" in text
    assert "on its own" not in text
