"""A client's data as planned batches: every pass in its own seeded order, fixed in the dataset.

FedRecon iterates a client's data once per phase (reconstruct, then train) on TFF's own path, and once for both on
the shard path, so both must read the same batches however often the dataset is iterated; a reshuffling `shuffle`
draws new orders for a second iterator. Here the orders are drawn once in numpy, and a dataset gathers each batch's
rows from the client's arrays, held once (not a copy per pass).

A shard joins its users' plans into one dataset with one traced function, whatever the number of users: dataset
functions traced per user (four each, in a first version) cost about 7 s a round for 100 users.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import tensorflow as tf


def pass_batches(rows: int, *, passes: int, batch_size: int, seed: int | None = None) -> list[np.ndarray]:
    """Row positions of each batch of `passes` passes over `rows` rows: each pass in its own order drawn from `seed`
    (in row order when None), cut into batches of `batch_size` (a pass's last batch may be short)."""
    rng = None if seed is None else np.random.default_rng(seed)
    out = []
    for _ in range(passes):
        order = np.arange(rows) if rng is None else rng.permutation(rows)
        out.extend(order[i : i + batch_size] for i in range(0, rows, batch_size))
    return out


@dataclass(frozen=True)
class UserPlan:
    """One user's rows and its batches of them, each batch with a phase (an int the client work reads)."""

    inputs: dict[str, np.ndarray]
    targets: np.ndarray
    batches: list[np.ndarray]
    phases: list[int]

    @property
    def rows(self) -> int:
        return len(self.targets)


def planned_dataset(inputs: dict[str, np.ndarray], targets: np.ndarray, batches: list[np.ndarray], *tags):
    """The batches as (inputs, targets), or ((inputs, targets), *tags) with one value of each tag array per batch."""
    lengths = [len(b) for b in batches]
    positions = tf.RaggedTensor.from_row_lengths(np.concatenate(batches).astype(np.int32), lengths)
    features = collections.OrderedDict((f, tf.constant(v)) for f, v in inputs.items())
    labels = tf.constant(targets)

    def gather(p, *tag):
        batch = collections.OrderedDict((f, tf.gather(x, p)) for f, x in features.items()), tf.gather(labels, p)
        return (batch, *tag) if tag else batch

    return tf.data.Dataset.from_tensor_slices((positions, *(np.asarray(t, np.int32) for t in tags))).map(gather)


def shard_dataset(plans: list[UserPlan]) -> tf.data.Dataset:
    """Users' batches one after another, each as (batch, the user's position in `plans`, its phase)."""
    starts = np.cumsum([0] + [p.rows for p in plans[:-1]])
    inputs = {f: np.concatenate([p.inputs[f] for p in plans]) for f in plans[0].inputs}
    targets = np.concatenate([p.targets for p in plans])
    batches = [b + start for p, start in zip(plans, starts) for b in p.batches]
    users = [u for u, p in enumerate(plans) for _ in p.batches]
    phases = [phase for p in plans for phase in p.phases]
    return planned_dataset(inputs, targets, batches, users, phases)


# -- FedRecon's plans: the phases of a user's batches --------------------------------------------------------------
RECONSTRUCT, TRAIN = 0, 1
SCORE = TRAIN  # validation's second phase


def training_plan(
    inputs: dict[str, np.ndarray],
    targets: np.ndarray,
    *,
    epochs: int,
    reconstruction_passes: int,
    batch_size: int,
    seed: int,
) -> UserPlan:
    """A user's round under FedRecon: `reconstruction_passes` × `epochs` passes to re-learn its local part, then
    `epochs` passes to train the global part (TFF's FedRecon over a dataset of `epochs` passes, its local part
    reconstructed `reconstruction_passes` times over it), each pass reshuffled."""
    reconstruct = reconstruction_passes * epochs
    batches = pass_batches(len(targets), passes=reconstruct + epochs, batch_size=batch_size, seed=seed)
    first = reconstruct * -(-len(targets) // batch_size)  # batches a pass, times the reconstruction passes
    return UserPlan(inputs, targets, batches, [RECONSTRUCT] * first + [TRAIN] * (len(batches) - first))


def validation_plan(
    train: tuple[dict[str, np.ndarray], np.ndarray],
    val: tuple[dict[str, np.ndarray], np.ndarray],
    *,
    epochs: int,
    reconstruction_passes: int,
    batch_size: int,
) -> UserPlan:
    """A user's validation under FedRecon: its local part re-learnt over its training rows (`epochs` passes in order,
    `reconstruction_passes` times), then its validation rows scored."""
    rows = len(train[1])
    reconstruct = pass_batches(rows, passes=reconstruction_passes * epochs, batch_size=batch_size)
    scored = [b + rows for b in pass_batches(len(val[1]), passes=1, batch_size=batch_size)]
    inputs = {f: np.concatenate([train[0][f], val[0][f]]) for f in train[0]}
    return UserPlan(
        inputs,
        np.concatenate([train[1], val[1]]),
        reconstruct + scored,
        [RECONSTRUCT] * len(reconstruct) + [SCORE] * len(scored),
    )


def marked_dataset(plan: UserPlan) -> tf.data.Dataset:
    """One user's training plan for TFF's own FedRecon, one client per user: its batches as (inputs, targets), the
    TRAIN batches' targets carried as -1 - target (`federated.split_reconstruction_data` reads them back)."""
    # The rows twice, the second time with marked targets, so one gather function serves both phases (a function
    # per user per round is what the per-user path pays for).
    rows = plan.rows
    inputs = {f: np.concatenate([v, v]) for f, v in plan.inputs.items()}
    targets = np.concatenate([plan.targets, -1 - plan.targets])
    batches = [b if phase == RECONSTRUCT else b + rows for b, phase in zip(plan.batches, plan.phases)]
    return planned_dataset(inputs, targets, batches)
