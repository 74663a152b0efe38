"""``harness submit``: upload a submission to a ``harness serve`` and, with ``--wait``, follow it.

A folder is zipped on the fly (regular files only: a link is refused, as the server would).
Exit codes: 0 scored (or accepted), 1 failed, 2 bad input (refused, over quota, bad token), 3 the
server or our infrastructure.
"""

from __future__ import annotations

import os
import tempfile
import time
import zipfile
from pathlib import Path

from harness.text import safe_text


class SubmitError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def zip_folder(folder: Path, out: Path) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for d in dirnames:
                if os.path.islink(os.path.join(dirpath, d)):
                    raise SubmitError(f"{os.path.join(dirpath, d)} is a link: submissions hold plain files", 2)
            for name in sorted(filenames):
                full = Path(dirpath, name)
                if full.is_symlink() or not full.is_file():
                    raise SubmitError(f"{full} is a link or not a plain file: submissions hold plain files", 2)
                zf.write(full, full.relative_to(folder).as_posix())


def _detail(response) -> str:
    try:
        body = response.json()
        return safe_text(str(body.get("detail", body)), 500)
    except ValueError:
        return safe_text(response.text, 300) or f"HTTP {response.status_code}"


def submit(path, *, server: str, token: str, wait: bool = False, poll: float = 2.0, timeout: float = 3600.0):
    """Upload; yields the lines to print. Raises :class:`SubmitError` with the exit code."""
    import httpx

    path = Path(path)
    base = server.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"}
    with tempfile.TemporaryDirectory(prefix="harness-submit-") as tmp:
        if path.is_dir():
            archive = Path(tmp) / f"{path.resolve().name or 'submission'}.zip"
            zip_folder(path, archive)
        else:
            archive = path
        try:
            with httpx.Client(timeout=httpx.Timeout(60.0, write=600.0)) as client, open(archive, "rb") as fh:
                r = client.post(f"{base}/api/v1/submissions", headers=headers, files={"file": (archive.name, fh)})
        except httpx.HTTPError as exc:
            raise SubmitError(f"cannot reach {base}: {type(exc).__name__}: {exc}", 3) from None
    if r.status_code == 201:
        body = r.json()
        quota = body.get("quota") or {}
        limit = quota.get("limit")
        yield (f"submitted {body['id']} (phase {safe_text(str(body.get('phase')), 80)}; "
               f"{quota.get('used')} of {limit if limit is not None else 'unlimited'} today)")
    elif r.status_code in (401, 403, 413, 422, 429):
        extra = f" (retry after {r.headers.get('retry-after')} s)" if r.status_code == 429 else ""
        raise SubmitError(f"refused (HTTP {r.status_code}): {_detail(r)}{extra}", 2)
    else:
        raise SubmitError(f"the server failed (HTTP {r.status_code}): {_detail(r)}", 3)
    if not wait:
        return
    deadline = time.monotonic() + timeout
    state = None
    with httpx.Client(timeout=30.0) as client:
        while time.monotonic() < deadline:
            try:
                s = client.get(f"{base}/api/v1/submissions/{body['id']}", headers=headers)
            except httpx.HTTPError as exc:
                raise SubmitError(f"lost {base}: {type(exc).__name__}", 3) from None
            if s.status_code != 200:
                raise SubmitError(f"the server failed (HTTP {s.status_code}): {_detail(s)}", 3)
            sub = s.json()
            if sub["state"] != state:
                state = sub["state"]
                yield f"{body['id']}: {state}"
            if state == "scored":
                return
            if state == "failed":
                f = sub.get("failure") or {}
                message = f"{body['id']} failed: {f.get('kind')}: {safe_text(str(f.get('message')), 500)}"
                raise SubmitError(message, 3 if f.get("kind") == "infra_error" else 1)
            time.sleep(poll)
    raise SubmitError(f"{body['id']}: no verdict within {timeout:.0f} s", 3)
