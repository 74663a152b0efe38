"""The FastAPI app of ``harness serve``: the JSON API under ``/api/v1`` and server-rendered pages.

Contract (docs/service.md): bearer tokens; a team sees only its own submissions (another team's id
is 404, as an unknown one); uploads stream to disk under a size limit (413 while streaming, never
buffered whole); a submission that fails the manifest and archive checks is 422 and does not count;
over quota is 429 with ``Retry-After``. Pages escape everything a participant wrote (Jinja2
autoescape) and take their forms' POSTs only with the session's CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from harness.errors import InputError, SubmissionFailure
from harness.grading.leaderboard import build_board, to_dict
from harness.grading.store import Store
from harness.service import pages
from harness.service.config import ServiceConfig
from harness.service.teams import Caller, Teams
from harness.service.uploads import FLAGS, QuotaExceeded, Uploads, archive_suffix

API = "/api/v1"
COOKIE = "harness_token"
ARCHIVES = (".zip", ".tar.gz", ".tgz", ".tar")
LOG_TAIL = 4000


class _TooLarge(Exception):
    pass


class _FilePart:
    """Streams the multipart field ``file`` of a request body to an open file, counting bytes."""

    def __init__(self, boundary: bytes, out, limit: int):
        self.out, self.limit = out, limit
        self.size = 0
        self.filename: str | None = None
        self._field, self._value, self._headers = b"", b"", {}
        self._in_file = False
        callbacks = {
            "on_part_begin": self._begin, "on_header_field": self._hfield, "on_header_value": self._hvalue,
            "on_header_end": self._hend, "on_headers_finished": self._hdone, "on_part_data": self._data,
            "on_part_end": self._end,
        }
        self.parser = MultipartParser(boundary, callbacks, max_size=limit + (1 << 20))

    def _begin(self):
        self._headers, self._in_file = {}, False

    def _hfield(self, data, start, end):
        self._field += data[start:end]
        self._bound()

    def _hvalue(self, data, start, end):
        self._value += data[start:end]
        self._bound()

    def _bound(self):
        if len(self._field) + len(self._value) > 16384 or len(self._headers) > 32:  # part headers are small
            raise ValueError("multipart part headers too large")

    def _hend(self):
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _hdone(self):
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if options.get(b"name") == b"file" and self.filename is None:
            self._in_file = True
            self.filename = options.get(b"filename", b"").decode("utf-8", "replace") or "submission.zip"

    def _data(self, data, start, end):
        if self._in_file:
            self.size += end - start
            if self.size > self.limit:
                raise _TooLarge()
            self.out.write(data[start:end])

    def _end(self):
        self._in_file = False

    def write(self, chunk: bytes):
        self.parser.write(chunk)


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def create_app(config: ServiceConfig, db, data_dir) -> FastAPI:
    """The app over the store ``db`` with uploads kept under ``data_dir``."""
    app = FastAPI(title=f"harness: {config.challenge.name}", docs_url=None, redoc_url=None, openapi_url=None)
    teams = Teams(db)
    uploads = Uploads(db, data_dir, config)
    uploads.recover()
    limit = config.max_upload_mb * 2**20
    csrf_key = secrets.token_bytes(32)
    app.state.uploads, app.state.teams, app.state.config = uploads, teams, config
    app.state.grader_alive = lambda: True  # set by the server once the grading loop runs
    board_cache: dict = {}
    board_lock = threading.Lock()
    local = threading.local()

    def reader() -> Store:
        """This thread's store connection (opening one per request would take the write lock)."""
        if getattr(local, "store", None) is None:
            local.store = Store(db)
        return local.store

    # ---- who is calling ------------------------------------------------------------------------
    def caller_of(request: Request, *, cookie: bool = False) -> Caller | None:
        token = _bearer(request) or (request.cookies.get(COOKIE) if cookie else None)
        return teams.verify(token)

    def require(request: Request, *, organizer: bool = False) -> Caller:
        # reads also take the pages' cookie (links from a page); writes need the bearer header
        caller = caller_of(request, cookie=request.method == "GET")
        if caller is None:
            raise HTTPException(401, "unknown or revoked token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        if organizer and not caller.organizer:
            raise HTTPException(403, "organizer token required")
        return caller

    def csrf(caller: Caller) -> str:
        return hmac.new(csrf_key, caller.token_id.encode(), hashlib.sha256).hexdigest()

    # ---- what a team may see -------------------------------------------------------------------
    def summary(row, *, detail: bool = False, organizer: bool = False) -> dict:
        jobs = _jobs_of(reader(), row["entry"])
        visible = set(config.challenge.splits if organizer else config.visible_splits())
        states = [j["state"] for j in jobs]
        if not jobs:
            state = "queued"
        elif all(s == "finished" for s in states):
            state = "scored"
        elif all(s in ("finished", "failed") for s in states):
            state = "failed"
        elif any(s in ("running", "finished", "failed") for s in states):
            state = "running"
        else:
            state = "queued"
        failed = next((j for j in jobs if j["state"] == "failed"), None)
        out = {"id": row["id"], "team": row["team"], "filename": row["filename"], "phase": row["phase"],
               "size": row["size"], "submitted_at": _iso(row["created_at"]), "state": state,
               "failure": {"kind": failed["failure_kind"], "message": failed["failure_message"]} if failed else None,
               "flags": [f for f in FLAGS if row[f]]}
        if not detail:
            return out
        out["jobs"] = []
        for j in jobs:
            item = {"split": j["split"], "dataset": _shown_dataset(j["dataset"]), "state": j["state"],
                    "attempts": j["attempts"], "started_at": _iso(j["started_at"]), "finished_at": _iso(j["finished_at"]),
                    "failure": None, "log_tail": None, "timing": None}
            if j["state"] == "failed":
                item["failure"] = {"kind": j["failure_kind"], "message": j["failure_message"],
                                   "detail": (j["failure_detail"] or "")[-LOG_TAIL:] or None}
            if j["log"]:
                item["log_tail"] = j["log"][-LOG_TAIL:]
            if j["state"] == "finished" and j["split"] in visible:
                item["timing"] = json.loads(j["result"]).get("timing")
            out["jobs"].append(item)
        return out

    def results_of(row, *, organizer: bool = False) -> dict:
        from harness.evaluation.results import new_results

        visible = set(config.challenge.splits if organizer else config.visible_splits())
        jobs = [j for j in _jobs_of(reader(), row["entry"]) if j["split"] in visible]
        results = new_results({"name": row["filename"], "format": None, "sha256": None})
        results["status"] = "ok"
        for j in jobs:
            if j["state"] == "finished":
                evaluation = json.loads(j["result"])
                evaluation["split"] = j["split"]
                evaluation.setdefault("dataset", {})["name"] = _shown_dataset(j["dataset"])
                results["evaluations"].append(evaluation)
            elif j["state"] == "failed" and results["failure"] is None:
                results["status"] = "failed"
                results["failure"] = {"kind": j["failure_kind"], "message": j["failure_message"],
                                      "detail": j["failure_detail"]}
        results["pending_splits"] = sorted({j["split"] for j in jobs if j["state"] in ("queued", "running")})
        results["hidden_splits"] = sorted(set(config.challenge.splits) - visible)
        return results

    def check_split(split: str, organizer: bool) -> None:
        if split not in config.challenge.splits:
            raise HTTPException(404, f"no split {split!r} (the challenge has: {', '.join(config.challenge.splits)})")
        if not organizer and split not in config.visible_splits():
            raise HTTPException(403, f"the {split} leaderboard is revealed when the last phase ends")

    def board(split: str, *, organizer: bool = False) -> dict:
        check_split(split, organizer)
        return json.loads(board_json(split, organizer))

    def cached_board(split: str, organizer: bool) -> bytes | None:
        with board_lock:
            cached = board_cache.get((split, organizer))
        return cached[1] if cached and time.monotonic() - cached[0] < 1.0 else None

    def board_json(split: str, organizer: bool) -> bytes:
        """The board as JSON bytes, rebuilt at most once a second: it changes only when a job ends, and
        a popular board is read by many clients at once."""
        cached = cached_board(split, organizer)
        if cached is not None:
            return cached
        flags = uploads.flagged()
        store = reader()
        if store.get_meta("challenge") is None:
            store.set_meta("challenge", config.challenge.to_dict())
        result = to_dict(build_board(store, split=split, hidden=flags["hidden"], baselines=flags["baseline"]))
        body = json.dumps(result).encode()
        with board_lock:
            board_cache[(split, organizer)] = (time.monotonic(), body)
        return body

    def own(upload_id: str, caller: Caller):
        row = uploads.get(upload_id, None if caller.organizer else caller.team)
        if row is None:
            raise HTTPException(404, "no such submission")
        return row

    # ---- API -----------------------------------------------------------------------------------
    @app.get("/healthz")
    def healthz():
        phase = uploads.phase()
        return {"ok": True, "grader": bool(app.state.grader_alive()), "jobs": reader().counts(),
                "phase": phase.name if phase else None}

    @app.post(f"{API}/submissions", status_code=201)
    async def submit(request: Request):
        caller = await run_in_threadpool(require, request)
        phase = uploads.phase()
        if phase is None:
            nxt = config.next_phase()
            raise HTTPException(403, "no phase is open now" + (f"; {nxt.name!r} opens {nxt.start.isoformat()}"
                                                              if nxt else "; the challenge has ended"))
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit + (1 << 20):
            raise HTTPException(413, f"the upload is over the limit of {config.max_upload_mb} MB")
        ctype, options = parse_options_header(request.headers.get("content-type", ""))
        if ctype != b"multipart/form-data" or b"boundary" not in options:
            raise HTTPException(422, "send the submission as multipart/form-data, field 'file'")
        fd, part_path = tempfile.mkstemp(dir=uploads.incoming, suffix=".part")
        part = Path(part_path)
        try:
            with os.fdopen(fd, "wb") as out:
                reader = _FilePart(options[b"boundary"], out, limit)
                try:
                    async for chunk in request.stream():
                        reader.write(chunk)
                except _TooLarge:
                    raise HTTPException(413, f"the upload is over the limit of {config.max_upload_mb} MB") from None
                except Exception as exc:  # noqa: BLE001 - a malformed body
                    if isinstance(exc, HTTPException):
                        raise
                    raise HTTPException(422, "the multipart body could not be read") from None
            if reader.filename is None:
                raise HTTPException(422, "no multipart field 'file'")
            filename = "".join(c for c in reader.filename.replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable())[:200]
            if not filename.lower().endswith(ARCHIVES):
                raise HTTPException(422, "upload a .zip or .tar.gz archive of the submission folder "
                                         "(`harness submit FOLDER` zips it for you)")
            named = part.with_name(part.stem + archive_suffix(filename))
            os.replace(part, named)
            part = named
            failure = await run_in_threadpool(_check_submission, part, config)
            if failure is not None:
                return JSONResponse({"detail": failure.message, "failure": failure.to_dict()}, status_code=422)
            try:
                return await run_in_threadpool(uploads.accept, caller.team, part, filename, reader.size)
            except QuotaExceeded as exc:
                return JSONResponse({"detail": str(exc), "quota": exc.quota}, status_code=429,
                                    headers={"Retry-After": str(exc.retry_after)})
        finally:
            part.unlink(missing_ok=True)

    @app.get(f"{API}/submissions")
    def list_submissions(request: Request):
        caller = require(request)
        return {"submissions": [summary(r) for r in uploads.of_team(None if caller.organizer else caller.team)]}

    @app.get(f"{API}/submissions/{{upload_id}}")
    def get_submission(upload_id: str, request: Request):
        caller = require(request)
        return summary(own(upload_id, caller), detail=True, organizer=caller.organizer)

    @app.get(f"{API}/submissions/{{upload_id}}/results")
    def get_results(upload_id: str, request: Request):
        caller = require(request)
        return results_of(own(upload_id, caller), organizer=caller.organizer)

    @app.get(f"{API}/submissions/{{upload_id}}/report", response_class=HTMLResponse)
    def get_report(upload_id: str, request: Request):
        from harness.evaluation.report import render_report

        caller = require(request)
        results = results_of(own(upload_id, caller), organizer=caller.organizer)
        return HTMLResponse(render_report(results))

    @app.get(f"{API}/leaderboard")
    async def get_leaderboard(request: Request, split: str = "public"):
        token = _bearer(request)
        caller = await run_in_threadpool(teams.verify, token) if token else None
        organizer = bool(caller and caller.organizer)
        check_split(split, organizer)
        body = cached_board(split, organizer) or await run_in_threadpool(board_json, split, organizer)
        return Response(body, media_type="application/json")

    def admin_action(upload_id: str, action: str, value: bool = True):
        row = uploads.get(upload_id)
        if row is None:
            raise HTTPException(404, "no such submission")
        if action == "regrade":
            uploads.register(row, regrade=True)
        else:
            uploads.set_flag(upload_id, {"hide": "hidden", "disqualify": "disqualified", "baseline": "baseline"}[action],
                             value)
        board_cache.clear()
        return summary(uploads.get(upload_id), organizer=True)

    @app.post(f"{API}/admin/submissions/{{upload_id}}/{{action}}")
    def admin(upload_id: str, action: str, request: Request, value: bool = True):
        require(request, organizer=True)
        if action not in ("regrade", "hide", "disqualify", "baseline"):
            raise HTTPException(404, f"no action {action!r} (regrade, hide, disqualify, baseline)")
        return admin_action(upload_id, action, value)

    @app.get(f"{API}/admin/queue")
    def queue(request: Request):
        require(request, organizer=True)
        store = reader()
        jobs = [dict(j) for j in store.jobs() if j["state"] in ("queued", "running")]
        counts = store.counts()
        keep = ("id", "submission", "dataset", "split", "state", "attempts", "owner", "lease_deadline", "created_at",
                "started_at")
        return {"counts": counts, "jobs": [{k: j[k] for k in keep} for j in jobs]}

    # ---- pages ---------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def home(request: Request):
        caller = caller_of(request, cookie=True)
        organizer = bool(caller and caller.organizer)
        boards = [board(s, organizer=organizer) for s in config.challenge.splits
                  if organizer or s in config.visible_splits()]
        phase = uploads.phase()
        return HTMLResponse(pages.render("home.html", config=config, boards=boards, caller=caller,
                                         phase=phase if phase and phase.name != "open" else None,
                                         next_phase=config.next_phase(),
                                         mine=[summary(r) for r in uploads.of_team(caller.team)] if caller else []))

    @app.get("/login", response_class=HTMLResponse)
    def login_page():
        return HTMLResponse(pages.render("login.html", config=config, caller=None, error=None))

    @app.post("/login")
    async def login(request: Request):
        form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
        token = str(form.get("token", ""))
        caller = await run_in_threadpool(teams.verify, token)
        if caller is None:
            return HTMLResponse(pages.render("login.html", config=config, caller=None, error="unknown or revoked token"),
                                status_code=401)
        response = RedirectResponse("/admin" if caller.organizer else "/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=7 * 86400)
        return response

    @app.post("/logout")
    def logout():
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/submissions/{upload_id}", response_class=HTMLResponse)
    def submission_page(upload_id: str, request: Request):
        caller = caller_of(request, cookie=True)
        if caller is None:
            return RedirectResponse("/login", status_code=303)
        row = own(upload_id, caller)
        return HTMLResponse(pages.render("submission.html", config=config, caller=caller,
                                         sub=summary(row, detail=True, organizer=caller.organizer)))

    @app.get("/admin", response_class=HTMLResponse)
    def admin_page(request: Request):
        caller = caller_of(request, cookie=True)
        if caller is None:
            return RedirectResponse("/login", status_code=303)
        if not caller.organizer:
            raise HTTPException(403, "organizer token required")
        counts = reader().counts()
        failures = [dict(j) for j in reader().jobs(state="failed")]
        entry_to_id = {r["entry"]: r["id"] for r in uploads.of_team(None)}
        return HTMLResponse(pages.render("admin.html", config=config, caller=caller, counts=counts,
                                         subs=[summary(r, organizer=True) for r in uploads.of_team(None)],
                                         failures=[{**f, "upload": entry_to_id.get(f["submission"])} for f in failures],
                                         csrf=csrf(caller)))

    @app.post("/admin/submissions/{upload_id}/{action}")
    async def admin_form(upload_id: str, action: str, request: Request):
        caller = await run_in_threadpool(caller_of, request, cookie=True)
        if caller is None or not caller.organizer:
            raise HTTPException(403, "organizer token required")
        form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
        if not hmac.compare_digest(str(form.get("csrf", "")), csrf(caller)):
            raise HTTPException(403, "stale form: reload the page")
        if action not in ("regrade", "hide", "unhide", "disqualify", "baseline"):
            raise HTTPException(404, "no such action")
        value = action != "unhide"
        await run_in_threadpool(admin_action, upload_id, "hide" if action == "unhide" else action, value)
        return RedirectResponse("/admin", status_code=303)

    @app.exception_handler(InputError)
    def input_error(request: Request, exc: InputError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app


def _check_submission(path: Path, config: ServiceConfig) -> SubmissionFailure | None:
    """The manifest and archive checks ``harness grade`` applies (bounded unpacking, no links)."""
    from harness.submission import load

    try:
        with load(path, max_latent_dim=config.challenge.limits.max_latent_dim):
            return None
    except SubmissionFailure as exc:
        return exc
    except (OSError, ValueError, RecursionError) as exc:
        return SubmissionFailure("invalid_submission", f"the submission could not be read: {type(exc).__name__}")


def _jobs_of(store: Store, entry: str) -> list:
    return store.db.execute("SELECT * FROM jobs WHERE submission=? ORDER BY id", (entry,)).fetchall()


def _shown_dataset(name: str) -> str:
    """An organizer's dataset file is shown by its file name only: its folder is not the teams' business."""
    return os.path.basename(name) if os.path.isabs(name) else name


def _iso(t) -> str | None:
    import datetime as dt

    return None if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")
