"""The private parts of TensorFlow Federated that fedlab/learning/runtime.py relies on, in one place.

They are not TFF's public API and change between releases, so they are used only with the one TFF
version they were written against; any other version is a one-line error naming the version expected.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import types

from fedlab.errors import FedlabError

EXPECTED_TFF_VERSION = "0.87.0"


@functools.cache
def modules() -> types.SimpleNamespace:
    """TFF's private modules the runtime builds on (imports TFF: seconds, once)."""
    import tensorflow_federated

    if tensorflow_federated.__version__ != EXPECTED_TFF_VERSION:
        raise FedlabError(
            f"fedlab's runtime needs tensorflow-federated {EXPECTED_TFF_VERSION} (it uses internals "
            f"of that version), found {tensorflow_federated.__version__}; pip install "
            f"tensorflow-federated=={EXPECTED_TFF_VERSION} --no-deps"
        )
    from tensorflow_federated.proto.v0 import executor_pb2
    from tensorflow_federated.python.core.backends.native import compiler, execution_contexts, mergeable_comp_compiler
    from tensorflow_federated.python.core.backends.test import compiler as test_compiler
    from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
    from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
    from tensorflow_federated.python.core.impl.execution_contexts import (
        async_execution_context,
        mergeable_comp_execution_context,
        sync_execution_context,
    )
    from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
    from tensorflow_federated.python.core.impl.executors import (
        remote_executor,
        remote_executor_grpc_stub,
        value_serialization,
    )
    from tensorflow_federated.python.core.impl.types import placements

    return types.SimpleNamespace(
        executor_pb2=executor_pb2,
        compiler=compiler,
        test_compiler=test_compiler,
        mergeable_comp_compiler=mergeable_comp_compiler,
        mergeable_comp_execution_context=mergeable_comp_execution_context,
        execution_contexts=execution_contexts,
        tensorflow_computation=tensorflow_computation,
        context_stack=context_stack_impl.context_stack,
        async_execution_context=async_execution_context,
        sync_execution_context=sync_execution_context,
        python_executor_stacks=python_executor_stacks,
        remote_executor=remote_executor,
        remote_executor_grpc_stub=remote_executor_grpc_stub,
        value_serialization=value_serialization,
        placements=placements,
    )


def refuse_calls_outside_a_runtime() -> None:
    """Makes a TFF computation called in this thread outside an active fedlab Runtime fail, instead of running.

    TFF 0.87 installs, in the thread that imports it, a default context that starts its own worker_binary on the
    first call (`tensorflow_federated/__init__.py`, line 72: `set_sync_local_cpp_execution_context()`). That worker
    is not tied to this process: it outlives it, pipes open. Every fedlab computation runs inside
    `Runtime.activate()`, so the default context is one that refuses (TFF's contexts are per thread)."""
    modules().context_stack.set_default_context(_outside_a_runtime())


@functools.cache
def _outside_a_runtime():
    from tensorflow_federated.python.core.impl.context_stack import context_base

    class OutsideARuntime(context_base.SyncContext):
        def invoke(self, comp, arg):
            raise RuntimeError(
                "a TFF computation was called outside an active fedlab Runtime (call it inside "
                "`with runtime.activate():`); TFF's own default context would start a worker that outlives this "
                "process"
            )

    return OutsideARuntime()


def _event_loop_runner(context):
    """The AsyncThreadRunner (event loop in its own thread) behind a TFF execution context, or None."""
    return getattr(context, "_async_runner", None)


def event_loop(context) -> asyncio.AbstractEventLoop | None:
    """The open event loop a TFF execution context runs its computations on, or None."""
    loop = getattr(_event_loop_runner(context), "_event_loop", None)
    return None if loop is None or loop.is_closed() else loop


def stop_event_loop(context) -> None:
    """TFF's contexts run an event loop in a thread that keeps itself alive; stop it, or every run leaks
    two threads."""
    loop = event_loop(context)
    if loop is None:
        return
    runner = _event_loop_runner(context)
    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    runner._thread.join(5)
    if not runner._thread.is_alive():
        loop.close()
    runner._finalizer = lambda *args: None  # its own finaliser would touch the closed loop


def clear_compiled_computations() -> None:
    """Empties TFF's class-wide cache of compiled computations (it keeps closed contexts alive)."""
    from tensorflow_federated.python.core.impl.execution_contexts import compiler_pipeline

    modules()  # the version check
    compiler_pipeline.CompilerPipeline.compile.cache_clear()
