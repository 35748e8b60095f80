"""Plain-language account of what one training round did, with that round's own figures filled in.

Pure text (Markdown) from a run's settings and its latest round, for the "explain while it runs"
panel beside the live charts. No Streamlit here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fedlab.config import DEFENSE_HELP, GATHERING_DEFENSES, SHARDS, ExperimentConfig, training_path

OPTIMIZER_NAMES = {"sgd": "SGD", "sgdm": "SGD with momentum", "adam": "Adam", "yogi": "Yogi", "adagrad": "Adagrad"}


def sampled_clients(config: ExperimentConfig, total_clients: int | None) -> int | None:
    """Clients the server picks each round: clients per round, capped at the population (None = unknown)."""
    if config.clients_per_round is None:
        return total_clients
    if total_clients is None:
        return config.clients_per_round
    return min(config.clients_per_round, total_clients)


def round_explanation(config: ExperimentConfig, latest: Mapping | None, *, total_clients: int | None = None) -> str:
    """Markdown: what the latest round did, step by step, or what the first one will do before it has run.

    `latest` is one row of a rounds table (round, clients, train/val loss and accuracy, is_best);
    `total_clients` the clients with training data, when known (else the settings' user count is used).
    """
    if config.mode == "centralized":
        return _centralized(config, latest)
    population = total_clients if total_clients is not None else config.data.top_users
    sampled = sampled_clients(config, population)
    header = (
        f"**Round {int(latest['round'])}** of at most {config.rounds}"
        if latest is not None
        else f"**Waiting for round 1** of at most {config.rounds}"
    )
    reported = None if latest is None else int(latest["clients"])
    steps = [
        _sample_step(config, sampled, population, reported),
        _local_step(config, latest),
        _average_step(config, reported),
        _server_step(config),
        _validation_step(latest),
    ]
    text = header + "\n\n" + "\n".join(f"{i}. {text}" for i, text in enumerate(filter(None, steps), 1))
    text += attack_paragraph(config, latest) + "\n\n" + path_paragraph(config)
    return text + "\n\n" + RECONSTRUCTION_NOTE if config.reconstruction else text


def path_paragraph(config: ExperimentConfig) -> str:
    """How TFF ran the clients' training: shards of users per TFF client call, or one TFF client per user, and why."""
    path, why = training_path(config)
    if path == SHARDS:
        start = (
            "each from the global model with its local part at its initial values, re-learnt first, and fresh "
            "optimizers"
            if config.reconstruction
            else "each from the global model with a fresh optimizer"
        )
        same = "FedRecon" if config.reconstruction else "FedAvg"
        return (
            "**How TFF ran it: shards.** The users trained in a few shards, one TFF client call each, one user "
            f"after another, {start}; each shard sent its users' example-weighted mean update with their total "
            f"weight, so the average is the same {same} as one TFF client per user, only faster. The setting "
            "*One TFF client per user* runs it that way."
        )
    return f"**How TFF ran it: one TFF client per user**, because {why}."


# What Federated Reconstruction keeps on the clients, said below the steps of a run that uses it.
RECONSTRUCTION_NOTE = (
    "**The user part stayed local** (Federated Reconstruction). The user_id embedding and the habit path never "
    "left the clients: each client reset them to their initial values, re-learnt them on its own data with the "
    "shared layers frozen, and only then trained the shared layers. The server sent, averaged and kept the shared "
    "layers alone, so the bytes of each round leave the user part out; before its test each client re-learns "
    "its own user part the same way."
)


# What the malicious clients do to their training targets, by attack.
POISONING = {
    "label-flip": "map every training target to another category by one fixed permutation",
    "random-labels": "replace their training targets with categories drawn at random",
}


def attack_paragraph(config: ExperimentConfig, latest: Mapping | None) -> str:
    """A paragraph (after a blank line) on the run's malicious clients and defence, with the latest round's
    counts of clipped and zeroed updates; "" for a run with neither."""
    parts = []
    if config.malicious_clients > 0:
        a, _, b = config.attack_classes.partition(":")
        poisoning = POISONING.get(config.attack, f"relabel every training target of class {a.strip()} as {b.strip()}")
        parts.append(
            f"{config.malicious_clients:.0%} of the clients are malicious (drawn once with the seed): they "
            f"{poisoning}, then train and send their updates like everyone else. Validation and test data are "
            "never poisoned."
        )
    if config.defense != "none":
        parts.append(f"Defence **{config.defense}**{_defense_settings(config)}. {DEFENSE_HELP[config.defense]} ")
        parts[-1] += _defense_counts(config, latest)
    elif parts:
        parts.append("No defence: the server averages the poisoned updates with the honest ones.")
    return "\n\n**Attack and defence.** " + " ".join(parts) if parts else ""


def _sample_step(config: ExperimentConfig, sampled: int | None, population: int | None, reported: int | None) -> str:
    picked = _count(sampled, "client")
    if population is not None and sampled is not None and sampled < population:
        picked = f"{sampled:,} of the {population:,} clients"
    elif population is not None:
        picked = f"all {population:,} clients"
    text = f"**Sample.** The server sent the current model to {picked}."
    if config.client_dropout > 0:
        share = f"{config.client_dropout:.0%}"
        if reported is None:
            text += f" Each fails to report with probability {share} (client dropout)."
        else:
            text += f" Each fails to report with probability {share}; this round **{reported:,} reported back**."
    return text


def _local_step(config: ExperimentConfig, latest: Mapping | None) -> str:
    text = (
        f"**Train locally.** Each client ran {_count(config.epochs, 'local epoch')} over its own sequences of "
        f"N = {config.data.n} check-ins, {config.batch_size} sequences per batch, with "
        f"{_optimizer(config.client_optimizer)} (learning rate {config.client_lr:g})."
    )
    if config.algorithm == "fedprox":
        text += f" FedProx added a proximal term of strength mu = {config.prox_mu:g} to each client's loss."
    elif config.algorithm == "mime":
        text += " MIME-lite: each local step used the server optimizer's state, held fixed during the round."
    if latest is not None and _finite(latest.get("train_loss")):
        text += f" Their training loss averaged {latest['train_loss']:.3f}, accuracy {latest['train_accuracy']:.1%}."
    return text


def _average_step(config: ExperimentConfig, reported: int | None) -> str:
    updates = "the updates" if reported is None else f"the {_count(reported, 'update')}"
    text = (
        f"**Average.** The server averaged {updates}, each weighted by that client's number of training "
        "examples, so clients with more check-ins count more. Raw check-ins never left the clients."
    )
    if config.compression_bits:
        text += (
            f" Each update travelled compressed to {config.compression_bits} bits a value (TFF's uniform "
            "quantisation after a random rotation), so the average is slightly noisy."
        )
    if config.dp_clip is not None:
        text += (
            f" With differential privacy each update was first clipped to length {config.dp_clip:g}, and "
            f"Gaussian noise (multiplier {config.dp_noise:g}) was added to the sum."
        )
    return text + " " + (SECURE_VIEW if config.secure_aggregation else SERVER_VIEW)


# What the server sees, said beside every average.
SERVER_VIEW = (
    "The server saw each client's update on its own. Secure aggregation (a what-if) would let it see only their "
    "sum: each value clipped to bounds, summed as integers of a fixed bit width and masked pairwise, which costs "
    "some precision, extra bytes and key exchanges per client."
)
SECURE_VIEW = (
    "With secure aggregation the server saw only the sum: TFF's secure aggregator clipped each value to bounds it "
    "estimates every round and summed the values as 32-bit integers modulo 2^32, with a few extra bytes per client. "
    "This run computed those numbers in the clear: it simulates what secure aggregation produces, not its "
    "cryptography, so no key exchange or masking ran."
)


def _server_step(config: ExperimentConfig) -> str:
    plain = " (SGD at rate 1 is plain FedAvg)" if config.server_optimizer == "sgd" and config.server_lr == 1 else ""
    return (
        f"**Server step.** {_optimizer(config.server_optimizer)} with learning rate {config.server_lr:g} "
        f"moved the global model along the averaged update{plain}."
    )


def _validation_step(latest: Mapping | None) -> str | None:
    if latest is None or not _finite(latest.get("val_loss")):
        return None
    best = " — the best so far, so this model is kept" if bool(latest.get("is_best")) else ""
    return (
        f"**Check.** On the clients' held-out later check-ins: validation loss {latest['val_loss']:.3f}, "
        f"accuracy {latest['val_accuracy']:.1%}{best}."
    )


def _centralized(config: ExperimentConfig, latest: Mapping | None) -> str:
    header = (
        f"**Epoch {int(latest['round'])}** of at most {config.rounds} (centralized)"
        if latest is not None
        else f"**Waiting for epoch 1** of at most {config.rounds} (centralized)"
    )
    text = (
        f"All clients' training sequences (N = {config.data.n}) are pooled in one place, and the model makes "
        f"one pass over them in batches of {config.batch_size} with {_optimizer(config.client_optimizer)} "
        f"(learning rate {config.client_lr:g}). No averaging: this is the reference that federated runs "
        "are measured against."
    )
    check = _validation_step(latest)
    return header + "\n\n" + text + (f"\n\n{check}" if check else "")


def _optimizer(name: str) -> str:
    return OPTIMIZER_NAMES.get(name, name)


def _count(number: int | None, noun: str) -> str:
    if number is None:
        return f"the sampled {noun}s"
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _defense_settings(config: ExperimentConfig) -> str:
    """The defence's own settings, in brackets, when it has any."""
    if config.defense in ("clip", "norm-bound") and config.clip_norm:
        return f" (clipping norm {config.clip_norm:g})"
    if config.defense == "trimmed-mean":
        return f" (beta {config.trim_beta:g})"
    if config.defense == "multi-krum":
        f = "the malicious share" if config.krum_byzantine is None else config.krum_byzantine
        return f" (attackers assumed: {f})"
    return ""


def _defense_counts(config: ExperimentConfig, latest: Mapping | None) -> str:
    """What the defence counts every round, and this round's counts when there is one."""
    if config.defense in GATHERING_DEFENSES:
        needs = (
            "It needs every update at the server: this simulation's server holds them all, which is why it cannot run "
            "under secure aggregation."
        )
        if config.defense != "multi-krum":
            return f"{needs} It drops no whole update, so its clipped and zeroed counts stay 0."
        if latest is None:
            return f"{needs} It counts the updates it leaves out every round (as zeroed)."
        left_out, clients = int(latest.get("zeroed", 0)), int(latest["clients"])
        return f"{needs} This round it left out {left_out:,} of the {clients:,} updates."
    if latest is None:
        return "It counts the updates it clips and zeroes every round."
    return (
        f"This round it clipped {int(latest.get('clipped', 0)):,} and zeroed {int(latest.get('zeroed', 0)):,} "
        f"of the {int(latest['clients']):,} updates."
    )
