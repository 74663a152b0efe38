"""`harness serve`: a real uvicorn process on 127.0.0.1 (a free port), spoken to over HTTP (httpx and
`harness submit`), with the real SQLite store and the batch grader's loop and worker processes.

The job function is injected (``service_job`` below, run by the real worker subprocesses) so that
grading takes milliseconds: it reads what to report from the uploaded archive's manifest
(``extra.fake``) and records each execution, so that the tests can count executions against endings.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers_grading import write_onnx_encoder

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
JOB_FN = "test_service:service_job"


# ---- the injected job function (runs inside worker processes) ---------------------------------

def service_job(job: dict) -> dict:
    from harness.errors import SubmissionFailure

    with zipfile.ZipFile(job["submission_path"]) as zf:
        fake = json.loads(zf.read("submission.json"))["extra"]["fake"]
    with open(os.environ["SERVICE_TEST_RECORD"], "a") as fh:
        fh.write(f"{job['submission']}|{job['split']}|{job['attempt']}\n")
    time.sleep(fake.get("sleep", 0.0))
    if fake.get("infra"):
        raise RuntimeError("simulated infrastructure failure")
    if "fail" in fake:
        raise SubmissionFailure(fake["fail"], "simulated participant failure")
    value = float(fake.get("value", 0.5))
    metrics = {"mig": {"discrete_mig": value, "discrete_mig_ci95": [value - 0.01, value + 0.01]},
               "sap": {"sap_score": value / 2, "sap_score_ci95": [value / 2 - 0.01, value / 2 + 0.01]}}
    return {"dataset": {"name": job["dataset"], "factor_names": ["a", "b", "c"], "factor_sizes": [4, 5, 6]},
            "preset": job["preset"], "seed": job["seed"], "metrics": metrics,
            "timing": {"encode_s": 0.0, "metrics_s": {}, "total_s": 0.0, "images_encoded": 0}}


# ---- fixtures ---------------------------------------------------------------------------------

CHALLENGE = """
name = "service-test"
[splits.public]
datasets = ["dummy"]
[splits.private]
datasets = ["dummy"]
[metrics]
names = ["mig", "sap"]
[ranking]
values = ["mig.discrete_mig", "sap.sap_score"]
[limits]
wall_seconds = 60
memory_mb = 2048
threads = 1
[grading]
max_attempts = {max_attempts}
lease_seconds = 20
[[phases]]
name = "development"
start = {start}
end = {end}
show = ["public"]
{quota}
[service]
max_upload_mb = {max_upload_mb}
refresh_seconds = 1
"""


def submission_zip(fake: dict | None = None, *, name="enc", latent_dim=3) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("submission.json", json.dumps({
            "name": name, "format": "onnx", "model": "encoder.onnx",
            "input": {"channels": 1, "height": 16, "width": 16}, "latent_dim": latent_dim, "outputs": ["mean"],
            "extra": {"fake": fake or {}}}))
        zf.writestr("encoder.onnx", _onnx_bytes())
    return buf.getvalue()


_ONNX = {}


def _onnx_bytes() -> bytes:
    if "bytes" not in _ONNX:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            write_onnx_encoder(Path(tmp) / "e.onnx")
            _ONNX["bytes"] = (Path(tmp) / "e.onnx").read_bytes()
    return _ONNX["bytes"]


def harness(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `harness serve` process over one store; start, kill (SIGKILL) and start again."""

    def __init__(self, root: Path, *, daily_quota=None, max_upload_mb=64, max_attempts=2, workers=2,
                 start="2026-01-01T00:00:00Z", end="2099-01-01T00:00:00Z"):
        self.root = root
        self.db = root / "service.db"
        self.data = root / "data"
        self.record = root / "executions.txt"
        self.record.touch()
        quota = f"daily_quota = {daily_quota}" if daily_quota is not None else ""
        (root / "c.toml").write_text(CHALLENGE.format(max_attempts=max_attempts, start=start, end=end, quota=quota,
                                                      max_upload_mb=max_upload_mb))
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")]),
                    "SERVICE_TEST_RECORD": str(self.record)}
        self.workers = workers
        self.proc = None
        self.log = root / "server.log"

    def team(self, name, *, organizer=False) -> str:
        out = harness("teams", "add", name, "--db", self.db, *(["--organizer"] if organizer else []), env=self.env)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def start(self, *, scheduler: str | None = None):
        self.port = free_port()
        grading = ["--scheduler", scheduler] if scheduler else ["--workers", str(self.workers)]
        self.url = f"http://127.0.0.1:{self.port}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "harness", "serve", "--challenge", self.root / "c.toml", "--db", self.db,
                 "--data", self.data, "--port", str(self.port), *grading, "--job-fn", JOB_FN],
                env=self.env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("server did not come up")

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def upload(self, token, data: bytes, filename="submission.zip", **kwargs):
        return httpx.post(self.url + "/api/v1/submissions", headers={"Authorization": f"Bearer {token}"},
                          files={"file": (filename, data)}, timeout=60, **kwargs)

    def get(self, path, token=None, **kwargs):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, headers=headers, timeout=30, **kwargs)

    def wait_until_graded(self, token, ids, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {i: self.get(f"/api/v1/submissions/{i}", token).json()["state"] for i in ids}
            if all(s in ("scored", "failed") for s in states.values()):
                return states
            time.sleep(0.2)
        raise AssertionError(f"not graded in time: {states}")

    def executions(self) -> list[str]:
        return self.record.read_text().splitlines()

    def endings(self) -> dict[int, int]:
        with sqlite3.connect(self.db) as con:
            return dict(con.execute("SELECT job_id, count(*) FROM events WHERE event IN ('finished', 'failed') "
                                    "GROUP BY job_id").fetchall())


@pytest.fixture
def server(tmp_path):
    servers = []

    def make(**kwargs):
        s = Server(tmp_path, **kwargs)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


# ---- the contract -----------------------------------------------------------------------------

def test_submit_wait_then_read_status_results_report_and_boards(server, tmp_path):
    srv = server()
    alice, org = srv.team("alice"), srv.team("org", organizer=True)
    srv.start()
    folder = tmp_path / "mine"
    folder.mkdir()
    with zipfile.ZipFile(io.BytesIO(submission_zip({"value": 0.8}))) as zf:
        zf.extractall(folder)
    out = harness("submit", folder, "--server", srv.url, "--token", alice, "--wait", "--poll", "0.2", env=srv.env)
    assert out.returncode == 0, out.stdout + out.stderr
    sub_id = out.stdout.split()[1]
    assert "scored" in out.stdout and "1 of unlimited today" in out.stdout

    listing = srv.get("/api/v1/submissions", alice).json()["submissions"]
    assert [s["id"] for s in listing] == [sub_id] and listing[0]["state"] == "scored"
    detail = srv.get(f"/api/v1/submissions/{sub_id}", alice).json()
    assert {j["split"] for j in detail["jobs"]} == {"public", "private"}
    assert all(j["state"] == "finished" for j in detail["jobs"])
    # during the phase a team sees its public results only; the organizer sees both
    results = srv.get(f"/api/v1/submissions/{sub_id}/results", alice).json()
    assert [e["split"] for e in results["evaluations"]] == ["public"] and results["hidden_splits"] == ["private"]
    assert results["evaluations"][0]["metrics"]["mig"]["discrete_mig"] == 0.8
    assert len(srv.get(f"/api/v1/submissions/{sub_id}/results", org).json()["evaluations"]) == 2
    report = srv.get(f"/api/v1/submissions/{sub_id}/report", alice)
    assert report.status_code == 200 and report.text.lstrip().lower().startswith("<!doctype html")

    board = srv.get("/api/v1/leaderboard?split=public").json()  # public: no token needed
    assert board["schema"] == "harness.leaderboard/1"
    assert [(e["submission"], e["participant"]) for e in board["entries"]] == [(f"alice/{sub_id}", "alice")]
    assert srv.get("/api/v1/leaderboard?split=private", alice).status_code == 403
    assert srv.get("/api/v1/leaderboard?split=private", org).json()["entries"]
    assert srv.get("/healthz").json()["grader"] is True


def test_tokens_and_isolation(server):
    srv = server()
    alice, bob, org = srv.team("alice"), srv.team("bob"), srv.team("org", organizer=True)
    srv.start()
    assert srv.upload("hx_000000000000_" + "x" * 32, submission_zip()).status_code == 401
    assert httpx.post(srv.url + "/api/v1/submissions", files={"file": ("s.zip", b"x")}).status_code == 401
    a = srv.upload(alice, submission_zip()).json()["id"]
    srv.wait_until_graded(alice, [a])
    for path in (f"/api/v1/submissions/{a}", f"/api/v1/submissions/{a}/results", f"/api/v1/submissions/{a}/report"):
        assert srv.get(path, bob).status_code == 404, path  # as an unknown id: nothing to infer
        assert srv.get(path.replace(a, "000000000000"), bob).status_code == 404
    assert srv.get("/api/v1/submissions", bob).json()["submissions"] == []
    assert srv.get("/api/v1/admin/queue", bob).status_code == 403
    assert httpx.post(f"{srv.url}/api/v1/admin/submissions/{a}/hide",
                      headers={"Authorization": f"Bearer {bob}"}).status_code == 403
    assert srv.get("/api/v1/admin/queue", org).status_code == 200
    # the page of another team's submission is a 404 too
    assert httpx.get(f"{srv.url}/submissions/{a}", cookies={"harness_token": bob}).status_code == 404
    # revoke and rotate
    assert harness("teams", "revoke", "bob", "--db", srv.db).returncode == 0
    assert srv.get("/api/v1/submissions", bob).status_code == 401
    new = harness("teams", "rotate", "alice", "--db", srv.db).stdout.strip()
    assert srv.get("/api/v1/submissions", alice).status_code == 401
    assert srv.get("/api/v1/submissions", new).json()["submissions"][0]["id"] == a
    listed = harness("teams", "list", "--db", srv.db).stdout
    assert "alice" in listed and "organizer" in listed and new not in listed
    with sqlite3.connect(srv.db) as con:  # tokens are stored hashed
        blobs = b"".join(bytes(r[0]) + bytes(r[1]) for r in con.execute("SELECT salt, hash FROM tokens"))
    secret = new.split("_", 2)[2]  # hx_<id>_<secret>; the secret itself may hold "_"
    assert len(secret) >= 16 and new.encode() not in blobs and secret.encode() not in blobs


def test_refused_uploads_do_not_count_and_leave_nothing(server, tmp_path):
    srv = server(daily_quota=2, max_upload_mb=1)
    alice = srv.team("alice")
    srv.start()
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("submission.json", "{not json")
    r = srv.upload(alice, bad.getvalue())
    assert r.status_code == 422 and r.json()["failure"]["kind"] == "invalid_submission"
    assert srv.upload(alice, b"plain text", filename="notes.txt").status_code == 422
    big = os.urandom(2 * 2**20)
    r = srv.upload(alice, big, filename="big.zip")
    assert r.status_code == 413
    # streamed without a length: refused while it streams, at the limit
    r = httpx.post(srv.url + "/api/v1/submissions", headers={"Authorization": f"Bearer {alice}",
                                                              "Content-Type": "multipart/form-data; boundary=b"},
                   content=iter([b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.zip\"\r\n\r\n"]
                                + [b"x" * 65536] * 40 + [b"\r\n--b--\r\n"]), timeout=60)
    assert r.status_code == 413
    ok = srv.upload(alice, submission_zip())
    assert ok.status_code == 201 and ok.json()["quota"]["used"] == 1  # the refused ones did not count
    assert list((srv.data / "incoming").iterdir()) == []
    assert len(list((srv.data / "submissions" / "alice").iterdir())) == 1
    # harness submit: bad input is exit 2, one line
    (tmp_path / "broken.zip").write_bytes(bad.getvalue())
    out = harness("submit", tmp_path / "broken.zip", "--server", srv.url, "--token", alice)
    assert out.returncode == 2 and "refused (HTTP 422)" in out.stderr and "Traceback" not in out.stderr
    out = harness("submit", tmp_path / "broken.zip", "--server", "http://127.0.0.1:9", "--token", alice)
    assert out.returncode == 3 and "cannot reach" in out.stderr


@pytest.mark.slow
def test_fifty_concurrent_uploads_from_ten_teams_with_a_daily_quota_of_three(server):
    srv = server(daily_quota=3, workers=2)
    tokens = {f"team-{i}": srv.team(f"team-{i}") for i in range(10)}
    srv.start()
    data = submission_zip({"value": 0.5})
    jobs = [(team, token) for team, token in tokens.items() for _ in range(5)]
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(lambda tt: (tt[0], srv.upload(tt[1], data)), jobs))
    by_team = {}
    for team, r in responses:
        by_team.setdefault(team, []).append(r)
    for team, rs in by_team.items():
        codes = sorted(r.status_code for r in rs)
        assert codes == [201, 201, 201, 429, 429], (team, codes)
        assert all(int(r.headers["retry-after"]) > 0 for r in rs if r.status_code == 429)
    accepted = {team: [r.json()["id"] for r in rs if r.status_code == 201] for team, rs in by_team.items()}
    for team, ids in accepted.items():
        srv.wait_until_graded(tokens[team], ids)
    assert len(srv.executions()) == 30 * 2  # every accepted submission graded once, on both splits
    endings = srv.endings()
    assert len(endings) == 60 and set(endings.values()) == {1}


