"""Compiled TFF computations kept across runtimes: once per computation and compiler, dropped with the computation."""

import gc

from fedlab.learning.compiled import CompiledComputations


class Computation:
    """Stands in for a TFF computation: any object that can be weakly referenced."""


def counting_compiler(calls: list):
    """A compile_fn that notes the id of each computation it compiles (holding none of them)."""
    return lambda comp: calls.append(id(comp)) or ("compiled", id(comp))


def test_a_computation_is_compiled_once_and_then_handed_out():
    calls, cache, comp = [], CompiledComputations(), Computation()
    compile_fn = cache.compiler("native", counting_compiler(calls))
    first = compile_fn(comp)
    assert compile_fn(comp) is first and calls == [id(comp)]
    # Another context of the same kind (a later runtime) gets the same compiled form.
    assert cache.compiler("native", counting_compiler(calls))(comp) is first and calls == [id(comp)]


def test_each_kind_of_compiler_compiles_on_its_own():
    calls, cache, comp = [], CompiledComputations(), Computation()
    cache.compiler("native", counting_compiler(calls))(comp)
    cache.compiler("native-secure", counting_compiler(calls))(comp)
    assert calls == [id(comp), id(comp)] and len(cache) == 2


def test_a_computation_no_longer_used_is_forgotten():
    calls, cache = [], CompiledComputations()
    compile_fn = cache.compiler("native", counting_compiler(calls))
    kept, dropped = Computation(), Computation()
    compile_fn(kept), compile_fn(dropped)
    del dropped
    gc.collect()
    assert len(cache) == 1
    compile_fn(kept)
    assert len(calls) == 2


def test_a_compiled_form_that_holds_other_computations_is_forgotten_with_them():
    # Dropping one compiled form can free other computations in the same step (their callbacks run inside it).
    cache = CompiledComputations()
    inner, outer = Computation(), Computation()
    cache.compiler("native", lambda comp: ("compiled", id(comp)))(inner)
    held = [inner]
    cache.compiler("mergeable", lambda comp: ("compiled", held.pop()))(outer)  # outer's compiled form holds inner
    del inner, outer
    gc.collect()
    assert len(cache) == 0
