"""TFF execution contexts whose worker_binary processes we own.

TFF's stock local context starts `worker_binary` with our stdout/stderr and only stops it in a
finaliser, so it can outlive Python and hold pipes open (hanging CI). Here the process gets no
pipes of ours, dies with its parent (PR_SET_PDEATHSIG), and is stopped on close() and at exit.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
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


def worker_binary_path() -> Path:
    import tensorflow_federated

    return Path(tensorflow_federated.__file__).parent / "data" / "worker_binary"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def start_worker(*, port: int, max_concurrent_calls: int = -1,
                 tie_to_parent: bool = True, log_file=None, env: dict | None = None) -> subprocess.Popen:
    """Start one TFF worker_binary. With tie_to_parent it is killed when this thread's process dies."""
    args = [str(worker_binary_path()), f"--port={port}", f"--max_concurrent_computation_calls={max_concurrent_calls}"]
    sink = log_file if log_file is not None else subprocess.DEVNULL
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, close_fds=True, env=env,
                            preexec_fn=_die_with_parent if tie_to_parent else None)


def stop_process(process: subprocess.Popen, timeout: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_ready(stub, *, target: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not stub.is_ready:
        if process is not None and process.poll() is not None:
            raise FedlabError(f"the TFF worker at {target} exited at start (status {process.returncode})")
        if time.monotonic() > deadline:
            raise FedlabError(f"no TFF worker answers at {target}; start one with "
                              f"'python -m fedlab worker --port {target.rsplit(':', 1)[-1]}' or check the address")
        time.sleep(0.05)


def _remote_async_context(target: str, *, timeout: float, process=None, default_num_clients: int = 0):
    """An async TFF context whose executor is a RemoteExecutor over gRPC to one worker."""
    from tensorflow_federated.python.core.backends.native import compiler
    from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
    from tensorflow_federated.python.core.impl.execution_contexts import async_execution_context
    from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
    from tensorflow_federated.python.core.impl.executors import remote_executor, remote_executor_grpc_stub
    from tensorflow_federated.python.core.impl.types import placements

    channel = grpc.insecure_channel(target, _GRPC_OPTIONS)
    stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)
    wait_until_ready(stub, target=target, timeout=timeout, process=process)

    def stack_fn(cardinalities):
        # The remote stack needs a clients cardinality, 0 when none is given (as TFF's local factory).
        cardinalities.setdefault(placements.CLIENTS, default_num_clients)
        if cardinalities[placements.CLIENTS] is None:
            cardinalities[placements.CLIENTS] = default_num_clients
        executor = remote_executor.RemoteExecutor(stub)
        executor.set_cardinalities(cardinalities)
        return executor

    factory = python_executor_stacks.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn)
    return channel, dict(executor_fn=factory, compiler_fn=compiler.desugar_and_transform_to_native,
                         transform_args=tensorflow_computation.transform_args,
                         transform_result=tensorflow_computation.transform_result), async_execution_context


class Runtime:
    """A TFF execution context: a local worker_binary we start, or remote workers we connect to.

    Use `with runtime.activate():` in the thread that calls TFF computations (TFF contexts are per thread).
    """

    def __init__(self, *, workers: Sequence[str] = (), max_concurrent_calls: int = -1, start_timeout: float = 30.0):
        self.workers = tuple(workers)
        self._processes: list[subprocess.Popen] = []
        self._channels = []
        try:
            self.context = self._build(max_concurrent_calls, start_timeout)
        except BaseException:
            self.close()
            raise
        # Belt and braces: stop our worker even if close() is never called.
        self._finalizer = weakref.finalize(self, _stop_all, list(self._processes))
        atexit.register(self._finalizer)

    def _build(self, max_concurrent_calls: int, start_timeout: float):
        from tensorflow_federated.python.core.backends.native import execution_contexts
        from tensorflow_federated.python.core.impl.execution_contexts import sync_execution_context

        if not self.workers:
            port = portpicker.pick_unused_port()
            process = start_worker(port=port, max_concurrent_calls=max_concurrent_calls)
            self._processes.append(process)
            channel, kwargs, _ = _remote_async_context(f"localhost:{port}", timeout=start_timeout, process=process)
            self._channels.append(channel)
            return sync_execution_context.SyncExecutionContext(**kwargs)
        contexts = []
        for target in self.workers:
            channel, kwargs, module = _remote_async_context(target, timeout=min(start_timeout, 10.0))
            self._channels.append(channel)
            contexts.append(module.AsyncExecutionContext(**kwargs))
        return execution_contexts.create_mergeable_comp_execution_context(contexts)

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

        with context_stack_impl.context_stack.install(self.context):
            yield

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels = []
        _stop_all(self._processes)
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
            atexit.unregister(finalizer)

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stop_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        stop_process(process)


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
