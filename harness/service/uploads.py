"""Accepted uploads: where they are, whose they are, what counts against a quota, what is shown.

Each accepted upload is one grading-store entry ``<team>/<upload id>`` (participant = the team of
the token, DESIGN 3.6), registered for the splits its phase grades. An upload row is written only
once its file is complete, checked and in place, inside the same transaction that checks the quota,
so concurrent uploads cannot overshoot it and a killed server leaves no half-stored submission.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import secrets
import shutil
import sqlite3
import time
from pathlib import Path

from harness.grading.discover import discover
from harness.grading.store import Store
from harness.service.config import Phase, ServiceConfig, utcnow

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    entry TEXT NOT NULL UNIQUE,
    phase TEXT NOT NULL,
    day TEXT NOT NULL,
    filename TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    splits TEXT NOT NULL,
    registered INTEGER NOT NULL DEFAULT 0,
    hidden INTEGER NOT NULL DEFAULT 0,
    disqualified INTEGER NOT NULL DEFAULT 0,
    baseline INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS uploads_team ON uploads(team, day);
"""
FLAGS = ("hidden", "disqualified", "baseline")
OPEN_PHASE = Phase(name="open", start=dt.datetime.min.replace(tzinfo=dt.timezone.utc),
                   end=dt.datetime.max.replace(tzinfo=dt.timezone.utc), splits=())


class QuotaExceeded(Exception):
    def __init__(self, message: str, retry_after: int, quota: dict):
        super().__init__(message)
        self.retry_after, self.quota = retry_after, quota


def archive_suffix(filename: str) -> str:
    """The archive type an uploaded file's name says (the loader reads it from the suffix)."""
    name = filename.lower()
    return ".tar.gz" if name.endswith((".tar.gz", ".tgz")) else ".tar" if name.endswith(".tar") else ".zip"


def next_midnight(now: dt.datetime) -> dt.datetime:
    return dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)


