"""Shared fixtures: a small synthetic city, and the real data folder beside the project (may be absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("FEDLAB_DEMO_RUNS", "0")  # an empty test store gets no demo runs unless a test asks

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "foursquare"


@pytest.fixture(scope="session")
def small_city():
    from fedlab.data.synthetic import generate_city

    return generate_city(users=12, days=120, seed=1)


@pytest.fixture(scope="session")
def real_sample_path() -> Path:
    path = REAL_DATA / "nyc_sample_160users.txt"
    if not path.exists():
        pytest.skip("real Foursquare sample not present beside the project")
    return path


@pytest.fixture(scope="session")
def tiny_data(small_city):
    """Three clients of the small city, sequences of N=9 (with user habits): a federated round in a second."""
    from fedlab.config import DataConfig
    from fedlab.data.pipeline import prepare

    return prepare(small_city, DataConfig(top_users=3, n=9), habits=True)


@pytest.fixture(scope="session")
def build_cache():
    """One build cache for the whole session, as the dashboard's: tests with the same model shape build TFF
    processes once, and a run of the same processes as the run before reuses its runtime."""
    from fedlab.learning.engine import BuildCache

    cache = BuildCache(keep_runtime=True)
    yield cache
    cache.close()


@pytest.fixture(autouse=True)
def _no_warm_worker_after_a_test(request):
    """Stops the session cache's warm runtime after each test that used it, so no test sees another's worker."""
    yield
    if "build_cache" in request.fixturenames:
        request.getfixturevalue("build_cache").close()
