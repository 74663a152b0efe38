"""The grading store: one SQLite file that keeps every job, result and failure (DESIGN 3.6).

One row per (submission, dataset, split) job, ``queued -> running -> finished | failed``. A job is
claimed inside an ``IMMEDIATE`` transaction and ended with a conditional update on
``(state='running', owner, attempts)``, so a job ends exactly once even when graders are killed
(SIGKILL) and rerun, or several graders share one store: a late result from an abandoned attempt
finds the row no longer its own and is dropped. Every transition is appended to ``events``.

Running jobs are owned by a grader *run* (``runs`` table) and hold a lease the grader renews. On
start, a grader re-queues jobs whose lease expired or whose owner is a dead process on this host.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from harness.errors import InputError

SCHEMA_VERSION = 1
STATES = ("queued", "running", "finished", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS submissions (
    name TEXT PRIMARY KEY,
    participant TEXT NOT NULL,
    path TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    seq INTEGER NOT NULL,
    manifest_error TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    submission TEXT NOT NULL REFERENCES submissions(name),
    dataset TEXT NOT NULL,
    split TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'finished', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    lease_deadline REAL,
    failure_kind TEXT,
    failure_message TEXT,
    failure_detail TEXT,
    log_path TEXT,
    log TEXT,
    result TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    UNIQUE (submission, dataset, split)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    time REAL NOT NULL,
    event TEXT NOT NULL,
    attempt INTEGER,
    owner TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    superseded_at REAL NOT NULL,
    reason TEXT NOT NULL,
    row TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    proc_start TEXT,
    started_at REAL NOT NULL,
    command TEXT
);
"""


