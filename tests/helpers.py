"""Small helpers shared by several test files."""

from __future__ import annotations

import ast
import gzip
import io
import zipfile
from pathlib import Path

from fedlab.learning.runtime import worker_binary_path

# A model small enough that a federated round on three clients takes about a second.
TINY = dict(gru_units=8, embedding_dim=4, rounds=2, epochs=1, batch_size=8, client_lr=0.05, dropout=0.0)


def tagged_workers(tag: str) -> list[int]:
    """worker_binary processes whose environment carries FEDLAB_TEST_TAG=tag (set by the test that started them)."""
    binary, marker = str(worker_binary_path()), f"FEDLAB_TEST_TAG={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and (entry / "cmdline").read_bytes().split(b"\0")[0].decode() == binary
                and marker in (entry / "environ").read_bytes().split(b"\0")
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def assert_clean(at) -> None:
    """No uncaught exception in an AppTest run, and none caught by app.py's last-resort handler either."""
    assert not at.exception, at.exception
    unexpected = [e.value for e in at.error if e.value.startswith("Something went wrong")]
    assert not unexpected, unexpected


def compressed(data: bytes, kind: str) -> bytes:
    """data as a gzip file, a zip holding one file, or unchanged (kind "none" or anything else)."""
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("checkins.txt", data)
        return buffer.getvalue()
    return data


def imports_package(path: Path, package: str) -> bool:
    """Whether the Python file at `path` imports `package` or one of its submodules (absolute imports, anywhere)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(name == package or name.startswith(package + ".") for name in names):
            return True
    return False
