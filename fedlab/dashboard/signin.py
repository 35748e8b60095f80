"""Signing in on a shared server (FEDLAB_SHARED=1): the sidebar form, and the cookie that keeps the user.

The user and password rules live in fedlab.runs.users. After a sign-in the browser gets a signed token in a
cookie (set by a line of JavaScript: st.context.cookies can only read). Every new session of that browser
(a reload, a new tab, the same tab after the server restarted) reads the cookie and is the same user again.
On a personal machine (FEDLAB_SHARED unset) nothing here draws or asks anything.
"""

from __future__ import annotations

import json

import streamlit as st

from fedlab.dashboard import access
from fedlab.dashboard.access import address, user_store
from fedlab.dashboard.state import OWNER_KEY, db_path, session_id
from fedlab.errors import DataError, FedlabError
from fedlab.runs.users import TOKEN_MAX_AGE_S, owner_key, quota_from_env, quota_refusal, server_secret

COOKIE = "fedlab_user"
_USER = "signed_in_user"
_COOKIE_TO_WRITE = "_signin_cookie"  # the cookie this session sets in its browser (None = clear it)


def secret() -> bytes:
    return server_secret(db_path().parent)


def current_user() -> str | None:
    """The signed-in user of this session, or None (always None on a personal machine)."""
    return st.session_state.get(_USER) if access.shared() else None


def restore() -> None:
    """Call once per run (app.py): a new session of a signed-in browser becomes that user again."""
    if not access.shared() or _USER in st.session_state:
        return
    try:
        token = st.context.cookies.get(COOKIE)
    except Exception:  # no browser request (a script run on its own)
        token = None
    name = user_store().user_for_token(secret(), token) if token else None
    if name is not None:
        _become(name)


def sidebar() -> None:
    """On a shared server: who is signed in and Sign out, or the sign-in form."""
    if not access.shared():
        return
    with st.sidebar:
        _write_cookie()
        name = current_user()
        if name is not None:
            st.caption(f"Signed in as **{name}**. Your runs are yours in every tab and after a reload.")
            st.button("Sign out", key="signin_btn_out", on_click=sign_out)
            return
        with st.expander("Sign in to run", icon=":material/person:", expanded=True):
            st.text_input("Name", key="signin_name", max_chars=32, help="A name of your own for this class.")
            st.text_input(
                "Password",
                type="password",
                key="signin_password",
                help="New name: choose a password (at least 4 characters); it is kept only as a salted hash. "
                "Known name: its password.",
            )
            st.button("Sign in", key="signin_btn", type="primary", on_click=_sign_in)
            if st.session_state.get("signin_error"):
                st.error(st.session_state.pop("signin_error"), icon=":material/error:")


def check_upload(path, nbytes: int) -> None:
    """On a shared server: DataError unless a user is signed in and the upload fits their quota."""
    if not access.shared():
        return
    if current_user() is None:
        raise DataError("Not uploaded: sign in first (sidebar); on a shared server each user has an upload quota.")
    message = quota_refusal(user_store().uploaded_bytes(session_id(), besides=str(path)), nbytes, quota_from_env())
    if message is not None:
        raise DataError(message)


def record_upload(path, nbytes: int) -> None:
    if access.shared() and current_user() is not None:
        user_store().record_upload(session_id(), str(path), nbytes)


def _sign_in() -> None:
    state = st.session_state
    try:
        name = user_store().sign_in(state.get("signin_name", ""), state.get("signin_password", ""), address=address())
    except FedlabError as exc:
        state["signin_error"] = str(exc)
        return
    finally:
        state["signin_password"] = ""
    _become(name)
    state[_COOKIE_TO_WRITE] = user_store().token(secret(), name)


def sign_out() -> None:
    # None, not absent: this session's request still carries the old cookie, which restore() must not reuse.
    st.session_state[_USER] = None
    st.session_state.pop(OWNER_KEY, None)
    st.session_state[_COOKIE_TO_WRITE] = None


def _become(name: str) -> None:
    st.session_state[_USER] = name
    st.session_state[OWNER_KEY] = owner_key(name)


def _write_cookie() -> None:
    # Drawn on every run of the session, not once: a script element removed by the next rerun before the
    # browser ran it (a busy machine, a quick click) would leave no cookie. The same element again is a no-op.
    if _COOKIE_TO_WRITE not in st.session_state:
        return
    token = st.session_state[_COOKIE_TO_WRITE]
    if token is None:
        line = f"{COOKIE}=; path=/; max-age=0; SameSite=Strict"
    else:
        line = f"{COOKIE}={token}; path=/; max-age={TOKEN_MAX_AGE_S}; SameSite=Strict"
    st.html(f"<script>document.cookie = {json.dumps(line)};</script>", unsafe_allow_javascript=True)
