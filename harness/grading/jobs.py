"""The default job function: one (submission, dataset) evaluation through the sandbox."""

from __future__ import annotations


def sandbox_limits(limits: dict):
    """The challenge's ``[limits]`` as :class:`harness.sandbox.Limits` (other fields keep their defaults)."""
    from harness.sandbox import Limits

    return Limits(wall_seconds=float(limits["wall_seconds"]), memory_mb=int(limits["memory_mb"]),
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
        device=job["device"], limits=sandbox_limits(job["limits"]), progress=False,
    )
