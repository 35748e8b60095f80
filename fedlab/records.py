"""Plain records that training yields and the run store keeps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """One federated round (or one centralized epoch)."""

    round: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    clients: int  # clients whose updates were averaged this round (0 when centralized)
    seconds: float  # wall time of the round, validation included
    is_best: bool = False  # lowest validation loss so far
    bytes_down: int = 0  # the model sent to the round's sampled clients (0 when centralized)
    bytes_up: int = 0  # the reporting clients' updates, after compression (0 when centralized)
    bytes_saved: int = 0  # what compression spared of the uncompressed updates this round
    clipped: int = 0  # updates the defence scaled down this round (its aggregator's own count)
    zeroed: int = 0  # updates the defence dropped this round (its aggregator's own count)

    @property
    def megabytes(self) -> float:
        return (self.bytes_down + self.bytes_up) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class TestReport:
    """Final test metrics of the kept (lowest validation loss) model, on every test sequence."""

    accuracy: float
    top5_accuracy: float
    mrr: float
    loss: float
    examples: int  # scored next-check-in targets
    # client id -> {"accuracy", "examples", "checkins"}
    per_client: dict[str, dict[str, float]] = field(default_factory=dict)
    # class name -> {"precision", "recall", "support"}
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)  # rows: true class, columns: predicted
    class_names: list[str] = field(default_factory=list)
    # After local fine-tuning (see fedlab.learning.personalize): "epochs", "learning_rate", "accuracy", "top5_accuracy",
    # "mrr", "loss", "examples" on the same targets; None when the run did not fine-tune.
    personalized: dict[str, float] | None = None
    # Under attack (see fedlab.data.attacks.attack_summary): "kind", "malicious_clients", "honest_accuracy",
    # "honest_examples", and for the targeted attack "pair" [A, B] and "success"; None for a run without attack.
    attack: dict | None = None
    # Permutation importance of the kept model (see fedlab.results.importance.importance_summary): "metric",
    # "repeats", "clients", and "features": feature -> {"drop", "spread", "helped", "hurt", "client_spread"};
    # None for runs tested before it was measured.
    importance: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def communication_totals(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Megabytes sent down, up, and spared by compression over these stored rounds (dicts with the bytes keys)."""
    return {
        key: sum(r.get(column) or 0 for r in rounds) / 1e6
        for key, column in (("mb_down", "bytes_down"), ("mb_up", "bytes_up"), ("mb_saved", "bytes_saved"))
    }


PERSONALIZED_ROW = "acc@1 after local fine-tuning"


def personalized_cell(test: dict[str, Any]) -> str:
    """The fine-tuned accuracy of a stored test report, as a table cell ("—" when the run did not fine-tune)."""
    tuned = test.get("personalized")
    return f"{tuned['accuracy']:.1%} ({tuned['epochs']} epochs per client)" if tuned else "—"