@pytest.mark.slow
def test_sigkill_during_uploads_and_grading_loses_nothing_and_grades_once(server):
    srv = server(workers=2)
    alice = srv.team("alice")
    srv.start()
    ids = [srv.upload(alice, submission_zip({"sleep": 1.5, "value": 0.1 * i})).json()["id"] for i in range(1, 4)]

    def slow_upload():  # a half-sent upload when the server dies
        head = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.zip\"\r\n\r\n"

        def body():
            yield head
            for _ in range(200):
                yield b"y" * 8192
                time.sleep(0.02)
        try:
            httpx.post(srv.url + "/api/v1/submissions", content=body(), timeout=30,
                       headers={"Authorization": f"Bearer {alice}", "Content-Type": "multipart/form-data; boundary=b"})
        except httpx.HTTPError:
            pass

    uploader = threading.Thread(target=slow_upload)
    uploader.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with sqlite3.connect(srv.db) as con:
            running = con.execute("SELECT count(*) FROM jobs WHERE state='running'").fetchone()[0]
        if running and any((srv.data / "incoming").iterdir()):
            break
        time.sleep(0.05)
    assert running, "no job was running when the server was to be killed"
    srv.kill()
    uploader.join()
    srv.start()
    states = srv.wait_until_graded(alice, ids)
    assert set(states.values()) == {"scored"}
    assert list((srv.data / "incoming").iterdir()) == []  # the partial upload is gone
    assert [s["id"] for s in srv.get("/api/v1/submissions", alice).json()["submissions"]] == ids[::-1]
    endings = srv.endings()
    assert len(endings) == 6 and set(endings.values()) == {1}  # every job ended exactly once


