"""`python -m fedlab ...`: data-stats, run, sweep, runs, demo, lessons, bench, report, worker."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fedlab.config import PRESETS, DataConfig, ExperimentConfig, Setting, is_data_setting, settings, training_path_text
from fedlab.errors import ConfigError, FedlabError
from fedlab.records import communication_totals
from fedlab.results.settings_text import value_text

if TYPE_CHECKING:
    from fedlab.runs.store import RunStore

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter off the terminal


_DB_HELP = "run store (default: FEDLAB_DB, else runs/fedlab.db in the project folder, the dashboard's store)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit status 2, as for every bad input
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    for name, setting, default in settings():
        if is_data_setting(name):
            _add_setting(p, name, setting, default)


def _add_training_options(p: argparse.ArgumentParser) -> None:
    for name, setting, default in settings():
        if not is_data_setting(name):
            _add_setting(p, name, setting, default)


def _add_setting(p: argparse.ArgumentParser, name: str, setting: Setting, default) -> None:
    """One option made from a config field's metadata: flag, type, default, choices and help."""
    flag = setting.flag or "--" + name.replace("_", "-")
    text = setting.form_help.replace("**", "").replace("%", "%%")  # argparse formats help with %
    if setting.kind == "features":
        p.add_argument("--preset", choices=sorted(PRESETS), default="central", help="feature preset (default: central)")
        p.add_argument(
            flag,
            dest=name,
            default=None,
            help=f"comma-separated feature list (overrides --preset); known: {','.join(setting.choices)}",
        )
        return
    if setting.kind == "bool":  # a switch: given means yes
        p.add_argument(flag, dest=name, action="store_true", help=text)
        return
    kwargs = {"dest": name, "default": default, "help": f"{text} (default: {value_text(setting, default)})"}
    if setting.kind == "choice" and setting.operand:  # e.g. --attack targeted Bar:Cafe; the config checks both
        kwargs.update(nargs="+", metavar=("{" + ",".join(setting.choices) + "}", "A:B"))
        kwargs["help"] += f"; a second word sets {operand_flag(setting)}"
    elif setting.kind == "choice":
        kwargs["choices"] = setting.choices
    elif setting.kind in ("int", "float"):
        kwargs["type"] = _number(setting)
    elif setting.kind == "list":
        kwargs["type"] = _comma_list
    p.add_argument(flag, **kwargs)


def _number(setting: Setting):
    """The option's type: a whole number or a number, or the setting's one-word 'none' (e.g. 'all')."""
    convert, kind = (int, "a whole number") if setting.kind == "int" else (float, "a number")
    word = setting.none if setting.none and " " not in setting.none else None

    def parse(text: str):
        if word is not None and text.lower() == word:
            return None
        try:
            return convert(text)
        except ValueError:
            alternative = f" or '{word}'" if word else ""
            raise argparse.ArgumentTypeError(f"expected {kind}{alternative}, not {text!r}") from None

    return parse


def operand_flag(setting: Setting) -> str:
    return "--" + setting.operand.replace("_", "-")


def _with_operands(values: dict) -> dict:
    """A choice given with a second word (--attack targeted Bar:Cafe) sets its operand field from that word."""
    for name, setting, _ in settings():
        given = values.get(name)
        if not setting.operand or not isinstance(given, list):
            continue
        if len(given) > 2:
            flag = setting.flag or "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} takes a choice and at most one more word, not {' '.join(given)!r}")
        values[name] = given[0]
        if len(given) == 2:
            values[setting.operand] = given[1]
    return values


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def data_config_from(args: argparse.Namespace) -> DataConfig:
    return DataConfig(**{name: getattr(args, name) for name, _, _ in settings() if is_data_setting(name)})


def experiment_config_from(args: argparse.Namespace) -> ExperimentConfig:
    values = {name: getattr(args, name) for name, _, _ in settings() if not is_data_setting(name)}
    if args.features is not None:
        values["features"] = _comma_list(args.features)
    else:
        values["features"] = PRESETS[args.preset]
    values["name"] = args.name or (args.features and "custom" or args.preset)
    values = _with_operands(values)
    return ExperimentConfig(data=data_config_from(args), **values)


