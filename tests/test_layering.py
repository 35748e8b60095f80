"""The folders are the architecture: each package imports only from the layers below its own, no two modules
import each other, TensorFlow and TFF stay in learning/ (and the benchmark), Streamlit in dashboard/."""

from __future__ import annotations

import ast
from pathlib import Path

import fedlab
from tests.helpers import imports_package

PACKAGE = Path(fedlab.__file__).parent
# Bottom to top. A module may import from its own layer and any layer below it, never from one above.
LAYERS = (
    ("config", "records", "errors"),  # what everything uses
    ("data",),  # check-ins in, sequences out; the poisoning of training data
    ("runs",),  # the run store, recording, the job queue, the TensorBoard sink
    ("results",),  # pure maths and views of a run: metrics, baselines, fairness, charts, reports
    ("learning",),  # TensorFlow and TFF: the model, the federated processes, the engine
    ("teaching",),  # lessons and demo runs
    ("dashboard",),  # the only importer of Streamlit
    ("cli", "bench", "__main__", "__init__"),  # the entry points, which use everything
)
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}
TF_ALLOWED = {"learning", "bench"}
STREAMLIT_ALLOWED = {"dashboard"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The first name under fedlab: a package (data, learning, ...) or a top-level module (config, cli, ...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def fedlab_imports(path: Path) -> set[str]:
    """Every fedlab module this file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "fedlab")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "fedlab":
            for alias in node.names:  # `from fedlab.data import pipeline` names a module; `import X` a value
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if is_module(candidate) else node.module)
    return {m for m in found if m != "fedlab"}


def is_module(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): fedlab_imports(p) for p in source_files()}


def test_every_unit_has_a_layer():
    assert sorted({unit_of(m) for m in import_graph()} - set(LAYER_OF)) == []


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} -> {imported}"
        for module, imports in graph.items()
        for imported in imports
        if LAYER_OF[unit_of(imported)] > LAYER_OF[unit_of(module)]
    )


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                cycles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports(import_graph()) == []


def test_no_import_cycles():
    assert import_cycles(import_graph()) == []


def test_the_checks_catch_an_upward_import_and_a_cycle():
    graph = {"fedlab.runs.store": {"fedlab.results.charts"}, "fedlab.results.charts": {"fedlab.runs.store"}}
    assert upward_imports(graph) == ["fedlab.runs.store -> fedlab.results.charts"]
    assert import_cycles(graph) == ["fedlab.results.charts -> fedlab.runs.store -> fedlab.results.charts"]
    assert upward_imports({"fedlab.results.charts": {"fedlab.runs.store"}}) == []


def test_tensorflow_and_tff_only_in_learning_and_the_benchmark():
    offenders = sorted(
        module_name(p)
        for p in source_files()
        if unit_of(module_name(p)) not in TF_ALLOWED
        and (imports_package(p, "tensorflow") or imports_package(p, "tensorflow_federated"))
    )
    assert offenders == []


def test_streamlit_only_in_the_dashboard():
    offenders = sorted(
        module_name(p)
        for p in source_files()
        if unit_of(module_name(p)) not in STREAMLIT_ALLOWED and imports_package(p, "streamlit")
    )
    assert offenders == []


def test_the_scans_see_every_import_form(tmp_path):
    lazy, dotted, other = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    lazy.write_text("def f():\n    import tensorflow_federated as tff\n")
    dotted.write_text("from streamlit.runtime.pages_manager import PagesManager\nfrom fedlab.data import pipeline\n")
    other.write_text("import tensorflow_federated_extra\nimport streamlit_extras\nfrom fedlab.config import settings\n")
    assert imports_package(lazy, "tensorflow_federated") and imports_package(dotted, "streamlit")
    assert not imports_package(other, "tensorflow_federated") and not imports_package(other, "streamlit")
    assert fedlab_imports(dotted) == {"fedlab.data.pipeline"}
    assert fedlab_imports(other) == {"fedlab.config"}