def test_grading_on_a_dask_cluster(server, monkeypatch):
    distributed = pytest.importorskip("distributed")
    srv = server()
    alice = srv.team("alice")
    for key in ("PYTHONPATH", "SERVICE_TEST_RECORD"):  # the cluster's worker process imports the job from here
        monkeypatch.setenv(key, srv.env[key])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        srv.start(scheduler=cluster.scheduler_address)
        ids = [srv.upload(alice, submission_zip({"value": v})).json()["id"] for v in (0.4, 0.6)]
        assert set(srv.wait_until_graded(alice, ids).values()) == {"scored"}
        srv.stop()
    assert len(srv.executions()) == 4 and set(srv.endings().values()) == {1}


def test_organizer_regrade_hide_baseline_disqualify(server):
    srv = server()
    alice, bob, org = srv.team("alice"), srv.team("bob"), srv.team("org", organizer=True)
    srv.start()
    a = srv.upload(alice, submission_zip({"value": 0.9})).json()["id"]
    b = srv.upload(bob, submission_zip({"value": 0.3})).json()["id"]
    srv.wait_until_graded(org, [a, b])

    def act(sub, action):
        r = httpx.post(f"{srv.url}/api/v1/admin/submissions/{sub}/{action}", headers={"Authorization": f"Bearer {org}"})
        assert r.status_code == 200, r.text
        return r.json()

    def board():
        return srv.get("/api/v1/leaderboard?split=public").json()

    assert [e["participant"] for e in board()["entries"]] == ["alice", "bob"]
    act(a, "baseline")
    assert [e["participant"] for e in board()["entries"]] == ["bob"]
    assert [x["participant"] for x in board()["baselines"]] == ["alice"]
    act(b, "hide")
    assert board()["entries"] == []
    before = len(srv.executions())
    act(b, "regrade")
    srv.wait_until_graded(org, [b])
    deadline = time.monotonic() + 30
    while len(srv.executions()) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(srv.executions()) == before + 2  # both splits again
    assert srv.get("/api/v1/submissions", bob).json()["submissions"][0]["flags"] == ["hidden"]
    act(b, "disqualify")
    assert "disqualified" in srv.get(f"/api/v1/submissions/{b}", bob).json()["flags"]
    queue = srv.get("/api/v1/admin/queue", org).json()
    assert queue["counts"]["finished"] == 4


