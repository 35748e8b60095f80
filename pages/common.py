"""What every dashboard page shares: cached resources, session state, the data source, settings, run views.

Not a page itself (app.py lists the pages). Pages stay thin and call the functions here; the pure
summaries and figures live in fedlab.explore and fedlab.charts.

Threads: the JobManager's training thread never calls Streamlit. Everything it uses (the run store,
the experiment factory, the lazily made BuildCache) is plain Python created here on the script thread.
TensorFlow is imported only when the first real experiment is built, inside that training thread.
"""
from __future__ import annotations

import functools
import hashlib
import html
import importlib
import inspect
import logging
import math
import os
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from fedlab import charts, explore, pipeline
from fedlab.baselines import BASELINE_LABELS
from fedlab.config import ALL_FEATURES, GROUPINGS, MODES, OPTIMIZERS, PRESETS, DataConfig, ExperimentConfig
from fedlab.errors import ConfigError, DataError, FedlabError
from fedlab.jobs import JobManager
from fedlab.loader import load_checkins
from fedlab.store import Run, RunStore, feature_label
from fedlab.synthetic import SYNTHETIC_LABEL

log = logging.getLogger(__name__)

APP_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = APP_ROOT / "runs" / "fedlab.db"
UPLOAD_DIR = APP_ROOT / "data" / "uploads"  # uploads are saved here under a content hash, never their own name
POLL_SECONDS = 1.0

SOURCE_KINDS = {"synthetic": "Synthetic city (default)", "path": "A file on the server (path)",
                "upload": "Upload a file"}
FEATURE_NAMES = {
    "cat_id": "category of the check-in", "user_id": "who checked in", "latitude": "venue latitude",
    "longitude": "venue longitude", "is_weekend": "weekend or not",
    "clock_sin": "time of day (sin)", "clock_cos": "time of day (cos)",
    "day_sin": "day of month (sin)", "day_cos": "day of month (cos)",
    "month_sin": "month (sin)", "month_cos": "month (cos)",
    "week_day_sin": "weekday (sin)", "week_day_cos": "weekday (cos)",
    "venue_id": "which venue", "orig_cat_id": "fine Foursquare category",
}
GROUPING_NAMES = {"uber": "27 groups of the study", "root": "10 Foursquare top-level categories",
                  "fine": "every Foursquare category"}
STATUS_ICONS = {"queued": ":material/schedule:", "running": ":material/play_arrow:",
                "finished": ":material/check_circle:", "stopped": ":material/stop_circle:",
                "failed": ":material/error:", "interrupted": ":material/warning:"}


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
    return Path(os.environ.get("FEDLAB_DB") or DEFAULT_DB).expanduser().resolve()


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
    return JobManager(_open_store(path), experiment_factory=factory, model_dir=Path(path).parent / "models")


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

    kind: str  # a key of SOURCE_KINDS
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


def keep_widget_state(keys) -> None:
    """Keeps widget values while the user is on another page (Streamlit drops state of unseen widgets)."""
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


# ----- the data source -----

def data_source_sidebar() -> None:
    """The sidebar widget that picks the check-in data for this session."""
    with st.sidebar:
        st.subheader("Check-in data")
        kind = st.radio("Data source", list(SOURCE_KINDS), format_func=SOURCE_KINDS.get, key="source_kind",
                        help="The synthetic city is generated on the fly (not real people). Or read a Foursquare "
                             "TSMC2014 file (tab-separated raw file or CSV, optionally .gz / .zip).")
        st.checkbox("Skip bad rows", key="source_skip_bad_rows",
                    help="Drop rows that cannot be read and count them, instead of stopping at the first one.")
        if kind == "synthetic":
            _use_source(SYNTHETIC)
        elif kind == "path":
            _path_picker()
        else:
            _upload_picker()
        source = data_source()
        note = " — synthetic, not real check-ins" if source.is_synthetic else ""
        st.caption(f"In use: **{source.label}**{note}")


def _use_source(source: DataSource) -> None:
    st.session_state["data_source"] = source


def _path_picker() -> None:
    text = st.text_input("Path to a check-in file", key="source_path", placeholder="/data/dataset_TSMC2014_NYC.txt",
                         help="A file on the machine running this app. It is only read, never changed.")
    if st.button("Use this file", key="source_btn_path"):
        try:
            source = path_source(text)
            load_frame(source, skip_bad_rows())  # read it now, so a bad file is reported here
        except Exception as exc:
            show_error(exc)
        else:
            _use_source(source)


def path_source(text: str) -> DataSource:
    """A DataSource for a typed path; DataError when it is not a readable file."""
    if not text or not text.strip():
        raise DataError("type the path of a check-in file first")
    try:
        path = Path(text.strip()).expanduser()
        exists, is_dir, is_file = path.exists(), path.is_dir(), path.is_file()
        resolved = path.resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a name too long, a symlink loop...
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DataError(f"cannot use that path ({reason}); type the path of a check-in file") from None
    if not exists:
        raise DataError(f"there is no file at {path}; check the path (it is on the server, not your computer)")
    if is_dir:
        raise DataError(f"{path} is a folder; give the path of a check-in file inside it")
    if not is_file:
        raise DataError(f"{path} is not a regular file (a device or a pipe); give the path of a check-in file")
    return DataSource("path", str(resolved), f"file {path.name}")