def cmd_data_stats(args: argparse.Namespace) -> int:
    from fedlab.data.pipeline import load_and_prepare

    data = load_and_prepare(data_config_from(args))
    stats = dict(data.summary)
    if args.json:
        print(json.dumps(stats))
    else:
        width = max(map(len, stats))
        for key, value in stats.items():
            print(f"{key:<{width}}  {value}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = experiment_config_from(args)  # checked before TensorFlow is imported, so errors come fast
    if config.mode == "federated":  # fail in seconds, before data or model
        from fedlab.learning.runtime import check_local_worker_allowed, check_workers

        if config.workers:
            check_workers(config.workers)
        else:
            check_local_worker_allowed()
    from fedlab.learning.engine import experiment_factory
    from fedlab.runs.recording import record_run
    from fedlab.runs.tblog import BestEffortLog, named_log_dir

    log_dir = named_log_dir(args.tensorboard_dir, config.name) if args.tensorboard_dir else None
    with _run_store(args) as store:
        # Recorded as it happens, so the dashboard shows it live; no session owns it (read-only for visitors).
        run_id = store.create_run(config, name=config.name)
        store.set_status(run_id, "running")
        if not args.no_store:
            print(f"recording run {run_id} in {store.path}", flush=True)
        if config.mode == "federated":
            print(f"training path: {training_path_text(config)}", flush=True)
        experiment = experiment_factory()(config)
        try:
            record_run(
                store,
                run_id,
                experiment,
                board=BestEffortLog(log_dir) if log_dir is not None else None,
                on_ready=_print_ready,
                on_round=_print_round,
                on_testing=lambda: _print_testing(config),
            )
        finally:
            experiment.close()
        result = json.loads(store.export_json(run_id))
    _print_result(result)
    if log_dir is not None:
        print(f"TensorBoard log in {log_dir} (view: tensorboard --logdir {args.tensorboard_dir})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json_out}")
    if not args.no_store:
        print(f"run {run_id} is in {store.path} (report: python -m fedlab report {run_id} --out report.html)")
    return 0


@contextlib.contextmanager
def _run_store(args: argparse.Namespace) -> Iterator[RunStore]:
    """The shared run store, or with --no-store a throwaway one, so both paths train and print alike."""
    from fedlab.runs.store import RunStore

    if not args.no_store:
        yield RunStore(_store_path(args))
        return
    with tempfile.TemporaryDirectory(prefix="fedlab-run-") as folder:
        yield RunStore(Path(folder) / "fedlab.db")


def _store_path(args: argparse.Namespace) -> Path:
    from fedlab.runs.store import default_path

    return Path(args.db).expanduser().resolve() if args.db else default_path()


def cmd_sweep(args: argparse.Namespace) -> int:
    from fedlab.runs.store import RunStore
    from fedlab.runs.sweeps import check_finished, plan_sweep

    if args.from_run:  # reading a run must not create a store where there is none
        path = _store_path(args)
        if not path.is_file():
            raise ConfigError(f"no run with id {args.from_run!r}: there is no run store at {path}")
        config = check_finished(RunStore(path), args.from_run)
    else:
        config = experiment_config_from(args)
    swept = _comma_list(args.sweep_features) if args.sweep_features is not None else None
    if swept is None and args.kind == "leave-one-out":
        swept = config.features
    plan = plan_sweep(config, swept or (), kind=args.kind, name=args.name or "")
    if config.mode == "federated":  # fail in seconds, before data or model
        from fedlab.learning.runtime import check_local_worker_allowed, check_workers

        if config.workers:
            check_workers(config.workers)
        else:
            check_local_worker_allowed()
    from fedlab.learning.engine import experiment_factory
    from fedlab.results.sweep_table import stored_sweep, sweep_lines
    from fedlab.runs.sweeps import ablation_label, create_runs, get_sweep, train_sweep

    store = RunStore(_store_path(args))  # created only for a sweep that runs
    sweep_id, run_ids = create_runs(store, plan)
    print(f"sweep {sweep_id} ({plan.name}): {len(run_ids)} runs into {store.path}", flush=True)
    done = []

    def started(planned) -> None:
        print(f"[{len(done) + 1}/{len(run_ids)}] {ablation_label(plan.kind, planned.feature)} …", flush=True)

    def ended(planned, status: str) -> None:
        done.append(status)
        run = store.get_run(run_ids[len(done) - 1])
        result = f"test acc@1 {run.test['accuracy']:.4f}" if run.test else (run.error or "no test")
        print(f"    {status}: {result}", flush=True)

    statuses = train_sweep(store, plan, run_ids, experiment_factory(), on_start=started, on_end=ended)
    sweep = get_sweep(store, sweep_id)
    table, baselines, seconds = stored_sweep(store, sweep)
    print("\n".join(sweep_lines(table, seconds)))
    if baselines:
        print("baselines on the full run's targets: " + ", ".join(f"{k} {v:.4f}" for k, v in baselines.items()))
    if args.json_out:
        payload = {
            "sweep": {"id": sweep_id, "name": plan.name, "kind": plan.kind, "features": list(plan.features)},
            "total_seconds": seconds,
            "baselines": baselines,
            "runs": json.loads(table.to_json(orient="records")),
        }
        Path(args.json_out).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json_out}")
    return 0 if statuses and statuses[0] == "finished" else 1


