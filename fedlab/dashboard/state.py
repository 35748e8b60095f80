"""What every dashboard page shares: cached resources, per-session state, page set-up and errors.

Not a page itself (app.py lists the pages in pages/). The other helper modules beside it: sources (the
check-in data), settings (the training settings form), results (a run's views), comparison (two
runs side by side), history (the Runs page), presentation (presentation mode) and access (who may
change a run).

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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from fedlab.config import PRESETS, ExperimentConfig
from fedlab.data.synthetic import SYNTHETIC_LABEL
from fedlab.errors import ConfigError, FedlabError
from fedlab.runs import access
from fedlab.runs.jobs import JobManager, queue_limit_from_env
from fedlab.runs.store import Run, RunStore, default_path

log = logging.getLogger(__name__)

APP_ROOT = Path(__file__).resolve().parents[2]  # the checkout: app.py, assets/, data/ (fedlab is installed with -e)
POLL_SECONDS = 1.0
_VIEW_KEY = "_kept_view"  # what the last run drew, for keep_widget_state
_VIA_APP = "_run_via_app"  # set while app.py runs the page (through_app)
_NAV_RERUNS = "_navigation_reruns"
MAX_NAV_RERUNS = 3  # a page that never runs through app.py (a test running it alone) is not rerun forever
OWNER_KEY = "owner_key"  # set by fedlab.dashboard.signin for a signed-in user
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
                from fedlab.learning.engine import BuildCache

                self._cache = BuildCache(keep_runtime=True)
            return self._cache


def db_path() -> Path:
    return default_path()


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
    return JobManager(
        _open_store(path),
        experiment_factory=factory,
        model_dir=Path(path).parent / "models",
        tensorboard_dir=Path(path).parent / "tensorboard",
        queue_limit=queue_limit_from_env(),
        admit=access.admit,
    )


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
    from fedlab.learning.engine import (
        experiment_factory as engine_factory,  # TensorFlow loads here, in the training thread
    )

    return engine_factory(shared.get())(config)


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
    app.py handle the same URL. The flag is private Streamlit state (PagesManager.uses_pages_directory),
    read and written only here; tests/test_dashboard_boundary.py fails if Streamlit changes it.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
    # Sessions that opened at the same moment as the one that cleared the flag also ran their page on its own
    # (30 students opening a fresh server at once): app.py marks the runs it makes, so those rerun too.
    state = st.session_state
    if not state.get(_VIA_APP) and state.get(_NAV_RERUNS, 0) < MAX_NAV_RERUNS:
        state[_NAV_RERUNS] = state.get(_NAV_RERUNS, 0) + 1
        st.rerun()


@contextmanager
def through_app() -> Iterator[None]:
    """app.py runs the page inside this: ensure_navigation then knows the run went through app.py."""
    st.session_state[_VIA_APP] = True
    try:
        yield
    finally:
        st.session_state.pop(_VIA_APP, None)


# ----- per-session state -----


@dataclass(frozen=True)
class DataSource:
    """The check-ins a session works with: the synthetic city, a file path, or a saved upload."""

    kind: str  # a key of fedlab.dashboard.sources.SOURCE_KINDS
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
    """Who owns what this session queues: the signed-in user's key on a shared server (fedlab.dashboard.signin),
    else the browser session's own id."""
    init_session()  # a page run on its own (without app.py) still gets one
    return st.session_state.get(OWNER_KEY) or st.session_state["session_id"]


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
    st.error(
        f"Something went wrong ({type(exc).__name__}). Try again, or choose other settings; "
        "details are in the server log.",
        icon=":material/error:",
    )


# ----- start-up work: demo runs, then the default model pre-built -----

PREBUILD_SWITCH = "FEDLAB_PREBUILD"  # "0" = no pre-build at start (FEDLAB_DEMO_RUNS=0 switches it off too)
REQUEUED_STATUSES = ("interrupted", "failed")  # a demo run that ended so is queued again at the next start


