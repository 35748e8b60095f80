"""The "what to notice" texts of the lessons (fedlab.teaching.lessons): pure functions of the finished runs' numbers.

Each names the figure to look at and says what the numbers show; no sentence claims a result that the
numbers do not carry. Differences within NOISE_POINTS are called too small to read anything into.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedlab.results.attack_view import HONEST, attack_figures
from fedlab.results.fairness import accuracy_checkins_correlation, client_table
from fedlab.results.importance import importance_table
from fedlab.results.privacy import dp_epsilon

NOISE_POINTS = 1.0  # percentage points of test accuracy below which two small runs are called alike


@dataclass(frozen=True)
class RunNumbers:
    """What a finished lesson run measured."""

    accuracy: float  # test acc@1 of the kept model
    best_val_accuracy: float | None = None
    final_train_loss: float | None = None
    rounds: int = 0
    mean_clients: float = 0.0  # clients averaged per round
    mb_up: float = 0.0  # megabytes of client updates over the run
    mb_saved: float = 0.0  # spared by compression
    per_client: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    personalized_accuracy: float | None = None
    total_clients: int | None = None  # training clients (for the privacy budget)
    config: Any = None  # its ExperimentConfig
    test: Mapping[str, Any] = field(default_factory=dict)  # the stored test report (TestReport.to_dict())
    clipped: int = 0  # updates the defence clipped, over the run
    zeroed: int = 0  # updates the defence zeroed, over the run


def points(a: float, b: float) -> float:
    """a − b in percentage points."""
    return 100.0 * (a - b)


def versus(name: str, value: float, reference_name: str, reference: float) -> str:
    """'IID clients reached 31.0% against 27.5% (non-IID clients): +3.5 points.'"""
    return (
        f"{name} reached test acc@1 {value:.1%} against {reference:.1%} ({reference_name}): "
        f"{points(value, reference):+.1f} points."
    )


def reading(difference_points: float, better: str, worse: str) -> str:
    """One sentence that follows the sign and size of a difference in points."""
    if abs(difference_points) < NOISE_POINTS:
        return "The gap is under a point: on runs this small, too little to read anything into."
    return better if difference_points > 0 else worse


def non_iid(runs: Mapping[str, RunNumbers]) -> str:
    iid, ref = runs["IID clients"], runs["non-IID clients"]
    gap = points(iid.accuracy, ref.accuracy)
    return " ".join(
        [
            "Look at the validation accuracy curves and the test results table.",
            versus("IID clients", iid.accuracy, "non-IID clients", ref.accuracy),
            reading(
                gap,
                "Here the clients' differences cost accuracy: mixed data makes every update point the same way.",
                "Here the non-IID run did better: with this few users each one's own habits were worth keeping "
                "together (the IID deal mixes them).",
            ),
        ]
    )


def drift(runs: Mapping[str, RunNumbers]) -> str:
    adam, fedadam = runs["client Adam"], runs["FedAdam"]
    gap = points(fedadam.accuracy, adam.accuracy)
    losses = ""
    if adam.final_train_loss is not None and fedadam.final_train_loss is not None:
        losses = (
            f" Last round's training loss: {adam.final_train_loss:.3f} with client Adam, "
            f"{fedadam.final_train_loss:.3f} with FedAdam."
        )
    return " ".join(
        [
            "Look at the training loss curves, then the test results table." + losses,
            versus("FedAdam", fedadam.accuracy, "client Adam", adam.accuracy),
            reading(
                gap,
                "Keeping Adam's state on the server helped here.",
                "Client Adam did better in these few rounds.",
            ),
        ]
    )


def fedprox(runs: Mapping[str, RunNumbers]) -> str:
    ref = runs["FedAvg"]
    parts = ["Look at the validation accuracy curves and the test results table."]
    for label in ("FedProx mu 0.1", "FedProx mu 1"):
        parts.append(versus(label, runs[label].accuracy, "FedAvg", ref.accuracy))
    strongest = points(runs["FedProx mu 1"].accuracy, ref.accuracy)
    parts.append(
        reading(
            strongest,
            "The stronger term helped here.",
            "The stronger term cost accuracy here: it held the clients so close to the shared model that "
            "they learnt less from their own data in these few rounds.",
        )
    )
    return " ".join(parts)


def participation(runs: Mapping[str, RunNumbers]) -> str:
    ref = runs["every client"]
    parts = ["Look at the clients averaged per round and the validation accuracy curves."]
    for label in ("3 clients per round", "half drop out"):
        run = runs[label]
        parts.append(
            f"{label}: {run.mean_clients:.1f} clients averaged per round against {ref.mean_clients:.1f}; "
            + versus(label, run.accuracy, "every client", ref.accuracy)
        )
    fewest = min(("3 clients per round", "half drop out"), key=lambda label: runs[label].accuracy)
    parts.append(
        reading(
            points(runs[fewest].accuracy, ref.accuracy),
            "Even the weaker setting beat the full rounds here: sampling noise can help a little.",
            f"{fewest} lost the most: fewer updates make each average noisier.",
        )
    )
    return " ".join(parts)


def epsilon_text(run: RunNumbers) -> str:
    """'ε = 12.3' for the run's noise, sampling and rounds; '∞' without noise."""
    config = run.config
    if config is None or config.dp_clip is None:
        return "no privacy promise (ε = ∞)"
    total = run.total_clients or config.data.top_users or 1
    budget = dp_epsilon(
        noise_multiplier=config.dp_noise,
        clients_per_round=config.clients_per_round,
        total_clients=total,
        rounds=max(run.rounds, 0),
    )
    return "ε = ∞" if math.isinf(budget.epsilon) else f"ε = {budget.epsilon:.1f} at δ = {budget.delta:.1e}"


