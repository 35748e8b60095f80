"""TFF execution contexts whose worker_binary processes we own, or that span several remote workers.

TFF's stock local context starts `worker_binary` with our stdout/stderr and only stops it in a
finaliser, so it can outlive Python and hold pipes open (hanging CI). Here the process gets no
pipes of ours, dies with this process (PR_SET_PDEATHSIG), and is stopped on close() and at exit.

The binary has no bind-address flag and would listen on every interface, running any computation sent
to it. A local worker therefore runs with fedlab's preload shim (fedlab/learning/native/worker_shim.c, built by
`make shim`), which keeps it on loopback; docs/security.md says more.

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
import concurrent.futures
import contextlib
import functools
import importlib.util
import ipaddress
import logging
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import grpc
import portpicker
import psutil

from fedlab.errors import FedlabError
from fedlab.learning import tff_internals
from fedlab.learning.compiled import CompiledComputations

_GRPC_OPTIONS = [
    ("grpc.max_message_length", 2_000_000_000),
    ("grpc.max_receive_message_length", 2_000_000_000),
    ("grpc.max_send_message_length", 2_000_000_000),
    # A worker we just started listens a few tenths of a second later; with gRPC's default first reconnect
    # backoff (1 s) every run would wait that second.
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
]
CONNECT_TIMEOUT = 5.0  # seconds to wait for a remote worker before the run fails
# gRPC codes meaning the connection, not the computation, failed.
_LOST_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}
_MAX_DETAIL = 300
# The address a loopback-only worker accepts (the shim binds its dual-stack socket to ::ffff:127.0.0.1).
LOOPBACK_HOST = "127.0.0.1"
WORKER_SHIM = Path(__file__).resolve().parent / "native" / "libfedlab_worker.so"  # built by `make shim`
ALLOW_OPEN_WORKER = "FEDLAB_ALLOW_OPEN_WORKER"
# Read by TensorFlow's C++ runtime in the worker. The model's ops are small (a batch of 16 through a GRU): split
# over threads they cost more CPU in hand-offs than they save, while the worker's concurrent client calls
# already fill the cores. One thread per op: 2-16 % less worker CPU a round (`fedlab bench`, docs/performance.md).
INTRA_OP_THREADS = "TF_NUM_INTRAOP_THREADS"


class WorkerError(FedlabError):
    """A TFF worker cannot be reached, was lost mid-run, or failed a computation."""


def worker_binary_path() -> Path:
    # find_spec locates the package without importing it (importing TFF takes seconds).
    spec = importlib.util.find_spec("tensorflow_federated")
    if spec is None or not spec.submodule_search_locations:
        raise FedlabError("tensorflow-federated is not installed; run 'make test' or install requirements.txt")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "worker_binary"


# Most of a worker's time goes to TensorFlow instantiating each client's training function, which is
# allocation-heavy; jemalloc cuts the worker's CPU time per round by about a third (`fedlab bench`).
JEMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)


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


def worker_shim(environ: Mapping | None = None) -> Path | None:
    """The preload library that keeps a local worker on loopback and ties it to this process:
    FEDLAB_WORKER_SHIM (a path), else the one `make shim` builds; None when that file is missing."""
    environ = os.environ if environ is None else environ
    path = Path(environ.get("FEDLAB_WORKER_SHIM") or WORKER_SHIM)
    return path if path.is_file() else None


def _no_shim_refusal(environ: Mapping) -> str:
    where = environ.get("FEDLAB_WORKER_SHIM") or WORKER_SHIM
    return (
        f"refusing to start a local TFF worker: its loopback shim {where} is missing, and without it the "
        f"worker would listen on every network interface and run computations sent by anyone who reaches "
        f"it; run 'make shim' (needs a C compiler: apt-get install gcc), or set {ALLOW_OPEN_WORKER}=1 to "
        f"accept that risk (docs/security.md)"
    )


def check_local_worker_allowed(environ: Mapping | None = None) -> None:
    """The FedlabError a local run would stop with for want of the loopback shim; cheap, so callers can check
    before loading data or building models."""
    environ = os.environ if environ is None else environ
    if worker_shim(environ) is None and environ.get(ALLOW_OPEN_WORKER) != "1":
        raise FedlabError(_no_shim_refusal(environ))


def worker_environment(env: Mapping | None = None, *, shim: Path | None = None) -> dict:
    """The worker's environment: ours (or `env`), plus the allocator (where one is found) and `shim` preloaded."""
    env = dict(os.environ if env is None else env)
    for library in (str(shim) if shim else None, worker_allocator(env)):  # the allocator ends up first
        if library is not None and library not in env.get("LD_PRELOAD", "").split():
            env["LD_PRELOAD"] = " ".join(filter(None, [library, env.get("LD_PRELOAD", "")]))
    return env


