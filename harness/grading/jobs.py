"""The default job function: one (submission, dataset) evaluation through the sandbox."""

from __future__ import annotations

import dataclasses


def sandbox_limits(limits: dict):
    """The challenge's limits as :class:`harness.sandbox.Limits` (only the fields it has)."""
    try:
        from harness.sandbox import Limits
    except ImportError:
        return None
    if not dataclasses.is_dataclass(Limits):
        return None
    fields = {f.name for f in dataclasses.fields(Limits)}
    aliases = {
        "wall_seconds": ("wall_seconds", "wall_s", "timeout_s", "wall_time_s"),
        "memory_mb": ("memory_mb", "memory_mib", "mem_mb"),
        "threads": ("threads", "num_threads", "intra_op_threads"),
    }
    kwargs = {}
    for ours, names in aliases.items():
        for name in names:
            if name in fields:
                value = limits[ours]
                kwargs[name] = int(value) if name != "wall_seconds" else value
                break
    return Limits(**kwargs)


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
