"""TFF workers: two on loopback give the local metrics; an unreachable or lost worker is a clear error;
`fedlab worker` serves loopback only unless --allow-remote, stops cleanly; no worker process outlives a test."""

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import portpicker
import pytest

from fedlab.bench import parse_workers_option
from fedlab.config import ExperimentConfig
from fedlab.errors import ConfigError, FedlabError
from fedlab.learning.engine import Experiment
from fedlab.learning.runtime import Runtime, check_workers, local_workers, running_worker_pids
from fedlab.runs.jobs import JobManager
from fedlab.runs.store import RunStore
from tests.helpers import TINY, tagged_workers

ROOT = Path(__file__).resolve().parents[1]
# Dropout 0: with GRU dropout TFF draws the masks from a random kernel that the clients training at the
# same time share, so they depend on thread scheduling (even on the local runtime), not only on the seed.


def wait_gone(tag: str, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while tagged_workers(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    return tagged_workers(tag)


class CliWorker:
    """`python -m fedlab worker --port P --allow-remote` as a subprocess whose output we read line by line."""

    def __init__(self, *extra: str, port: int | None = None):
        self.port = port or portpicker.pick_unused_port()
        self.tag = uuid.uuid4().hex
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "FEDLAB_TEST_TAG": self.tag}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fedlab", "worker", "--port", str(self.port), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines: queue.Queue = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, fragment: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if line is None:
                break
            self.output.append(line)
            if fragment in line:
                return line
        raise AssertionError(f"no line with {fragment!r}; output so far: {''.join(self.output)}")

    @property
    def target(self) -> str:
        return f"localhost:{self.port}"

    def stop(self, signum=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_rounds(config, tiny_data, build_cache):
    experiment = Experiment(config, data=tiny_data, cache=build_cache)
    try:
        experiment.prepare()
        records = list(experiment.rounds())
        return records, experiment.test()
    finally:
        experiment.close()


def metrics(records) -> np.ndarray:
    return np.array([[r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy] for r in records])


@pytest.mark.tff
def test_a_computation_called_outside_an_active_runtime_is_refused_and_starts_no_worker():
    import tensorflow as tf
    import tensorflow_federated as tff

    @tff.tensorflow.computation
    def two():
        return tf.constant(2)

    with Runtime() as runtime, runtime.activate():
        assert two() == 2
    # TFF's own default context would start a worker_binary here that outlives this process.
    with pytest.raises(RuntimeError, match="outside an active fedlab Runtime"):
        two()
    assert running_worker_pids() == []


@pytest.mark.tff
def test_two_workers_on_loopback_give_the_local_metrics(tiny_data, build_cache):
    local_config = ExperimentConfig(data=tiny_data.config, **TINY)
    local, local_test = run_rounds(local_config, tiny_data, build_cache)
    workers = [CliWorker("--allow-remote") for _ in range(2)]
    try:
        for worker in workers:
            worker.wait_for("listening")
        config = local_config.replace(workers=tuple(w.target for w in workers))
        remote, remote_test = run_rounds(config, tiny_data, build_cache)
    finally:
        codes = [worker.stop() for worker in workers]
    assert codes == [0, 0]
    assert [r.clients for r in remote] == [3, 3]  # every client trained, split over the two workers
    np.testing.assert_allclose(metrics(remote), metrics(local), rtol=1e-5)
    assert remote_test.accuracy == pytest.approx(local_test.accuracy, rel=1e-5)
    assert config.to_dict()["workers"] == [w.target for w in workers]  # the run records its workers
    assert ExperimentConfig.from_dict(config.to_dict()).workers == config.workers
    for worker in workers:
        assert wait_gone(worker.tag) == []
    assert running_worker_pids() == []


@pytest.mark.tff
def test_unreachable_worker_fails_fast_naming_it():
    import tensorflow_federated  # noqa: F401  (imported before the clock starts: it takes seconds)

    target = f"localhost:{portpicker.pick_unused_port()}"
    started = time.monotonic()
    with pytest.raises(FedlabError, match=f"no TFF worker answers at {target}"):
        Runtime(workers=(target,), connect_timeout=2.0)
    with pytest.raises(FedlabError, match=target):
        check_workers(["localhost:1", target], timeout=2.0)  # both waits share one timeout
    assert time.monotonic() - started < 10
    assert running_worker_pids() == []


def test_cli_run_with_an_unreachable_worker_is_one_line_and_exit_2():
    target = f"localhost:{portpicker.pick_unused_port()}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "fedlab", "run", "--top-users", "3", "--n", "9", "--workers", target],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and target in lines[0] and "Traceback" not in out.stderr
    assert time.monotonic() - started < 60  # before TensorFlow, the data or the model


@pytest.mark.tff
def test_lost_worker_fails_the_run_and_keeps_its_rounds(tiny_data, build_cache, tmp_path):
    store = RunStore(tmp_path / "fedlab.db")
    jobs = JobManager(store, experiment_factory=lambda c: Experiment(c, data=tiny_data, cache=build_cache))
    try:
        with local_workers(2) as targets:
            config = ExperimentConfig(
                data=tiny_data.config, workers=tuple(targets), **{**TINY, "rounds": 50, "patience": 50}
            )
            run_id = jobs.submit(config)
            deadline = time.monotonic() + 300
            while len(store.rounds(run_id)) < 1 and time.monotonic() < deadline:
                assert store.get_run(run_id).status in ("queued", "running"), store.get_run(run_id).error
                time.sleep(0.05)
            port = targets[1].rsplit(":", 1)[1]
            (lost,) = [
                pid
                for pid in running_worker_pids()
                if f"--port={port}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            ]
            os.kill(lost, signal.SIGKILL)
            assert jobs.wait_idle(120)
    finally:
        jobs.shutdown(timeout=60)
    run = store.get_run(run_id)
    assert run.status == "failed"
    assert f"lost the TFF worker at {targets[1]}" in run.error
    assert 1 <= len(store.rounds(run_id)) < 50
    assert running_worker_pids() == []


@pytest.mark.tff
def test_worker_without_allow_remote_serves_this_machine_only():
    from tests.test_worker_security import listening, loopback

    worker = CliWorker()
    try:
        line = worker.wait_for("listening")
        assert "this machine only" in line and f"127.0.0.1:{worker.port}" in line and "ssh -L" in line
        (pid,) = tagged_workers(worker.tag)
        assert {port for _, port in listening(pid)} == {worker.port}
        assert all(loopback(address) for address, _ in listening(pid))
        check_workers([f"127.0.0.1:{worker.port}"], timeout=5.0)  # it accepts connections over loopback
        assert worker.stop(signal.SIGTERM) == 0
    finally:
        worker.kill()
    assert wait_gone(worker.tag) == []


@pytest.mark.tff
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 0), (signal.SIGTERM, 0), (signal.SIGKILL, -signal.SIGKILL)])
def test_worker_serves_until_stopped_and_leaves_no_process(signum, status):
    worker = CliWorker("--allow-remote")
    try:
        line = worker.wait_for("listening")
        assert f"port {worker.port}" in line and "EVERY network interface" in line
        assert len(tagged_workers(worker.tag)) == 1
        check_workers([worker.target], timeout=5.0)  # it accepts connections
        assert worker.stop(signum) == status
    finally:
        worker.kill()
    if signum != signal.SIGKILL:
        assert "stopped" in "".join(worker.output) + "".join(iter(worker.lines.get, None))
    assert wait_gone(worker.tag) == []  # killed with its parent even on SIGKILL (PR_SET_PDEATHSIG)


def test_worker_on_a_busy_port_is_a_clear_error():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        worker = CliWorker("--allow-remote", port=busy.getsockname()[1])
        try:
            assert worker.proc.wait(60) == 2
        finally:
            worker.kill()
    assert "already in use" in "".join(iter(worker.lines.get, None))
    assert tagged_workers(worker.tag) == []


def test_bench_workers_option():
    assert parse_workers_option("local") == (1, 2, 4)
    assert parse_workers_option("1, 3") == (1, 3)
    assert parse_workers_option("a:1,b.lan:2") == ("a:1", "b.lan:2")
    with pytest.raises(ConfigError, match="host:port"):
        parse_workers_option("nowhere")
