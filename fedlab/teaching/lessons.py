"""Lessons: one federated-learning topic each, with theory, prepared runs and a "what to notice" text.

Every lesson trains a reference run and one or two what-if runs with fixed settings on the synthetic
city (small models, so a lesson trains in about two minutes on two cores). A run is reused, never
retrained, when the store holds a finished run with an equal config (the name aside). The
"what to notice" text is written from the finished runs' own numbers (fedlab.teaching.lesson_notes); while a
run is missing it says what is still training. The Lessons page (pages/lessons.py) and
`python -m fedlab lessons` use this module; it imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fedlab.config import DataConfig, ExperimentConfig
from fedlab.records import communication_totals
from fedlab.results.attack_view import defence_totals
from fedlab.runs.store import ACTIVE_STATUSES, Run, RunStore
from fedlab.runs.sweeps import plan_sweep
from fedlab.teaching import lesson_notes as notes
from fedlab.teaching.lesson_notes import RunNumbers

# The synthetic city's 10 busiest users; a round's time grows with the clients, so few keep a lesson short.
LESSON_DATA = DataConfig(top_users=10)
# Every lesson run starts from these. GRU dropout 0 makes a run repeat exactly, so runs can be shared.
BASE = ExperimentConfig(
    data=LESSON_DATA,
    rounds=6,
    patience=6,
    epochs=3,
    gru_units=32,
    dropout=0.0,
    seed=0,
    name="Lesson · FedAvg, client Adam, non-IID",
)
FEDADAM = dict(client_optimizer="sgd", client_lr=0.3, server_optimizer="adam", server_lr=0.01)  # the Train page's
# Half the clients poison: on the 10 lesson clients label-flipping cost the honest clients 1.4 points of test acc@1
# at 20 %, 4.0 at 30 % and 5.6 at 50 % (measured against the clean run), so half shows the clearest drop.
POISONED_SHARE = 0.5


@dataclass(frozen=True)
class LessonRun:
    label: str  # its role in the lesson ("reference", "IID clients")
    config: ExperimentConfig


@dataclass(frozen=True)
class Lesson:
    key: str
    title: str
    theory: str  # two or three sentences
    runs: tuple[LessonRun, ...]  # the reference first
    notice: Callable[[Mapping[str, RunNumbers]], str]  # label -> numbers of every run -> the text


def variant(name: str, **changes) -> ExperimentConfig:
    """BASE with some settings changed and a run name of its own."""
    return BASE.replace(name=f"Lesson · {name}", **changes)


def _reference(label: str = "reference") -> LessonRun:
    return LessonRun(label, BASE)


def _what_if(label: str, **changes) -> LessonRun:
    """A run of the base settings with `changes`, named by its label."""
    return LessonRun(label, variant(label, **changes))


def lessons() -> list[Lesson]:
    """Every lesson, in teaching order."""
    return [
        Lesson(
            "non_iid",
            "Non-IID against IID clients",
            "Each phone holds only its owner's check-ins, so clients see very different data (non-IID). "
            "FedAvg averages updates that pull in different directions. Dealing the same sequences out at "
            "random (IID) shows what those differences cost.",
            (_reference("non-IID clients"), _what_if("IID clients", iid=True)),
            notes.non_iid,
        ),
        Lesson(
            "drift",
            "Client drift: client Adam against FedAdam",
            "With several local epochs each client drifts towards its own data before the server averages. "
            "An adaptive optimizer on the clients restarts its state every round; FedAdam instead keeps "
            "plain SGD on the clients and puts Adam on the server, where its state lasts across rounds.",
            (_reference("client Adam"), _what_if("FedAdam", **FEDADAM)),
            notes.drift,
        ),
        Lesson(
            "fedprox",
            "FedProx: a leash on client drift",
            "FedProx adds a proximal term (mu/2)·||w − w_global||² to each client's loss, so each local step "
            "is pulled back towards the shared model by mu·(w − w_global). mu = 0 is FedAvg. fedlab trains it "
            "with its own client work: TFF 0.87's FedProx adds that pull with the wrong sign "
            "(proximal_client_work.py, line 90), pushing clients away, and is not used here.",
            (
                _reference("FedAvg"),
                _what_if("FedProx mu 0.1", algorithm="fedprox", prox_mu=0.1),
                _what_if("FedProx mu 1", algorithm="fedprox", prox_mu=1.0),
            ),
            notes.fedprox,
        ),
        Lesson(
            "participation",
            "Clients per round and dropout",
            "The server samples some clients each round, and some of them never answer (a phone goes "
            "offline). Fewer updates per round make each average noisier.",
            (
                _reference("every client"),
                _what_if("3 clients per round", clients_per_round=3),
                _what_if("half drop out", client_dropout=0.5),
            ),
            notes.participation,
        ),
        Lesson(
            "privacy",
            "Differential privacy and its ε",
            "DP-FedAvg clips each client's update and adds Gaussian noise to their sum, so the model reveals "
            "little about any one user. ε measures the promise: smaller is more private. More noise buys a "
            "smaller ε with accuracy.",
            (
                _reference("no DP"),
                _what_if("DP noise 0.5", dp_clip=1.0, dp_noise=0.5),
                _what_if("DP noise 2", dp_clip=1.0, dp_noise=2.0),
            ),
            notes.privacy,
        ),
        Lesson(
            "personalisation",
            "Personalisation by fine-tuning",
            "One shared model serves everyone a little. Fine-tuning it for a few epochs on each client's own "
            "earlier check-ins makes a model per person, without sharing any data.",
            (
                _reference("shared model only"),
                _what_if("fine-tuned 3 epochs", personalize_epochs=3),
            ),
            notes.personalisation,
        ),
        Lesson(
            "fairness",
            "Fairness across users",
            "A good average can hide users the model serves badly. The test report scores every client "
            "separately; the pooled (centralized) model shows whether federation itself leaves some behind.",
            (_reference("federated"), _what_if("centralized", mode="centralized")),
            notes.fairness,
        ),
        Lesson(
            "compression",
            "Communication and compression",
            "Every round each client sends its whole model update, which costs a phone's data plan. "
            "Quantising the update to a few bits per value sends much less, at some cost in accuracy.",
            (
                _reference("32-bit updates"),
                _what_if("8-bit updates", compression_bits=8),
                _what_if("2-bit updates", compression_bits=2),
            ),
            notes.compression,
        ),
        Lesson(
            "secure_aggregation",
            "Secure aggregation",
            "With secure aggregation the server learns only the sum of the updates, never one client's. "
            "TFF's secure aggregator clips each value to bounds it estimates every round and sums the values as "
            "32-bit integers modulo 2^32. fedlab computes those numbers in the clear: the run shows what secure "
            "aggregation does to the model and the bytes, not its cryptography (no key exchange or masking runs).",
            (
                _reference("plain sum"),
                _what_if("secure sum", secure_aggregation=True),
            ),
            notes.secure_aggregation,
        ),
        Lesson(
            "poisoning",
            "Poisoning and a defence",
            "Some phones may lie: a malicious client trains on wrong labels and sends the update that comes of "
            "it, and the server never sees the data behind an update. A defence limits what one update can do. "
            "On the real data (100 clients, 30 % flipping labels) the coordinate-wise median did best: the honest "
            "clients' acc@1 was 22.7 %, against 19.2 % with no defence and 22.6 % for the clean model (TFF's "
            "robust aggregator 20.2 %, trimmed mean 22.4 %, multi-Krum 18.6 %). With this lesson's 10 clients "
            "the median of each value is too noisy (it cost the honest clients 3.5 points at 30 %), so the defence "
            "here is multi-Krum: it averages only the updates closest to their neighbours, leaving out as many as "
            "the attackers it assumes.",
            (
                _reference(notes.CLEAN),
                _what_if(notes.ATTACKED, malicious_clients=POISONED_SHARE, attack="label-flip"),
                _what_if(notes.DEFENDED, malicious_clients=POISONED_SHARE, attack="label-flip", defense=notes.DEFENCE),
            ),
            notes.poisoning,
        ),
        Lesson(
            "features",
            "Which features matter, and for whom",
            "Two questions with two answers. Retrain with a feature added (an ablation sweep) to see what it is "
            "worth; shuffle a feature among each client's own test sequences (permutation importance) to see how much "
            "the kept model leans on it, and for which clients. They need not agree.",
            _feature_sweep(),
            notes.features,
        ),
    ]


def _feature_sweep() -> tuple[LessonRun, ...]:
    """The lesson base and an add-one sweep from it: with the user's id, with the venue's id."""
    plan = plan_sweep(BASE, ["user_id", "venue_id"], kind="add-one")
    labels = (notes.FEATURES_BASE, notes.WITH_USER, notes.WITH_VENUE)
    return tuple(
        LessonRun(label, BASE if p.feature is None else p.config.replace(name=f"Lesson · {label}"))
        for label, p in zip(labels, plan.runs)
    )


# Topics that wait for settings another part adds, as (topic, the ExperimentConfig fields it needs); each becomes
# a lesson once the config has its fields. None waits now.
PENDING_TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = ()


def pending_topics() -> list[str]:
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    return [topic for topic, needed in PENDING_TOPICS if not set(needed) <= fields]


def lesson_by_key(key: str) -> Lesson:
    for lesson in lessons():
        if lesson.key == key:
            return lesson
    raise KeyError(f"no lesson {key!r}")


def all_configs() -> list[ExperimentConfig]:
    """Every lesson run's config once (shared runs such as the reference count once), in teaching order."""
    seen: list[ExperimentConfig] = []
    for lesson in lessons():
        for run in lesson.runs:
            if not any(same_settings(run.config, other) for other in seen):
                seen.append(run.config)
    return seen


