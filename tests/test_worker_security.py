"""A local run's TFF worker accepts connections from this machine only, refuses to start open unless told
to, and lives exactly as long as the process that started it (not the thread)."""

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import portpicker
import pytest

from fedlab.errors import FedlabError
from fedlab.learning.runtime import WORKER_SHIM, Runtime, local_workers, running_worker_pids, worker_binary_path
from tests.helpers import tagged_workers

ROOT = Path(__file__).resolve().parents[1]


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, read from /proc/net/tcp and tcp6."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        link = os.readlink(fd)
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                # The address is 32-bit words, each in the host's (little-endian) byte order.
                raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
                found.add((str(ipaddress.ip_address(raw)), int(port, 16)))
    return found


def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def one_plus_two(runtime: Runtime) -> int:
    import tensorflow as tf
    import tensorflow_federated as tff

    @tff.tensorflow.computation
    def add():
        return tf.constant(1) + tf.constant(2)

    with runtime.activate():
        return int(add())


@pytest.fixture
def no_shim(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDLAB_WORKER_SHIM", str(tmp_path / "missing.so"))
    monkeypatch.delenv("FEDLAB_ALLOW_OPEN_WORKER", raising=False)


@pytest.mark.tff
def test_a_local_run_listens_on_loopback_only_and_computes():
    with Runtime() as runtime:
        (pid,) = runtime.pids
        sockets = listening(pid)
        assert sockets and all(loopback(address) for address, _ in sockets), sockets
        assert one_plus_two(runtime) == 3  # its client reaches it over loopback
    with local_workers(1) as (target,):  # the bench's and tests' workers too
        (pid,) = running_worker_pids()
        assert {port for _, port in listening(pid)} == {int(target.rsplit(":", 1)[1])}
        assert all(loopback(address) for address, _ in listening(pid))
    assert running_worker_pids() == []


SHIM_PROBE = """
import socket
def bound(family, address, v6only=None):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        s.bind((address, 0))
        return s.getsockname()[0]
print(bound(socket.AF_INET, "0.0.0.0"), bound(socket.AF_INET6, "::", 0), bound(socket.AF_INET6, "::", 1),
      bound(socket.AF_INET, "127.0.0.2"))
"""


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this machine")
def test_the_shim_rewrites_only_wildcard_binds_and_only_when_asked():
    def probe(**extra) -> list[str]:
        env = {**os.environ, "LD_PRELOAD": str(WORKER_SHIM), **extra}
        out = subprocess.run([sys.executable, "-c", SHIM_PROBE], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    # A dual-stack socket gets the IPv4 loopback (the address clients dial), an IPv6-only one ::1.
    assert probe(FEDLAB_WORKER_LOOPBACK="1") == ["127.0.0.1", "::ffff:127.0.0.1", "::1", "127.0.0.2"]
    assert probe() == ["0.0.0.0", "::", "::", "127.0.0.2"]


def test_without_the_shim_a_local_run_refuses_in_one_line(no_shim):
    with pytest.raises(FedlabError) as refused:
        Runtime()
    message = str(refused.value)
    assert "\n" not in message and "missing.so" in message and "make shim" in message
    assert "every network interface" in message and "FEDLAB_ALLOW_OPEN_WORKER=1" in message
    assert running_worker_pids() == []


def test_without_the_shim_fedlab_worker_refuses_with_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FEDLAB_WORKER_SHIM": str(tmp_path / "missing.so")}
    env.pop("FEDLAB_ALLOW_OPEN_WORKER", None)
    out = subprocess.run(
        [sys.executable, "-m", "fedlab", "worker", "--port", str(portpicker.pick_unused_port())],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "make shim" in lines[0] and "Traceback" not in out.stderr


@pytest.mark.tff
def test_allow_open_worker_starts_a_local_run_without_the_shim(no_shim, monkeypatch):
    monkeypatch.setenv("FEDLAB_ALLOW_OPEN_WORKER", "1")
    with Runtime() as runtime:
        (pid,) = runtime.pids
        assert not all(loopback(address) for address, _ in listening(pid))  # the risk it accepts: open
        assert one_plus_two(runtime) == 3
    assert running_worker_pids() == []


@pytest.mark.tff
def test_a_worker_outlives_the_short_lived_thread_that_started_it():
    started: list[Runtime] = []
    thread = threading.Thread(target=lambda: started.append(Runtime()))
    thread.start()
    thread.join()
    (runtime,) = started
    try:
        task = Path(f"/proc/self/task/{thread.native_id}")
        deadline = time.monotonic() + 10
        while task.exists() and time.monotonic() < deadline:  # join() returns just before the OS thread ends
            time.sleep(0.01)
        assert not task.exists()
        assert one_plus_two(runtime) == 3  # its worker was not killed with that thread
        assert running_worker_pids() == runtime.pids
    finally:
        runtime.close()
    assert running_worker_pids() == []


PARENT = """
import threading
from fedlab.learning.runtime import Runtime
started = []
thread = threading.Thread(target=lambda: started.append(Runtime()))
thread.start()
thread.join()
print(started[0].pids[0], flush=True)
threading.Event().wait()
"""


@pytest.mark.tff
def test_the_worker_dies_when_its_python_parent_is_killed():
    tag = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FEDLAB_TEST_TAG": tag}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT, stdin=subprocess.DEVNULL
    )
    try:
        pid = int(parent.stdout.readline())
        assert tagged_workers(tag) == [pid]
        parent.kill()
        parent.wait(30)
    finally:
        parent.kill()
    deadline = time.monotonic() + 10
    while tagged_workers(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tagged_workers(tag) == []


def test_a_worker_whose_parent_is_already_gone_exits_at_once():
    # The shim sees its parent is not the pid it was given (as when that process died before the shim
    # could set PR_SET_PDEATHSIG) and kills the worker before it listens.
    env = {**os.environ, "LD_PRELOAD": str(WORKER_SHIM), "FEDLAB_WORKER_PARENT": "1"}
    out = subprocess.run(
        [str(worker_binary_path()), f"--port={portpicker.pick_unused_port()}"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == -signal.SIGKILL


def test_tff_internals_refuse_another_tff_version_naming_theirs(monkeypatch):
    import tensorflow_federated

    from fedlab.learning import tff_internals

    monkeypatch.setattr(tensorflow_federated, "__version__", "0.88.0")
    tff_internals.modules.cache_clear()
    try:
        with pytest.raises(FedlabError, match=r"needs tensorflow-federated 0\.87\.0 .*found 0\.88\.0"):
            tff_internals.modules()
    finally:
        tff_internals.modules.cache_clear()
