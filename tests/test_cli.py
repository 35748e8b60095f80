"""The command line: JSON output, one-line errors with exit status 2, and no TFF process left behind."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fedlab.cli import main
from fedlab.errors import DataError
from fedlab.runs.store import PROJECT_DB_PATH, RunStore, default_path
from fedlab.teaching import demo
from tests.fakes import FakeExperiment
from tests.helpers import assert_clean, tagged_workers
from tests.pages_support import app, db  # noqa: F401 (db: a fixture)

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = [
    "run",
    "--top-users",
    "3",
    "--n",
    "9",
    "--gru-units",
    "8",
    "--embedding-dim",
    "4",
    "--rounds",
    "2",
    "--epochs",
    "1",
    "--batch-size",
    "8",
]


def cli_env(tag: str = "", store: Path | None = None) -> dict:
    # The tag is inherited by the TFF worker, so a test finds its own workers among other processes.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", "FEDLAB_TEST_TAG": tag}
    if store is not None:  # a run goes to this test's store, never the project's
        env["FEDLAB_DB"] = str(store)
    return env


def fedlab(*args, timeout=300, tag: str = "", store: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = cli_env(tag, store)
    return subprocess.run(
        [sys.executable, "-m", "fedlab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def test_data_stats_json_has_every_field():
    out = fedlab("data-stats", "--json", "--top-users", "20", "--n", "9")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    for key in (
        "rows",
        "users",
        "venues",
        "categories",
        "groups",
        "skipped_rows",
        "first_time",
        "last_time",
        "clients",
        "train_sequences",
        "val_sequences",
        "test_sequences",
        "preprocess_seconds",
    ):
        assert key in stats
    assert stats["clients"] == 20


def test_data_stats_on_the_real_sample(real_sample_path):
    stats = json.loads(fedlab("data-stats", "--json", "--data", str(real_sample_path), "--grouping", "root").stdout)
    assert stats["users"] == 160 and stats["groups"] <= 10


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["data-stats", "--data", "/no/such/file.txt"], "no/such/file.txt"),
        (["data-stats", "--n", "1"], "N must be a whole number of at least 2"),
        (["run", "--rounds", "0"], "rounds"),
        (["run", "--features", "cat_id,warp_speed"], "unknown feature"),
        (["run", "--client-lr", "-1"], "learning rate"),
        (["data-stats", "--grouping", "galaxy"], "grouping"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, fragment):
    out = fedlab(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]
    assert "Traceback" not in out.stderr


def test_empty_file_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = fedlab("data-stats", "--data", str(empty))
    assert out.returncode == 2 and "empty" in out.stderr.lower()


@pytest.mark.tff
@pytest.mark.slow
def test_run_writes_the_json_and_the_tensorboard_log_and_leaves_no_worker(tmp_path):
    tag = uuid.uuid4().hex
    out_file = tmp_path / "run.json"
    store = tmp_path / "runs" / "fedlab.db"
    out = fedlab(
        *TINY_RUN, "--json-out", str(out_file), "--tensorboard-dir", str(tmp_path / "tb"), tag=tag, store=store
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("round ") >= 2  # a progress line per round
    # What it does after the rounds, before the results: said before the (possibly long) test.
    assert out.stdout.index("testing the kept model") < out.stdout.index("test  acc@1")
    result = json.loads(out_file.read_text())
    assert set(result) >= {"config", "rounds", "test", "baselines", "timing"}
    assert [r["round"] for r in result["rounds"]] == [1, 2]
    assert set(result["test"]) >= {"accuracy", "top5_accuracy", "mrr", "loss", "examples", "per_client", "per_class"}
    assert set(result["baselines"]) == {"majority", "repeat_last", "user_most_frequent", "markov", "user_markov"}
    assert set(result["timing"]) >= {"preprocess_seconds", "build_seconds", "train_seconds", "importance_seconds"}
    # Every feature of the central preset has its drop in acc@1 when shuffled, and its spread over the repeats.
    assert set(result["test"]["importance"]["features"]) == set(result["config"]["features"])
    assert all({"drop", "spread", "helped"} <= set(f) for f in result["test"]["importance"]["features"].values())
    assert "acc@1 lost when a feature is shuffled: " in out.stdout
    assert tagged_workers(tag) == []
    (log_dir,) = (tmp_path / "tb").iterdir()
    assert log_dir.name.startswith("central-") and f"TensorBoard log in {log_dir}" in out.stdout
    assert logged_steps(log_dir / "validation", "validation/accuracy") == [1, 2]
    assert logged_steps(log_dir / "train", "train/loss") == [1, 2]

    # The run is in the shared store like a dashboard run: listed, and reported from its id.
    (run,) = RunStore(store).list_runs()
    assert (run.status, run.session_id, run.test) == ("finished", "", result["test"])
    assert RunStore(store).rounds(run.id)["round"].tolist() == [1, 2]
    assert f"recording run {run.id} in {store}" in out.stdout
    listed = fedlab("runs", "--json", store=store)
    assert listed.returncode == 0, listed.stderr
    assert [(r["id"], r["status"], r["test_accuracy"]) for r in json.loads(listed.stdout)] == [
        (run.id, "finished", result["test"]["accuracy"])
    ]
    report = fedlab("report", run.id, "--out", str(tmp_path / "r.html"), store=store)
    assert report.returncode == 0, report.stderr
    assert run.id in (tmp_path / "r.html").read_text()


def logged_steps(folder: Path, tag: str) -> list[int]:
    import tensorflow as tf

    return [
        event.step
        for path in sorted(folder.glob("events.out.tfevents.*"))
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
        if value.tag == tag
    ]


RESTORE_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


@pytest.mark.tff
@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)])
def test_interrupted_or_killed_run_leaves_no_worker(signum, status, db):
    """While it trains the run shows live on the Runs page; Ctrl-C records it interrupted, and once a killed
    run's process is gone the dashboard marks it interrupted (never while it is alive)."""
    tag = uuid.uuid4().hex
    env = cli_env(tag, db)
    # As from a terminal: a suite started in the background (`cmd &` in a script) passes SIGINT on ignored,
    # so a small launcher sets it back to default and execs the run (no preexec_fn: this process has threads).
    command = [sys.executable, "-m", "fedlab", *TINY_RUN[:-6], "--rounds", "50", "--patience", "50"]
    proc = subprocess.Popen(
        [sys.executable, "-c", RESTORE_SIGINT, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        for line in proc.stdout:  # wait until training runs, so the worker exists
            if line.startswith("round"):
                break
        assert tagged_workers(tag), "the run should have started a TFF worker"
        (run,) = RunStore(db).list_runs()
        assert run.status == "running" and len(RunStore(db).rounds(run.id)) >= 1
        page = app("runs")  # the dashboard leaves a live process's run alone and shows it
        assert RunStore(db).get_run(run.id).status == "running"
        table = page.dataframe[0].value
        assert table.loc[table["id"] == run.id, "status"].tolist() == ["running"]
        assert any("stop it there with Ctrl-C" in caption.value for caption in page.caption)
        proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=60)  # returns only once every pipe holder is gone
    finally:
        proc.kill()
    assert proc.returncode == status, rest[-3000:]
    deadline = time.monotonic() + 10
    while tagged_workers(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tagged_workers(tag) == []
    page = app("runs")
    assert_clean(page)
    assert RunStore(db).get_run(run.id).status == "interrupted"
    assert page.dataframe[0].value["status"].tolist() == ["interrupted"]


# ----- run and runs in this process, with the fake experiment -----


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import fedlab.learning.engine

    monkeypatch.setattr(fedlab.learning.engine, "experiment_factory", lambda cache=None: FakeExperiment)
    store = tmp_path / "store" / "fedlab.db"
    monkeypatch.setenv("FEDLAB_DB", str(store))
    return store


def test_no_store_trains_and_prints_alike_but_records_nothing(fake_training, tmp_path, capsys):
    assert main(["run", "--rounds", "2", "--no-store", "--json-out", str(tmp_path / "run.json")]) == 0
    out = capsys.readouterr().out
    assert "round   2" in out and "test  acc@1 0.4567" in out and "recording" not in out
    assert [r["round"] for r in json.loads((tmp_path / "run.json").read_text())["rounds"]] == [1, 2]
    assert not fake_training.exists()


def test_runs_lists_the_stored_runs_newest_first(fake_training, capsys):
    assert main(["runs"]) == 0
    assert f"no runs in {fake_training}" in capsys.readouterr().out
    assert not fake_training.exists()  # listing creates no store
    for name in ("central", "biggest"):
        assert main(["run", "--rounds", "2", "--preset", name]) == 0
    out = capsys.readouterr().out
    runs = RunStore(fake_training).list_runs()
    assert f"recording run {runs[1].id} in {fake_training}" in out
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == [runs[0].id, "finished", "0.4567", "biggest"]
    assert lines[2].split() == [runs[1].id, "finished", "0.4567", "central"]
    assert main(["runs", "--json"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["biggest", "central"]


# ----- demo (in this process, with the fake experiment) -----


class FailingExperiment(FakeExperiment):
    def prepare(self) -> None:
        raise DataError("no check-ins left")


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(demo, "engine_factory", lambda: FakeExperiment)


def test_demo_trains_both_runs_beside_the_store_then_has_nothing_to_do(fake_engine, tmp_path, capsys):
    db = tmp_path / "runs" / "fedlab.db"
    assert main(["demo", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"training Demo · central, Demo · biggest into {db}" in out
    assert "Demo · central: finished after 4 rounds" in out and "Demo · biggest: finished" in out
    runs = RunStore(db).list_runs()
    assert sorted((run.name, run.status) for run in runs) == [
        ("Demo · biggest", "finished"),
        ("Demo · central", "finished"),
    ]
    for run in runs:  # the folders the dashboard uses beside its store
        assert Path(run.model_path).parent == tmp_path / "runs" / "models"
        assert list((tmp_path / "runs" / "tensorboard" / run.id).rglob("events.out.tfevents.*"))

    assert main(["demo", "--db", str(db)]) == 0
    assert "already finished" in capsys.readouterr().out
    assert len(RunStore(db).list_runs()) == 2


def test_demo_uses_the_dashboards_store_by_default(fake_engine, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FEDLAB_DB", str(tmp_path / "elsewhere.db"))
    assert main(["demo"]) == 0
    assert len(RunStore(tmp_path / "elsewhere.db").list_runs()) == 2
    monkeypatch.delenv("FEDLAB_DB")
    assert default_path() == PROJECT_DB_PATH == ROOT / "runs" / "fedlab.db"


def test_a_failed_demo_run_exits_1_with_its_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "engine_factory", lambda: FailingExperiment)
    assert main(["demo", "--db", str(tmp_path / "fedlab.db")]) == 1
    err = capsys.readouterr().err
    assert "Demo · central: failed (no check-ins left)" in err
    assert "Demo · biggest: failed" in err