def privacy(runs: Mapping[str, RunNumbers]) -> str:
    ref = runs["no DP"]
    parts = ["Look at the test results table next to each run's ε."]
    for label in ("DP noise 0.5", "DP noise 2"):
        run = runs[label]
        parts.append(f"{label}: {epsilon_text(run)}; " + versus(label, run.accuracy, "no DP", ref.accuracy))
    parts.append(
        reading(
            points(runs["DP noise 2"].accuracy, ref.accuracy),
            "The noise did not cost accuracy here; the ε shows how weak the promise still is.",
            "More noise bought a smaller ε with accuracy.",
        )
    )
    return " ".join(parts)


def personalisation(runs: Mapping[str, RunNumbers]) -> str:
    tuned = runs["fine-tuned 3 epochs"]
    if tuned.personalized_accuracy is None:
        return "The fine-tuned run has no fine-tuned test results; train it again with fine-tuning on."
    gap = points(tuned.personalized_accuracy, tuned.accuracy)
    return " ".join(
        [
            "Look at the row 'acc@1 after local fine-tuning' in the test results table.",
            f"The shared model scored {tuned.accuracy:.1%}; fine-tuned on each client's own check-ins "
            f"it scored {tuned.personalized_accuracy:.1%} on the same targets ({gap:+.1f} points).",
            reading(
                gap,
                "A few local epochs made the model fit each person better.",
                "Fine-tuning hurt here: a client's few check-ins were too few to learn from without overfitting.",
            ),
        ]
    )


def spread_text(label: str, run: RunNumbers) -> str:
    table = client_table(run.per_client)
    if table.empty:
        return f"{label}: no per-client results."
    rho = accuracy_checkins_correlation(table)
    below = (table["accuracy"] < run.accuracy).sum()
    correlation = "" if rho is None else f", rank correlation with check-ins {rho:+.2f}"
    return (
        f"{label}: clients from {table['accuracy'].min():.1%} to {table['accuracy'].max():.1%}, "
        f"{below} of {len(table)} below the overall {run.accuracy:.1%}{correlation}."
    )