class Uploads:
    def __init__(self, db, data_dir, config: ServiceConfig):
        self.db = Path(db)
        self.data = Path(data_dir)
        self.config = config
        self.incoming = self.data / "incoming"
        self.stored = self.data / "submissions"
        for d in (self.incoming, self.stored):
            d.mkdir(parents=True, exist_ok=True)
        with Store(self.db):  # the grading tables, so that quota queries can join jobs
            pass
        con = self.connect()
        con.executescript(SCHEMA)
        con.close()

    def connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(str(self.db), timeout=60, isolation_level=None, check_same_thread=False)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout=60000")
        return con

    # ---- start-up -------------------------------------------------------------------------------
    def recover(self) -> dict:
        """After a crash: drop partial uploads and unrecorded files; register recorded ones."""
        dropped = 0
        for part in self.incoming.iterdir():
            shutil.rmtree(part, ignore_errors=True) if part.is_dir() else part.unlink(missing_ok=True)
            dropped += 1
        con = self.connect()
        try:
            known = {r["id"] for r in con.execute("SELECT id FROM uploads")}
            for team_dir in self.stored.iterdir():
                for upload_dir in team_dir.iterdir() if team_dir.is_dir() else ():
                    if upload_dir.name not in known:  # moved in place, killed before its row was written
                        shutil.rmtree(upload_dir, ignore_errors=True)
                        dropped += 1
            pending = con.execute("SELECT * FROM uploads WHERE registered=0").fetchall()
        finally:
            con.close()
        for row in pending:
            self.register(row)
        return {"dropped": dropped, "registered": len(pending)}

    # ---- accepting ------------------------------------------------------------------------------
    def phase(self, now=None) -> Phase | None:
        if not self.config.phases:
            return OPEN_PHASE
        return self.config.phase_at(now)

    def quota(self, con, team: str, phase: Phase, now: dt.datetime) -> dict:
        """Uploads that count: all of the day's (or phase's) except those whose grading failed on our
        side (infra_error). Pending ones count, so concurrent uploads cannot overshoot."""
        counted = ("SELECT count(*) FROM uploads u WHERE u.team=? AND {where} AND NOT EXISTS ("
                   "SELECT 1 FROM jobs j WHERE j.submission=u.entry AND j.state='failed' "
                   "AND j.failure_kind='infra_error')")
        day_used = con.execute(counted.format(where="u.day=?"), (team, now.date().isoformat())).fetchone()[0]
        phase_used = con.execute(counted.format(where="u.phase=?"), (team, phase.name)).fetchone()[0]
        return {"used": day_used, "limit": phase.daily_quota, "resets_at": next_midnight(now).isoformat(),
                "phase_used": phase_used, "phase_limit": phase.total_quota}

    def accept(self, team: str, part: Path, filename: str, size: int) -> dict:
        """Record the checked upload at ``part`` for ``team``; raises :class:`QuotaExceeded`."""
        now = utcnow()
        phase = self.phase(now)
        upload_id = secrets.token_hex(6)
        suffix = archive_suffix(filename)
        final_dir = self.stored / team / upload_id
        con = self.connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            quota = self.quota(con, team, phase, now)
            over = None
            if phase.daily_quota is not None and quota["used"] >= phase.daily_quota:
                over = (f"daily quota reached: {quota['used']} of {phase.daily_quota} today (resets "
                        f"{quota['resets_at']})", int((next_midnight(now) - now).total_seconds()) + 1)
            elif phase.total_quota is not None and quota["phase_used"] >= phase.total_quota:
                over = (f"quota of phase {phase.name!r} reached: {quota['phase_used']} of {phase.total_quota}",
                        max(1, int((phase.end - now).total_seconds())))
            if over:
                con.execute("ROLLBACK")
                raise QuotaExceeded(over[0], over[1], quota)
            final_dir.mkdir(parents=True)
            path = final_dir / f"submission{suffix}"
            os.replace(part, path)
            splits = list(phase.splits or self.config.challenge.splits)
            con.execute("INSERT INTO uploads (id, team, entry, phase, day, filename, path, size, created_at, splits) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (upload_id, team, f"{team}/{upload_id}", phase.name, now.date().isoformat(),
                         filename[:200], str(path), size, time.time(), json.dumps(splits)))
            con.execute("COMMIT")
            quota["used"] += 1
            quota["phase_used"] += 1
            row = con.execute("SELECT * FROM uploads WHERE id=?", (upload_id,)).fetchone()
        finally:
            con.close()
        self.register(row)
        return {"id": upload_id, "status": "queued", "phase": phase.name,
                "quota": {k: quota[k] for k in ("used", "limit", "resets_at")}}

    def register(self, row, *, regrade: bool = False) -> None:
        """Queue the upload's jobs in the grading store (idempotent: an unchanged entry stays)."""
        (entry,) = discover([row["path"]], max_latent_dim=self.config.challenge.limits.max_latent_dim)
        entry = dataclasses.replace(entry, name=row["entry"], participant=row["team"], submitted_at=row["created_at"])
        with Store(self.db) as store:
            store.register([entry], self.config.challenge, splits=json.loads(row["splits"]),
                           regrade=[row["entry"]] if regrade else ())
        con = self.connect()
        try:
            con.execute("UPDATE uploads SET registered=1 WHERE id=?", (row["id"],))
        finally:
            con.close()

    # ---- reading --------------------------------------------------------------------------------
    def get(self, upload_id: str, team: str | None = None):
        """The upload ``upload_id`` (of ``team`` only, when given), or None."""
        con = self.connect()
        try:
            if team is None:
                return con.execute("SELECT * FROM uploads WHERE id=?", (upload_id,)).fetchone()
            return con.execute("SELECT * FROM uploads WHERE id=? AND team=?", (upload_id, team)).fetchone()
        finally:
            con.close()

    def of_team(self, team: str | None) -> list:
        con = self.connect()
        try:
            if team is None:
                return con.execute("SELECT * FROM uploads ORDER BY created_at DESC").fetchall()
            return con.execute("SELECT * FROM uploads WHERE team=? ORDER BY created_at DESC", (team,)).fetchall()
        finally:
            con.close()

    def flagged(self) -> dict[str, set]:
        con = self.connect()
        try:
            rows = con.execute("SELECT entry, hidden, disqualified, baseline FROM uploads").fetchall()
        finally:
            con.close()
        return {"hidden": {r["entry"] for r in rows if r["hidden"] or r["disqualified"]},
                "baseline": {r["entry"] for r in rows if r["baseline"]}}

    def set_flag(self, upload_id: str, flag: str, value: bool) -> None:
        assert flag in FLAGS
        con = self.connect()
        try:
            con.execute(f"UPDATE uploads SET {flag}=? WHERE id=?", (int(value), upload_id))
        finally:
            con.close()