# ----- which stored runs a lesson uses -----


def same_settings(a: ExperimentConfig, b: ExperimentConfig) -> bool:
    return a.replace(name="") == b.replace(name="")


def stored_run(store: RunStore, config: ExperimentConfig) -> Run | None:
    """The newest finished run with these settings, else the newest one queued or training, else None."""
    return store.matching_run(config) or store.matching_run(config, statuses=ACTIVE_STATUSES)


def lesson_state(store: RunStore, lesson: Lesson) -> dict[str, Run | None]:
    """Label -> the stored run it uses (finished, or still training), or None when it has none yet."""
    return {run.label: stored_run(store, run.config) for run in lesson.runs}


def runs_to_queue(state: Mapping[str, Run | None], lesson: Lesson) -> list[LessonRun]:
    """The lesson's runs with neither a finished run nor one in training."""
    return [run for run in lesson.runs if state.get(run.label) is None]


def numbers_of(store: RunStore, run: Run | None) -> RunNumbers | None:
    """The figures the notes need, from a finished run with test results; None for any other run."""
    if run is None or run.status != "finished" or not run.test:
        return None
    rounds = store.rounds(run.id)
    sent = communication_totals(rounds.to_dict(orient="records"))
    tuned = run.test.get("personalized") or {}
    clipped, zeroed = defence_totals(rounds)
    return RunNumbers(
        accuracy=float(run.test["accuracy"]),
        best_val_accuracy=float(rounds["val_accuracy"].max()) if not rounds.empty else None,
        final_train_loss=float(rounds["train_loss"].iloc[-1]) if not rounds.empty else None,
        rounds=len(rounds),
        mean_clients=float(rounds["clients"].mean()) if not rounds.empty else 0.0,
        mb_up=sent["mb_up"],
        mb_saved=sent["mb_saved"],
        per_client=dict(run.test.get("per_client") or {}),
        personalized_accuracy=float(tuned["accuracy"]) if tuned else None,
        total_clients=run.extra.get("train_clients"),
        config=run.config,
        test=dict(run.test),
        clipped=clipped,
        zeroed=zeroed,
    )


def what_to_notice(lesson: Lesson, numbers: Mapping[str, RunNumbers | None]) -> str:
    """The lesson's note from its runs' numbers; while any is missing, which runs are still to come."""
    missing = [run.label for run in lesson.runs if numbers.get(run.label) is None]
    if missing:
        return f"Still training (or not started): {', '.join(missing)}. This box fills in from their results."
    return lesson.notice({label: value for label, value in numbers.items() if value is not None})


def lesson_numbers(
    store: RunStore, lesson: Lesson, state: Mapping[str, Run | None] | None = None
) -> dict[str, RunNumbers | None]:
    state = lesson_state(store, lesson) if state is None else state
    return {run.label: numbers_of(store, state.get(run.label)) for run in lesson.runs}
