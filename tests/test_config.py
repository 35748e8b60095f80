import pytest

from fedlab.config import PRESETS, DataConfig, ExperimentConfig
from fedlab.errors import ConfigError


def test_presets_match_the_study():
    assert PRESETS["central"][0] == "cat_id" and len(PRESETS["central"]) == 9
    assert len(PRESETS["biggest"]) == 15
    assert PRESETS["habits"] == (*PRESETS["biggest"], "user_habits")  # the study's biggest plus user habits


@pytest.mark.parametrize("changes, message", [
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
])
def test_bad_settings_are_refused_with_a_message(changes, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(**changes)


def test_bad_data_settings_are_refused():
    with pytest.raises(ConfigError, match="N must be at least 2"):
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
