"""`python -m fedlab worker --port P [--allow-remote]`: one TFF worker in the foreground.

It runs TFF's packaged C++ executor service (`worker_binary`, the same program the local runtime
starts) until Ctrl-C or SIGTERM, then stops it. `fedlab run/bench --workers host:P,...` train on it.

The worker runs any computation from anyone who reaches its port, and the packaged binary has no
bind-address flag (it asks for [::]:P, every interface). By default this command starts it as the local
runtime does, on loopback only (127.0.0.1:P, through fedlab's preload shim): reachable from this machine,
or from another one over an SSH tunnel. --allow-remote leaves it on every interface, for a private network
or a firewalled port (docs/security.md; the README, "Training on several machines").
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
import threading

from fedlab.errors import FedlabError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "worker",
        help="run one TFF worker in the foreground for 'run/bench --workers'",
        description="Run TFF's worker (its C++ executor service) until Ctrl-C or SIGTERM, on "
        "127.0.0.1 only (other machines reach it over an SSH tunnel). With --allow-remote "
        "it listens on every network interface: only on a private network or with "
        "the port firewalled, as anyone who reaches it can run any computation here.",
    )
    p.add_argument("--port", type=_port, required=True, help="TCP port to listen on (127.0.0.1 only by default)")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="listen on every network interface, so that other machines can connect (only on a "
        "private network or with the port firewalled: anyone who reaches it runs code here)",
    )
    p.add_argument(
        "--max-concurrent-calls",
        type=int,
        default=-1,
        help="most clients this worker trains at once (default: no limit)",
    )
    p.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for the worker to listen")
    p.set_defaults(func=run_worker)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, not {text!r}")
    return port


def _log(message: str) -> None:
    print(f"fedlab worker: {message}", flush=True)


def port_in_use(port: int) -> bool:
    """Whether something on this machine already listens on `port` (the worker would fail to bind)."""
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                probe.bind((address, port))
                return False
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            continue  # e.g. no IPv6 on this machine: try IPv4
    return False


def run_worker(args: argparse.Namespace) -> int:
    from fedlab.learning.runtime import (
        LOOPBACK_HOST,
        check_loopback_only,
        start_worker,
        stop_process,
        worker_binary_path,
    )

    binary = worker_binary_path()
    if not binary.is_file():
        raise FedlabError(f"TFF's worker program is missing at {binary}; reinstall tensorflow-federated 0.87")
    if port_in_use(args.port):
        raise FedlabError(f"port {args.port} is already in use on this machine; choose another --port")

    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    # Its own process group: a terminal's Ctrl-C reaches only us, and we stop the worker in order.
    # It dies with us even if we are killed (PR_SET_PDEATHSIG). Its warnings and errors go to our stderr.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "1"}
    process = start_worker(
        port=args.port,
        max_concurrent_calls=args.max_concurrent_calls,
        log_file=sys.stderr,
        env=env,
        own_process_group=True,
        loopback_only=not args.allow_remote,
    )
    try:
        _wait_listening(process, args.port, args.start_timeout, stop)
        if not stop.is_set():
            if args.allow_remote:
                _log(
                    f"TFF worker (pid {process.pid}) listening on port {args.port} on EVERY network interface "
                    f"([::]:{args.port}); train on it with --workers {socket.gethostname()}:{args.port}"
                )
                _log(
                    "anyone who reaches this port can run any computation here: keep it on a private network "
                    "or firewalled (docs/security.md). Stop with Ctrl-C or SIGTERM"
                )
            else:
                check_loopback_only(process, env)
                _log(
                    f"TFF worker (pid {process.pid}) listening on port {args.port} on this machine only "
                    f"({LOOPBACK_HOST}:{args.port}); train on it with --workers {LOOPBACK_HOST}:{args.port}, "
                    f"from another machine over an SSH tunnel (ssh -L {args.port}:{LOOPBACK_HOST}:{args.port} "
                    f"{socket.gethostname()}), or restart it with --allow-remote. Stop with Ctrl-C or SIGTERM"
                )
        while not stop.is_set() and process.poll() is None:
            stop.wait(0.5)
        if not stop.is_set():
            raise FedlabError(f"the TFF worker on port {args.port} exited by itself (status {process.returncode})")
        _log(f"{received[0]} received, stopping the worker on port {args.port}")
        stop_process(process)
        _log(f"stopped (worker status {process.returncode})")
        return 0
    finally:
        stop_process(process)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait_listening(process, port: int, timeout: float, stop: threading.Event) -> None:
    """Until the worker accepts connections on loopback (or `stop` is set); its messages go to our stderr."""
    import grpc

    from fedlab.learning.runtime import LOOPBACK_HOST, ChannelState, wait_ready

    target = f"{LOOPBACK_HOST}:{port}"
    channel = grpc.insecure_channel(target)
    try:
        wait_ready({target: ChannelState(channel)}, timeout=timeout, processes={target: process}, stop=stop)
    finally:
        channel.close()