def fairness(runs: Mapping[str, RunNumbers]) -> str:
    federated, pooled = runs["federated"], runs["centralized"]
    widths = {label: _spread(run) for label, run in runs.items()}
    parts = [
        "Look at the per-client accuracy chart and the fairness tables.",
        spread_text("federated", federated),
        spread_text("centralized", pooled),
    ]
    if None not in widths.values():
        gap = widths["federated"] - widths["centralized"]
        parts.append(
            reading(
                gap,
                "The federated model's spread is wider: it leaves some users further behind.",
                "The federated model's spread is narrower here than the pooled model's.",
            )
        )
    return " ".join(parts)


def _spread(run: RunNumbers) -> float | None:
    table = client_table(run.per_client)
    return None if table.empty else points(table["accuracy"].max(), table["accuracy"].min())


def compression(runs: Mapping[str, RunNumbers]) -> str:
    ref = runs["32-bit updates"]
    parts = [
        "Look at the megabytes each run sent up and the test results table.",
        f"32-bit updates: {ref.mb_up:.3f} MB up.",
    ]
    for label in ("8-bit updates", "2-bit updates"):
        run = runs[label]
        share = f" ({run.mb_up / ref.mb_up:.0%} of it)" if ref.mb_up else ""
        parts.append(
            f"{label}: {run.mb_up:.3f} MB up{share}, {run.mb_saved:.3f} MB saved; "
            + versus(label, run.accuracy, "32-bit", ref.accuracy)
        )
    return " ".join(parts)


def secure_aggregation(runs: Mapping[str, RunNumbers]) -> str:
    ref, summed = runs["plain sum"], runs["secure sum"]
    extra = summed.mb_up - ref.mb_up
    return " ".join(
        [
            "Look at the test results table and the bytes sent.",
            versus("The secure sum", summed.accuracy, "plain sum", ref.accuracy),
            f"It sent {summed.mb_up:.3f} MB up against {ref.mb_up:.3f} MB ({extra * 1e6:,.0f} bytes more: each "
            "client's weight, its record for the bounds and a few one-bit counts).",
            reading(
                points(summed.accuracy, ref.accuracy),
                "The secure sum even did better here.",
                "That is what clipping to the bounds and rounding to 32-bit integers cost here.",
            ),
            "The server learnt only the sum. A real deployment also pays for key exchanges and masks, which this "
            "simulation does not run.",
        ]
    )


# The poisoning lesson's defence and runs (fedlab.teaching.lessons). On the real data the median did best against
# label flipping (docs/results.md, "Defences from the literature"); on the lesson's 10 synthetic clients it cost the
# honest clients 3.5 points at 30 % and 2.7 at 50 %, where multi-Krum won back 2.6 and 12.1.
DEFENCE = "multi-krum"
CLEAN, ATTACKED, DEFENDED = "no attack", "half flip labels", f"half flip, {DEFENCE} defence"


def poisoning(runs: Mapping[str, RunNumbers]) -> str:
    clean, attacked, defended = runs[CLEAN], runs[ATTACKED], runs[DEFENDED]
    hit, guarded = attack_figures(attacked.test, clean.test), attack_figures(defended.test, clean.test)
    if HONEST not in hit.index or HONEST not in guarded.index:
        return "The attacked runs have no attack results (stored before attacks were measured); train them again."
    honest, reference = hit.loc[HONEST, "run"], hit.loc[HONEST, "clean"]
    shielded = guarded.loc[HONEST, "run"]
    if math.isnan(reference):
        return "The clean run has no per-client results to score the honest clients on; train it again."
    lost, won = points(honest, reference), points(shielded, honest)
    malicious = len(attacked.test["attack"]["malicious_clients"])
    of = f" of {attacked.total_clients}" if attacked.total_clients else ""
    return " ".join(
        [
            "Look at the attack chart (the honest clients' acc@1 beside the clean run's on the same clients), "
            "then at the updates the defence left out per round (counted as zeroed).",
            f"{malicious}{of} clients flipped their labels. The honest clients' test acc@1 was {honest:.1%} against "
            f"{reference:.1%} for the clean run on the same clients ({lost:+.1f} points); over all clients "
            f"{attacked.accuracy:.1%} against {clean.accuracy:.1%}.",
            reading(
                lost,
                "The attack did not hurt the honest clients here.",
                "The poisoned updates pulled the shared model away from what the honest clients do.",
            ),
            f"With the {DEFENCE} defence the honest clients got {shielded:.1%} ({points(shielded, reference):+.1f} "
            f"points against the clean run, {won:+.1f} against no defence); it left out {defended.zeroed:,} "
            f"update{'' if defended.zeroed == 1 else 's'} in {defended.rounds} rounds.",
            _defence_reading(lost, won),
        ]
    )


