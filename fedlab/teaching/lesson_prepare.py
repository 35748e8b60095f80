"""`python -m fedlab lessons [--prepare]`: list the lessons and their runs, or train the missing runs ahead of class.

Training goes through fedlab.runs.recording's driver, as `fedlab run` does, into the dashboard's run store, so the
Lessons page finds the runs and reuses them. Runs already finished with equal settings are skipped.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from fedlab.config import ExperimentConfig
from fedlab.runs.recording import Trainable, record_run
from fedlab.runs.store import RunStore, default_path
from fedlab.teaching.lessons import all_configs, lesson_state, lessons, pending_topics


def prepare(
    store: RunStore, *, experiment_factory: Callable[[ExperimentConfig], Trainable], say: Callable[[str], None] = print
) -> dict[str, int]:
    """Trains every lesson run without a finished run of equal settings; one line per run. Returns the counts."""
    configs = all_configs()
    counts = {"trained": 0, "skipped": 0, "failed": 0}
    started = time.monotonic()
    for number, config in enumerate(configs, start=1):
        prefix = f"[{number}/{len(configs)}] {config.name}"
        if (stored := store.matching_run(config)) is not None:
            counts["skipped"] += 1
            say(f"{prefix}: already stored (run {stored.id}), skipped")
            continue
        status, seconds, run_id = _train(store, config, experiment_factory)
        counts["trained" if status == "finished" else "failed"] += 1
        run = store.get_run(run_id)
        result = f", test acc@1 {run.test['accuracy']:.4f}" if run and run.test else ""
        reason = f" ({run.error})" if run and run.error else ""
        say(f"{prefix}: {status} in {seconds:.0f} s{result}{reason} (run {run_id})")
    say(
        f"{counts['trained']} trained, {counts['skipped']} already stored, {counts['failed']} failed "
        f"in {time.monotonic() - started:.0f} s, into {store.path}"
    )
    return counts


def _train(
    store: RunStore, config: ExperimentConfig, factory: Callable[[ExperimentConfig], Trainable]
) -> tuple[str, float, str]:
    run_id = store.create_run(config, name=config.name)
    store.set_status(run_id, "running")
    started = time.monotonic()
    experiment = factory(config)
    try:
        status = record_run(store, run_id, experiment)
    except Exception:  # recorded as failed with its reason; the other lessons still train
        status = "failed"
    finally:
        experiment.close()
    return status, time.monotonic() - started, run_id


def describe(store: RunStore) -> list[str]:
    """One line per lesson (runs ready of all), then one per run: its state and test accuracy."""
    lines = []
    for lesson in lessons():
        state = lesson_state(store, lesson)
        ready = sum(1 for run in state.values() if run is not None and run.status == "finished")
        lines.append(f"{lesson.key:<20} {lesson.title}: {ready} of {len(lesson.runs)} runs ready")
        for entry in lesson.runs:
            run = state[entry.label]
            if run is None:
                text = "not trained"
            elif run.status == "finished" and run.test:
                text = f"finished (run {run.id}), test acc@1 {run.test['accuracy']:.4f}"
            else:
                text = f"{run.status} (run {run.id})"
            lines.append(f"    {entry.label:<26} {text}")
    lines.extend(f"(to come: {topic}, once its settings exist)" for topic in pending_topics())
    return lines


def cmd_lessons(args: argparse.Namespace) -> int:
    path = Path(args.db).expanduser().resolve() if args.db else default_path()
    if not args.prepare:
        if not path.is_file():  # listing must not create a store
            print(f"no run store at {path}: every lesson run is still to train (python -m fedlab lessons --prepare)")
            return 0
        print("\n".join(describe(RunStore(path))))
        return 0
    from fedlab.learning.engine import experiment_factory  # TensorFlow loads here

    counts = prepare(RunStore(path), experiment_factory=experiment_factory(), say=lambda line: print(line, flush=True))
    return 1 if counts["failed"] else 0


def add_parser(sub) -> None:
    p = sub.add_parser("lessons", help="list the Lessons page's lessons and their runs; --prepare trains them")
    p.add_argument(
        "--prepare",
        action="store_true",
        help="train every lesson run that the store does not hold finished yet (skips stored ones)",
    )
    p.add_argument(
        "--db", help="run store (default: FEDLAB_DB, else runs/fedlab.db in the project folder, the dashboard's store)"
    )
    p.set_defaults(func=cmd_lessons)
