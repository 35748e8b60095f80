"""Users on a shared server: passwords kept only as salted scrypt hashes, signed tokens that outlive a reload and
a restart, and lockouts after wrong tries (fedlab.runs.users)."""

from __future__ import annotations

import sqlite3

import pytest

from fedlab.runs.store import RunStore
from fedlab.runs.users import (
    LOCK_SECONDS,
    LOCK_TRIES,
    SignInError,
    UserStore,
    locked_until,
    make_token,
    owner_key,
    server_secret,
    token_valid,
    user_of,
)


def test_locked_after_the_tries_within_the_window_until_the_lock_passes():
    assert locked_until([], 100.0, tries=3, window=60, lock=30) is None
    assert locked_until([10, 20], 25, tries=3, window=60, lock=30) is None
    assert locked_until([10, 20, 30], 31, tries=3, window=60, lock=30) == 60
    assert locked_until([10, 20, 30], 60.5, tries=3, window=60, lock=30) is None  # the lock passed
    assert locked_until([0, 50, 100], 101, tries=3, window=60, lock=30) is None  # spread wider than the window
    assert locked_until([0, 50, 100, 105], 106, tries=3, window=60, lock=30) == 135


def test_owner_keys_name_the_user_and_tell_sessions_apart():
    assert owner_key("  Ana  Lee ") == "user:ana lee"
    assert user_of("user:ana lee") == "ana lee"
    assert user_of("3f2a9c" * 5) is None and user_of("") is None


def test_a_password_is_set_at_first_use_kept_only_as_a_salted_hash_and_checked_after(tmp_path):
    db = tmp_path / "fedlab.db"
    RunStore(db)  # the run store's own tables first, as on a server
    users = UserStore(db)
    assert users.sign_in("Ana", "apples") == "ana"
    assert users.sign_in("ana", "apples") == "ana"
    with pytest.raises(SignInError, match="Wrong password for 'ana'"):
        users.sign_in("ANA", "pears")
    with pytest.raises(SignInError, match="at least 4"):
        users.sign_in("ben", "abc")
    with pytest.raises(SignInError, match="A name is"):
        users.sign_in("../etc", "apples")
    users.sign_in("ben", "apples")
    conn = sqlite3.connect(db)
    (ana_salt, ana_hash), (ben_salt, ben_hash) = conn.execute("SELECT salt, hash FROM users ORDER BY name").fetchall()
    conn.close()
    assert b"apples" not in ana_hash and ana_salt != ben_salt and ana_hash != ben_hash  # salted
    assert RunStore(db).list_runs() == []  # the run store still opens beside the new tables


def test_a_token_signs_the_user_in_again_after_a_restart_and_a_forged_or_old_one_does_not(tmp_path):
    db = tmp_path / "fedlab.db"
    users = UserStore(db)
    users.sign_in("ana", "apples", now=1000.0)
    token = users.token(server_secret(tmp_path), "ana", now=1000.0)
    # A restart: new objects, the same files.
    again = UserStore(db)
    assert again.user_for_token(server_secret(tmp_path), token, now=2000.0) == "ana"
    assert (tmp_path / "server_secret").stat().st_mode & 0o077 == 0
    assert again.user_for_token(b"another secret" * 3, token, now=2000.0) is None
    forged = make_token(b"guess", "ana", b"salt", 1000.0)
    assert again.user_for_token(server_secret(tmp_path), forged, now=2000.0) is None
    assert again.user_for_token(server_secret(tmp_path), token, now=1000.0 + 10**9) is None  # too old
    assert again.user_for_token(server_secret(tmp_path), "not.a.token", now=2000.0) is None
    assert not token_valid(b"k", "", b"s", 0.0)


def test_wrong_passwords_lock_the_name_then_let_it_try_again(tmp_path):
    users = UserStore(tmp_path / "fedlab.db")
    users.sign_in("ana", "apples", now=0.0)
    for _ in range(LOCK_TRIES):
        with pytest.raises(SignInError, match="Wrong password"):
            users.sign_in("ana", "pears", address="10.0.0.7", now=10.0)
    with pytest.raises(SignInError) as locked:
        users.sign_in("ana", "apples", address="10.0.0.8", now=20.0)  # even the right one, from elsewhere
    message = str(locked.value)
    assert message.startswith("Too many wrong passwords: try again in 5 min") and "\n" not in message
    users.sign_in("ben", "berries", address="10.0.0.7", now=20.0)  # the address itself has a higher limit
    assert users.sign_in("ana", "apples", now=10.0 + LOCK_SECONDS + 1) == "ana"