def _defence_reading(lost: float, won: float) -> str:
    """What the defence's gain over the undefended run says, given what the attack cost (both in points)."""
    if abs(won) < NOISE_POINTS:
        return (
            "The defence changed the honest clients' accuracy by less than a point: the updates it kept were no "
            "better than all of them."
        )
    if won < 0:
        return "The defence cost more than it saved here: the updates it left out were not only the poisoned ones."
    if lost <= -NOISE_POINTS:
        share = "all" if won >= -lost else f"{won:.1f}"
        return f"The defence won back {share} of the {-lost:.1f} points the attack cost."
    return "The defended run scored higher still."


FEATURES_BASE, WITH_USER, WITH_VENUE = "category and time", "with user_id", "with venue_id"


def features(runs: Mapping[str, RunNumbers]) -> str:
    """An add-one sweep from the lesson base (category and time), with the user's id and with the venue's id; each
    run's permutation importance beside what adding the feature and retraining did."""
    base, user, venue = runs[FEATURES_BASE], runs[WITH_USER], runs[WITH_VENUE]
    parts = [
        "Look at the test results table, then the 'Which features matter' chart and 'Who each feature helps'.",
        versus(WITH_USER, user.accuracy, FEATURES_BASE, base.accuracy),
        versus(WITH_VENUE, venue.accuracy, FEATURES_BASE, base.accuracy),
    ]
    top = importance_table(base.test.get("importance"))
    if not top.empty:
        first = top.iloc[0]
        parts.append(
            f"In the base run, shuffling {first['feature']} within each client costs the most: "
            f"{first['drop'] * 100:+.1f} points (± {first['spread'] * 100:.1f} over the shuffles); it helps "
            f"{first['helped']:.0%} of the clients, whose own drops spread ± {first['client_spread'] * 100:.1f} points."
        )
    parts.append(_added("user_id", user, points(user.accuracy, base.accuracy)))
    parts.append(_added("venue_id", venue, points(venue.accuracy, base.accuracy)))
    return " ".join(parts)


def _added(feature: str, run: RunNumbers, gain: float) -> str:
    """What shuffling the added feature cost the retrained run, against what adding it gained."""
    table = importance_table(run.test.get("importance"))
    row = table[table["feature"] == feature]
    if row.empty:
        return f"The run {feature} has no permutation importance (tested before it was measured)."
    drop = 100 * float(row["drop"].iloc[0])
    if feature == "user_id" and drop == 0:
        return (
            f"Shuffling user_id costs exactly nothing, since each client holds one user, while adding it moved acc@1 "
            f"{gain:+.1f} points: permutation within a client cannot see what differs only between clients; the "
            "retrained run can."
        )
    if _sense(drop) == _sense(gain):
        verdict = "the two measures agree."
    else:
        verdict = (
            "they disagree: what the kept model leans on is not what retraining without it loses (another feature "
            "can make up for it, or the model learns to use it only when it has to)."
        )
    return (
        f"Shuffling {feature} costs {drop:+.1f} points of the run that has it, against {gain:+.1f} for adding it: "
        + verdict
    )


def _sense(value_points: float) -> int:
    """+1 (helps), 0 (under NOISE_POINTS: too small to read) or -1 (hurts)."""
    return 0 if abs(value_points) < NOISE_POINTS else (1 if value_points > 0 else -1)