def test_a_phase_not_open_refuses_uploads_and_the_ended_challenge_reveals_private(server):
    srv = server(start="2020-01-01T00:00:00Z", end="2020-02-01T00:00:00Z")
    alice = srv.team("alice")
    srv.start()
    r = srv.upload(alice, submission_zip())
    assert r.status_code == 403 and "challenge has ended" in r.json()["detail"]
    assert srv.get("/api/v1/leaderboard?split=private", alice).status_code == 200


def test_infra_failures_do_not_count_against_the_quota(server):
    srv = server(daily_quota=1, max_attempts=1)
    alice = srv.team("alice")
    srv.start()
    first = srv.upload(alice, submission_zip({"infra": True})).json()["id"]
    assert srv.wait_until_graded(alice, [first])[first] == "failed"
    assert srv.get(f"/api/v1/submissions/{first}", alice).json()["failure"]["kind"] == "infra_error"
    second = srv.upload(alice, submission_zip())
    assert second.status_code == 201, second.text  # the infra failure was refunded
    srv.wait_until_graded(alice, [second.json()["id"]])
    assert srv.upload(alice, submission_zip()).status_code == 429


def test_pages_escape_what_participants_wrote(server):
    srv = server()
    alice = srv.team("alice")
    srv.start()
    evil = '<img src=x onerror=alert(1)>.zip'
    sub = srv.upload(alice, submission_zip({"fail": "runtime_error"}), filename=evil).json()["id"]
    srv.wait_until_graded(alice, [sub])
    page = httpx.get(f"{srv.url}/submissions/{sub}", cookies={"harness_token": alice}).text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page
    home = httpx.get(f"{srv.url}/", cookies={"harness_token": alice}).text
    assert "<img src=x" not in home and "&lt;img" in home


