"""What every dashboard page shares: cached resources, per-session state, page set-up and errors.

Not a page itself (app.py lists the pages). The other helper modules beside it: sources (the
check-in data), settings (the training settings form), results (a run's views), comparison (two
runs side by side), history (the Runs page) and presentation (presentation mode).

Threads: the JobManager's training thread never calls Streamlit. Everything it uses (the run store,
the experiment factory, the lazily made BuildCache) is plain Python created here on the script thread.
TensorFlow is imported only when the first real experiment is built, inside that training thread.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from fedlab.config import ExperimentConfig
from fedlab.errors import ConfigError, FedlabError
from fedlab.jobs import JobManager
from fedlab.store import Run, RunStore, app_db_path
from fedlab.synthetic import SYNTHETIC_LABEL

log = logging.getLogger(__name__)

APP_ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 1.0
_VIEW_KEY = "_kept_view"  # what the last run drew, for keep_widget_state
DEMO_SWITCH = "FEDLAB_DEMO_RUNS"  # "0" = never queue demo runs (the tests set it)

# ----- resources shared by all sessions -----

class SharedBuildCache:
    """The engine's BuildCache, made on first use: making it imports TensorFlow, which only training needs."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cache = None

    def get(self):
        with self._lock:
            if self._cache is None:
                from fedlab.engine import BuildCache

                self._cache = BuildCache()
            return self._cache


def db_path() -> Path:
    return app_db_path()


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> RunStore:
    store = RunStore(path)
    store.mark_interrupted()  # once per process: runs an earlier app process left behind
    return store


def run_store() -> RunStore:
    return _open_store(str(db_path()))


@st.cache_resource(show_spinner=False)
def build_cache() -> SharedBuildCache:
    return SharedBuildCache()


@st.cache_resource(show_spinner=False)
def _start_jobs(path: str, factory_spec: str) -> JobManager:
    factory = experiment_factory(factory_spec, build_cache())
    # Models and TensorBoard logs live beside the database, one file or folder per run id.
    return JobManager(_open_store(path), experiment_factory=factory, model_dir=Path(path).parent / "models",
                      tensorboard_dir=Path(path).parent / "tensorboard")


def job_manager() -> JobManager:
    return _start_jobs(str(db_path()), os.environ.get("FEDLAB_EXPERIMENT", "").strip())


def experiment_factory(spec: str, shared: SharedBuildCache) -> Callable[[ExperimentConfig], object]:
    """config -> experiment. `spec` "module:attr" names another factory (tests use a fake); empty = the engine.

    A factory that takes a `cache` keyword gets the shared BuildCache, so runs reuse data and processes.
    """
    if not spec:
        return functools.partial(_engine_experiment, shared)
    target = _import_target(spec)
    if "cache" in _parameters(target):
        return functools.partial(_with_cache, target, shared)
    return target


def _engine_experiment(shared: SharedBuildCache, config: ExperimentConfig):
    from fedlab.engine import Experiment  # TensorFlow loads here, in the training thread

    return Experiment(config, cache=shared.get())


def _with_cache(target: Callable, shared: SharedBuildCache, config: ExperimentConfig):
    return target(config, cache=shared.get())


def _import_target(spec: str) -> Callable:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"FEDLAB_EXPERIMENT must look like 'package.module:Factory', not {spec!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"FEDLAB_EXPERIMENT={spec!r} cannot be loaded ({exc}); fix or unset it") from None


def _parameters(target: Callable) -> Mapping:
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}


# ----- page set-up -----

def ensure_navigation() -> None:
    """Call first on every page: reruns through app.py when Streamlit ran the page on its own.

    A folder named pages/ next to app.py makes Streamlit (1.52) run a page file directly when a
    fresh server's first request is its URL (a reload or bookmark), skipping app.py and its
    st.navigation. st.navigation clears this flag for the rest of the process; one rerun lets
    app.py handle the same URL.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


# ----- per-session state -----

@dataclass(frozen=True)
class DataSource:
    """The check-ins a session works with: the synthetic city, a file path, or a saved upload."""

    kind: str  # a key of pages.sources.SOURCE_KINDS
    path: str | None
    label: str

    @property
    def is_synthetic(self) -> bool:
        return self.kind == "synthetic"


SYNTHETIC = DataSource("synthetic", None, SYNTHETIC_LABEL)


def init_session() -> None:
    """Session id and data source, set once per browser session."""
    state = st.session_state
    if "session_id" not in state:
        state["session_id"] = uuid.uuid4().hex
    if "data_source" not in state:
        state["data_source"] = SYNTHETIC
    set_default("source_kind", "synthetic")
    set_default("source_skip_bad_rows", False)


def session_id() -> str:
    init_session()  # a page run on its own (without app.py) still gets one
    return st.session_state["session_id"]


def data_source() -> DataSource:
    return st.session_state.get("data_source", SYNTHETIC)


def skip_bad_rows() -> bool:
    return bool(st.session_state.get("source_skip_bad_rows", False))


def set_default(key: str, value) -> None:
    # Widgets take their start value from session state only, so a preset button can change it later.
    if key not in st.session_state:
        st.session_state[key] = value


def keep_widget_state(keys, view: tuple) -> None:
    """Keeps widget values while their widgets are not drawn: on another page, in presentation mode, ...

    Streamlit drops a widget's value after a run that did not draw it; writing the value through session
    state keeps it, and makes the widget show it when drawn again. `view` names what this run draws (page,
    modes); the values are written only when it changed. Writing them on every run would also send every
    value back to the browser on every rerun, where a late answer to one edit overwrote a newer edit still
    in flight (a number typed a moment ago reset, or the feature list emptied).
    """
    if st.session_state.get(_VIEW_KEY) == view:
        return
    st.session_state[_VIEW_KEY] = view
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


# ----- errors -----

def show_error(exc: BaseException) -> None:
    """A short message: a FedlabError's own words, anything else a hint (details go to the server log)."""
    if isinstance(exc, FedlabError):
        st.error(str(exc), icon=":material/error:")
        return
    log.error("dashboard error", exc_info=exc)
    st.error(f"Something went wrong ({type(exc).__name__}). Try again, or choose other settings; "
             "details are in the server log.", icon=":material/error:")


# ----- demo runs at first start -----

def start_demo_runs() -> list[str]:
    """Queues the demo runs once per app process, and only when the run store holds no runs at all."""
    if os.environ.get(DEMO_SWITCH, "1").strip() == "0":
        return []
    try:
        return _queue_demo_runs(str(db_path()), os.environ.get("FEDLAB_EXPERIMENT", "").strip())
    except Exception:  # an unusable store is reported by the page that opens it; demos are optional
        log.warning("could not queue the demo runs", exc_info=True)
        return []


@st.cache_resource(show_spinner=False)
def _queue_demo_runs(path: str, factory_spec: str) -> list[str]:
    demo = _demo_module()
    store = _open_store(path)
    if demo is None or store.list_runs():
        return []
    manager = _start_jobs(path, factory_spec)
    return [manager.submit(config, name=name) for name, config in demo.missing_demo_runs(store)]


def _demo_module():
    try:
        return importlib.import_module("fedlab.demo")
    except ImportError:
        log.info("fedlab.demo is not available; no demo runs")
        return None


def demo_runs() -> list[Run]:
    """The stored runs named like a demo run, newest first; empty without fedlab.demo or a usable store."""
    demo = _demo_module()
    if demo is None:
        return []
    names = {name for name, _ in demo.demo_runs()}
    try:
        return [run for run in run_store().list_runs() if run.name in names]
    except FedlabError:  # an unusable store: the Runs page says so; Home just shows no demos
        return []