def cmd_runs(args: argparse.Namespace) -> int:
    from fedlab.runs.store import RunStore

    path = _store_path(args)
    # Listing must not create a store where there is none.
    runs = RunStore(path).list_runs() if path.is_file() else []
    rows = [
        {
            "id": run.id,
            "name": run.name,
            "status": run.status,
            "test_accuracy": (run.test or {}).get("accuracy"),
            "created_at": run.created_at.isoformat(),
        }
        for run in runs
    ]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"no runs in {path}")
        return 0
    print(f"{'id':<12}  {'status':<11}  {'acc@1':>6}  name")
    for row in rows:
        accuracy = f"{row['test_accuracy']:.4f}" if row["test_accuracy"] is not None else "-"
        print(f"{row['id']:<12}  {row['status']:<11}  {accuracy:>6}  {row['name']}")
    print(f"{len(rows)} run(s) in {path}")
    return 0


def _print_ready(timing: dict) -> None:
    print(
        f"data ready in {timing['preprocess_seconds']:.2f} s, model built in {timing['build_seconds']:.2f} s",
        flush=True,
    )


def _print_round(record) -> None:
    best = " *" if record.is_best else ""
    print(
        f"round {record.round:3d}  train loss {record.train_loss:.4f} acc {record.train_accuracy:.4f}  "
        f"val loss {record.val_loss:.4f} acc {record.val_accuracy:.4f}  clients {record.clients:4d}  "
        f"{record.seconds:6.2f} s  {record.megabytes:8.3f} MB{_defended(record)}{best}",
        flush=True,
    )


def _defended(record) -> str:
    """What the defence did this round, when it did anything."""
    done = [f"{n} {what}" for n, what in ((record.clipped, "clipped"), (record.zeroed, "zeroed")) if n]
    return f"  ({', '.join(done)})" if done else ""


def _print_testing(config: ExperimentConfig) -> None:
    epochs = config.personalize_epochs
    tuning = f", then fine-tuning it on each client for {epochs} epochs" if epochs else ""
    print(f"testing the kept model{tuning}…", flush=True)


def _print_result(result: dict) -> None:
    test = result["test"]
    print(
        f"test  acc@1 {test['accuracy']:.4f}  acc@5 {test['top5_accuracy']:.4f}  MRR {test['mrr']:.4f}  "
        f"loss {test['loss']:.4f}  on {test['examples']} targets"
    )
    if tuned := test.get("personalized"):
        print(
            f"after {tuned['epochs']} local epochs per client: acc@1 {tuned['accuracy']:.4f}  "
            f"acc@5 {tuned['top5_accuracy']:.4f}  MRR {tuned['mrr']:.4f}  loss {tuned['loss']:.4f}"
        )
    if attack := test.get("attack"):
        print(_attack_line(attack))
    from fedlab.results.importance import importance_line

    if line := importance_line(test.get("importance")):
        print(line)
    print("baselines on the same targets: " + ", ".join(f"{k} {v:.4f}" for k, v in result["baselines"].items()))
    sent = communication_totals(result["rounds"])
    if sent["mb_down"] or sent["mb_up"]:
        saved = f", {sent['mb_saved']:.3f} MB saved by compression" if sent["mb_saved"] else ""
        print(f"communication: {sent['mb_down']:.3f} MB down, {sent['mb_up']:.3f} MB up{saved}")


def _attack_line(attack: dict) -> str:
    malicious = len(attack["malicious_clients"])
    line = (
        f"under attack ({attack['kind']}, {malicious} malicious client{'s' if malicious != 1 else ''}): "
        f"honest clients' acc@1 {attack['honest_accuracy']:.4f} on {attack['honest_examples']} targets"
    )
    if "pair" in attack:
        a, b = attack["pair"]
        rate = "no test target" if attack["success"] is None else f"{attack['success']:.4f}"
        line += f"; true {a} predicted {b}: {rate}"
    return line


