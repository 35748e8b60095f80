import dataclasses

import pytest

from fedlab.config import PRESETS, DataConfig, ExperimentConfig, settings
from fedlab.errors import ConfigError


def test_presets_match_the_study():
    assert PRESETS["central"][0] == "cat_id" and len(PRESETS["central"]) == 9
    assert len(PRESETS["biggest"]) == 15
    assert PRESETS["habits"] == (*PRESETS["biggest"], "user_habits")  # the study's biggest plus user habits


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"features": ()}, "at least one feature"),
        ({"features": ("cat_id", "nope")}, "unknown feature"),
        ({"rounds": 0}, "rounds"),
        ({"epochs": -1}, "local epochs"),
        ({"batch_size": 0}, "batch size"),
        ({"client_lr": 0.0}, "client learning rate"),
        ({"server_lr": -1.0}, "server learning rate"),
        ({"client_lr": float("nan")}, "client learning rate"),
        ({"dp_noise": 1.0}, "clipping norm"),
        ({"workers": ("localhost",)}, "host:port"),
    ],
)
def test_bad_settings_are_refused_with_a_message(changes, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(**changes)


def test_bad_data_settings_are_refused():
    with pytest.raises(ConfigError, match="N must be a whole number of at least 2"):
        DataConfig(n=1)
    with pytest.raises(ConfigError, match="grouping"):
        DataConfig(grouping="coarse")


def test_round_trip_through_a_dict():
    config = ExperimentConfig(data=DataConfig(n=9, grouping="root"), features=PRESETS["biggest"], rounds=3)
    assert ExperimentConfig.from_dict(config.to_dict()) == config


def test_replace_reaches_data_settings():
    config = ExperimentConfig().replace(n=5, rounds=2)
    assert config.data.n == 5 and config.rounds == 2
    other = DataConfig(grouping="fine")
    assert ExperimentConfig().replace(data=other).data == other


def test_the_seed_is_one_setting_of_the_run():
    assert "seed" not in {f.name for f in dataclasses.fields(DataConfig)}
    assert ExperimentConfig().replace(seed=3).seed == 3


def test_runs_stored_with_the_old_data_seed_keep_it():
    old = {**ExperimentConfig().to_dict(), "data": {**DataConfig().__dict__, "seed": 5}}
    del old["seed"]
    assert ExperimentConfig.from_dict(old).seed == 5
    newer = {**old, "seed": 2}
    assert ExperimentConfig.from_dict(newer).seed == 2  # the top-level seed wins


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"rounds": 1001}, "rounds must be a whole number of at most 1000, not 1001"),
        ({"rounds": 2.5}, "rounds must be a whole number of at least 1, not 2.5"),
        ({"top_users": 0}, "top users must be a whole number of at least 1 (or all), not 0"),
        ({"dropout": 1.0}, "GRU dropout must be a number below 1, not 1.0"),
        ({"client_dropout": -0.1}, "client dropout must be a number of at least 0, not -0.1"),
        ({"dp_clip": 0.0}, "DP clipping norm must be a number above 0 (or off), not 0.0"),
        ({"mode": "solo"}, "mode must be one of federated, centralized, not 'solo'"),
        ({"iid": "yes"}, "IID clients must be yes or no"),
        ({"seed": -1}, "seed must be a whole number of at least 0, not -1"),
    ],
)
def test_bounds_in_the_field_metadata_give_the_message(changes, message):
    with pytest.raises(ConfigError) as caught:
        ExperimentConfig().replace(**changes)
    assert str(caught.value) == message or str(caught.value).startswith(message)


def test_every_bound_of_the_metadata_is_allowed_and_checked():
    for name, setting, default in settings():
        assert setting.problem(default) is None, name  # the defaults are allowed
        if setting.kind in ("int", "float") and setting.max is not None and not setting.below:
            base = ExperimentConfig(dp_clip=1.0)  # DP noise needs a clipping norm
            base.replace(**{name: setting.max})  # the upper limit itself is allowed
            with pytest.raises(ConfigError, match="of at most"):
                base.replace(**{name: setting.max + 1})


def test_plain_fedavg_trains_on_shards_and_per_user_settings_say_why():
    from fedlab.config import PER_USER, SHARDS, training_path, training_path_text

    assert training_path(ExperimentConfig(server_optimizer="adam", client_dropout=0.2, malicious_clients=0.2)) == (
        SHARDS,
        "many users per TFF client call, the same weighted FedAvg",
    )
    assert (
        training_path_text(ExperimentConfig(compression_bits=8)) == "per user: compression quantises each user's update"
    )
    recon = {"features": PRESETS["habits"], "reconstruction": True}
    assert training_path(ExperimentConfig(**recon)) == (SHARDS, "many users per TFF client call, the same FedRecon")
    for changes in (
        {"dp_clip": 1.0},
        {"defense": "clip"},
        {"algorithm": "mime"},
        {"one_client_per_user": True},
        {**recon, "compression_bits": 8},
        {**recon, "one_client_per_user": True},
    ):
        assert training_path(ExperimentConfig(**changes))[0] == PER_USER
    # The path decides which TFF processes are built, so it is part of their cache key.
    assert ExperimentConfig().model_shape_key != ExperimentConfig(one_client_per_user=True).model_shape_key
