"""`python -m fedlab ...`: data-stats, run, demo, bench, report, worker."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fedlab.config import GROUPINGS, KNOWN_FEATURES, MODES, OPTIMIZERS, PRESETS, DataConfig, ExperimentConfig
from fedlab.errors import FedlabError

if TYPE_CHECKING:
    from fedlab.store import RunStore

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter off the terminal


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit status 2, as for every bad input
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="check-in file (raw TSMC2014 or CSV, optionally .gz/.zip); default: synthetic city")
    p.add_argument("--grouping", choices=GROUPINGS, default="uber", help="category grouping (the target classes)")
    p.add_argument("--top-users", type=_top_users, default=100, help="the K users with most check-ins, or 'all'")
    p.add_argument("--n", type=int, default=17, help="check-ins per sequence (N-1 inputs, N-1 targets)")
    p.add_argument("--stride", type=int, default=None, help="sliding-window stride (default: N, no overlap)")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip unparseable rows instead of stopping")
    p.add_argument("--iid", action="store_true", help="reshuffle sequences into IID clients of the same sizes")


def _top_users(text: str) -> int | None:
    if text.lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'all', not {text!r}") from None


def _add_training_options(p: argparse.ArgumentParser) -> None:
    d = ExperimentConfig()
    p.add_argument("--preset", choices=sorted(PRESETS), default="central", help="feature preset")
    p.add_argument("--features", help=f"comma-separated feature list (overrides --preset); known: {','.join(KNOWN_FEATURES)}")
    p.add_argument("--mode", choices=MODES, default=d.mode)
    p.add_argument("--rounds", type=int, default=d.rounds, help="maximum rounds (epochs when centralized)")
    p.add_argument("--patience", type=int, default=d.patience, help="stop after this many rounds without a better validation loss")
    p.add_argument("--epochs", type=int, default=d.epochs, help="local epochs per round")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--clients-per-round", type=int, default=None, help="default: all clients")
    p.add_argument("--client-optimizer", choices=OPTIMIZERS, default=d.client_optimizer)
    p.add_argument("--client-lr", type=float, default=d.client_lr)
    p.add_argument("--server-optimizer", choices=OPTIMIZERS, default=d.server_optimizer)
    p.add_argument("--server-lr", type=float, default=d.server_lr)
    p.add_argument("--gru-units", type=int, default=d.gru_units)
    p.add_argument("--dropout", type=float, default=d.dropout, help="GRU input dropout")
    p.add_argument("--embedding-dim", type=int, default=d.embedding_dim)
    p.add_argument("--client-dropout", type=float, default=0.0, help="probability a sampled client fails to report")
    p.add_argument("--dp-clip", type=float, default=None, help="DP-FedAvg clipping norm (enables DP)")
    p.add_argument("--dp-noise", type=float, default=0.0, help="DP-FedAvg noise multiplier")
    p.add_argument("--workers", default="", help="host:port,host:port of TFF workers (default: local runtime)")
    p.add_argument("--personalize-epochs", type=int, default=d.personalize_epochs,
                   help="before the test, fine-tune on each client's own earlier data for this many epochs (0: off)")
    p.add_argument("--personalize-lr", type=float, default=d.personalize_lr, help="SGD learning rate of that fine-tuning")
    p.add_argument("--seed", type=int, default=0)


def data_config_from(args: argparse.Namespace) -> DataConfig:
    return DataConfig(data=args.data, grouping=args.grouping, top_users=args.top_users, n=args.n, stride=args.stride,
                      skip_bad_rows=args.skip_bad_rows, iid=args.iid, seed=getattr(args, "seed", 0))


def experiment_config_from(args: argparse.Namespace) -> ExperimentConfig:
    features = [f.strip() for f in args.features.split(",") if f.strip()] if args.features is not None else PRESETS[args.preset]
    return ExperimentConfig(
        data=data_config_from(args), features=tuple(features), mode=args.mode, rounds=args.rounds,
        patience=args.patience, epochs=args.epochs, batch_size=args.batch_size,
        clients_per_round=args.clients_per_round, client_optimizer=args.client_optimizer, client_lr=args.client_lr,
        server_optimizer=args.server_optimizer, server_lr=args.server_lr, gru_units=args.gru_units,
        dropout=args.dropout, embedding_dim=args.embedding_dim, seed=args.seed, client_dropout=args.client_dropout,
        dp_clip=args.dp_clip, dp_noise=args.dp_noise, personalize_epochs=args.personalize_epochs,
        personalize_lr=args.personalize_lr,
        workers=tuple(w.strip() for w in args.workers.split(",") if w.strip()),
        name=args.features and "custom" or args.preset)


def cmd_data_stats(args: argparse.Namespace) -> int:
    from fedlab.pipeline import load_and_prepare

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
    if config.workers:
        from fedlab.runtime import check_workers

        check_workers(config.workers)  # an unreachable worker fails in seconds, before data or model
    from fedlab.tblog import named_log_dir
    from fedlab.training import run_to_completion

    log_dir = named_log_dir(args.tensorboard_dir, config.name) if args.tensorboard_dir else None
    result = run_to_completion(config, on_round=_print_round, on_ready=_print_ready,
                               on_testing=_print_testing, tensorboard_log_dir=log_dir)
    _print_result(result)
    if log_dir is not None:
        print(f"TensorBoard log in {log_dir} (view: tensorboard --logdir {args.tensorboard_dir})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json_out}")
    return 0


def _print_ready(timing: dict) -> None:
    print(f"data ready in {timing['preprocess_seconds']:.2f} s, model built in {timing['build_seconds']:.2f} s", flush=True)


def _print_round(record) -> None:
    best = " *" if record.is_best else ""
    print(f"round {record.round:3d}  train loss {record.train_loss:.4f} acc {record.train_accuracy:.4f}  "
          f"val loss {record.val_loss:.4f} acc {record.val_accuracy:.4f}  clients {record.clients:4d}  "
          f"{record.seconds:6.2f} s{best}", flush=True)


def _print_testing(config: ExperimentConfig) -> None:
    epochs = config.personalize_epochs
    tuning = f", then fine-tuning it on each client for {epochs} epochs" if epochs else ""
    print(f"testing the kept model{tuning}…", flush=True)


def _print_result(result: dict) -> None:
    test = result["test"]
    print(f"test  acc@1 {test['accuracy']:.4f}  acc@5 {test['top5_accuracy']:.4f}  MRR {test['mrr']:.4f}  "
          f"loss {test['loss']:.4f}  on {test['examples']} targets")
    if tuned := test.get("personalized"):
        print(f"after {tuned['epochs']} local epochs per client: acc@1 {tuned['accuracy']:.4f}  "
              f"acc@5 {tuned['top5_accuracy']:.4f}  MRR {tuned['mrr']:.4f}  loss {tuned['loss']:.4f}")
    print("baselines on the same targets: " + ", ".join(f"{k} {v:.4f}" for k, v in result["baselines"].items()))


def cmd_demo(args: argparse.Namespace) -> int:
    from fedlab.demo import missing_demo_runs, run_demos
    from fedlab.store import RunStore, app_db_path

    path = Path(args.db).expanduser() if args.db else app_db_path()
    store = RunStore(path)
    missing = [name for name, _ in missing_demo_runs(store)]
    if not missing:
        print(f"every demo run is already finished in {path}")
        return 0
    print(f"training {', '.join(missing)} into {path}", flush=True)
    # The same folders the dashboard uses beside its store, so it finds the models and logs.
    tensorboard_dir = Path(args.tensorboard_dir) if args.tensorboard_dir else path.parent / "tensorboard"
    run_ids = run_demos(store, model_dir=path.parent / "models", tensorboard_dir=tensorboard_dir,
                        on_finished=lambda run_id: _print_demo(store, run_id))
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
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="train the dashboard's demo runs that the run store does not hold yet")
    demo.add_argument("--db", help="run store (default: FEDLAB_DB, else runs/fedlab.db in the project folder, "
                                   "the dashboard's store)")
    demo.add_argument("--tensorboard-dir", help="TensorBoard logs, one folder per run id "
                                                "(default: tensorboard/ beside the store)")
    demo.set_defaults(func=cmd_demo)

    from fedlab import bench as bench_module
    from fedlab.report import add_report_parser

    bench_module.add_parser(sub)
    add_report_parser(sub)
    from fedlab import workers as workers_module

    workers_module.add_parser(sub)
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