class _Launcher:
    """One daemon thread that starts every worker. A worker's PR_SET_PDEATHSIG fires when the thread that
    started it exits, and a run's own thread (the dashboard's training thread, a CLI helper) may end
    while its Runtime is still open; this thread lives as long as the process."""

    def __init__(self):
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="fedlab-worker-launcher", daemon=True).start()

    def _serve(self) -> None:
        while True:
            future, args, kwargs = self._requests.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(subprocess.Popen(args, **kwargs))
                except BaseException as exc:  # handed to the caller
                    future.set_exception(exc)

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._requests.put((future, args, kwargs))
        try:
            return future.result()
        except BaseException:  # e.g. Ctrl-C while waiting: nobody will own the process, so stop it
            future.add_done_callback(lambda done: done.exception() is None and stop_process(done.result()))
            raise


@functools.cache
def _launcher(pid: int) -> _Launcher:
    """The launcher of process `pid` (keyed by pid: a forked child does not inherit its parent's thread)."""
    return _Launcher()


def start_worker(
    *,
    port: int,
    loopback_only: bool,
    max_concurrent_calls: int = -1,
    tie_to_parent: bool = True,
    log_file=None,
    env: Mapping | None = None,
    own_process_group: bool = False,
    one_thread_per_op: bool = False,
) -> subprocess.Popen:
    """Start one TFF worker_binary.

    loopback_only: it accepts connections from this machine only, at 127.0.0.1:port (the shim rewrites its
    bind to every interface); without the shim this is a FedlabError unless FEDLAB_ALLOW_OPEN_WORKER=1.
    Otherwise it listens on every interface ([::]:port): the binary has no bind-address flag.
    tie_to_parent: it is killed when this process dies (PR_SET_PDEATHSIG, set after exec by the shim, or by
    util-linux setpriv where the shim is missing).
    own_process_group: a terminal's Ctrl-C reaches only us, and we stop the worker in order.
    one_thread_per_op: each TensorFlow op runs on one thread (TF_NUM_INTRAOP_THREADS=1 unless set), for a worker
    that already runs one client call per core side by side.
    """
    environ = dict(os.environ if env is None else env)
    shim = worker_shim(environ)
    if loopback_only:
        check_local_worker_allowed(environ)
    worker_env = worker_environment(environ, shim=shim)
    if one_thread_per_op:
        worker_env.setdefault(INTRA_OP_THREADS, "1")
    for name in ("FEDLAB_WORKER_LOOPBACK", "FEDLAB_WORKER_PARENT"):  # only what we set below reaches the shim
        worker_env.pop(name, None)
    launcher: list[str] = []
    if shim is not None and loopback_only:
        worker_env["FEDLAB_WORKER_LOOPBACK"] = "1"
    if tie_to_parent and shim is not None:
        worker_env["FEDLAB_WORKER_PARENT"] = str(os.getpid())
    elif tie_to_parent and shutil.which("setpriv"):
        launcher = ["setpriv", "--pdeathsig", "KILL"]
    args = [str(worker_binary_path()), f"--port={port}", f"--max_concurrent_computation_calls={max_concurrent_calls}"]
    sink = log_file if log_file is not None else subprocess.DEVNULL
    return _launcher(os.getpid()).popen(
        launcher + args,
        stdin=subprocess.DEVNULL,
        stdout=sink,
        stderr=sink,
        close_fds=True,
        env=worker_env,
        process_group=0 if own_process_group else None,
    )


