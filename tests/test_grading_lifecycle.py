"""Grading lifecycle on a real SQLite store with real worker processes.

The job function is injected (``helpers_grading.fake_job``, run by real worker subprocesses): it reads
what to do from the submission's manifest ``extra.fake`` (values to report, sleep, a failure to raise,
infra failures before succeeding) so the lifecycle can be driven exactly. Submissions are real
folders with a real tiny ONNX encoder that the real loader accepts.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import InputError
from harness.grading import load_challenge
from helpers_grading import JOB_FN, fake_job, make_submission, write_challenge


# ---- tests ------------------------------------------------------------------------------------

def test_lifecycle_failures_retries_logs_and_board(tmp_path, job_record):
    from harness.grading import Store, build_board, grade, render

    subs = tmp_path / "subs"
    make_submission(subs, "alpha", {"values": {"mig.discrete_mig": 0.5, "sap.sap_score": 0.3}})
    make_submission(subs, "beta", {"values": {"mig.discrete_mig": 0.4, "sap.sap_score": 0.4}, "infra_failures": 1})
    make_submission(subs, "crashy", {"fail": "runtime_error"})
    make_submission(subs, "nanny", {"values": {"mig.discrete_mig": "nan", "sap.sap_score": 0.9}})
    broken = subs / "broken"
    broken.mkdir()
    (broken / "submission.json").write_text("{not json")
    challenge = load_challenge(write_challenge(tmp_path / "c.toml"))
    db = tmp_path / "g.db"
    lines = []
    summary = grade([subs], challenge, db, workers=2, job_fn=JOB_FN, echo=lines.append)
    assert summary.counts == {"queued": 0, "running": 0, "finished": 3, "failed": 2}

    with Store(db) as store:
        jobs = {r["submission"]: r for r in store.jobs()}
        assert jobs["alpha"]["state"] == "finished" and jobs["alpha"]["attempts"] == 1
        assert json.loads(jobs["alpha"]["result"])["metrics"]["mig"]["discrete_mig"] == 0.5
        # infra_error retried, then finished: two attempts, one ending
        assert jobs["beta"]["state"] == "finished" and jobs["beta"]["attempts"] == 2
        assert [e["event"] for e in store.events(jobs["beta"]["id"])] == ["queued", "running", "requeued", "running",
                                                                          "finished"]
        # participant failure: not retried, typed, log kept
        assert (jobs["crashy"]["state"], jobs["crashy"]["failure_kind"], jobs["crashy"]["attempts"]) == \
            ("failed", "runtime_error", 1)
        assert "fake job crashy" in jobs["crashy"]["log"]
        assert Path(jobs["crashy"]["log_path"]).read_text() == jobs["crashy"]["log"]
        # unreadable submission: failed job with its kind, never run
        assert jobs["broken"]["failure_kind"] == "invalid_submission" and jobs["broken"]["attempts"] == 0
        assert "not valid JSON" in jobs["broken"]["failure_message"]
        board = build_board(store, split="public")
    assert [r.name for r in board.rows] == ["alpha", "beta"]  # mean ranks 1.5 each, alpha earlier
    unranked = {u["name"]: u["reason"] for u in board.unranked}
    assert set(unranked) == {"crashy", "nanny", "broken"}
    assert "nan" in unranked["nanny"] and "runtime_error" in unranked["crashy"]
    assert any("retrying beta" in line for line in lines)
    # --workers 2: attempts overlapped, never more than two at once
    with Store(db) as store:
        events = [(e["time"], +1 if e["event"] == "running" else -1) for e in store.events()
                  if e["event"] in ("running", "finished", "failed", "requeued") and e["attempt"]]
    level, peak = 0, 0
    for _, step in sorted(events):
        level += step
        peak = max(peak, level)
    assert peak == 2
    text = render(board, "table")
    assert "alpha" in text and "not ranked: nanny" in text


def test_regrade_is_a_noop_unless_changed_or_asked(tmp_path, job_record):
    from harness.grading import Store, grade

    subs = tmp_path / "subs"
    make_submission(subs, "alpha", {"values": {"mig.discrete_mig": 0.5, "sap.sap_score": 0.3}})
    sub_b = make_submission(subs, "beta", {"values": {"mig.discrete_mig": 0.4, "sap.sap_score": 0.4}})
    challenge = load_challenge(write_challenge(tmp_path / "c.toml"))
    db = tmp_path / "g.db"
    grade([subs], challenge, db, job_fn=JOB_FN)
    assert len(job_record.read_text().splitlines()) == 2
    again = grade([subs], challenge, db, job_fn=JOB_FN)
    assert again.registered == {"new": 0, "requeued": 0, "unchanged": 2}
    assert len(job_record.read_text().splitlines()) == 2  # nothing ran
    # a changed submission is graded again; the old result goes to history
    manifest = json.loads((sub_b / "submission.json").read_text())
    manifest["extra"]["fake"]["values"]["mig.discrete_mig"] = 0.9
    (sub_b / "submission.json").write_text(json.dumps(manifest))
    changed = grade([subs], challenge, db, job_fn=JOB_FN)
    assert changed.registered == {"new": 0, "requeued": 1, "unchanged": 1}
    forced = grade([subs], challenge, db, job_fn=JOB_FN, regrade=["alpha"])
    assert forced.registered == {"new": 0, "requeued": 1, "unchanged": 1}
    assert len(job_record.read_text().splitlines()) == 4
    with Store(db) as store:
        history = store.db.execute("SELECT reason FROM history ORDER BY id").fetchall()
        assert [h[0] for h in history] == ["submission changed", "regrade requested"]
        beta = [r for r in store.jobs() if r["submission"] == "beta"][0]
        assert json.loads(beta["result"])["metrics"]["mig"]["discrete_mig"] == 0.9
    with pytest.raises(InputError, match="--regrade names no submission"):
        grade([subs], challenge, db, job_fn=JOB_FN, regrade=["nobody"])


def test_identity_comes_from_the_layout_not_the_manifest(tmp_path, job_record):
    from harness.grading import discover

    a = make_submission(tmp_path / "a", "same", {"values": {}})
    b = make_submission(tmp_path / "b", "same", {"values": {}})
    keys = [e.name for e in discover([a, b])]
    assert len(set(keys)) == 2 and keys[0] == "same"  # a collision is two entries, never an abort
    assert keys == [e.name for e in discover([a, b])]  # and the same keys on every run

    root = tmp_path / "subs"
    make_submission(root / "team-x", "x-one", {"values": {}})
    make_submission(root / "team-x", "x-two", {"values": {}})
    make_submission(root, "solo", {"values": {}})
    make_submission(root, "tagged", {"values": {}}, participant="team-x")  # claims another team: ignored
    # two teams exporting the default name are two entries of two participants
    for team in ("team-p", "team-q"):
        folder = make_submission(root / team, "entry", {"values": {}})
        m = json.loads((folder / "submission.json").read_text())
        (folder / "submission.json").write_text(json.dumps({**m, "name": "my-encoder"}))
    found = {e.name: e.participant for e in discover([root])}
    assert found == {"team-x/x-one": "team-x", "team-x/x-two": "team-x", "solo": "solo", "tagged": "tagged",
                     "team-p/entry": "team-p", "team-q/entry": "team-q"}


def test_a_submission_named_like_another_teams_replaces_nothing(tmp_path, job_record):
    from harness.grading import Store, grade

    first, later = tmp_path / "batch1", tmp_path / "batch2"
    make_submission(first / "alice", "encoder", {"values": {"mig.discrete_mig": 0.5, "sap.sap_score": 0.3}})
    intruder = make_submission(later / "mallory", "encoder", {"values": {"mig.discrete_mig": 0.1,
                                                                         "sap.sap_score": 0.1}})
    m = json.loads((intruder / "submission.json").read_text())
    m["extra"]["participant"] = "alice"
    (intruder / "submission.json").write_text(json.dumps(m))
    db = tmp_path / "g.db"
    challenge = load_challenge(write_challenge(tmp_path / "c.toml"))
    grade([first], challenge, db, job_fn=JOB_FN)
    summary = grade([later], challenge, db, job_fn=JOB_FN)
    assert summary.registered["requeued"] == 0
    with Store(db) as store:
        owners = {(r["submission"], r["participant"]) for r in store.jobs()}
    assert ("alice/encoder", "alice") in owners and ("mallory/encoder", "mallory") in owners


def _terminal_events(db):
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT job_id, event FROM events WHERE event IN ('finished', 'failed')").fetchall()
    counts = {}
    for job_id, _ in rows:
        counts[job_id] = counts.get(job_id, 0) + 1
    return counts


@pytest.mark.slow
def test_sigkill_at_any_moment_then_rerun_ends_every_job_exactly_once(tmp_path, job_record):
    """Kill the real grader CLI with SIGKILL at random moments, rerun until done: each job ends once."""
    subs = tmp_path / "subs"
    rng = random.Random(7)  # the kill moments come from this seed
    expected = {}
    for i in range(6):
        fake = {"values": {"mig.discrete_mig": i / 10, "sap.sap_score": (7 - i) / 10}, "sleep": 0.2 + 0.1 * (i % 3)}
        if i == 4:
            fake = {"fail": "bad_output", "sleep": 0.2}
        make_submission(subs, f"sub{i}", fake)
        expected[f"sub{i}"] = fake
    challenge = write_challenge(tmp_path / "c.toml", private=True, max_attempts=20, lease=5)
    db = tmp_path / "g.db"
    cmd = [sys.executable, "-m", "harness", "grade", str(subs), "--challenge", str(challenge), "--db", str(db),
           "--workers", "2", "--job-fn", JOB_FN]
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
        time.sleep(rng.uniform(0.3, 2.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2
    final = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert final.returncode == 0, final.stderr

    from harness.grading import Store

    with Store(db) as store:
        jobs = store.jobs()
        assert len(jobs) == 6 * 2  # public dummy, private file
        for row in jobs:
            fake = expected[row["submission"]]
            if row["dataset"].endswith("private.bin") or "fail" in fake:
                assert row["state"] == "failed"
            else:
                assert row["state"] == "finished"
                metrics = json.loads(row["result"])["metrics"]
                assert metrics["mig"]["discrete_mig"] == fake["values"]["mig.discrete_mig"]
        # each job ends exactly once per time it was queued: a new run re-queues a job that failed on
        # our side ("retry infra_error", by design: the organizer may have fixed it), which then ends again
        with sqlite3.connect(db) as con:
            retries = dict(con.execute("SELECT job_id, COUNT(*) FROM events WHERE event = 'queued' "
                                       "AND detail = 'retry infra_error' GROUP BY job_id").fetchall())
        ends = _terminal_events(db)
        assert len(ends) == len(jobs)
        assert all(n == 1 + retries.get(job_id, 0) for job_id, n in ends.items()), (ends, retries)
        executions = job_record.read_text().splitlines()
        assert len(executions) >= len(jobs)  # killed attempts ran again; each still ended once
        # no worker outlived its killed grader
        assert not [r for r in store.jobs(state="running")]
    time.sleep(0.5)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "g.db.logs") not in ps


def test_expired_lease_of_another_host_is_requeued(tmp_path, job_record):
    from harness.grading import Store, grade

    subs = tmp_path / "subs"
    make_submission(subs, "alpha", {"values": {"mig.discrete_mig": 0.5, "sap.sap_score": 0.3}})
    challenge = load_challenge(write_challenge(tmp_path / "c.toml", lease=1))
    db = tmp_path / "g.db"
    from harness.grading.discover import discover

    with Store(db) as store:
        store.register(discover([subs]), challenge)
        store.db.execute("INSERT INTO runs VALUES ('elsewhere', 'other-host', 1, '0', 0, 'grade')")
        job = store.claim("elsewhere", lease_seconds=0.2)
        assert job["state"] == "running"
        assert store.recover(max_attempts=3) == []  # lease still valid: another machine may be working
        time.sleep(0.3)
        # a late result from the lost attempt is dropped once the job was taken back
        assert store.recover(max_attempts=3) == [job["id"]]
        assert store.finish(job["id"], "elsewhere", 1, {"status": "ok", "evaluation": {}}, max_attempts=3) is None
    grade([subs], challenge, db, job_fn=JOB_FN)
    with Store(db) as store:
        row = store.jobs()[0]
        assert (row["state"], row["attempts"]) == ("finished", 2)
        assert [e["event"] for e in store.events(row["id"])] == [
            "queued", "running", "requeued", "stale_result_dropped", "running", "finished"]


def test_cli_grade_status_leaderboard_formats(tmp_path, job_record):
    subs = tmp_path / "subs"
    make_submission(subs, "alpha", {"values": {"mig.discrete_mig": 0.5, "sap.sap_score": 0.3}, "ci": 0.2})
    make_submission(subs, "beta", {"values": {"mig.discrete_mig": 0.45, "sap.sap_score": 0.25}, "ci": 0.2})
    make_submission(subs, "gamma", {"values": {"mig.discrete_mig": 0.1, "sap.sap_score": 0.05}, "ci": 0.001})
    make_submission(subs, "oops", {"fail": "timeout"})
    challenge = write_challenge(tmp_path / "c.toml", private=True)
    db = tmp_path / "g.db"
    run = lambda *args: subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                                       cwd=tmp_path)
    out = run("grade", str(subs), "--challenge", str(challenge), "--db", str(db), "--job-fn", JOB_FN,
              "--workers", "2")
    assert out.returncode == 0, out.stderr
    assert "failed oops on dummy (public): timeout" in out.stderr
    status = run("status", "--db", str(db))
    assert status.returncode == 0
    assert "8 job(s): 0 queued, 0 running, 3 finished, 5 failed" in status.stdout
    assert "oops on dummy (public): timeout: simulated participant failure" in status.stdout
    table = run("leaderboard", "--db", str(db)).stdout
    assert table.splitlines()[4].split()[:2] == ["1", "alpha"]
    assert "0.500 [0.300, 0.700]" in table
    data = json.loads(run("leaderboard", "--db", str(db), "--format", "json").stdout)
    assert [e["submission"] for e in data["entries"]] == ["alpha", "beta", "gamma"]
    # alpha and beta overlap on both values (wide intervals); gamma is apart from beta
    assert [e["overlap_flag"] for e in data["entries"]] == [True, True, False]
    assert data["entries"][0]["values"]["mig.discrete_mig"]["ci95"] == pytest.approx([0.3, 0.7])
    csv_text = run("leaderboard", "--db", str(db), "--format", "csv").stdout
    assert csv_text.splitlines()[1].startswith("1,alpha,alpha,1.0000,0.5,")
    md = run("leaderboard", "--db", str(db), "--format", "md").stdout
    assert md.count("\n| ") == 4 and "~ :" in md
    html_out = tmp_path / "board.html"
    assert run("leaderboard", "--db", str(db), "--format", "html", "--out", str(html_out)).returncode == 0
    assert "<table>" in html_out.read_text() and "alpha" in html_out.read_text()
    # private board only when asked; it has the organizer file, on which every fake job failed
    private = json.loads(run("leaderboard", "--db", str(db), "--split", "private", "--format", "json").stdout)
    assert private["split"] == "private" and private["entries"] == []
    assert all("private.bin" in u["reason"] for u in private["unranked"]) and len(private["unranked"]) == 4
    # bad input: one line, exit 2
    missing = run("status", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: no grading store")
    again = run("grade", str(subs), "--challenge", str(challenge), "--db", str(db), "--job-fn", JOB_FN,
                "--regrade", "gamma")
    # gamma's 2 jobs, plus the 3 other infra_error jobs (the unloadable private file) a new run retries
    assert again.returncode == 0 and "0 new job(s), 5 re-queued, 3 unchanged" in again.stderr
    bad = run("grade", str(subs), "--challenge", str(tmp_path / "none.toml"), "--db", str(db))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_job_guard_and_log_cap(tmp_path, job_record):
    from harness.grading import Store, grade

    subs = tmp_path / "subs"
    make_submission(subs, "sleeper", {"values": {}, "sleep": 30})
    make_submission(subs, "chatty", {"values": {"mig.discrete_mig": 0.5, "sap.sap_score": 0.3},
                                     "print_lines": 5000})
    path = write_challenge(tmp_path / "c.toml", max_attempts=1)
    path.write_text(path.read_text() + "job_seconds = 3\nlog_cap_kb = 4\n")
    started = time.time()
    summary = grade([subs], load_challenge(path), tmp_path / "g.db", workers=2, job_fn=JOB_FN)
    assert time.time() - started < 25
    assert summary.counts == {"queued": 0, "running": 0, "finished": 1, "failed": 1}
    with Store(tmp_path / "g.db") as store:
        rows = {r["submission"]: r for r in store.jobs()}
    assert rows["sleeper"]["failure_kind"] == "infra_error"
    assert "past the grader's limit of 3 s" in rows["sleeper"]["failure_message"]
    log = rows["chatty"]["log"]
    assert len(log.encode()) < 4096 + 200 and "bytes cut: log capped at 4096 bytes" in log
    assert "fake job chatty" in log and log.rstrip().endswith("last line")  # head and tail kept


def test_outcome_written_before_the_grader_died_is_kept(tmp_path, job_record):
    import socket

    from harness.grading import Store, grade
    from harness.grading.discover import discover

    subs = tmp_path / "subs"
    make_submission(subs, "alpha", {"values": {"mig.discrete_mig": 0.5, "sap.sap_score": 0.3}})
    make_submission(subs, "beta", {"values": {"mig.discrete_mig": 0.4, "sap.sap_score": 0.2}})
    challenge = load_challenge(write_challenge(tmp_path / "c.toml"))
    db = tmp_path / "g.db"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with Store(db) as store:
        store.register(discover([subs]), challenge)
        store.db.execute("INSERT INTO runs VALUES ('dead-run', ?, ?, 'gone', 0, 'grade')",
                         (socket.gethostname(), int(dead.stdout)))
        job = store.claim("dead-run", lease_seconds=3600)  # alpha: its worker finished, the grader did not
        beta = store.claim("dead-run", lease_seconds=3600)  # beta: killed mid-way, nothing written
    workdir = Path(str(db) + ".logs") / f"job-{job['id']}-attempt-1"
    workdir.mkdir(parents=True)
    evaluation = fake_job({**_job_dict(job, subs / "alpha"), "attempt": 1})
    (workdir / "outcome.json").write_text(json.dumps({"status": "ok", "evaluation": evaluation}))
    (workdir / "log.txt").write_text("written before the grader died\n")
    job_record.write_text("")  # count only what runs from here on
    grade([subs], challenge, db, job_fn=JOB_FN)
    assert job_record.read_text().splitlines() == ["beta|dummy|public|2"]  # alpha was not run again
    with Store(db) as store:
        rows = {r["submission"]: r for r in store.jobs()}
        assert rows["alpha"]["state"] == "finished" and rows["alpha"]["attempts"] == 1
        assert rows["alpha"]["log"] == "written before the grader died\n"
        assert [(e["event"], e["detail"]) for e in store.events(job["id"])][-1] == (
            "finished", "adopted from a dead grader's worker")
        assert (rows["beta"]["state"], rows["beta"]["attempts"]) == ("finished", 2)
        assert [e["event"] for e in store.events(beta["id"])] == ["queued", "running", "requeued", "running",
                                                                  "finished"]


def _job_dict(row, path):
    return {"submission": row["submission"], "submission_path": str(path), "dataset": row["dataset"],
            "split": row["split"], "preset": "challenge", "seed": 0}


def test_a_submission_this_machine_cannot_see_is_our_failure(tmp_path, job_record):
    from harness.grading.worker import run_job

    outcome = run_job({"job_fn": JOB_FN, "job": {"submission_path": str(tmp_path / "gone"), "attempt": 1}})
    assert outcome["status"] == "failed" and outcome["failure"]["kind"] == "infra_error"
    assert "not visible on" in outcome["failure"]["message"]


def test_ctrl_c_gives_running_jobs_back_without_counting_the_attempt(tmp_path, job_record):
    from harness.grading import Store

    subs = tmp_path / "subs"
    make_submission(subs, "slow", {"values": {"mig.discrete_mig": 0.5, "sap.sap_score": 0.3}, "sleep": 30})
    challenge = write_challenge(tmp_path / "c.toml")
    db = tmp_path / "g.db"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "grade", str(subs), "--challenge", str(challenge),
                             "--db", str(db), "--job-fn", JOB_FN], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120  # generous: a loaded 2-core machine starts the worker slowly
    while time.time() < deadline and not (job_record.exists() and job_record.read_text()):
        time.sleep(0.1)  # until the job runs
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    with Store(db) as store:
        row = store.jobs()[0]
        assert (row["state"], row["attempts"]) == ("queued", 0)
        assert [e["event"] for e in store.events(row["id"])] == ["queued", "running", "released"]


def test_archives_are_submissions_with_the_folder_hash(tmp_path, job_record):
    import shutil

    from harness.grading import discover

    folder = make_submission(tmp_path / "src", "zipped", {"values": {}})
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.make_archive(str(subs / "zipped"), "zip", folder)
    (subs / "junk.tar.gz").write_bytes(b"not an archive")
    found = {e.name: e for e in discover([subs])}
    assert found["zipped"].content_hash == discover([folder])[0].content_hash
    assert found["zipped"].manifest_error is None
    assert found["junk"].manifest_error and found["junk"].content_hash.startswith("raw:")


def test_boards_escape_what_participants_wrote(tmp_path, job_record):
    from harness.grading import grade, leaderboard

    subs = tmp_path / "subs"
    # participant folders named by whoever uploads them
    make_submission(subs / '=HYPERLINK("http:evil","x")', "formula",
                    {"values": {"mig.discrete_mig": 0.5, "sap.sap_score": 0.3}})
    make_submission(subs / "<img src=x onerror=alert(1)>[click](javascript:alert(1))", "markup",
                    {"values": {"mig.discrete_mig": 0.4, "sap.sap_score": 0.2}})
    db = tmp_path / "g.db"
    grade([subs], load_challenge(write_challenge(tmp_path / "c.toml")), db, job_fn=JOB_FN)
    csv_text = leaderboard(db, fmt="csv")
    assert "'=HYPERLINK" in csv_text and ",=HYPERLINK" not in csv_text  # a text cell, not a formula
    md = leaderboard(db, fmt="md")
    assert "<img" not in md and "](javascript" not in md and "&lt;img" in md


def test_identical_models_from_two_participants_are_flagged(tmp_path, job_record):
    from harness.grading import grade, leaderboard

    subs = tmp_path / "subs"
    for team in ("team-a", "team-b"):  # the same bytes, two teams
        make_submission(subs / team, "enc", {"values": {"mig.discrete_mig": 0.5, "sap.sap_score": 0.3}})
    make_submission(subs / "team-c", "own", {"values": {"mig.discrete_mig": 0.4, "sap.sap_score": 0.2}})
    db = tmp_path / "g.db"
    grade([subs], load_challenge(write_challenge(tmp_path / "c.toml")), db, job_fn=JOB_FN)
    status = subprocess.run([sys.executable, "-m", "harness", "status", "--db", str(db)], capture_output=True,
                            text=True, timeout=120)
    assert "identical content" in status.stdout and "team-a/enc (team-a), team-b/enc (team-b)" in status.stdout
    assert "team-c" not in [line for line in status.stdout.splitlines() if "identical" in line][0]
    board = leaderboard(db, fmt="table")
    assert "identical model from different participants: team-a/enc, team-b/enc" in board
    assert json.loads(leaderboard(db, fmt="json"))["identical"] == [["team-a/enc", "team-b/enc"]]


def test_failed_entries_can_be_left_off_a_public_board(tmp_path, job_record):
    subs = tmp_path / "subs"
    make_submission(subs, "good", {"values": {"mig.discrete_mig": 0.5, "sap.sap_score": 0.3}})
    make_submission(subs, "broken", {"fail": "runtime_error"})
    db = tmp_path / "g.db"
    from harness.grading import grade

    grade([subs], load_challenge(write_challenge(tmp_path / "c.toml")), db, job_fn=JOB_FN)
    board = [sys.executable, "-m", "harness", "leaderboard", "--db", str(db)]
    shown = subprocess.run(board, capture_output=True, text=True, timeout=120).stdout
    hidden = subprocess.run(board + ["--hide-failures"], capture_output=True, text=True, timeout=120).stdout
    assert "not ranked: broken" in shown and "broken" not in hidden and "good" in hidden