def start_demo_runs() -> list[str]:
    """Once per app process: queues the demo runs, then pre-builds the Train page's default model.

    Demo runs go into an empty run store, or again when the latest run of that name was interrupted (the
    app stopped while preparing it) or failed. The pre-build waits until no run trains, so the demo runs
    come first; it fills the shared BuildCache, so a first Run with the default settings starts at once.
    """
    if not demo_runs_switched_on():
        return []
    try:
        return _start_up(str(db_path()), os.environ.get("FEDLAB_EXPERIMENT", "").strip())
    except Exception:  # an unusable store is reported by the page that opens it; demos are optional
        log.warning("could not queue the demo runs", exc_info=True)
        return []


def demo_runs_switched_on() -> bool:
    return os.environ.get(DEMO_SWITCH, "1").strip() != "0"


@st.cache_resource(show_spinner=False)
def _start_up(path: str, factory_spec: str) -> list[str]:
    demo = _demo_module()
    store = _open_store(path)  # marks the runs an earlier process left behind interrupted first
    manager = _start_jobs(path, factory_spec)
    queued = []
    if demo is not None:
        to_queue = demo_runs_to_queue(store.list_runs(), demo.missing_demo_runs(store))
        queued = [manager.submit(config, name=name) for name, config in to_queue]
    _start_prebuild(manager, factory_spec)
    return queued


def demo_runs_to_queue(runs: list[Run], missing: list[tuple[str, ExperimentConfig]]) -> list:
    """Which missing demo runs to queue at start, given every stored run (newest first): all of them into an
    empty store, else those whose latest run was interrupted or failed (a stopped or deleted one stays so)."""
    if not runs:
        return list(missing)
    latest = latest_by_name(runs)
    return [(name, config) for name, config in missing if name in latest and latest[name].status in REQUEUED_STATUSES]


def latest_by_name(runs: list[Run]) -> dict[str, Run]:
    """The newest run of each name, from runs listed newest first."""
    latest: dict[str, Run] = {}
    for run in runs:
        latest.setdefault(run.name, run)
    return latest


def _start_prebuild(manager: JobManager, factory_spec: str) -> None:
    if os.environ.get(PREBUILD_SWITCH, "1").strip() == "0":
        return
    prebuild = _prebuild_function(factory_spec)
    if prebuild is None:
        return
    config = default_train_config()
    shared = build_cache()
    threading.Thread(
        target=_prebuild_when_idle, args=(manager, prebuild, config, shared), daemon=True, name="fedlab-prebuild"
    ).start()


def _prebuild_function(factory_spec: str) -> Callable | None:
    """The engine's prebuild(config, cache); a test factory may offer its own as a `prebuild` attribute."""
    if not factory_spec:
        return _engine_prebuild
    return getattr(_import_target(factory_spec), "prebuild", None)


def _engine_prebuild(config: ExperimentConfig, cache) -> None:
    from fedlab.learning import engine  # TensorFlow loads here, in the pre-build thread

    engine.prebuild(config, cache, warm=True)


def default_train_config() -> ExperimentConfig:
    """The Train form's start values as a config: the defaults, the central preset, the synthetic city.

    Built here rather than from the form (fedlab.dashboard.settings imports this module); a test checks the two
    agree."""
    return ExperimentConfig().replace(data=SYNTHETIC.path, skip_bad_rows=False, features=PRESETS["central"])


def _prebuild_when_idle(
    manager: JobManager, prebuild: Callable, config: ExperimentConfig, shared: SharedBuildCache
) -> None:
    # Plain Python only: this thread never calls Streamlit.
    manager.wait_idle()  # the demo runs first; a run started meanwhile waits for the cache's build lock
    try:
        prebuild(config, shared.get())
    except Exception:  # an optimisation only: the first run builds the model itself
        log.warning("could not pre-build the default model", exc_info=True)


def _demo_module():
    try:
        return importlib.import_module("fedlab.teaching.demo")
    except ImportError:
        log.info("fedlab.teaching.demo is not available; no demo runs")
        return None


def demo_runs() -> list[Run]:
    """The stored runs named like a demo run, newest first; empty without fedlab.teaching.demo or a usable store."""
    names = set(demo_names())
    if not names:
        return []
    try:
        return [run for run in run_store().list_runs() if run.name in names]
    except FedlabError:  # an unusable store: the Runs page says so; Home just shows no demos
        return []


def demo_names() -> list[str]:
    """The demo runs' names in the order they train (central first); empty without fedlab.teaching.demo."""
    demo = _demo_module()
    return [] if demo is None else [name for name, _ in demo.demo_runs()]
