"""Which modules may import TensorFlow Federated: the federated wiring and the TFF runtime, nothing else."""

from pathlib import Path

import fedlab
from tests.helpers import imports_package

# The federated wiring, the TFF runtime and worker, and the shim over the TFF internals they use.
TFF_MODULES = {"federated.py", "runtime.py", "workers.py", "tff_internals.py"}


def _imports_tff(path: Path) -> bool:
    return imports_package(path, "tensorflow_federated")


def test_only_the_federated_and_runtime_modules_import_tff():
    package = Path(fedlab.__file__).parent
    offenders = sorted(
        str(p.relative_to(package)) for p in package.rglob("*.py") if p.name not in TFF_MODULES and _imports_tff(p)
    )
    assert offenders == []


def test_the_scan_sees_both_import_forms(tmp_path):
    plain, dotted, other = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    plain.write_text("def f():\n    import tensorflow_federated as tff\n")
    dotted.write_text("from tensorflow_federated.python.core import x\n")
    other.write_text("import tensorflow_federated_extra\nimport tensorflow as tf\n")
    assert _imports_tff(plain) and _imports_tff(dotted) and not _imports_tff(other)
