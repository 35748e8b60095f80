"""TFF execution contexts whose worker_binary processes we own, or that span several remote workers.

TFF's stock local context starts `worker_binary` with our stdout/stderr and only stops it in a
finaliser, so it can outlive Python and hold pipes open (hanging CI). Here the process gets no
pipes of ours, dies with its parent (PR_SET_PDEATHSIG), and is stopped on close() and at exit.

With `workers` (host:port of workers started by `python -m fedlab worker`), a round's clients are
split across the workers by TFF's mergeable-computation context: each worker trains its share and
aggregates it, the partial aggregates are merged, and the server update runs on one worker.

Two things differ from TFF's stock remote stack, both on purpose:
- a gRPC failure is an error at once (TFF retries UNAVAILABLE forever, so a lost worker would hang
  the run); it surfaces as a WorkerError (a FedlabError) naming the worker;
- the blocking Compute call runs off the event loop, so the workers' shares of a round overlap
  (with TFF's RemoteExecutor the subrounds would run one after another).
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import functools
import importlib.util
import os
import signal
import subprocess
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import portpicker

from fedlab.errors import FedlabError

_GRPC_OPTIONS = [
    ("grpc.max_message_length", 2_000_000_000),
    ("grpc.max_receive_message_length", 2_000_000_000),
    ("grpc.max_send_message_length", 2_000_000_000),
]
_PR_SET_PDEATHSIG = 1
CONNECT_TIMEOUT = 5.0  # seconds to wait for a remote worker before the run fails
# gRPC codes meaning the connection, not the computation, failed.
_LOST_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}
_MAX_DETAIL = 300


class WorkerError(FedlabError):
    """A TFF worker cannot be reached, was lost mid-run, or failed a computation."""


def worker_binary_path() -> Path:
    # find_spec locates the package without importing it (importing TFF takes seconds).
    spec = importlib.util.find_spec("tensorflow_federated")
    if spec is None or not spec.submodule_search_locations:
        raise FedlabError("tensorflow-federated is not installed; run 'make test' or install requirements.txt")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "worker_binary"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# Most of a worker's time goes to TensorFlow instantiating each client's training function, which is
# allocation-heavy; jemalloc cuts the worker's CPU time per round by about a third (`fedlab bench`).
JEMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
                  "/usr/lib64/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2")


def worker_allocator(environ: dict | None = None) -> str | None:
    """The jemalloc library the worker preloads: FEDLAB_WORKER_MALLOC (a path, or 'system' for none), else the
    first one installed (Debian: apt install libjemalloc2); None = the system allocator."""
    environ = os.environ if environ is None else environ
    chosen = environ.get("FEDLAB_WORKER_MALLOC", "")
    if chosen == "system":
        return None
    if chosen:
        return chosen if Path(chosen).is_file() else None
    return next((path for path in JEMALLOC_PATHS if Path(path).is_file()), None)


def worker_environment(env: dict | None = None) -> dict:
    """The worker's environment: ours (or `env`), plus the allocator preload where one is found."""
    env = dict(os.environ if env is None else env)
    library = worker_allocator(env)
    if library is not None and library not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = " ".join(filter(None, [library, env.get("LD_PRELOAD", "")]))
    return env


def start_worker(*, port: int, max_concurrent_calls: int = -1, tie_to_parent: bool = True, log_file=None,
                 env: dict | None = None, own_process_group: bool = False) -> subprocess.Popen:
    """Start one TFF worker_binary. With tie_to_parent it is killed when this thread's process dies.

    The binary has no bind-address flag: it listens on every interface ([::]:port).
    With own_process_group a terminal's Ctrl-C reaches only us, and we stop the worker in order.
    """
    args = [str(worker_binary_path()), f"--port={port}", f"--max_concurrent_computation_calls={max_concurrent_calls}"]
    sink = log_file if log_file is not None else subprocess.DEVNULL
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, close_fds=True,
                            env=worker_environment(env),
                            preexec_fn=_die_with_parent if tie_to_parent else None,
                            process_group=0 if own_process_group else None)