def _upload_picker() -> None:
    upload = st.file_uploader("Check-in file", key="source_upload",
                              help="Raw TSMC2014 (tab-separated) or CSV, optionally .gz or .zip. "
                                   "It is stored on the server under a name made from its content.")
    if upload is None:
        return
    attempt = (upload.file_id, skip_bad_rows())
    state = st.session_state
    if state.get("upload_done") == attempt:
        return
    if state.get("upload_failed", (None, None))[0] == attempt:
        st.error(state["upload_failed"][1], icon=":material/error:")  # don't parse a bad file again on every rerun
        return
    try:
        path = save_upload(upload.getvalue(), UPLOAD_DIR)
        source = DataSource("upload", str(path), f"uploaded file {_display_name(upload.name)}")
        load_frame(source, skip_bad_rows())
    except FedlabError as exc:
        state["upload_failed"] = (attempt, str(exc))
        st.error(str(exc), icon=":material/error:")
    except Exception as exc:
        show_error(exc)
    else:
        state["upload_done"] = attempt
        _use_source(source)


def max_upload_bytes() -> int:
    """The upload limit: Streamlit's server.maxUploadSize (in MB, .streamlit/config.toml), which its uploader
    also enforces in the browser. It caps the decompressed size of a .gz / .zip upload too."""
    return int(st.get_option("server.maxUploadSize")) * 2**20


def save_upload(data: bytes, folder: Path) -> Path:
    """Saves uploaded bytes as <sha256 prefix>.<ext> in `folder` (the name the upload chose is never used)."""
    limit = max_upload_bytes()
    if len(data) > limit:
        raise DataError(f"the upload is {len(data) / 2**20:,.1f} MB, more than the {limit // 2**20:,} MB limit; "
                        "load a smaller file (for example fewer users), or put it on the server and give its path")
    digest = hashlib.sha256(data).hexdigest()[:24]
    path = Path(folder) / f"{digest}.{_upload_extension(data)}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        partial.write_bytes(data)
        os.replace(partial, path)  # other sessions never see a half-written file
    return path


