"""The default job function: one (submission, dataset) evaluation through the sandbox."""

from __future__ import annotations


#: share of a job's time limit the model may use in all (the rest is for rendering and the metrics)
MODEL_SHARE_OF_JOB = 0.75


def sandbox_limits(limits: dict, job_seconds: float | None = None):
    """The challenge's ``[limits]`` as :class:`harness.sandbox.Limits` (other fields keep their defaults).

    With ``job_seconds``, the session's total budget is a share of it: a model slow on every call
    but within the per-call limit then fails as the participant's ``timeout``, before the grader
    would have to stop the whole job on our side.
    """
    from harness.sandbox import Limits

    total = MODEL_SHARE_OF_JOB * float(job_seconds) if job_seconds else None
    return Limits(wall_seconds=float(limits["wall_seconds"]), total_wall_seconds=total,
                  memory_mb=int(limits["memory_mb"]),
                  threads=int(limits["threads"]), max_latent_dim=int(limits.get("max_latent_dim", 256)),
                  scratch_mb=int(limits.get("scratch_mb", 64)))


def evaluate_job(job: dict) -> dict:
    """Score ``job["submission_path"]`` on ``job["dataset"]``: one ``evaluations`` entry (DESIGN 3.5).

    Raises :class:`harness.errors.SubmissionFailure` when the submission fails.
    """
    from harness.evaluation import evaluate_dataset

    return evaluate_dataset(
        job["submission_path"], job["dataset"], preset=job["preset"], metrics=job["metrics"],
        metric_params=job["metric_params"] or None, seed=job["seed"], sandbox=job["backend"],
        device=job["device"], limits=sandbox_limits(job["limits"], job.get("job_seconds")), progress=False,
    )