def listening_addresses(pid: int) -> set[str]:
    """The IP addresses process `pid` listens on (TCP)."""
    return {
        conn.laddr.ip for conn in psutil.Process(pid).net_connections(kind="tcp") if conn.status == psutil.CONN_LISTEN
    }


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1, a dual-stack socket's IPv4 loopback
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def check_loopback_only(process: subprocess.Popen, environ: Mapping | None = None) -> None:
    """After a loopback-only worker listens: a FedlabError (and the worker stopped) if it listens anywhere
    else, e.g. because the shim could not be preloaded. Nothing to check where the shim is missing (then
    only FEDLAB_ALLOW_OPEN_WORKER=1 let it start)."""
    if worker_shim(environ) is None:
        return
    exposed = sorted(address for address in listening_addresses(process.pid) if not is_loopback(address))
    if exposed:
        stop_process(process)
        raise FedlabError(
            f"the local TFF worker listens on {', '.join(exposed)}, not only on loopback: its shim "
            f"{worker_shim(environ)} did not take effect; rebuild it with 'make shim'"
        )


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
    return (
        f"start one there with 'python -m fedlab worker --port {target.rsplit(':', 1)[-1]} --allow-remote' "
        f"or check the address"
    )


def wait_ready(
    states: Mapping[str, object],
    *,
    timeout: float,
    processes: Mapping[str, subprocess.Popen] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Waits until every target's connection (anything with `is_ready`) is ready, all at once (N unreachable
    workers cost one timeout, not N). `processes`: the workers we started, by target (one that exits is an
    error at once). `stop`: return early once it is set. A WorkerError names what did not answer."""
    processes = processes or {}
    deadline = time.monotonic() + timeout
    while not (stop is not None and stop.is_set()):
        missing = [target for target, state in states.items() if not state.is_ready]
        if not missing:
            return
        for target in missing:
            process = processes.get(target)
            if process is not None and process.poll() is not None:
                raise WorkerError(f"the TFF worker at {target} exited at start (status {process.returncode})")
        if time.monotonic() > deadline:
            started = [target for target in missing if target in processes]
            if started:
                raise WorkerError(f"the TFF worker started at {started[0]} did not answer within {timeout:g} s")
            hint = (
                _start_hint(missing[0])
                if len(missing) == 1
                else "start 'python -m fedlab worker' on each or check the addresses"
            )
            raise WorkerError(f"no TFF worker answers at {', '.join(missing)} within {timeout:g} s; {hint}")
        if stop is not None:
            stop.wait(0.05)
        else:
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
        wait_ready({target: ChannelState(channel) for target, channel in channels.items()}, timeout=timeout)
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
    tff = tff_internals.modules()

    class WorkerStub(tff.remote_executor_grpc_stub.RemoteExecutorGrpcStub):
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

    class OverlappingRemoteExecutor(tff.remote_executor.RemoteExecutor):
        """TFF's RemoteExecutor with its blocking Compute run in a thread: the event loop then sends the
        next worker its share while this one computes, so several workers' subrounds overlap."""

        async def _compute(self, value_ref, type_spec):
            self._check_has_executor_id()
            request = tff.executor_pb2.ComputeRequest(executor=self._executor_id, value_ref=value_ref)
            response = await asyncio.to_thread(self._stub.compute, request)
            value, _ = tff.value_serialization.deserialize_value(response.value, type_spec)
            return value

    return WorkerStub, OverlappingRemoteExecutor


