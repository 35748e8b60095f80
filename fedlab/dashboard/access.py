"""Which runs this browser session may change (fedlab.runs.access), and the admin unlock on the Runs page."""

from __future__ import annotations

import streamlit as st

from fedlab.dashboard.state import db_path, session_id
from fedlab.errors import FedlabError
from fedlab.runs import access
from fedlab.runs.store import Run
from fedlab.runs.users import LOCK_TRIES, UserStore

_UNLOCKED = "admin_unlocked"


@st.cache_resource(show_spinner=False)
def _users(path: str) -> UserStore:
    return UserStore(path)


def user_store() -> UserStore:
    """Users, their password hashes and wrong tries, in the run store's database (fedlab.runs.users)."""
    return _users(str(db_path()))


def address() -> str:
    """The browser's address as the server sees it (the TCP peer; "local" on loopback)."""
    return st.context.ip_address or "local"


def shared() -> bool:
    return access.shared_from_env()


def is_admin() -> bool:
    """Unlocked with the admin password in this session (shared mode), or a personal machine."""
    return not shared() or bool(st.session_state.get(_UNLOCKED))


def can_change(run: Run) -> bool:
    return access.may_change(run, session_id(), shared=shared(), admin=bool(st.session_state.get(_UNLOCKED)))


def may_read_server_files() -> bool:
    """A typed path reads any file the app's user can read: on a shared server, for admins only."""
    return not shared() or bool(st.session_state.get(_UNLOCKED))


def read_only_caption(run: Run) -> None:
    st.caption(access.read_only_reason(run))


def admin_unlock() -> None:
    """On a shared server with an admin password set: a password field that unlocks every run's actions."""
    if not shared() or not _admin_password():
        return
    if st.session_state.get(_UNLOCKED):
        st.caption("Admin actions unlocked for this session: every run may be stopped, renamed or deleted.")
        return
    with st.expander("Admin", icon=":material/lock:"):
        st.text_input(
            "Admin password",
            type="password",
            key="admin_password_input",
            help="From .streamlit/secrets.toml (admin_password). Unlocks stopping, renaming and "
            "deleting every run, for this browser session.",
        )
        if st.button("Unlock", key="admin_btn_unlock"):
            try:
                _try_unlock(st.session_state.get("admin_password_input", ""))
            except FedlabError as exc:
                st.error(str(exc), icon=":material/error:")
            else:
                st.rerun()


def _try_unlock(given: str) -> None:
    """Unlocks, or raises FedlabError: a wrong password, or too many of them from this user or address."""
    users = user_store()
    keys = {f"admin:{session_id()}": LOCK_TRIES, f"admin-address:{address()}": LOCK_TRIES}
    users.refuse_if_locked(keys)
    if not access.password_matches(given, _admin_password()):
        users.record_failure(keys)
        raise FedlabError("Wrong password.")
    users.clear_failures(keys)
    st.session_state[_UNLOCKED] = True


def _admin_password() -> str | None:
    try:
        return st.secrets.get(access.ADMIN_SECRET)
    except FileNotFoundError:  # no secrets.toml: no admin password
        return None