def _proc_start(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot): tells a live pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class Store:
    """A grading store in one SQLite file (WAL mode; safe for several processes)."""

    def __init__(self, path, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise InputError(f"no grading store at {self.path} (run `harness grade ... --db {self.path}` first)")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=60000")
            with self.transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                version = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if version is None:
                    self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                elif int(version[0]) != SCHEMA_VERSION:
                    raise InputError(f"{self.path}: store schema {version[0]}, this harness reads {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path}: not a grading store ({exc})") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    def _event(self, job_id, event, attempt=None, owner=None, detail=None) -> None:
        self.db.execute(
            "INSERT INTO events (job_id, time, event, attempt, owner, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, time.time(), event, attempt, owner, detail),
        )

    # ---- meta ---------------------------------------------------------------------------------
    def set_meta(self, key: str, value) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # ---- runs ---------------------------------------------------------------------------------
    def start_run(self, command: str = "") -> str:
        run_id = uuid.uuid4().hex[:12]
        pid = os.getpid()
        with self.transaction():
            self.db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, socket.gethostname(), pid, _proc_start(pid), time.time(), command),
            )
        return run_id

    def owner_dead(self, owner: str | None) -> bool:
        """True when the owning run is a process on this host that no longer exists."""
        if owner is None:
            return True
        run = self.db.execute("SELECT host, pid, proc_start FROM runs WHERE id=?", (owner,)).fetchone()
        if run is None:
            return True
        if run["host"] != socket.gethostname():
            return False  # another machine: only its lease can tell
        return _proc_start(run["pid"]) != run["proc_start"]

    # ---- registration -------------------------------------------------------------------------
    def register(self, entries, challenge, *, regrade=(), splits=None) -> dict:
        """Create or refresh the jobs of ``entries`` (SubmissionEntry) under ``challenge``.

        Unchanged jobs (same content hash and evaluation config) are left alone unless their
        submission is in ``regrade``; changed ones are archived to ``history`` and re-queued.
        Jobs that failed with ``infra_error`` are re-queued: a new run retries our own failures.
        ``splits``: only the jobs of these splits (default: every split of the challenge).
        Returns counts: new, requeued, unchanged.
        """
        now = time.time()
        counts = {"new": 0, "requeued": 0, "unchanged": 0}
        config_hash = challenge.config_hash()
        regrade = set(regrade)
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('challenge', ?)", (json.dumps(challenge.to_dict()),))
            seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM submissions").fetchone()[0]
            # submission order decides ties: arrival (file time) within one batch, then batches in turn
            for entry in sorted(entries, key=lambda e: (e.submitted_at, e.path)):
                known = self.db.execute("SELECT * FROM submissions WHERE name=?", (entry.name,)).fetchone()
                if known is None:
                    seq += 1
                    self.db.execute(
                        "INSERT INTO submissions VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (entry.name, entry.participant, str(entry.path), entry.content_hash,
                         entry.submitted_at, seq, entry.manifest_error),
                    )
                elif known["content_hash"] != entry.content_hash or known["path"] != str(entry.path):
                    # a new version: it is submitted now, so it loses ties to older entries
                    seq += 1
                    self.db.execute(
                        "UPDATE submissions SET participant=?, path=?, content_hash=?, submitted_at=?, seq=?, "
                        "manifest_error=? WHERE name=?",
                        (entry.participant, str(entry.path), entry.content_hash, entry.submitted_at, seq,
                         entry.manifest_error, entry.name),
                    )
                else:
                    self.db.execute(
                        "UPDATE submissions SET participant=?, manifest_error=? WHERE name=?",
                        (entry.participant, entry.manifest_error, entry.name),
                    )
                for split in challenge.splits:
                    if splits is not None and split not in splits:
                        continue
                    for dataset in challenge.datasets[split]:
                        row = self.db.execute(
                            "SELECT * FROM jobs WHERE submission=? AND dataset=? AND split=?",
                            (entry.name, dataset, split),
                        ).fetchone()
                        if row is None:
                            cur = self.db.execute(
                                "INSERT INTO jobs (submission, dataset, split, content_hash, config_hash, state, "
                                "created_at) VALUES (?, ?, ?, ?, ?, 'queued', ?)",
                                (entry.name, dataset, split, entry.content_hash, config_hash, now),
                            )
                            job_id = cur.lastrowid
                            self._event(job_id, "queued", detail="new")
                            counts["new"] += 1
                        else:
                            job_id = row["id"]
                            reason = None
                            if entry.name in regrade:
                                reason = "regrade requested"
                            elif row["content_hash"] != entry.content_hash:
                                reason = "submission changed"
                            elif row["config_hash"] != config_hash:
                                reason = "evaluation config changed"
                            elif row["state"] == "failed" and row["failure_kind"] == "infra_error":
                                reason = "retry infra_error"
                            if reason is None:
                                counts["unchanged"] += 1
                                if entry.manifest_error is None or row["state"] != "queued":
                                    continue
                            else:
                                if row["state"] in ("finished", "failed"):
                                    self.db.execute(
                                        "INSERT INTO history (job_id, superseded_at, reason, row) VALUES (?, ?, ?, ?)",
                                        (job_id, now, reason, json.dumps(dict(row))),
                                    )
                                self.db.execute(
                                    "UPDATE jobs SET state='queued', attempts=0, owner=NULL, lease_deadline=NULL, "
                                    "failure_kind=NULL, failure_message=NULL, failure_detail=NULL, log_path=NULL, "
                                    "log=NULL, result=NULL, started_at=NULL, finished_at=NULL, content_hash=?, "
                                    "config_hash=? WHERE id=?",
                                    (entry.content_hash, config_hash, job_id),
                                )
                                self._event(job_id, "queued", detail=reason)
                                counts["requeued"] += 1
                        if entry.manifest_error is not None:
                            # unreadable submission: a failed job with its kind, no worker needed
                            self.db.execute(
                                "UPDATE jobs SET state='failed', failure_kind='invalid_submission', "
                                "failure_message=?, finished_at=? WHERE id=? AND state='queued'",
                                (entry.manifest_error, now, job_id),
                            )
                            self._event(job_id, "failed", detail="invalid_submission")
        return counts

    # ---- lifecycle ----------------------------------------------------------------------------
    def recover(self, *, max_attempts: int) -> list[int]:
        """Re-queue running jobs whose owner died or whose lease expired; returns their ids."""
        now = time.time()
        recovered = []
        with self.transaction():
            for row in self.db.execute("SELECT * FROM jobs WHERE state='running'").fetchall():
                expired = row["lease_deadline"] is not None and row["lease_deadline"] < now
                if not (expired or self.owner_dead(row["owner"])):
                    continue
                why = "lease expired" if expired else "grader died"
                if row["attempts"] >= max_attempts:
                    self.db.execute(
                        "UPDATE jobs SET state='failed', failure_kind='infra_error', failure_message=?, "
                        "owner=NULL, lease_deadline=NULL, finished_at=? WHERE id=?",
                        (f"gave up after {row['attempts']} attempts ({why} each time)", now, row["id"]),
                    )
                    self._event(row["id"], "failed", row["attempts"], row["owner"], f"infra_error: {why}")
                else:
                    self.db.execute(
                        "UPDATE jobs SET state='queued', owner=NULL, lease_deadline=NULL WHERE id=?", (row["id"],)
                    )
                    self._event(row["id"], "requeued", row["attempts"], row["owner"], why)
                recovered.append(row["id"])
        return recovered

    def claim(self, owner: str, lease_seconds: float) -> sqlite3.Row | None:
        """Take the oldest queued job for ``owner``: running, attempts + 1, lease set."""
        with self.transaction():
            row = self.db.execute("SELECT id FROM jobs WHERE state='queued' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            now = time.time()
            self.db.execute(
                "UPDATE jobs SET state='running', attempts=attempts+1, owner=?, lease_deadline=?, started_at=? "
                "WHERE id=?",
                (owner, now + lease_seconds, now, row["id"]),
            )
            job = self.job(row["id"])
            self._event(job["id"], "running", job["attempts"], owner)
            return job

    def renew(self, owner: str, job_ids, lease_seconds: float) -> None:
        ids = list(job_ids)
        if not ids:
            return
        with self.transaction():
            self.db.executemany(
                "UPDATE jobs SET lease_deadline=? WHERE id=? AND owner=? AND state='running'",
                [(time.time() + lease_seconds, i, owner) for i in ids],
            )

    def finish(self, job_id: int, owner: str, attempt: int, outcome: dict, *, max_attempts: int,
               log_path: str | None = None, note: str | None = None) -> str | None:
        """End an attempt with its outcome; returns the new state, or None if the attempt was stale.

        ``outcome``: ``{"status": "ok", "evaluation": {...}}`` or ``{"status": "failed",
        "failure": {"kind", "message", "detail"}}``, plus ``"log"``. An ``infra_error`` below
        ``max_attempts`` goes back to the queue.
        """
        now = time.time()
        with self.transaction():
            row = self.db.execute(
                "SELECT state, owner, attempts FROM jobs WHERE id=?", (job_id,)
            ).fetchone()
            if row is None or row["state"] != "running" or row["owner"] != owner or row["attempts"] != attempt:
                self._event(job_id, "stale_result_dropped", attempt, owner)
                return None
            log = outcome.get("log")
            if outcome.get("status") == "ok":
                self.db.execute(
                    "UPDATE jobs SET state='finished', result=?, log=?, log_path=?, finished_at=?, "
                    "lease_deadline=NULL, failure_kind=NULL, failure_message=NULL, failure_detail=NULL WHERE id=?",
                    (json.dumps(outcome["evaluation"]), log, log_path, now, job_id),
                )
                self._event(job_id, "finished", attempt, owner, note)
                return "finished"
            failure = outcome.get("failure") or {"kind": "infra_error", "message": "no outcome", "detail": None}
            if failure["kind"] == "infra_error" and attempt < max_attempts:
                self.db.execute(
                    "UPDATE jobs SET state='queued', owner=NULL, lease_deadline=NULL, failure_kind=?, "
                    "failure_message=?, failure_detail=?, log=?, log_path=? WHERE id=?",
                    (failure["kind"], failure["message"], failure.get("detail"), log, log_path, job_id),
                )
                self._event(job_id, "requeued", attempt, owner, f"infra_error: {failure['message']}")
                return "queued"
            self.db.execute(
                "UPDATE jobs SET state='failed', failure_kind=?, failure_message=?, failure_detail=?, log=?, "
                "log_path=?, finished_at=?, lease_deadline=NULL WHERE id=?",
                (failure["kind"], failure["message"], failure.get("detail"), log, log_path, now, job_id),
            )
            self._event(job_id, "failed", attempt, owner, failure["kind"] + (f" ({note})" if note else ""))
            return "failed"

    def release(self, job_id: int, owner: str, attempt: int, why: str) -> None:
        """Give a running job back to the queue without counting the attempt (grader interrupted)."""
        with self.transaction():
            cur = self.db.execute(
                "UPDATE jobs SET state='queued', owner=NULL, lease_deadline=NULL, attempts=attempts-1 "
                "WHERE id=? AND owner=? AND attempts=? AND state='running'",
                (job_id, owner, attempt),
            )
            if cur.rowcount:
                self._event(job_id, "released", attempt, owner, why)

    # ---- queries ------------------------------------------------------------------------------
    def job(self, job_id: int) -> sqlite3.Row | None:
        return self.db.execute(
            "SELECT jobs.*, submissions.participant, submissions.path, submissions.submitted_at, submissions.seq "
            "FROM jobs JOIN submissions ON submissions.name = jobs.submission WHERE jobs.id=?",
            (job_id,),
        ).fetchone()

    def jobs(self, *, state: str | None = None, split: str | None = None) -> list[sqlite3.Row]:
        sql = ("SELECT jobs.*, submissions.participant, submissions.path, submissions.submitted_at, "
               "submissions.seq FROM jobs JOIN submissions ON submissions.name = jobs.submission")
        where, args = [], []
        if state:
            where.append("jobs.state=?")
            args.append(state)
        if split:
            where.append("jobs.split=?")
            args.append(split)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self.db.execute(sql + " ORDER BY jobs.id", args).fetchall()

    def has_queued(self) -> bool:
        return self.db.execute("SELECT 1 FROM jobs WHERE state='queued' LIMIT 1").fetchone() is not None

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state, n in self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[state] = n
        return counts

    def events(self, job_id: int | None = None) -> list[sqlite3.Row]:
        if job_id is None:
            return self.db.execute("SELECT * FROM events ORDER BY id").fetchall()
        return self.db.execute("SELECT * FROM events WHERE job_id=? ORDER BY id", (job_id,)).fetchall()

    def submissions(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM submissions ORDER BY seq").fetchall()

    def duplicates(self) -> list[list[sqlite3.Row]]:
        """Groups of entries from more than one participant with identical content (the same model
        bytes submitted by two teams): flagged, never ranked silently side by side."""
        groups: dict[str, list] = {}
        for row in self.submissions():
            if not row["content_hash"].startswith("raw:"):
                groups.setdefault(row["content_hash"], []).append(row)
        return [rows for rows in groups.values() if len({r["participant"] for r in rows}) > 1]