def stop_process(process: subprocess.Popen, timeout: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _start_hint(target: str) -> str:
    return (f"start one there with 'python -m fedlab worker --port {target.rsplit(':', 1)[-1]} --allow-remote' "
            f"or check the address")


def wait_until_ready(stub, *, target: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not stub.is_ready:
        if process is not None and process.poll() is not None:
            raise WorkerError(f"the TFF worker at {target} exited at start (status {process.returncode})")
        if time.monotonic() > deadline:
            if process is not None:
                raise WorkerError(f"the TFF worker started at {target} did not answer within {timeout:g} s")
            raise WorkerError(f"no TFF worker answers at {target} within {timeout:g} s; {_start_hint(target)}")
        time.sleep(0.05)


def _wait_all_ready(stubs: dict[str, object], timeout: float) -> None:
    """Waits for every worker at once (so N unreachable workers cost one timeout, not N)."""
    deadline = time.monotonic() + timeout
    while True:
        missing = [target for target, stub in stubs.items() if not stub.is_ready]
        if not missing:
            return
        if time.monotonic() > deadline:
            hint = (_start_hint(missing[0]) if len(missing) == 1
                    else "start 'python -m fedlab worker' on each or check the addresses")
            raise WorkerError(f"no TFF worker answers at {', '.join(missing)} within {timeout:g} s; {hint}")
        time.sleep(0.05)


class ChannelState:
    """The connectivity of one gRPC channel, as RemoteExecutorGrpcStub tracks it (no TFF import)."""

    def __init__(self, channel: grpc.Channel):
        self._state = None
        channel.subscribe(self._update, try_to_connect=True)

    def _update(self, state) -> None:
        self._state = state

    @property
    def is_ready(self) -> bool:
        return self._state == grpc.ChannelConnectivity.READY


def check_workers(targets: Sequence[str], *, timeout: float = CONNECT_TIMEOUT) -> None:
    """WorkerError naming every target where no worker accepts a connection within `timeout` seconds.

    Cheap (gRPC only, no TensorFlow): the CLI calls it before it loads data or builds anything.
    """
    channels = {target: grpc.insecure_channel(target, _GRPC_OPTIONS) for target in dict.fromkeys(targets)}
    try:
        _wait_all_ready({target: ChannelState(channel) for target, channel in channels.items()}, timeout)
    finally:
        for channel in channels.values():
            channel.close()


def describe_rpc_error(where: str, exc: BaseException) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    details = " ".join(str(details or "").split())[:_MAX_DETAIL]
    name = code.name if code is not None else type(exc).__name__
    if code in _LOST_CODES:
        return f"lost {where} mid-run ({name}: {details}): it stopped, or the network to it failed"
    return f"{where} failed a computation ({name}: {details})"


@contextlib.contextmanager
def translate_worker_errors(where: str = "a TFF worker") -> Iterator[None]:
    """Any gRPC error inside becomes a WorkerError (a FedlabError: a failed run with a clear message)."""
    try:
        yield
    except FedlabError:
        raise
    except grpc.RpcError as exc:
        raise WorkerError(describe_rpc_error(where, exc)) from exc


@functools.cache
def _tff_classes():
    """Our stub and executor; built on first use so that importing this module does not import TFF."""
    from tensorflow_federated.proto.v0 import executor_pb2
    from tensorflow_federated.python.core.impl.executors import (remote_executor, remote_executor_grpc_stub,
                                                                 value_serialization)

    class WorkerStub(remote_executor_grpc_stub.RemoteExecutorGrpcStub):
        """TFF's stub, but a gRPC error is a WorkerError naming the worker, never a retryable error
        (TFF's context retries those forever, so a lost worker would hang the round)."""

        def __init__(self, channel: grpc.Channel, *, where: str):
            super().__init__(channel)
            self.where = where

        def _call(self, method, request):
            try:
                return method(request)
            except grpc.RpcError as exc:
                raise WorkerError(describe_rpc_error(self.where, exc)) from None

        def get_executor(self, request):
            return self._call(super().get_executor, request)

        def create_value(self, request):
            return self._call(super().create_value, request)

        def create_struct(self, request):
            return self._call(super().create_struct, request)

        def create_call(self, request):
            return self._call(super().create_call, request)

        def create_selection(self, request):
            return self._call(super().create_selection, request)

        def compute(self, request):
            return self._call(super().compute, request)

        # Freeing memory on a worker that is gone or closed is moot: never an error.
        def dispose(self, request):
            with contextlib.suppress(grpc.RpcError, ValueError):
                return super().dispose(request)

        def dispose_executor(self, request):
            with contextlib.suppress(grpc.RpcError, ValueError):
                return super().dispose_executor(request)

    class OverlappingRemoteExecutor(remote_executor.RemoteExecutor):
        """TFF's RemoteExecutor with its blocking Compute run in a thread: the event loop then sends the
        next worker its share while this one computes, so several workers' subrounds overlap."""

        async def _compute(self, value_ref, type_spec):
            self._check_has_executor_id()
            request = executor_pb2.ComputeRequest(executor=self._executor_id, value_ref=value_ref)
            response = await asyncio.to_thread(self._stub.compute, request)
            value, _ = value_serialization.deserialize_value(response.value, type_spec)
            return value

    return WorkerStub, OverlappingRemoteExecutor


def _remote_context_kwargs(stub, *, default_num_clients: int = 0) -> dict:
    """What an (a)sync TFF execution context needs to run on one worker through `stub`."""
    from tensorflow_federated.python.core.backends.native import compiler
    from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
    from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
    from tensorflow_federated.python.core.impl.types import placements

    _, executor_class = _tff_classes()

    def stack_fn(cardinalities):
        # The remote stack needs a clients cardinality, 0 when none is given (as TFF's local factory).
        if cardinalities.get(placements.CLIENTS) is None:
            cardinalities[placements.CLIENTS] = default_num_clients
        executor = executor_class(stub)
        executor.set_cardinalities(cardinalities)
        return executor

    factory = python_executor_stacks.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn)
    return dict(executor_fn=factory, compiler_fn=compiler.desugar_and_transform_to_native,
                transform_args=tensorflow_computation.transform_args,
                transform_result=tensorflow_computation.transform_result)


class Runtime:
    """A TFF execution context: a local worker_binary we start, or remote workers we connect to.

    Use `with runtime.activate():` in the thread that calls TFF computations (TFF contexts are per thread);
    inside it a gRPC failure is a WorkerError naming the worker.
    """

    def __init__(self, *, workers: Sequence[str] = (), max_concurrent_calls: int = -1, start_timeout: float = 30.0,
                 connect_timeout: float = CONNECT_TIMEOUT):
        self.workers = tuple(workers)
        self._processes: list[subprocess.Popen] = []
        self._channels = []
        try:
            self.context = self._build(max_concurrent_calls, start_timeout, connect_timeout)
        except BaseException:
            self.close()
            raise
        # Belt and braces: stop our worker even if close() is never called.
        self._finalizer = weakref.finalize(self, _stop_all, list(self._processes))
        atexit.register(self._finalizer)

    @property
    def where(self) -> str:
        if self.workers:
            return f"the TFF worker{'s' if len(self.workers) > 1 else ''} at {', '.join(self.workers)}"
        return "the local TFF worker"

    def _build(self, max_concurrent_calls: int, start_timeout: float, connect_timeout: float):
        from tensorflow_federated.python.core.backends.native import execution_contexts
        from tensorflow_federated.python.core.impl.execution_contexts import (async_execution_context,
                                                                              sync_execution_context)

        stub_class, _ = _tff_classes()
        if not self.workers:
            port = portpicker.pick_unused_port()
            process = start_worker(port=port, max_concurrent_calls=max_concurrent_calls)
            self._processes.append(process)
            target = f"localhost:{port}"
            channel = grpc.insecure_channel(target, _GRPC_OPTIONS)
            self._channels.append(channel)
            stub = stub_class(channel, where=f"the local TFF worker (pid {process.pid}, {target})")
            wait_until_ready(stub, target=target, timeout=start_timeout, process=process)
            return sync_execution_context.SyncExecutionContext(**_remote_context_kwargs(stub))
        stubs = {}
        for target in self.workers:
            channel = grpc.insecure_channel(target, _GRPC_OPTIONS)
            self._channels.append(channel)
            stubs.setdefault(target, []).append(stub_class(channel, where=f"the TFF worker at {target}"))
        _wait_all_ready({target: found[0] for target, found in stubs.items()}, connect_timeout)
        if len(self.workers) == 1:  # nothing to split: the local runtime's context, on that worker
            return sync_execution_context.SyncExecutionContext(**_remote_context_kwargs(stubs[self.workers[0]][0]))
        contexts = [async_execution_context.AsyncExecutionContext(**_remote_context_kwargs(stub))
                    for found in stubs.values() for stub in found]
        return execution_contexts.create_mergeable_comp_execution_context(contexts)

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

        try:
            with translate_worker_errors(self.where), context_stack_impl.context_stack.install(self.context):
                yield
        except BaseException:
            self._cancel_leftover_subrounds()
            raise

    def _cancel_leftover_subrounds(self) -> None:
        """When one worker's share of a round fails, TFF leaves the other shares running; cancel them
        (else each ends later in 'Task exception was never retrieved' on stderr)."""
        loop = getattr(getattr(self.context, "_async_runner", None), "_event_loop", None)
        if loop is None or loop.is_closed():
            return

        def cancel_all():
            for task in asyncio.all_tasks(loop):
                task.cancel()

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(cancel_all)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels = []
        _stop_all(self._processes)
        _stop_event_loop(self.context if hasattr(self, "context") else None)
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
            atexit.unregister(finalizer)

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stop_event_loop(context) -> None:
    """TFF's contexts run an event loop in a thread that keeps itself alive; stop it, or every run leaks
    two threads."""
    runner = getattr(context, "_async_runner", None)
    loop = getattr(runner, "_event_loop", None)
    if loop is None or loop.is_closed():
        return
    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    runner._thread.join(5)
    if not runner._thread.is_alive():
        loop.close()
    runner._finalizer = lambda *args: None  # its own finaliser would touch the closed loop


def _stop_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        stop_process(process)


@contextlib.contextmanager
def local_workers(count: int, *, start_timeout: float = 60.0) -> Iterator[list[str]]:
    """`count` workers on this machine (loopback addresses), stopped on exit; for the bench and tests."""
    processes = []
    try:
        targets = []
        for _ in range(count):
            port = portpicker.pick_unused_port()
            processes.append(start_worker(port=port))
            targets.append(f"localhost:{port}")
        deadline = time.monotonic() + start_timeout
        for process, target in zip(processes, targets):
            channel = grpc.insecure_channel(target, _GRPC_OPTIONS)
            try:
                wait_until_ready(ChannelState(channel), target=target,
                                 timeout=max(deadline - time.monotonic(), 0.1), process=process)
            finally:
                channel.close()
        yield targets
    finally:
        _stop_all(processes)


def running_worker_pids() -> list[int]:
    """Pids of worker_binary processes whose parent is this process (for tests and the CLI)."""
    binary = str(worker_binary_path())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if cmd == binary and ppid == os.getpid():
            found.append(int(entry.name))
    return found
