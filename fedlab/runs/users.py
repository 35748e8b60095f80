"""Who is who on a shared server: users with a password of their own, signed tokens, and lockouts.

A student signs in with a name and a password chosen at first use. Only a salted scrypt hash of the password
is kept, in a `users` table of the run store's database. A signed-in browser keeps a token signed with HMAC
under a server secret kept beside the store (`server_secret`, made on first use, readable by the server's user
only), so a reload, a new tab or a restart of the server keeps the user. Runs belong to the user: the run
store's `session_id` column holds the owner key `user:<name>` (see owner_key).

Wrong passwords (a student's, or the admin's) are counted per name and per address; after LOCK_TRIES wrong
tries within LOCK_WINDOW_S seconds, further tries of that name or address are refused for LOCK_SECONDS.

The tables are created here, on first use, with CREATE TABLE IF NOT EXISTS: they need no schema version of
the run store, and a store without them reads as before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from fedlab.config import positive_int_from_env
from fedlab.errors import FedlabError

OWNER_PREFIX = "user:"
SECRET_FILE = "server_secret"
TOKEN_MAX_AGE_S = 30 * 24 * 3600  # a token older than this asks for the password again
LOCK_TRIES = 5
ADDRESS_LOCK_TRIES = 4 * LOCK_TRIES  # wrong student sign-ins from one address
LOCK_WINDOW_S = 10 * 60
LOCK_SECONDS = 5 * 60
MIN_PASSWORD = 4
QUOTA_VARIABLE = "FEDLAB_UPLOAD_QUOTA_MB"
DEFAULT_QUOTA_MB = 400
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,31}$")
# scrypt's cost: about 16 MiB and a few tens of milliseconds per check on the class server.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


class SignInError(FedlabError):
    """A sign-in refused: a wrong password, a bad name, or a lockout (one line, shown as is)."""


def owner_key(name: str) -> str:
    """The key a user's runs carry in the run store's session_id column."""
    return OWNER_PREFIX + normal_name(name)


def user_of(owner: str) -> str | None:
    """The user name in an owner key; None for a browser session's id or no owner (demo and terminal runs)."""
    return owner[len(OWNER_PREFIX) :] if owner.startswith(OWNER_PREFIX) else None


def normal_name(name: str) -> str:
    """The name as kept: trimmed, inner spaces single, lower case (so "Ana" and "ana " are one user)."""
    return " ".join(str(name).split()).lower()


def check_name(name: str) -> str:
    name = normal_name(name)
    if not _NAME.match(name):
        raise SignInError("A name is 1 to 32 letters, digits, spaces, dots, dashes or underscores, starting with one.")
    return name


# ----- upload quota (pure) -----


def quota_from_env() -> int:
    """FEDLAB_UPLOAD_QUOTA_MB (default 400): how much one user may upload to a shared server, in bytes."""
    return positive_int_from_env(QUOTA_VARIABLE, DEFAULT_QUOTA_MB) * 2**20


def quota_refusal(uploaded: int, nbytes: int, quota: int) -> str | None:
    """One line when an upload of `nbytes` would take a user past `quota`, having uploaded `uploaded`."""
    if uploaded + nbytes <= quota:
        return None
    return (
        f"Not uploaded: this file ({nbytes / 2**20:,.1f} MB) and your earlier uploads ({uploaded / 2**20:,.1f} MB) "
        f"pass the {quota / 2**20:,.0f} MB upload quota per user ({QUOTA_VARIABLE} raises it)."
    )


# ----- passwords -----


def hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, **_SCRYPT)


# ----- lockouts (pure) -----


def locked_until(
    failures: Sequence[float],
    now: float,
    *,
    tries: int = LOCK_TRIES,
    window: float = LOCK_WINDOW_S,
    lock: float = LOCK_SECONDS,
) -> float | None:
    """When a name or address may try again (None = now), given the times of its wrong tries.

    Locked when `tries` wrong tries fell within `window` seconds; the lock lasts `lock` seconds from the last one.
    """
    recent = sorted(t for t in failures if t > now - window - lock)
    for start in range(len(recent) - tries + 1):
        if recent[start + tries - 1] - recent[start] <= window:
            until = recent[-1] + lock
            return until if until > now else None
    return None


def wait_text(seconds: float) -> str:
    seconds = max(1, round(seconds))
    return f"{seconds} s" if seconds < 90 else f"{-(-seconds // 60)} min"


# ----- tokens (pure but for the clock) -----


def make_token(secret: bytes, name: str, salt: bytes, issued: float) -> str:
    """name.issued.signature; the signature covers the user's salt, so a new password voids older tokens."""
    name = normal_name(name)
    body = f"{_b64(name.encode('utf-8'))}.{int(issued)}"
    return f"{body}.{_sign(secret, body, salt)}"


def token_name(token: str) -> str | None:
    """The name a token claims (unchecked); None when it is not shaped like a token."""
    try:
        encoded, _issued, _signature = token.split(".")
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def token_valid(secret: bytes, token: str, salt: bytes, now: float, max_age: float = TOKEN_MAX_AGE_S) -> bool:
    try:
        encoded, issued, signature = token.split(".")
        age = now - int(issued)
    except ValueError:
        return False
    if not 0 <= age <= max_age:
        return False
    return hmac.compare_digest(signature, _sign(secret, f"{encoded}.{issued}", salt))