def _upload_extension(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        return "gz"
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    return "txt"


def _display_name(name: str) -> str:
    return re.sub(r"[^\w.\- ]", "_", name or "file")[:60]


def source_key(source: DataSource, skip: bool) -> tuple:
    """Hashable cache key of a source; a path's size and modification time are part of it."""
    stamp = None
    if source.path is not None:
        try:
            info = os.stat(source.path)
            stamp = (info.st_size, info.st_mtime_ns)
        except OSError:
            stamp = "missing"
    return source.kind, source.path, bool(skip), stamp


def load_frame(source: DataSource, skip: bool) -> tuple[pd.DataFrame, int]:
    """The canonical check-in frame of a source and how many rows were skipped (cached per file version)."""
    return _cached_frame(source_key(source, skip))


@st.cache_data(show_spinner="Loading check-ins…", max_entries=4)
def _cached_frame(key: tuple) -> tuple[pd.DataFrame, int]:
    kind, path, skip, stamp = key
    if stamp == "missing":
        raise DataError(f"the file {path} is gone; choose the data source again in the sidebar")
    if kind == "upload":
        loaded = load_checkins(path, skip_bad_rows=skip, max_bytes=max_upload_bytes())
        return loaded.frame, sum(loaded.skipped.values())
    return pipeline.load_frame(DataConfig(data=path, skip_bad_rows=skip))


def explore_data(name: str, *args):
    """fedlab.explore.<name>(frame, *args) on this session's data, cached per data version and arguments."""
    return _cached_explore(source_key(data_source(), skip_bad_rows()), name, args)


@st.cache_data(show_spinner="Summarising the check-ins…", max_entries=64)
def _cached_explore(key: tuple, name: str, args: tuple):
    frame, _ = _cached_frame(key)
    return getattr(explore, name)(frame, *args)


def skipped_rows() -> int:
    return _cached_skipped(source_key(data_source(), skip_bad_rows()))


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_skipped(key: tuple) -> int:
    return int(_cached_frame(key)[1])


def sequence_summary(grouping: str, top_users: int | None, n: int) -> dict:
    """pipeline.prepare's summary (clients and train/val/test sequences) for this session's data."""
    source, skip = data_source(), skip_bad_rows()
    config = DataConfig(data=source.path, grouping=grouping, top_users=top_users, n=n, skip_bad_rows=skip)
    return _cached_sequences(source_key(source, skip), config)


@st.cache_data(show_spinner="Cutting sequences…", max_entries=16)
def _cached_sequences(key: tuple, config: DataConfig) -> dict:
    frame, skipped = _cached_frame(key)
    data = pipeline.prepare(frame, config, skipped_rows=skipped)
    sizes = data.train.client_sizes()
    return {**data.summary, "clients_with_train": int((sizes > 0).sum()),
            "median_train_per_client": float(pd.Series(sizes).median()) if len(sizes) else 0.0}


def source_banner() -> None:
    """One line saying which data the page shows; the synthetic city is always called synthetic."""
    source = data_source()
    if source.is_synthetic:
        st.info(f"Data: **{source.label}** — synthetic check-ins generated by fedlab, not real people. "
                "Choose a real file in the sidebar.", icon=":material/science:")
    else:
        st.caption(f"Data: **{source.label}**")


def data_label(config: ExperimentConfig) -> str:
    if config.data.data is None:
        return "synthetic city"
    return Path(config.data.data).name


# ----- training settings (Train page and both Compare columns) -----

SETTING_FIELDS = ("features", "mode", "n", "rounds", "epochs", "batch_size", "top_users", "clients_per_round",
                  "gru_units", "client_optimizer", "client_lr", "server_optimizer", "server_lr", "seed",
                  "grouping", "patience", "iid", "name")


def default_settings(preset: str = "central") -> dict:
    """The study's defaults (N 17, 4 local epochs, batch 16, ...) as taken from ExperimentConfig."""
    base = ExperimentConfig()
    return {"features": list(PRESETS[preset]), "mode": base.mode, "n": base.data.n, "rounds": base.rounds,
            "epochs": base.epochs, "batch_size": base.batch_size, "top_users": base.data.top_users,
            "clients_per_round": base.clients_per_round, "gru_units": base.gru_units,
            "client_optimizer": base.client_optimizer, "client_lr": base.client_lr,
            "server_optimizer": base.server_optimizer, "server_lr": base.server_lr, "seed": base.seed,
            "grouping": base.data.grouping, "patience": base.patience, "iid": base.data.iid, "name": ""}


def setting_keys(prefix: str) -> list[str]:
    return [f"{prefix}_{field}" for field in SETTING_FIELDS]


def _set_preset(prefix: str, preset: str) -> None:
    st.session_state[f"{prefix}_features"] = list(PRESETS[preset])


def settings_form(prefix: str, *, preset: str = "central", columns: int = 4) -> dict:
    """All training settings as widgets keyed "<prefix>_<field>"; returns their values by field."""
    for field, value in default_settings(preset).items():
        set_default(f"{prefix}_{field}", value)
    key = functools.partial("{}_{}".format, prefix)
    st.multiselect("Input features", list(ALL_FEATURES), key=key("features"),
                   help="What the GRU sees about each past check-in; it always predicts the category of the "
                        "next one. " + "; ".join(f"**{f}**: {FEATURE_NAMES[f]}" for f in ALL_FEATURES) + ".")
    with st.container(horizontal=True):
        st.button("Central preset", key=key("btn_central"), on_click=_set_preset, args=(prefix, "central"),
                  help="Category plus the 8 cyclic time features (the study's central model).")
        st.button("Biggest preset", key=key("btn_biggest"), on_click=_set_preset, args=(prefix, "biggest"),
                  help="Every feature, including user, venue and position.")
    cells = _grid(columns, 8)
    _number_input(next(cells), "Sequence length N (check-ins)", min_value=2, max_value=500, step=1, key=key("n"),
                  help="Check-ins per sequence: the GRU reads N-1 and predicts the next category "
                       "after each. The study used 17.")
    _number_input(next(cells), "Rounds", min_value=1, max_value=1000, step=1, key=key("rounds"),
                  help="Most federated rounds (epochs when centralized). Training stops earlier "
                       "when the validation loss has not improved for 'patience' rounds.")
    _number_input(next(cells), "Local epochs per round", min_value=1, max_value=100, step=1, key=key("epochs"),
                  help="Passes each client makes over its own data before sending its update. "
                       "The study used 4.")
    _number_input(next(cells), "Batch size (sequences)", min_value=1, max_value=4096, step=1, key=key("batch_size"),
                  help="Sequences per gradient step on a client. The study used 16.")
    _number_input(next(cells), "Users (clients)", min_value=1, max_value=100_000, step=1, key=key("top_users"),
                  help="The K users with the most check-ins; each becomes one federated client. "
                       "Fewer users train faster.")
    _number_input(next(cells), "Clients per round", min_value=1, max_value=100_000, step=1, value=None,
                  key=key("clients_per_round"), placeholder="all",
                  help="How many clients the server samples each round. Empty = all of them.")
    _number_input(next(cells), "GRU units", min_value=1, max_value=2048, step=1, key=key("gru_units"),
                  help="Size of the GRU's memory. 256 as in the study; 8–32 trains in seconds "
                       "for a demo.")
    next(cells).radio("Training mode", list(MODES), key=key("mode"), horizontal=True,
                      format_func={"federated": "federated (FedAvg)", "centralized": "centralized"}.get,
                      help="Federated: data stays with each client and only model updates travel. "
                           "Centralized: the same model trained on all check-ins pooled (a reference point).")
    with st.expander("Optimizers, seed and more"):
        _advanced_settings(key, columns)
    st.text_input("Run name (optional)", key=key("name"), max_chars=80,
                  help="Shown in the run list and on charts. Empty = made from the settings.")
    return {field: st.session_state[key(field)] for field in SETTING_FIELDS}


def _number_input(cell, label: str, *, key: str, min_value, max_value, **kwargs):
    """cell.number_input that survives a session value outside its limits.

    The browser never sends one, but Streamlit raises on such a value at every rerun, which would leave the
    page broken for the rest of the session; the value is put back in range instead, with a message.
    """
    value = st.session_state.get(key)
    kind = type(min_value)  # int or float, as the widget's limits
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if value is not None and not (number and min_value <= value <= max_value and kind(value) == value):
        if number:
            st.session_state[key] = kind(min(max(value, min_value), max_value))
        else:
            del st.session_state[key]  # the widget starts again from its lowest value
        fixed = st.session_state.get(key, min_value)
        cell.error(f"{label} must be between {min_value:,} and {max_value:,}, not {value!r}; it is now {fixed!r}. "
                   "Check it, then press Run.", icon=":material/error:")
    return cell.number_input(label, key=key, min_value=min_value, max_value=max_value, **kwargs)


def _grid(columns: int, count: int):
    """`count` cells filled row by row across `columns` columns (widgets keep their reading order)."""
    cols = st.columns(columns)
    return iter([cols[i % columns] for i in range(count)])


def _advanced_settings(key: Callable[[str], str], columns: int) -> None:
    cells = _grid(min(columns, 3), 8)
    next(cells).selectbox("Client optimizer", list(OPTIMIZERS), key=key("client_optimizer"),
                          help="Optimizer of the local training on each client (and of centralized training).")
    _number_input(next(cells), "Client learning rate", min_value=0.0, max_value=10.0, step=0.001, format="%.4f",
                  key=key("client_lr"), help="Step size of the client optimizer; must be above 0.")
    _number_input(next(cells), "Random seed", min_value=0, max_value=2**31 - 1, step=1, key=key("seed"),
                  help="Same seed + same settings = the same run (initial model, client sampling).")
    next(cells).selectbox("Server optimizer", list(OPTIMIZERS), key=key("server_optimizer"),
                          help="How the server applies the averaged update. SGD with rate 1.0 = plain FedAvg.")
    _number_input(next(cells), "Server learning rate", min_value=0.0, max_value=100.0, step=0.1, format="%.3f",
                  key=key("server_lr"), help="Step size of the server optimizer; must be above 0.")
    _number_input(next(cells), "Patience (rounds)", min_value=1, max_value=1000, step=1, key=key("patience"),
                  help="Stop after this many rounds without a lower validation loss.")
    next(cells).selectbox("Category grouping", list(GROUPINGS), key=key("grouping"),
                          format_func=lambda g: f"{g} · {GROUPING_NAMES[g]}",
                          help="Which classes the model predicts.")
    next(cells).checkbox("IID clients", key=key("iid"),
                         help="Deal the sequences to clients at random (same sizes). Removes the clients' "
                              "differences, to see how much non-IID data costs.")


def config_from_settings(values: Mapping, source: DataSource, skip: bool) -> ExperimentConfig:
    """An ExperimentConfig from a settings form; ConfigError (one line) when a value is not allowed."""
    chosen = set(values["features"])
    data = DataConfig(data=source.path, grouping=values["grouping"], top_users=values["top_users"],
                      n=values["n"], skip_bad_rows=skip, iid=bool(values["iid"]), seed=values["seed"])
    return ExperimentConfig(
        # Known features in the study's order; an unknown name is kept so the config refuses it by name.
        data=data, features=tuple(f for f in ALL_FEATURES if f in chosen)
        + tuple(f for f in values["features"] if f not in ALL_FEATURES), mode=values["mode"],
        rounds=values["rounds"], patience=values["patience"], epochs=values["epochs"],
        batch_size=values["batch_size"], clients_per_round=values["clients_per_round"],
        client_optimizer=values["client_optimizer"], client_lr=values["client_lr"],
        server_optimizer=values["server_optimizer"], server_lr=values["server_lr"],
        gru_units=values["gru_units"], seed=values["seed"], name=(values.get("name") or "").strip(),
        workers=tuple(w.strip() for w in (values.get("workers") or "").split(",") if w.strip()))


def submit(values: Mapping) -> str | None:
    """Queues a run from form values; shows a short error and returns None when a setting is wrong."""
    try:
        config = config_from_settings(values, data_source(), skip_bad_rows())
        return job_manager().submit(config, session_id=session_id(), name=config.name)
    except Exception as exc:
        show_error(exc)
        return None


# ----- describing runs -----

def settings_summary(config: ExperimentConfig) -> str:
    """One line of a run's main settings, e.g. "central · federated · N17 · 10 rounds × 4 epochs · ..."."""
    clients = "all clients" if config.clients_per_round is None else f"{config.clients_per_round}/round"
    users = "all users" if config.data.top_users is None else f"{config.data.top_users} users"
    return (f"{feature_label(config.features)} · {config.mode} · N{config.data.n} · {config.rounds} rounds × "
            f"{config.epochs} epochs · batch {config.batch_size} · GRU {config.gru_units} · {users} ({clients}) · "
            f"{config.data.grouping} · {data_label(config)}")


def best_val_accuracy(rounds: pd.DataFrame) -> float | None:
    return float(rounds["val_accuracy"].max()) if len(rounds) else None


def runs_table(store: RunStore, runs: list[Run]) -> pd.DataFrame:
    """One row per run for the Runs page: status, name, settings, best validation and test accuracy."""
    rows = []
    for run in runs:
        rounds = store.rounds(run.id)
        rows.append({
            "status": run.status, "name": run.name,
            "settings": settings_summary(run.config), "rounds": len(rounds),
            "best val accuracy": _percent(best_val_accuracy(rounds)),
            "test accuracy": _percent((run.test or {}).get("accuracy")),
            "created (UTC)": run.created_at.strftime("%Y-%m-%d %H:%M"), "id": run.id,
        })
    return pd.DataFrame(rows, columns=["status", "name", "settings", "rounds", "best val accuracy",
                                       "test accuracy", "created (UTC)", "id"])


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def run_labels(runs: list[Run]) -> dict[str, str]:
    """Run id -> a label unique among `runs` (the name, with a short id when two names are equal)."""
    names = [run.name for run in runs]
    return {run.id: run.name if names.count(run.name) == 1 else f"{run.name} [{run.id[:6]}]" for run in runs}


def results_table(runs: Mapping[str, Run], rounds: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Final metrics of each run (columns) with the baselines of its own test data, as display text."""
    rows: dict[str, dict[str, str]] = {}
    for label, run in runs.items():
        test, base = run.test or {}, run.baselines or {}
        cells = {
            "acc@1 (test accuracy)": _pct(test.get("accuracy")),
            "acc@5 (top-5 accuracy)": _pct(test.get("top5_accuracy")),
            "MRR (mean reciprocal rank)": _num(test.get("mrr")), "test loss (nats)": _num(test.get("loss")),
            "best validation accuracy": _pct(best_val_accuracy(rounds.get(label, pd.DataFrame()))),
            "rounds trained": str(len(rounds.get(label, ()))), "test targets scored": _int(test.get("examples")),
        }
        cells.update({f"baseline · {BASELINE_LABELS[k]}": _pct(base.get(k)) for k in BASELINE_LABELS})
        for row, text in cells.items():
            rows.setdefault(row, {})[label] = text
    return pd.DataFrame.from_dict(rows, orient="index")


def _pct(value) -> str:
    return "—" if value is None else f"{value:.1%}"


def _num(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def _int(value) -> str:
    return "—" if value is None else f"{int(value):,}"


def progress_line(run: Run, rounds: pd.DataFrame) -> tuple[float, str]:
    """(fraction done, text) for a running run: rounds done of the most, and a time-left estimate."""
    done, most = len(rounds), run.config.rounds
    if done == 0:
        return 0.0, "Preparing the data and building the model (the first run takes longest)…"
    left = max(most - done, 0) * float(rounds["seconds"].mean())
    return min(done / most, 1.0), f"Round {done} of at most {most} · about {_duration(left)} left"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ----- run views -----

def reference_rounds(store: RunStore, exclude: set[str]) -> tuple[str, pd.DataFrame] | None:
    """The pinned reference run's (name, rounds), unless it is one of the runs already shown."""
    ref_id = store.reference()
    if ref_id is None or ref_id in exclude:
        return None
    run = store.get_run(ref_id)
    return None if run is None else (run.name, store.rounds(ref_id))


def run_panel(run_id: str, *, narrow: bool = False) -> None:
    """A run's status, curves and results; refreshes every second while it is queued or running.

    `narrow` stacks the charts, for a panel beside the settings.
    """
    run = run_store().get_run(run_id)
    if run is None:
        st.info("That run no longer exists (it was deleted). Start a new one above.")
        return
    if run.is_active:
        st.fragment(run_every=POLL_SECONDS)(_live_run)(run_id, narrow)
    else:
        _run_view(run, run_store().rounds(run_id), live=False, narrow=narrow)


def _live_run(run_id: str, narrow: bool) -> None:
    store = run_store()
    run = store.get_run(run_id)
    if run is None or not run.is_active:
        st.rerun()  # it ended: redraw the whole page once, without polling, with the results
    try:
        _run_view(run, store.rounds(run_id), live=True, narrow=narrow)
    except Exception as exc:  # a fragment would otherwise show a traceback
        show_error(exc)


def _run_view(run: Run, rounds: pd.DataFrame, *, live: bool, narrow: bool) -> None:
    st.subheader(run.name)
    st.caption(settings_summary(run.config))
    _status(run, rounds)
    if run.is_active:
        _stop_button(run.id)
    colors = charts.distinct_colors([run.name])
    curves({run.name: rounds}, max_rounds=run.config.rounds, colors=colors,
           reference=reference_rounds(run_store(), {run.id}), key=f"run_{run.id}_{live}", narrow=narrow)
    if run.test:
        show_test_results(run, colors=colors, key=f"run_{run.id}", narrow=narrow)


def _status(run: Run, rounds: pd.DataFrame) -> None:
    done = len(rounds)
    if run.status == "queued":
        active = job_manager().active()  # the running run first, then the queue
        ahead = f"{active.index(run.id)} run(s) ahead of it" if run.id in active else "waiting for the training thread"
        st.info(f"Queued ({ahead}). One run trains at a time; it starts by itself.", icon=STATUS_ICONS["queued"])
    elif run.status == "running":
        fraction, text = progress_line(run, rounds)
        st.progress(fraction, text=text)
    elif run.status == "finished":
        early = done < run.config.rounds
        st.success(f"Finished after {done} round(s)"
                   + (f", stopped early: no better validation loss for {run.config.patience} rounds." if early else ".")
                   + " Test results use the round with the lowest validation loss.")
    elif run.status == "stopped":
        st.warning(f"Stopped after {done} round(s); the rounds so far are kept"
                   + (" and the kept model was tested." if run.test else "."))
    elif run.status == "failed":
        st.error(f"The run failed: {run.error or 'no reason recorded'}", icon=":material/error:")
    elif run.status == "interrupted":
        st.warning(f"Interrupted after {done} round(s): the app stopped while it trained. Start it again "
                   "from the Train page if you need it.")


def _stop_button(run_id: str) -> None:
    if st.button("Stop", key=f"stop_{run_id}", help="Ends the run after the current round; its rounds are kept."):
        job_manager().stop(run_id)
        st.toast("Stopping after the current round…")


def curves(runs: Mapping[str, pd.DataFrame], *, max_rounds: int | None, colors: Mapping[str, str],
           reference: tuple[str, pd.DataFrame] | None, key: str, narrow: bool = False) -> None:
    """Loss and accuracy per round (side by side, or stacked when narrow), with how to read them."""
    if not any(len(r) for r in runs.values()):
        return
    places = (st.container(), st.container()) if narrow else st.columns(2)
    for column, metric in zip(places, ("loss", "accuracy")):
        fig = charts.learning_curves(runs, metric, reference=reference, colors=colors, max_rounds=max_rounds)
        column.plotly_chart(fig, key=f"{key}_{metric}")
    st.caption("Dashed: training (average over the clients' local steps); solid: validation (each client's "
               "held-out later check-ins). Accuracy = share of next check-ins whose category was predicted "
               "right." + (" Faint: the pinned reference run." if reference else ""))


def show_test_results(run: Run, *, colors: Mapping[str, str], key: str, narrow: bool = False) -> None:
    """Test metrics of one run beside its baselines (metrics, table, bar chart) and the per-client spread."""
    test, base = run.test or {}, run.baselines or {}
    best_base = max(base.values(), default=None)
    cols = st.columns(4)
    cols[0].metric("acc@1", _pct(test.get("accuracy")),
                   delta=None if best_base is None else f"{(test['accuracy'] - best_base) * 100:+.1f} pts",
                   help="Share of test targets whose category was the model's first guess. Below: how many "
                        "percentage points above (or below) the best baseline.")
    cols[1].metric("acc@5", _pct(test.get("top5_accuracy")), help="Share whose category was among the top 5 guesses.")
    cols[2].metric("MRR", _num(test.get("mrr")), help="Mean reciprocal rank of the true category (1 = always first).")
    cols[3].metric("test loss", _num(test.get("loss")), help="Cross-entropy on the test targets, in nats.")
    left, right = (st.container(), st.container()) if narrow else st.columns([2, 3])
    left.table(results_table({run.name: run}, {run.name: run_store().rounds(run.id)}))
    fig = charts.metrics_vs_baselines({run.name: test.get("accuracy", 0.0)}, base, colors=colors)
    right.plotly_chart(fig, key=f"{key}_baselines")
    st.caption("Baselines are simple predictors scored on exactly the same test targets. A model that does not "
               "beat 'Repeat last category' or the Markov chains has learned little.")
    if test.get("per_client"):
        fig = charts.per_client_accuracy({run.name: test}, colors=colors)
        st.plotly_chart(fig, key=f"{key}_clients")
        st.caption("Each client's own test accuracy. A wide spread means the shared model suits some people far "
                   "better than others (their data differ: non-IID).")


def class_details(reports: Mapping[str, Mapping], *, colors: Mapping[str, str], key: str) -> None:
    """Per-class accuracy of the reports together, then one confusion matrix per report."""
    reports = {label: r for label, r in reports.items() if r}
    if not reports:
        return
    st.plotly_chart(charts.per_class_recall(reports, colors=colors), key=f"{key}_class")
    st.caption("For each true category: the share of its test targets predicted right. Rare categories are usually "
               "hard; a model that only learns the common ones scores 0 on the rest.")
    for column, (label, report) in zip(st.columns(len(reports)), reports.items()):
        column.plotly_chart(charts.confusion_heatmap(report, title=f"Confusion: {label}"),
                            key=f"{key}_confusion_{label}")
    st.caption("Rows: the true category; columns: what the model predicted; each row sums to 100%. "
               "A strong diagonal is good; a bright column is a category the model guesses too often.")


def compare_panel(run_ids: list[str]) -> None:
    """Two (or more) runs side by side; refreshes every second while any of them is queued or running."""
    store = run_store()
    runs = [run for run in map(store.get_run, run_ids) if run is not None]
    if not runs:
        st.info("Those runs no longer exist (deleted). Start new ones or pick others from history.")
        return
    if any(run.is_active for run in runs):
        st.fragment(run_every=POLL_SECONDS)(_live_compare)(run_ids)
    else:
        _compare_view(runs)


def _live_compare(run_ids: list[str]) -> None:
    runs = [run for run in map(run_store().get_run, run_ids) if run is not None]
    if not any(run.is_active for run in runs):
        st.rerun()  # all ended: redraw once without polling, with the results
    try:
        _compare_view(runs)
    except Exception as exc:  # a fragment would otherwise show a traceback
        show_error(exc)


def _compare_view(runs: list[Run]) -> None:
    store = run_store()
    labels = run_labels(runs)
    by_label = {labels[run.id]: run for run in runs}
    rounds = {label: store.rounds(run.id) for label, run in by_label.items()}
    colors = charts.distinct_colors(by_label)
    for column, (label, run) in zip(st.columns(len(by_label)), by_label.items()):
        with column:
            st.markdown(f"<span style='color:{colors[label]}'>●</span> <b>{html.escape(label)}</b>",
                        unsafe_allow_html=True)
            st.caption(settings_summary(run.config))
            _status(run, rounds[label])
            if run.is_active:
                _stop_button(run.id)
    most = max(run.config.rounds for run in runs)
    curves(rounds, max_rounds=most, colors=colors, reference=reference_rounds(store, {r.id for r in runs}),
           key="compare")
    tested = {label: run for label, run in by_label.items() if run.test}
    if not tested:
        return
    st.subheader("Test results")
    st.table(results_table(tested, rounds))
    st.caption("Each run's baselines are scored on that run's own test targets (they differ only when the data "
               "settings differ: users, N, grouping).")
    first = next(iter(tested.values()))
    fig = charts.metrics_vs_baselines({label: run.test["accuracy"] for label, run in tested.items()},
                                      first.baselines or {}, colors=colors)
    st.plotly_chart(fig, key="compare_baselines")
    reports = {label: run.test for label, run in tested.items()}
    class_details(reports, colors=colors, key="compare")
    st.plotly_chart(charts.per_client_accuracy(reports, colors=colors), key="compare_clients")
    st.caption("How test accuracy spreads over clients, for each run. Overlap shows where the two models agree.")


# ----- which runs a page shows -----

def open_train_run(run_id: str) -> None:
    """Makes `run_id` the run the Train page shows, also after a reload (it goes into the URL)."""
    st.session_state["train_run_id"] = run_id
    st.query_params["run"] = run_id


def train_run_id() -> str | None:
    """The run the Train page shows: the URL's, else this session's chosen one, else its latest."""
    store = run_store()
    for candidate in (st.query_params.get("run"), st.session_state.get("train_run_id")):
        if candidate and store.get_run(candidate) is not None:
            return candidate
    mine = store.list_runs(session_id=session_id())
    return mine[0].id if mine else None


def submit_pair(values_a: Mapping, values_b: Mapping) -> None:
    """Queues run A then run B; when either has a wrong setting, neither is queued."""
    try:
        source, skip = data_source(), skip_bad_rows()
        configs = []
        for side, values in (("Run A", values_a), ("Run B", values_b)):
            try:
                configs.append(config_from_settings(values, source, skip))
            except ConfigError as exc:
                raise ConfigError(f"{side}: {exc}") from None
        manager = job_manager()
        ids = [manager.submit(c, session_id=session_id(), name=c.name) for c in configs]
    except Exception as exc:
        show_error(exc)
        return
    st.session_state["compare_runs"] = ids
    st.query_params["runs"] = ",".join(ids)


def compare_run_ids() -> list[str]:
    """The runs the Compare page shows: the URL's pair, else the pair this session started last."""
    from_url = [r for r in (st.query_params.get("runs") or "").split(",") if r]
    return from_url or list(st.session_state.get("compare_runs", []))


def history_picker() -> list[str]:
    """Two selectboxes over runs that have test results; returns the chosen ids (empty when too few)."""
    runs = [run for run in run_store().list_runs(statuses=("finished", "stopped")) if run.test]
    if len(runs) < 2:
        st.info("Comparing from history needs two runs with test results; train some first.")
        return []
    labels = run_labels(runs)
    ids = list(labels)
    for key, default in (("cmp_hist_a", _first_like(runs, "central", ids[1])),
                         ("cmp_hist_b", _first_like(runs, "biggest", ids[0]))):
        if st.session_state.get(key) not in ids:  # unset, or that run was deleted
            st.session_state[key] = default
    left, right = st.columns(2)
    a = left.selectbox("Run A", ids, key="cmp_hist_a", format_func=labels.get, help="A finished or stopped run.")
    b = right.selectbox("Run B", ids, key="cmp_hist_b", format_func=labels.get, help="A finished or stopped run.")
    if a == b:
        st.warning("Pick two different runs.")
        return [a]
    return [a, b]


def _first_like(runs: list[Run], preset: str, fallback: str) -> str:
    return next((run.id for run in runs if feature_label(run.config.features) == preset), fallback)


# ----- the Runs page -----

RUNS_COLUMNS = {
    "best val accuracy": st.column_config.NumberColumn(format="%.1f %%",
                                                       help="Highest validation accuracy of any round."),
    "test accuracy": st.column_config.NumberColumn(format="%.1f %%", help="acc@1 of the kept model on the test part."),
    "settings": st.column_config.TextColumn(width="large"),
    "id": st.column_config.TextColumn(width="small"),
}


def run_picker(runs: list[Run]) -> Run:
    """A selectbox of all runs; the choice goes into the URL so a reload opens the same run."""
    by_id = {run.id: run for run in runs}
    labels = run_labels(runs)
    if st.session_state.get("runs_open") not in by_id:
        wanted = st.query_params.get("run")
        st.session_state["runs_open"] = wanted if wanted in by_id else runs[0].id
    chosen = st.selectbox("Open a run", list(by_id), key="runs_open",
                          format_func=lambda i: f"{labels[i]} · {by_id[i].status} · "
                                                f"{by_id[i].created_at:%Y-%m-%d %H:%M}",
                          help="Shows its curves and results below.")
    st.query_params["run"] = chosen
    return by_id[chosen]


def run_actions(run: Run) -> None:
    """Rename, pin as reference, watch on Train, delete (with a confirmation) and the downloads."""
    store = run_store()
    name, rename = st.columns([4, 1], vertical_alignment="bottom")
    name.text_input("Name", value=run.name, key=f"runs_name_{run.id}", max_chars=80,
                    help="A new name for this run; press Rename to keep it.")
    rename.button("Rename", key=f"runs_btn_rename_{run.id}", on_click=_rename, args=(run.id,))
    if st.session_state.get("runs_rename_error"):
        st.error(st.session_state.pop("runs_rename_error"), icon=":material/error:")
    with st.container(horizontal=True):
        _pin_button(store, run)
        if st.button("Show on Train page", key=f"runs_btn_watch_{run.id}", icon=":material/model_training:",
                     help="Follow this run on the Train page."):
            st.session_state["train_run_id"] = run.id
            st.switch_page("pages/train.py", query_params={"run": run.id})
        _downloads(store, run)
        if st.button("Delete…", key=f"runs_btn_delete_{run.id}", disabled=run.is_active, icon=":material/delete:",
                     help="Stop the run first." if run.is_active else "Delete the run, its rounds and its model file."):
            st.session_state["runs_confirm_delete"] = run.id
    if st.session_state.get("runs_confirm_delete") == run.id:
        _confirm_delete(store, run)


def _rename(run_id: str) -> None:
    # A callback, so the run picker (whose labels change with the name) can be kept on this run.
    try:
        run_store().rename(run_id, st.session_state.get(f"runs_name_{run_id}", ""))
    except ValueError:
        st.session_state["runs_rename_error"] = "A run name cannot be empty; type a name first."
    st.session_state["runs_open"] = run_id


def _pin_button(store: RunStore, run: Run) -> None:
    pinned = store.reference() == run.id
    label = "Unpin reference" if pinned else "Pin as reference"
    if st.button(label, key=f"runs_btn_pin_{run.id}", icon=":material/push_pin:",
                     help="A pinned run is drawn faint behind the curves on Train and Compare, to compare against."):
        store.set_reference(None if pinned else run.id)
        st.rerun()


def _confirm_delete(store: RunStore, run: Run) -> None:
    st.warning(f"Delete **{run.name}** with its rounds and model file? This cannot be undone.")
    yes, no, _ = st.columns([1, 1, 4])
    if yes.button("Yes, delete", key=f"runs_btn_confirm_{run.id}", type="primary"):
        store.delete(run.id)
        for key in ("runs_confirm_delete", "runs_open"):
            st.session_state.pop(key, None)
        st.query_params.pop("run", None)
        st.toast(f"Deleted {run.name}")
        st.rerun()
    if no.button("Cancel", key=f"runs_btn_cancel_{run.id}"):
        st.session_state.pop("runs_confirm_delete", None)
        st.rerun()


def _downloads(store: RunStore, run: Run) -> None:
    stem = re.sub(r"[^\w\-]+", "_", run.name).strip("_")[:40] or "run"
    st.download_button("Export JSON", store.export_json(run.id), file_name=f"{stem}-{run.id}.json",
                       mime="application/json", key=f"runs_dl_json_{run.id}", icon=":material/download:",
                       help="Settings, every round, test metrics and baselines.")
    st.download_button("Rounds CSV", store.export_rounds_csv(run.id), file_name=f"{stem}-{run.id}-rounds.csv",
                       mime="text/csv", key=f"runs_dl_csv_{run.id}", icon=":material/download:",
                       help="One row per round.")
    model = Path(run.model_path) if run.model_path else None
    if model is not None and model.is_file():
        st.download_button("Model (.keras)", model.read_bytes(), file_name=f"{stem}-{run.id}.keras",
                           mime="application/octet-stream", key=f"runs_dl_model_{run.id}",
                           icon=":material/download:",
                           help="The trained Keras model (lowest validation loss); load it with "
                                "tf.keras.models.load_model.")