# ---- the pages in a real browser ---------------------------------------------------------------

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium; .ci/run installs it)")
def test_browser_sees_a_graded_submission_appear_and_the_organizer_reruns_it(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    srv = server()
    alice, org = srv.team("alice"), srv.team("org", organizer=True)
    srv.start()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(srv.url + "/")
            assert "No ranked submission yet" in page.content()
            sub = srv.upload(alice, submission_zip({"value": 0.7}), filename="<img src=x onerror=alert(1)>.zip").json()["id"]
            # the page reloads itself: the graded entry appears without any action here
            row = page.locator("table.board[data-split=public] tr.entry", has_text=f"alice/{sub}")
            row.wait_for(timeout=30_000)
            assert "0.700" in row.inner_text()

            page.goto(srv.url + "/login")
            page.fill("input[name=token]", org)
            page.click("button[type=submit]")
            page.wait_for_url(srv.url + "/admin")
            admin_row = page.locator(f"#admin-subs tr[data-id='{sub}']")
            assert "scored" in admin_row.inner_text()
            assert "<img src=x onerror=alert(1)>.zip" in admin_row.inner_text()  # shown as text, not run
            before = len(srv.executions())
            admin_row.locator("button[value=regrade]").click()
            page.wait_for_url(srv.url + "/admin")
            deadline = time.monotonic() + 30
            while len(srv.executions()) < before + 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(srv.executions()) == before + 2  # re-run on both splits
            assert dialogs == []
        finally:
            browser.close()