@contextlib.contextmanager
def quiet_tensorflow_log() -> Iterator[None]:
    """TensorFlow logs only critical messages inside. TFF's secure sums build range checks (tf.debugging asserts)
    that TensorFlow reports as "never used", one ERROR with a stack trace each, though TFF wires them in."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def secure_sum_compiler(compile_fn):
    """`compile_fn` after TFF's secure intrinsics (federated_secure_sum_bitwidth and friends) are replaced by their
    insecure TensorFlow bodies, as TFF's test backend does (tensorflow_federated/python/core/backends/test/
    compiler.py, `replace_secure_intrinsics_with_bodies`): the same clipping, integer encoding and modular sums,
    computed in the clear, since TFF's C++ worker implements no secure sum. No key exchange or masking runs."""
    tff = tff_internals.modules()

    def compile_secure(comp):
        with quiet_tensorflow_log():
            replaced = tff.test_compiler.replace_secure_intrinsics_with_bodies(comp)
        # The replacement is rebuilt from its proto, which drops the Python containers of the computation's type
        # (a learning process's output would come back as a plain dict); give it the original's type back.
        return compile_fn(type(replaced).with_type(replaced, comp.type_signature))

    return compile_secure


def _remote_context_kwargs(
    stub, *, default_num_clients: int = 0, secure_sum: bool = False, compiled: CompiledComputations | None = None
) -> dict:
    """What an (a)sync TFF execution context needs to run on one worker through `stub`; `secure_sum`: TFF's secure
    intrinsics are compiled to their insecure bodies (`secure_sum_compiler`); `compiled`: compiled forms shared with
    other runtimes."""
    tff = tff_internals.modules()
    _, executor_class = _tff_classes()

    def stack_fn(cardinalities):
        # The remote stack needs a clients cardinality, 0 when none is given (as TFF's local factory).
        if cardinalities.get(tff.placements.CLIENTS) is None:
            cardinalities[tff.placements.CLIENTS] = default_num_clients
        executor = executor_class(stub)
        executor.set_cardinalities(cardinalities)
        return executor

    factory = tff.python_executor_stacks.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn)
    compiler_fn = (secure_sum_compiler if secure_sum else lambda fn: fn)(tff.compiler.desugar_and_transform_to_native)
    if compiled is not None:
        compiler_fn = compiled.compiler("native-secure" if secure_sum else "native", compiler_fn)
    return dict(
        executor_fn=factory,
        compiler_fn=compiler_fn,
        transform_args=tff.tensorflow_computation.transform_args,
        transform_result=tff.tensorflow_computation.transform_result,
    )


