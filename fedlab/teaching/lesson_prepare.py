"""`python -m fedlab lessons [--prepare]`: list the lessons and their runs, or train the missing runs ahead of class.

Training goes through fedlab.runs.recording's driver, as `fedlab run` does, into the dashboard's run store, so the
Lessons page finds the runs and reuses them. Runs already finished with equal settings are skipped. With `jobs`
above 1, that many processes train side by side, each its share of the runs (runs of one model shape in one share,
so their TFF computations are built once); each run is reported as it finishes.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable
from pathlib import Path

from fedlab.config import ExperimentConfig
from fedlab.errors import ConfigError
from fedlab.runs.recording import Trainable, record_run
from fedlab.runs.store import RunStore, default_path
from fedlab.teaching.lessons import all_configs, lesson_state, lessons, pending_topics

ENGINE_FACTORY = "fedlab.learning.engine:experiment_factory"  # a no-argument maker of the real experiment factory
Factory = Callable[[ExperimentConfig], Trainable]


def prepare(
    store: RunStore, *, experiment_factory: Factory | str, say: Callable[[str], None] = print, jobs: int = 1
) -> dict[str, int]:
    """Trains every lesson run without a finished run of equal settings; one line per run. Returns the counts.

    `experiment_factory`: config -> experiment, or the import path ("module:attr") of a no-argument callable that
    makes one; with `jobs` > 1 it must be a path, as each process makes its own."""
    if jobs > 1 and not isinstance(experiment_factory, str):
        raise ConfigError("training lessons in several processes needs the factory's import path, not the factory")
    configs = all_configs()
    counts = {"trained": 0, "skipped": 0, "failed": 0}
    started = time.monotonic()
    todo = []
    for number, config in enumerate(configs, start=1):
        if (stored := store.matching_run(config)) is not None:
            counts["skipped"] += 1
            say(f"[{number}/{len(configs)}] {config.name}: already stored (run {stored.id}), skipped")
        else:
            todo.append(number)

    def report(number: int, status: str, seconds: float, run_id: str | None, problem: str = "") -> None:
        counts["trained" if status == "finished" else "failed"] += 1
        run = store.get_run(run_id) if run_id else None
        result = f", test acc@1 {run.test['accuracy']:.4f}" if run and run.test else ""
        reason = f" ({run.error})" if run and run.error else f" ({problem})" if problem else ""
        where = f" (run {run_id})" if run_id else ""
        say(f"[{number}/{len(configs)}] {configs[number - 1].name}: {status} in {seconds:.0f} s{result}{reason}{where}")

    if jobs > 1 and len(todo) > 1:
        _train_in_processes(store.path, todo, experiment_factory, jobs=jobs, report=report)
    else:
        factory = _resolve(experiment_factory) if isinstance(experiment_factory, str) else experiment_factory
        for number in todo:
            report(number, *_train(store, configs[number - 1], factory))
    say(
        f"{counts['trained']} trained, {counts['skipped']} already stored, {counts['failed']} failed "
        f"in {time.monotonic() - started:.0f} s, into {store.path}"
        + (f", {jobs} processes side by side" if jobs > 1 and len(todo) > 1 else "")
    )
    return counts


def _train_in_processes(path: Path, todo: list[int], factory: str, *, jobs: int, report: Callable) -> None:
    """Trains the `todo` runs in `jobs` processes, each its share in turn with one build cache, and reports each run
    as it finishes. Runs that build the same TFF processes go to the same process, which builds them once."""
    # Spawned, not forked: a fork of a process that runs TensorFlow threads is not safe.
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    shares = [s for s in share_runs(todo, jobs) if s]
    processes = [
        context.Process(target=_train_share, args=(str(path), share, factory, results, os.getpid()), daemon=True)
        for share in shares
    ]
    for process in processes:
        process.start()
    pending = set(todo)
    try:
        while pending:
            try:
                number, *outcome = results.get(timeout=1.0)
            except queue.Empty:
                if any(process.is_alive() for process in processes):
                    continue
                break  # every process ended; what none reported, it could not train
            pending.discard(number)
            report(number, *outcome)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    for number in sorted(pending):
        report(number, "failed", 0.0, None, "its training process stopped before it")


def share_runs(todo: list[int], jobs: int) -> list[list[int]]:
    """The runs (numbers in `all_configs()`) split into `jobs` shares of nearly equal count, runs with the same model
    shape in the same share (the biggest groups first, each to the share with the fewest runs so far)."""
    configs = all_configs()
    groups: dict[tuple, list[int]] = {}
    for number in todo:
        config = configs[number - 1]
        groups.setdefault((config.model_shape_key, config.seed, config.mode), []).append(number)
    shares: list[list[int]] = [[] for _ in range(jobs)]
    for group in sorted(groups.values(), key=len, reverse=True):
        min(shares, key=len).extend(group)
    return [sorted(share) for share in shares]


def _train_share(path: str, numbers: list[int], factory: str, results, parent: int) -> None:
    """In a spawned process: trains these lesson runs in turn with one factory (one build cache), each outcome put
    on `results` as (number, status, seconds, run id, problem). Ends when the `parent` process dies."""
    _end_with_parent(parent)
    store, make, configs = RunStore(path), _resolve(factory), all_configs()
    for number in numbers:
        try:
            results.put((number, *_train(store, configs[number - 1], make), ""))
        except Exception as exc:  # the run could not even start; the others still train
            results.put((number, "failed", 0.0, None, f"{type(exc).__name__}: {exc}"))


def _end_with_parent(parent: int) -> None:
    """This process gets SIGTERM when its parent dies (Linux's PR_SET_PDEATHSIG): multiprocessing ends daemon
    processes only when the parent exits normally, so a killed `lessons --prepare` left its trainers running on."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _resolve(factory: str) -> Factory:
    module_name, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module_name), attr)()


def _train(store: RunStore, config: ExperimentConfig, factory: Factory) -> tuple[str, float, str]:
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
    jobs = args.jobs if args.jobs is not None else default_jobs()
    counts = prepare(RunStore(path), experiment_factory=ENGINE_FACTORY, jobs=jobs, say=lambda s: print(s, flush=True))
    return 1 if counts["failed"] else 0


def default_jobs() -> int:
    """Processes that train lessons side by side: one per core, at most two (each holds TensorFlow and a TFF
    worker, about 1.5 GB)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 2))


def add_parser(sub) -> None:
    p = sub.add_parser("lessons", help="list the Lessons page's lessons and their runs; --prepare trains them")
    p.add_argument(
        "--prepare",
        action="store_true",
        help="train every lesson run that the store does not hold finished yet (skips stored ones)",
    )
    p.add_argument(
        "--jobs",
        type=_jobs,
        help="processes that train side by side with --prepare (default: one per core, at most 2)",
    )
    p.add_argument(
        "--db", help="run store (default: FEDLAB_DB, else runs/fedlab.db in the project folder, the dashboard's store)"
    )
    p.set_defaults(func=cmd_lessons)


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 8:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 8, not {text!r}")
    return value