def cmd_demo(args: argparse.Namespace) -> int:
    from fedlab.runs.store import RunStore
    from fedlab.teaching.demo import missing_demo_runs, run_demos

    path = _store_path(args)
    store = RunStore(path)
    missing = [name for name, _ in missing_demo_runs(store)]
    if not missing:
        print(f"every demo run is already finished in {path}")
        return 0
    print(f"training {', '.join(missing)} into {path}", flush=True)
    # The same folders the dashboard uses beside its store, so it finds the models and logs.
    tensorboard_dir = Path(args.tensorboard_dir) if args.tensorboard_dir else path.parent / "tensorboard"
    run_ids = run_demos(
        store,
        model_dir=path.parent / "models",
        tensorboard_dir=tensorboard_dir,
        on_finished=lambda run_id: _print_demo(store, run_id),
    )
    failed = [run_id for run_id in run_ids if store.get_run(run_id).status != "finished"]
    return 1 if failed else 0


def _print_demo(store: RunStore, run_id: str) -> None:
    run = store.get_run(run_id)
    rounds = store.rounds(run_id)
    line = f"{run.name}: {run.status}"
    if not rounds.empty:
        accuracy = rounds["val_accuracy"]
        line += f" after {len(rounds)} rounds, val acc {accuracy.iloc[0]:.4f} -> {accuracy.iloc[-1]:.4f}"
    if run.test:
        line += f", test acc@1 {run.test['accuracy']:.4f}"
    if run.error:
        line += f" ({run.error})"
    print(line, file=sys.stdout if run.status == "finished" else sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fedlab", description="Federated learning experiments on Foursquare check-ins.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    stats = sub.add_parser("data-stats", help="load a check-in file and report clients and sequences")
    _add_data_options(stats)
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(func=cmd_data_stats)

    run = sub.add_parser("run", help="train one model (federated or centralized) and test it")
    _add_data_options(run)
    _add_training_options(run)
    run.add_argument("--json-out", help="write config, rounds, test, baselines and timing to this JSON file")
    run.add_argument("--tensorboard-dir", help="also log each round for TensorBoard, in DIR/<preset>-<time>")
    run.add_argument("--db", help=_DB_HELP)
    run.add_argument(
        "--no-store",
        action="store_true",
        help="do not record the run in the run store (the dashboard will not list it)",
    )
    run.set_defaults(func=cmd_run)

    sweep = sub.add_parser(
        "sweep",
        help="an ablation sweep: the full run plus one run without each feature (or the base plus one with each)",
        description="Trains, one after the other, the run these settings make and one run per swept feature "
        "(leave-one-out: without it; add-one: with it added to the base set), as a named group in the run store, "
        "then prints acc@1, loss and MB of each against the reference run.",
    )
    _add_data_options(sweep)
    _add_training_options(sweep)
    sweep.add_argument("--kind", choices=("leave-one-out", "add-one"), default="leave-one-out", help="the sweep")
    sweep.add_argument(
        "--sweep-features",
        help="comma-separated features to leave out (default: every feature of the run) or to add (add-one)",
    )
    sweep.add_argument("--from", dest="from_run", metavar="RUN_ID", help="sweep the settings of a finished run")
    sweep.add_argument("--json-out", help="write the sweep's table, baselines and total time to this JSON file")
    sweep.add_argument("--db", help=_DB_HELP)
    sweep.set_defaults(func=cmd_sweep)

    runs = sub.add_parser("runs", help="list the stored runs: id, status, test acc@1, name")
    runs.add_argument("--db", help=_DB_HELP)
    runs.add_argument("--json", action="store_true", help="print one JSON list")
    runs.set_defaults(func=cmd_runs)

    demo = sub.add_parser("demo", help="train the dashboard's demo runs that the run store does not hold yet")
    demo.add_argument(
        "--db", help="run store (default: FEDLAB_DB, else runs/fedlab.db in the project folder, the dashboard's store)"
    )
    demo.add_argument(
        "--tensorboard-dir", help="TensorBoard logs, one folder per run id (default: tensorboard/ beside the store)"
    )
    demo.set_defaults(func=cmd_demo)

    from fedlab import bench as bench_module
    from fedlab.results.report import add_report_parser

    bench_module.add_parser(sub)
    add_report_parser(sub)
    from fedlab.learning import workers as workers_module

    workers_module.add_parser(sub)
    from fedlab.teaching import lesson_prepare

    lesson_prepare.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FedlabError as exc:
        print(f"fedlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedlab: interrupted", file=sys.stderr)
        return 130
