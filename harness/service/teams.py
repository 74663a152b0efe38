"""Teams and their tokens, in the grading store's SQLite file.

A token is ``hx_<id>_<secret>``: the id finds the row, the secret is checked against its scrypt
hash (``hashlib.scrypt``, a salt per token), so the file never holds a usable token. A token is
shown once, when made. Verified tokens are remembered in memory by their SHA-256 for a minute, so
that a busy client does not cost a scrypt per request; revocation is checked on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass

from harness.errors import InputError

TEAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_CACHE_SECONDS = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS teams (
    name TEXT PRIMARY KEY,
    organizer INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    team TEXT NOT NULL REFERENCES teams(name),
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""


@dataclass(frozen=True)
class Caller:
    team: str
    organizer: bool
    token_id: str


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


def connect(db) -> sqlite3.Connection:
    con = sqlite3.connect(str(db), timeout=60, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA busy_timeout=60000")
    con.executescript(SCHEMA)
    return con


class Teams:
    def __init__(self, db):
        self.db = db
        self._cache: dict[bytes, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def _con(self):
        return connect(self.db)

    def _issue(self, con, team: str) -> str:
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(24)
        salt = secrets.token_bytes(16)
        con.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, NULL)", (token_id, team, salt, _hash(secret, salt),
                                                                        time.time()))
        return f"hx_{token_id}_{secret}"

    def add(self, name: str, *, organizer: bool = False) -> str:
        """Create team ``name`` and return its first token (shown once, never stored)."""
        if not TEAM_NAME.fullmatch(name or ""):
            raise InputError(f"team name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit")
        con = self._con()
        try:
            con.execute("BEGIN IMMEDIATE")
            if con.execute("SELECT 1 FROM teams WHERE name=?", (name,)).fetchone():
                con.execute("ROLLBACK")
                raise InputError(f"team {name!r} exists already (`harness teams rotate {name}` gives a new token)")
            con.execute("INSERT INTO teams VALUES (?, ?, ?)", (name, int(organizer), time.time()))
            token = self._issue(con, name)
            con.execute("COMMIT")
            return token
        finally:
            con.close()

    def _known(self, con, name: str):
        row = con.execute("SELECT * FROM teams WHERE name=?", (name,)).fetchone()
        if row is None:
            raise InputError(f"no team {name!r} (see `harness teams list`)")
        return row

    def revoke(self, name: str) -> int:
        """Revoke every token of ``name``; returns how many were active."""
        con = self._con()
        try:
            self._known(con, name)
            cur = con.execute("UPDATE tokens SET revoked_at=? WHERE team=? AND revoked_at IS NULL", (time.time(), name))
            return cur.rowcount
        finally:
            con.close()

    def rotate(self, name: str) -> str:
        """Revoke ``name``'s tokens and return a new one."""
        con = self._con()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                self._known(con, name)
            except InputError:
                con.execute("ROLLBACK")
                raise
            con.execute("UPDATE tokens SET revoked_at=? WHERE team=? AND revoked_at IS NULL", (time.time(), name))
            token = self._issue(con, name)
            con.execute("COMMIT")
            return token
        finally:
            con.close()

    def list(self) -> list[dict]:
        con = self._con()
        try:
            rows = con.execute(
                "SELECT t.name, t.organizer, t.created_at, "
                "(SELECT count(*) FROM tokens k WHERE k.team=t.name AND k.revoked_at IS NULL) AS active "
                "FROM teams t ORDER BY t.created_at").fetchall()
            return [dict(r) for r in rows]
        finally:
            con.close()

    def verify(self, token: str | None, con: sqlite3.Connection | None = None) -> Caller | None:
        """The caller a bearer token belongs to, or None (unknown, malformed or revoked)."""
        if not token or len(token) > 200:
            return None
        m = re.fullmatch(r"hx_([0-9a-f]{12})_([A-Za-z0-9_-]{16,64})", token)
        if not m:
            return None
        own = con is None
        con = con or self._con()
        try:
            row = con.execute("SELECT k.*, t.organizer FROM tokens k JOIN teams t ON t.name=k.team WHERE k.id=?",
                              (m.group(1),)).fetchone()
            if row is None or row["revoked_at"] is not None:
                return None
            key = hashlib.sha256(token.encode()).digest()
            now = time.monotonic()
            with self._lock:
                cached = self._cache.get(key)
            if cached and now - cached[0] < _CACHE_SECONDS and cached[1].token_id == row["id"]:
                return cached[1]
            if not hmac.compare_digest(_hash(m.group(2), row["salt"]), row["hash"]):
                return None
            caller = Caller(team=row["team"], organizer=bool(row["organizer"]), token_id=row["id"])
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = (now, caller)
            return caller
        finally:
            if own:
                con.close()
