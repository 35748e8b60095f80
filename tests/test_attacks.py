"""Poisoning by malicious clients (pure functions on hand-built inputs) and the checks of its settings."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.config import ExperimentConfig
from fedlab.data import attacks
from fedlab.data.attacks import Attack
from fedlab.errors import ConfigError
from tests.test_cli import fedlab

CLASSES = ("Bar", "Cafe", "Park", "Work")


def attack(kind: str, *, malicious=(1,), pair=None) -> Attack:
    return Attack(kind=kind, malicious=frozenset(malicious), num_classes=len(CLASSES), seed=7, pair=pair)


def test_the_malicious_share_is_drawn_once_from_the_seed():
    clients = np.arange(10)
    chosen = attacks.choose_malicious(clients, share=0.3, seed=4)
    assert len(chosen) == 3 and chosen <= set(range(10))
    assert attacks.choose_malicious(clients, share=0.3, seed=4) == chosen
    assert {frozenset(attacks.choose_malicious(clients, share=0.3, seed=s)) for s in range(6)} != {chosen}


def test_a_small_share_still_makes_one_client_malicious_and_zero_makes_none():
    assert len(attacks.choose_malicious(np.arange(4), share=0.05, seed=0)) == 1
    assert attacks.choose_malicious(np.arange(4), share=0.0, seed=0) == frozenset()


def test_the_label_flip_permutation_moves_every_class():
    mapping = attacks.label_permutation(27, seed=3)
    assert sorted(mapping) == list(range(27))
    assert not np.any(mapping == np.arange(27))


def test_label_flip_changes_every_target_of_a_malicious_client_only():
    targets = np.array([[0, 1, 2], [3, 0, 1]], dtype=np.int32)
    flipped = attack("label-flip").poison(targets, client=1)
    assert flipped.dtype == targets.dtype and np.all(flipped != targets)
    assert np.array_equal(attack("label-flip").poison(targets, client=0), targets)


def test_random_labels_stay_the_same_every_round():
    targets = np.zeros((20, 5), dtype=np.int32)
    first = attack("random-labels").poison(targets, client=1)
    assert np.array_equal(first, attack("random-labels").poison(targets, client=1))
    assert len(np.unique(first)) > 1 and first.max() < len(CLASSES)


def test_targeted_relabels_only_class_a_as_b():
    targets = np.array([0, 1, 2, 0, 3], dtype=np.int32)
    assert attack("targeted", pair=(0, 2)).poison(targets, client=1).tolist() == [2, 1, 2, 2, 3]


def test_the_targeted_pair_is_read_in_any_case_and_unknown_classes_are_named():
    assert attacks.resolve_pair("bar:PARK", CLASSES) == (0, 2)
    with pytest.raises(ConfigError, match="unknown class 'Gym'.*Bar, Cafe, Park, Work"):
        attacks.resolve_pair("Gym:Bar", CLASSES)


@pytest.mark.parametrize("text", ["Bar", "Bar:", ":Cafe", "Bar:bar", ""])
def test_a_malformed_pair_is_refused_in_one_line(text):
    with pytest.raises(ConfigError, match="targeted attack needs"):
        attacks.parse_pair(text)


def test_success_is_the_share_of_true_a_predicted_b():
    confusion = [[6, 1, 3, 0], [0, 5, 0, 0], [0, 0, 4, 0], [0, 0, 0, 2]]
    assert attacks.targeted_success(confusion, (0, 2)) == pytest.approx(0.3)
    assert attacks.targeted_success([[0, 0], [0, 1]], (0, 1)) is None


def test_honest_accuracy_leaves_the_malicious_clients_out():
    per_client = {"a": {"accuracy": 0.5, "examples": 10}, "b": {"accuracy": 1.0, "examples": 30}}
    per_client["m"] = {"accuracy": 0.0, "examples": 60}
    assert attacks.honest_accuracy(per_client, {"m"}) == (pytest.approx(0.875), 40)


def test_the_summary_names_the_malicious_clients_by_id():
    summary = attacks.attack_summary(
        attack=attack("targeted", malicious=(1,), pair=(0, 2)),
        client_ids=("u1", "u2"),
        class_names=CLASSES,
        per_client={"u1": {"accuracy": 0.5, "examples": 4}, "u2": {"accuracy": 0.0, "examples": 4}},
        confusion=[[1, 0, 3, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
    )
    assert summary["malicious_clients"] == ["u2"] and summary["honest_accuracy"] == 0.5
    assert summary["pair"] == ["Bar", "Park"] and summary["success"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"malicious_clients": 1.0},
            "malicious client share must be a number below 1, not 1.0",
        ),
        ({"malicious_clients": -0.1}, "malicious client share must be a number of at least 0"),
        ({"malicious_clients": 0.2, "attack": "targeted"}, "targeted attack needs its classes as A:B"),
        ({"mode": "centralized", "defense": "robust"}, "attacks and defences apply to federated runs only"),
        ({"mode": "centralized", "malicious_clients": 0.1}, "attacks and defences apply to federated runs only"),
        ({"defense": "clip", "dp_clip": 1.0}, "DP already clips"),
        ({"defense": "robust", "compression_bits": 8}, "cannot be combined"),
        ({"defense": "clip", "clip_norm": 0.0}, "defence clipping norm must be a number above 0"),
        ({"attack": "poison"}, "attack must be one of label-flip, random-labels, targeted"),
    ],
)
def test_impossible_attack_and_defence_settings_are_refused_in_one_line(changes, message):
    with pytest.raises(ConfigError, match=message) as caught:
        ExperimentConfig(**changes)
    assert "\n" not in str(caught.value)


def test_the_cli_reads_the_targeted_pair_as_the_attacks_second_word():
    from fedlab.cli import build_parser, experiment_config_from

    args = build_parser().parse_args(["run", "--malicious-clients", "0.3", "--attack", "targeted", "Bar:Cafe"])
    config = experiment_config_from(args)
    assert (config.attack, config.attack_classes, config.malicious_clients) == ("targeted", "Bar:Cafe", 0.3)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--malicious-clients", "1"], "below 1"),
        (["--malicious-clients", "0.3", "--attack", "targeted"], "needs its classes as A:B"),
        (["--attack", "targeted", "A:B", "C:D"], "takes a choice and at most one more word"),
        (["--mode", "centralized", "--defense", "clip"], "federated runs only"),
    ],
)
def test_the_cli_refuses_bad_attack_settings_with_status_2(arguments, message):
    done = fedlab("run", "--no-store", *arguments)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.tff
def test_a_cli_run_under_attack_prints_and_records_what_the_attack_and_defence_did(tmp_path, capsys):
    import json

    from fedlab import cli
    from tests.test_cli import TINY_RUN

    # In this process, as the CLI's own main() (tests/test_cli.py runs it as a process of its own).
    attacked = [*TINY_RUN, "--malicious-clients", "0.34", "--attack", "targeted", "bar:cafe"]
    out_file = tmp_path / "run.json"
    code = cli.main(
        [*attacked, "--defense", "clip", "--clip-norm", "0.000001", "--json-out", str(out_file), "--no-store"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "under attack (targeted, 1 malicious client)" in out and "true Bar predicted Cafe" in out
    result = json.loads(out_file.read_text())
    assert [r["clipped"] for r in result["rounds"]] == [r["clients"] for r in result["rounds"]]
    assert f"({result['rounds'][0]['clipped']} clipped)" in out
    assert (
        result["test"]["attack"]["pair"] == ["Bar", "Cafe"] and len(result["test"]["attack"]["malicious_clients"]) == 1
    )
    # Refused before any training.
    code = cli.main([*TINY_RUN, "--malicious-clients", "0.34", "--attack", "targeted", "Bar:Gym", "--no-store"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown class 'Gym'" in err and "Traceback" not in err
