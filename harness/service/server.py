"""``harness serve``: the app under uvicorn and the grading loop beside it, in one process.

The loop is the batch grader's (:func:`harness.grading.grader.grade_forever`): the same store,
leases and exactly-once ends, so a server killed at any moment and started again re-queues what it
was running and grades every accepted submission once.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from pathlib import Path

from harness.grading.grader import grade_forever
from harness.service.app import create_app
from harness.service.config import load_service_config


class GradingThread(threading.Thread):
    def __init__(self, config, db, *, workers: int, scheduler: str | None, job_fn: str | None = None):
        super().__init__(name="harness-grader", daemon=True)
        self.config, self.db = config, db
        self.workers, self.scheduler, self.job_fn = workers, scheduler, job_fn
        self.stop = threading.Event()
        self.beat = time.monotonic()

    def run(self):
        while not self.stop.is_set():
            try:
                grade_forever(self.config.challenge, self.db, stop=self.stop, workers=self.workers,
                              scheduler=self.scheduler, job_fn=self.job_fn, echo=self._echo)
            except Exception:  # noqa: BLE001 - keep serving; the jobs stay in the store
                print("harness serve: the grading loop failed, restarting in 5 s:\n" + traceback.format_exc(),
                      file=sys.stderr, flush=True)
                self.stop.wait(5)

    def _echo(self, line: str):
        self.beat = time.monotonic()
        print(f"grader: {line}", file=sys.stderr, flush=True)


def serve(challenge_path, db, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          scheduler: str | None = None, data_dir=None, job_fn: str | None = None) -> None:
    import uvicorn

    config = load_service_config(challenge_path)
    db = Path(db).resolve()
    data_dir = Path(data_dir).resolve() if data_dir else db.with_name(db.name + ".data")
    app = create_app(config, db, data_dir)
    grader = GradingThread(config, db, workers=workers, scheduler=scheduler, job_fn=job_fn)
    app.state.grader_alive = grader.is_alive
    grader.start()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        grader.stop.set()
        grader.join(timeout=30)
