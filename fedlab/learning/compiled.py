"""Compiled forms of TFF computations, kept across runtimes for as long as the computations themselves live.

TFF compiles a computation again in every new execution context: its cache (`CompilerPipeline.compile`, an
`lru_cache` on the method) is keyed by the context's pipeline, and fedlab empties it when a runtime closes so that
closed contexts do not stay alive. Compiling is pure (the same computation gives the same compiled form), and for
a tiny model it costs about 2.5 CPU-s a run, most of it Grappler optimising each TensorFlow graph again. A
`CompiledComputations` owned by the build cache hands a new runtime what an earlier one compiled.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable


class CompiledComputations:
    """compiler_fn wrappers that remember each computation's compiled form, per kind of compiler.

    Keyed by the computation object itself (TFF's own hash serialises the whole proto on each call), and
    forgotten when that object is garbage: the built processes the build cache keeps are what stays compiled."""

    def __init__(self):
        # No lock: each step is one dict operation (atomic under the GIL), and a weakref callback may run inside
        # any of them (dropping one compiled form can free another computation), so a lock here could deadlock.
        self._compiled: dict[tuple[str, int], tuple[weakref.ref, object]] = {}

    def __len__(self) -> int:
        return len(self._compiled)

    def compiler(self, kind: str, compile_fn: Callable) -> Callable:
        """compile_fn, remembering its results; `kind` names the compiler (contexts with another compiler_fn
        must use another kind)."""

        def compile_once(comp):
            key = (kind, id(comp))
            found = self._compiled.get(key)
            if found is not None and found[0]() is comp:
                return found[1]
            compiled = compile_fn(comp)
            self._compiled[key] = (weakref.ref(comp, lambda dead, key=key: self._forget(key, dead)), compiled)
            return compiled

        return compile_once

    def _forget(self, key: tuple[str, int], dead: weakref.ref) -> None:
        found = self._compiled.get(key)
        if found is not None and found[0] is dead:
            self._compiled.pop(key, None)
