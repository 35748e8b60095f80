"""Who may change a run when one server is shared by a room (a teacher serving the app to a class).

In shared mode (FEDLAB_SHARED=1) a signed-in user (fedlab.runs.users) may stop, rename, delete and pin only
the runs they started, from any browser session; runs of other users, the demo runs and `fedlab run` runs
(which belong to no one) are read-only, unless the session unlocked admin actions with the password in
.streamlit/secrets.toml (`admin_password`). Off (the default, one user): every run may be changed, as on a
personal machine.
"""

from __future__ import annotations

import hmac
import os

from fedlab.errors import ConfigError, FedlabError
from fedlab.runs.store import Run
from fedlab.runs.users import user_of

SHARED_VARIABLE = "FEDLAB_SHARED"
ADMIN_SECRET = "admin_password"


def shared_from_env() -> bool:
    """FEDLAB_SHARED: "1" = shared mode, "0" or unset = one user."""
    text = os.environ.get(SHARED_VARIABLE, "").strip()
    if text not in ("", "0", "1"):
        raise ConfigError(f"{SHARED_VARIABLE} must be 1 (a shared server) or 0 (one user), not {text!r}")
    return text == "1"


def may_change(run: Run, session_id: str, *, shared: bool, admin: bool = False) -> bool:
    """Whether `session_id` may stop, rename, delete or pin `run`."""
    if not shared or admin:
        return True
    return bool(run.session_id) and run.session_id == session_id


def read_only_reason(run: Run) -> str:
    """One line on why a run is read-only for a session that did not start it."""
    user = user_of(run.session_id)
    if user is not None:
        return f"Read-only: started by {user}. On a shared server only its owner, or an admin, may change it."
    whose = "another browser session" if run.session_id else "this server (a demo run) or a terminal"
    return f"Read-only: started by {whose}. On a shared server only its own session, or an admin, may change it."


def require_signed_in(owner: str) -> None:
    """On a shared server only a signed-in user queues runs (the app itself queues the demo runs, owner "")."""
    if owner and user_of(owner) is None:
        raise FedlabError("Not queued: sign in first (sidebar, Sign in) so the run is yours on every page and tab.")


def password_matches(given: str, expected: str | None) -> bool:
    """Constant-time comparison; no password configured means nothing unlocks."""
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), str(expected).encode("utf-8"))


def admit(owner: str) -> None:
    """The job manager's admission rule: on a shared server (read from the environment each time), sign in first."""
    if shared_from_env():
        require_signed_in(owner)


def room_runs(runs: list[Run]) -> list[Run]:
    """The runs of the class: those a user (or a browser session) queued. The demo runs, `fedlab run` runs and
    the lessons' prepared runs belong to no one and are not among them, so clearing the room keeps them."""
    return [run for run in runs if run.session_id]