class Runtime:
    """A TFF execution context: a local worker_binary we start, or remote workers we connect to.

    Use `with runtime.activate():` in the thread that calls TFF computations (TFF contexts are per thread);
    inside it a gRPC failure is a WorkerError naming the worker. `secure_sum`: computations may use TFF's secure
    intrinsics, compiled to their insecure bodies (`secure_sum_compiler`). `compiled`: where compiled computations
    are kept for later runtimes (a BuildCache's), else each is compiled again in this runtime's context.
    """

    def __init__(
        self,
        *,
        workers: Sequence[str] = (),
        max_concurrent_calls: int = -1,
        start_timeout: float = 30.0,
        connect_timeout: float = CONNECT_TIMEOUT,
        secure_sum: bool = False,
        compiled: CompiledComputations | None = None,
    ):
        self.workers = tuple(workers)
        self.secure_sum = secure_sum
        self._compiled = compiled
        self.failed = False  # a call raised: the context may hold a half-done round, so it is not reused
        tff_internals.refuse_calls_outside_a_runtime()
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
        tff = tff_internals.modules()
        stub_class, _ = _tff_classes()
        if not self.workers:
            port = portpicker.pick_unused_port()
            # Its client calls (a shard per core, or one per user) already keep every core busy.
            process = start_worker(
                port=port, max_concurrent_calls=max_concurrent_calls, loopback_only=True, one_thread_per_op=True
            )
            self._processes.append(process)
            target = f"{LOOPBACK_HOST}:{port}"
            channel = grpc.insecure_channel(target, _GRPC_OPTIONS)
            self._channels.append(channel)
            stub = stub_class(channel, where=f"the local TFF worker (pid {process.pid}, {target})")
            wait_ready({target: stub}, timeout=start_timeout, processes={target: process})
            check_loopback_only(process)
            return tff.sync_execution_context.SyncExecutionContext(**self._context_kwargs(stub))
        stubs = {}
        for target in self.workers:
            channel = grpc.insecure_channel(target, _GRPC_OPTIONS)
            self._channels.append(channel)
            stubs.setdefault(target, []).append(stub_class(channel, where=f"the TFF worker at {target}"))
        wait_ready({target: found[0] for target, found in stubs.items()}, timeout=connect_timeout)
        if len(self.workers) == 1:  # nothing to split: the local runtime's context, on that worker
            return tff.sync_execution_context.SyncExecutionContext(**self._context_kwargs(stubs[self.workers[0]][0]))
        contexts = [
            tff.async_execution_context.AsyncExecutionContext(**self._context_kwargs(stub))
            for found in stubs.values()
            for stub in found
        ]
        # TFF's create_mergeable_comp_execution_context, with the secure intrinsics compiled away first if asked.
        compiler_fn = tff.mergeable_comp_compiler.compile_to_mergeable_comp_form
        if self.secure_sum:
            compiler_fn = secure_sum_compiler(compiler_fn)
        if self._compiled is not None:
            compiler_fn = self._compiled.compiler("mergeable-secure" if self.secure_sum else "mergeable", compiler_fn)
        return tff.mergeable_comp_execution_context.MergeableCompExecutionContext(
            async_contexts=contexts, compiler_fn=compiler_fn
        )

    def _context_kwargs(self, stub) -> dict:
        return _remote_context_kwargs(stub, secure_sum=self.secure_sum, compiled=self._compiled)

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        tff_internals.refuse_calls_outside_a_runtime()  # in this thread, once this context is uninstalled
        try:
            with translate_worker_errors(self.where), tff_internals.modules().context_stack.install(self.context):
                yield
        except BaseException:
            self.failed = True
            self._cancel_leftover_subrounds()
            raise

    def _cancel_leftover_subrounds(self) -> None:
        """When one worker's share of a round fails, TFF leaves the other shares running; cancel them
        (else each ends later in 'Task exception was never retrieved' on stderr)."""
        loop = tff_internals.event_loop(self.context)
        if loop is None:
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
        tff_internals.stop_event_loop(getattr(self, "context", None))
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
            atexit.unregister(finalizer)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stop_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        stop_process(process)


@contextlib.contextmanager
def local_workers(count: int, *, start_timeout: float = 60.0) -> Iterator[list[str]]:
    """`count` loopback-only workers on this machine, stopped on exit; for the bench and tests."""
    processes: dict[str, subprocess.Popen] = {}
    channels = []
    try:
        for _ in range(count):
            port = portpicker.pick_unused_port()
            target = f"{LOOPBACK_HOST}:{port}"
            processes[target] = start_worker(port=port, loopback_only=True)
            channels.append(grpc.insecure_channel(target, _GRPC_OPTIONS))
        states = {target: ChannelState(channel) for target, channel in zip(processes, channels)}
        wait_ready(states, timeout=start_timeout, processes=processes)
        for channel in channels:
            channel.close()
        channels = []
        for process in processes.values():
            check_loopback_only(process)
        yield list(processes)
    finally:
        for channel in channels:
            channel.close()
        _stop_all(list(processes.values()))


def running_worker_pids() -> list[int]:
    """Pids of worker_binary processes whose parent is this process (for tests and the CLI)."""
    binary = str(worker_binary_path())
    found = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error, IndexError):
            if child.cmdline()[0] == binary:
                found.append(child.pid)
    return found
