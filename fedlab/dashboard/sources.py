"""The check-in data a session works with: the sidebar picker (synthetic city, a path, an upload),
loading and caching the frame, and the cached summaries the Data and Home pages draw.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

import pandas as pd
import streamlit as st

from fedlab.config import DataConfig, ExperimentConfig
from fedlab.dashboard import signin
from fedlab.dashboard.access import may_read_server_files
from fedlab.dashboard.state import APP_ROOT, SYNTHETIC, DataSource, data_source, show_error, skip_bad_rows
from fedlab.data import explore, pipeline
from fedlab.data.budget import FrameBudget, budget_from_env, idle_seconds_from_env
from fedlab.data.loader import load_checkins
from fedlab.errors import DataError, FedlabError

UPLOAD_DIR = APP_ROOT / "data" / "uploads"  # uploads are saved here under a content hash, never their own name
SOURCE_KINDS = {
    "synthetic": "Synthetic city (default)",
    "path": "A file on the server (path)",
    "upload": "Upload a file",
}


def kept_keys() -> list[str]:
    """The Data page's choices of grouping, users and N, kept across pages by app.py."""
    return ["data_grouping", "data_top_users", "data_n"]


def data_source_sidebar() -> None:
    """The sidebar widget that picks the check-in data for this session."""
    with st.sidebar:
        st.subheader("Check-in data")
        kinds = [k for k in SOURCE_KINDS if k != "path" or may_read_server_files()]
        if st.session_state.get("source_kind") not in (None, *kinds):
            st.session_state["source_kind"] = "synthetic"
        kind = st.radio(
            "Data source",
            kinds,
            format_func=SOURCE_KINDS.get,
            key="source_kind",
            help="The synthetic city is generated on the fly (not real people). Or read a Foursquare "
            "TSMC2014 file (tab-separated raw file or CSV, optionally .gz / .zip).",
        )
        st.checkbox(
            "Skip bad rows",
            key="source_skip_bad_rows",
            help="Drop rows that cannot be read and count them, instead of stopping at the first one.",
        )
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
    text = st.text_input(
        "Path to a check-in file",
        key="source_path",
        placeholder="/data/dataset_TSMC2014_NYC.txt",
        help="A file on the machine running this app. It is only read, never changed.",
    )
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
    upload = st.file_uploader(
        "Check-in file",
        key="source_upload",
        help="Raw TSMC2014 (tab-separated) or CSV, optionally .gz or .zip. "
        "It is stored on the server under a name made from its content.",
    )
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
        data = upload.getvalue()
        signin.check_upload(upload_path(data, UPLOAD_DIR), len(data))  # shared server: signed in, within the quota
        path = save_upload(data, UPLOAD_DIR)
        signin.record_upload(path, len(data))
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
        raise DataError(
            f"the upload is {len(data) / 2**20:,.1f} MB, more than the {limit // 2**20:,} MB limit; "
            "load a smaller file (for example fewer users), or put it on the server and give its path"
        )
    path = upload_path(data, folder)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        partial.write_bytes(data)
        os.replace(partial, path)  # other sessions never see a half-written file
    return path


def upload_path(data: bytes, folder: Path) -> Path:
    """Where save_upload keeps these bytes: <first 24 hex digits of their SHA-256>.<txt|gz|zip>."""
    return Path(folder) / f"{hashlib.sha256(data).hexdigest()[:24]}.{_upload_extension(data)}"


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
    with st.spinner("Loading check-ins…"):
        return _cached_frame(source_key(source, skip))


@st.cache_resource(show_spinner=False)
def frame_budget() -> FrameBudget:
    """The loaded frames of every session, within FEDLAB_DATA_MEMORY_MB; idle ones are dropped (fedlab.data.budget).
    Sessions share each frame: nothing changes a loaded frame in place."""
    return FrameBudget(budget_from_env(), idle_seconds_from_env())


def _cached_frame(key: tuple) -> tuple[pd.DataFrame, int]:
    return frame_budget().get(key, lambda: _read_frame(key), _frame_bytes)


def _frame_bytes(loaded: tuple[pd.DataFrame, int]) -> int:
    return int(loaded[0].memory_usage(deep=True).sum())


def _read_frame(key: tuple) -> tuple[pd.DataFrame, int]:
    kind, path, skip, stamp = key
    if stamp == "missing":
        raise DataError(f"the file {path} is gone; choose the data source again in the sidebar")
    if kind == "upload":
        loaded = load_checkins(path, skip_bad_rows=skip, max_bytes=max_upload_bytes())
        return loaded.frame, sum(loaded.skipped.values())
    return pipeline.load_frame(DataConfig(data=path, skip_bad_rows=skip))


def explore_data(name: str, *args):
    """fedlab.data.explore.<name>(frame, *args) on this session's data, cached per data version and arguments."""
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
    return {
        **data.summary,
        "clients_with_train": int((sizes > 0).sum()),
        "median_train_per_client": float(pd.Series(sizes).median()) if len(sizes) else 0.0,
    }


def source_banner() -> None:
    """One line saying which data the page shows; the synthetic city is always called synthetic."""
    source = data_source()
    if source.is_synthetic:
        st.info(
            f"Data: **{source.label}** — synthetic check-ins generated by fedlab, not real people. "
            "Choose a real file in the sidebar.",
            icon=":material/science:",
        )
    else:
        st.caption(f"Data: **{source.label}**")


def data_label(config: ExperimentConfig) -> str:
    if config.data.data is None:
        return "synthetic city"
    return Path(config.data.data).name
