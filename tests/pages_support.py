"""What the AppTest page tests share: a run store of their own per test, the app, waiting for runs, reading
charts and texts, and finished runs written straight into the store.

Each test gets its own run store (FEDLAB_DB in tmp_path). The job manager and store are cached per
database path by fedlab.dashboard.state, so tests never share runs; the `db` fixture shuts the manager down after.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from fedlab.config import PRESETS, ExperimentConfig
from fedlab.runs.store import RunStore
from tests import fakes
from tests.helpers import assert_clean

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 60  # seconds for one script run; the first Data page run generates the city
WAIT = 15.0


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "runs" / "fedlab.db"
    monkeypatch.setenv("FEDLAB_DB", str(path))
    monkeypatch.setenv("FEDLAB_EXPERIMENT", "tests.fakes:FakeExperiment")
    monkeypatch.chdir(ROOT)
    yield path
    from fedlab.dashboard import state

    for manager in _managers(state, path):
        manager.shutdown(timeout=WAIT)
    st.cache_resource.clear()


def _managers(state, path: Path):
    # The cached manager of this test's database, if a page made one (calling the getter returns it).
    if not path.exists():
        return []
    return [state._start_jobs(str(path.resolve()), "tests.fakes:FakeExperiment")]


def app(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=RUN_TIMEOUT)
    at.query_params.update(query)
    at.run()
    if page is not None:
        at.switch_page(f"pages/{page}.py").run()
    assert_clean(at)
    return at


def wait_for_round(store: RunStore, run_id: str, count: int) -> None:
    """Waits (up to WAIT seconds) until the run has `count` rounds in the store."""
    deadline = time.monotonic() + WAIT
    while len(store.rounds(run_id)) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_for_runs(db: Path, count: int, statuses=("finished", "stopped", "failed")) -> list:
    store = RunStore(db)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        runs = store.list_runs()
        if len(runs) >= count and all(run.status in statuses for run in runs):
            return runs
        time.sleep(0.05)
    raise AssertionError(f"runs did not finish: {[(r.name, r.status) for r in store.list_runs()]}")


def button_keys(at: AppTest) -> set[str]:
    """The keys of the buttons the last run drew."""
    return {button.key for button in at.button}


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def values(data) -> list[float]:
    """Plotly sends numpy arrays as {"dtype", "bdata"} (base64); lists stay lists."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"])).tolist()
    return list(data)


def texts(at: AppTest) -> str:
    parts = [
        *at.markdown,
        *at.caption,
        *at.info,
        *at.success,
        *at.warning,
        *at.error,
        *at.title,
        *at.header,
        *at.subheader,
    ]
    return "\n".join(str(p.value) for p in parts)


def store_run(
    db: Path,
    name: str,
    *,
    features=PRESETS["central"],
    rounds: int = 3,
    model: bool = True,
    session_id: str = "someone-else",
    **config,
) -> str:
    """A finished run written straight into the store (no job manager); `config` changes its settings."""
    store = RunStore(db)
    fake = fakes.FakeExperiment(ExperimentConfig(features=features, rounds=rounds, gru_units=8, **config))
    run_id = store.create_run(fake.config, session_id=session_id, name=name)
    store.set_status(run_id, "running")
    for record in fake.rounds():
        store.add_round(run_id, record)
    model_path = None
    if model:
        model_path = db.parent / "models" / f"{run_id}.keras"
        model_path.parent.mkdir(parents=True, exist_ok=True)
        fake.save_model(str(model_path))
    store.finish(
        run_id,
        status="finished",
        test=fake.test(),
        baselines=fake.baselines(),
        timing={},
        model_path=str(model_path) if model_path else None,
        extra=fake.summary(),
    )
    return run_id