def _sign(secret: bytes, body: str, salt: bytes) -> str:
    return hmac.new(secret, body.encode("ascii") + b"." + salt, hashlib.sha256).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def server_secret(folder: str | os.PathLike) -> bytes:
    """The key tokens are signed with: `folder`/server_secret, 32 random bytes made on first use (mode 0600)."""
    path = Path(folder) / SECRET_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


# ----- the tables -----


class UserStore:
    """Users and wrong tries in the run store's SQLite file (tables of their own, made on first use)."""

    def __init__(self, db_path: str | os.PathLike):
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, salt BLOB NOT NULL, hash BLOB NOT NULL,"
                " created_at REAL NOT NULL)"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS sign_in_failures (key TEXT NOT NULL, at REAL NOT NULL)")
            conn.execute("CREATE INDEX IF NOT EXISTS sign_in_failures_by_key ON sign_in_failures (key, at)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS uploads (owner TEXT NOT NULL, path TEXT NOT NULL, bytes INTEGER NOT NULL,"
                " PRIMARY KEY (owner, path))"
            )

    def sign_in(self, name: str, password: str, *, address: str = "", now: float | None = None) -> str:
        """Checks (or, at first use, sets) the password; returns the kept name. SignInError when refused."""
        now = time.time() if now is None else now
        name = check_name(name)
        # A room may share one address (a proxy): its limit is higher than one name's.
        keys = {f"name:{name}": LOCK_TRIES, **({f"address:{address}": ADDRESS_LOCK_TRIES} if address else {})}
        self.refuse_if_locked(keys, now)
        row = self._user(name)
        if row is None:
            if len(password) < MIN_PASSWORD:
                raise SignInError(f"Choose a password of at least {MIN_PASSWORD} characters for the new name {name!r}.")
            salt = secrets.token_bytes(16)
            try:
                with self._connect() as conn:
                    conn.execute(
                        "INSERT INTO users (name, salt, hash, created_at) VALUES (?, ?, ?, ?)",
                        (name, salt, hash_password(password, salt), now),
                    )
                return name
            except sqlite3.IntegrityError:  # the same name was taken meanwhile: check against that one
                row = self._user(name)
        salt, stored = row
        if not hmac.compare_digest(hash_password(password, salt), stored):
            self.record_failure(keys, now)
            raise SignInError(
                f"Wrong password for {name!r}. That name is taken: use its password, or choose another name."
            )
        self.clear_failures(keys)
        return name

    def salt(self, name: str) -> bytes | None:
        row = self._user(normal_name(name))
        return None if row is None else row[0]

    def names(self) -> list[str]:
        with self._connect() as conn:
            return [row[0] for row in conn.execute("SELECT name FROM users ORDER BY name")]

    def token(self, secret: bytes, name: str, now: float | None = None) -> str:
        salt = self.salt(name)
        if salt is None:
            raise KeyError(name)
        return make_token(secret, name, salt, time.time() if now is None else now)

    def user_for_token(self, secret: bytes, token: str | None, now: float | None = None) -> str | None:
        """The user a token signs in, or None (no token, a forged or old one, or a user who changed password)."""
        name = token_name(token or "")
        salt = self.salt(name) if name else None
        if salt is None or not token_valid(secret, token, salt, time.time() if now is None else now):
            return None
        return name

    # ----- uploads -----

    def uploaded_bytes(self, owner: str, *, besides: str | None = None) -> int:
        """What `owner` uploaded so far (each stored file once), leaving out the file at `besides`."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT COALESCE(SUM(bytes), 0) FROM uploads WHERE owner = ? AND path != ?", (owner, besides or "")
            ).fetchone()
        return int(row[0])

    def record_upload(self, owner: str, path: str, nbytes: int) -> None:
        with self._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO uploads (owner, path, bytes) VALUES (?, ?, ?)", (owner, path, nbytes))

    # ----- wrong tries -----

    def refuse_if_locked(self, keys: Mapping[str, int], now: float | None = None) -> None:
        """SignInError while any key (a name, an address) is locked; `keys` maps each to its number of tries."""
        now = time.time() if now is None else now
        untils = (locked_until(self._failures(key), now, tries=tries) for key, tries in keys.items())
        until = max((u for u in untils if u is not None), default=None)
        if until is not None:
            raise SignInError(
                f"Too many wrong passwords: try again in {wait_text(until - now)} (after {LOCK_TRIES} wrong tries "
                f"within {LOCK_WINDOW_S // 60} min, that name or address waits {LOCK_SECONDS // 60} min)."
            )

    def record_failure(self, keys: Sequence[str], now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._connect() as conn:
            conn.executemany("INSERT INTO sign_in_failures (key, at) VALUES (?, ?)", [(k, now) for k in keys])
            conn.execute("DELETE FROM sign_in_failures WHERE at < ?", (now - LOCK_WINDOW_S - LOCK_SECONDS,))

    def clear_failures(self, keys: Sequence[str]) -> None:
        with self._connect() as conn:
            conn.executemany("DELETE FROM sign_in_failures WHERE key = ?", [(k,) for k in keys])

    # ----- internals -----

    def _failures(self, key: str) -> list[float]:
        with self._connect() as conn:
            return [row[0] for row in conn.execute("SELECT at FROM sign_in_failures WHERE key = ?", (key,))]

    def _user(self, name: str) -> tuple[bytes, bytes] | None:
        with self._connect() as conn:
            row = conn.execute("SELECT salt, hash FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=10)
        try:
            with conn:  # commits, or rolls back on an error
                yield conn
        finally:
            conn.close()
