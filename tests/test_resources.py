"""Bounded resources on a shared server: a per-user upload quota and a server-wide memory budget for loaded
data, each refusing in one line that names its setting; a loaded frame nobody used for a while is dropped."""

from __future__ import annotations

import pytest

from fedlab.data.budget import FrameBudget, idle_keys, refusal
from fedlab.data.synthetic import generate_city, write_raw
from fedlab.errors import DataError
from fedlab.runs.users import UserStore, quota_refusal
from tests.pages_support import app, db  # noqa: F401
from tests.test_reliability import upload, uploads  # noqa: F401
from tests.test_shared_server import shared, sign_in  # noqa: F401

MB = 2**20


def test_refusals_name_the_limit_and_the_setting_in_one_line():
    assert refusal(100, 50, 150) is None and quota_refusal(100, 50, 150) is None
    memory = refusal(900 * MB, 300 * MB, 1024 * MB)
    assert "1,024 MB budget" in memory and "FEDLAB_DATA_MEMORY_MB raises it" in memory and "\n" not in memory
    quota = quota_refusal(300 * MB, 150 * MB, 400 * MB)
    assert "400 MB upload quota per user" in quota and "FEDLAB_UPLOAD_QUOTA_MB raises it" in quota
    assert "\n" not in quota


def test_idle_entries_are_the_ones_unused_for_the_idle_time():
    from fedlab.data.budget import Loaded

    entries = [Loaded("a", 1, 0.0), Loaded("b", 1, 50.0), Loaded("c", 1, 99.0)]
    assert idle_keys(entries, now=100.0, idle_seconds=50.0) == ["a", "b"]
    assert idle_keys(entries, now=100.0, idle_seconds=500.0) == []


def test_the_budget_refuses_what_does_not_fit_beside_frames_in_use_and_drops_idle_ones():
    now = [0.0]
    loads: list[str] = []
    budget = FrameBudget(250, idle_seconds=60, clock=lambda: now[0])

    def get(key: str) -> str:
        return budget.get(key, lambda: loads.append(key) or f"frame {key}", lambda value: 100)

    assert get("a") == "frame a" and get("b") == "frame b"
    assert get("a") == "frame a" and loads == ["a", "b"]  # a loaded frame is shared, not read again
    with pytest.raises(DataError, match="past the server's 0 MB budget"):
        get("c")
    assert budget.keys() == ["a", "b"]  # the frames in use are kept
    now[0] = 40.0
    get("b")  # b is used again; a is not
    now[0] = 70.0
    assert get("c") == "frame c" and sorted(budget.keys()) == ["b", "c"]  # a was idle for 70 s: dropped
    with pytest.raises(DataError):  # b and c are in use
        get("a")
    now[0] = 200.0  # everyone left: a is read again, nothing was lost
    assert get("a") == "frame a" and budget.keys() == ["a"]
    assert loads == ["a", "b", "c", "c", "a", "a"]  # a refused frame was read, measured and let go


def test_each_stored_upload_counts_once_against_its_user(tmp_path):
    users = UserStore(tmp_path / "fedlab.db")
    users.record_upload("user:ana", "/u/1.txt", 100)
    users.record_upload("user:ana", "/u/1.txt", 100)  # the same file again
    users.record_upload("user:ana", "/u/2.txt", 50)
    users.record_upload("user:ben", "/u/1.txt", 100)
    assert users.uploaded_bytes("user:ana") == 150
    assert users.uploaded_bytes("user:ana", besides="/u/1.txt") == 50
    assert users.uploaded_bytes("user:cem") == 0


def test_an_upload_past_the_quota_is_refused_in_one_line_keeping_the_earlier_ones(db, shared, uploads, tmp_path):
    shared.setenv("FEDLAB_UPLOAD_QUOTA_MB", "1")
    files = []
    for seed in (1, 2):
        path = tmp_path / f"city{seed}.txt"
        write_raw(generate_city(users=100, days=150, seed=seed), path)
        files.append(path.read_bytes())
    assert all(0.5 * MB < len(data) < MB for data in files), [len(d) for d in files]

    at = app()
    upload(at, uploads, "first.txt", files[0])
    (message,) = [e.value for e in at.sidebar.error]
    assert message.startswith("Not uploaded: sign in first")
    sign_in(at, "ana")
    upload(at, uploads, "first.txt", files[0])
    assert not at.sidebar.error and "uploaded file first.txt" in at.sidebar.caption[-1].value
    upload(at, uploads, "again.txt", files[0])  # the same file again costs nothing more
    assert not at.sidebar.error
    upload(at, uploads, "second.txt", files[1])
    (message,) = [e.value for e in at.sidebar.error]
    assert message.startswith("Not uploaded: this file") and "FEDLAB_UPLOAD_QUOTA_MB raises it" in message
    assert "\n" not in message
    assert len(list(uploads["folder"].iterdir())) == 1  # the first upload is kept, the refused one not stored
    other = app()
    sign_in(other, "ben")
    upload(other, uploads, "second.txt", files[1])  # another user has a quota of their own
    assert not other.sidebar.error


def test_data_past_the_memory_budget_is_refused_in_one_line(db, shared, uploads, tmp_path):
    shared.setenv("FEDLAB_DATA_MEMORY_MB", "1")
    path = tmp_path / "city.txt"
    write_raw(generate_city(users=100, days=150, seed=1), path)
    at = app()
    sign_in(at, "ana")
    upload(at, uploads, "city.txt", path.read_bytes())
    (message,) = [e.value for e in at.sidebar.error]
    assert message.startswith("Not loaded: this data takes") and "FEDLAB_DATA_MEMORY_MB raises it" in message
    assert "\n" not in message and "Synthetic" in at.sidebar.caption[-1].value  # the session keeps its data
    assert len(list(uploads["folder"].iterdir())) == 1  # the file itself is stored: nothing is lost
