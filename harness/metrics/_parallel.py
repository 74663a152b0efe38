"""Independent per-factor (or per-pair) fits spread over the cores with joblib."""

from __future__ import annotations

import os

from joblib import Parallel, delayed


def resolve_n_jobs(n_jobs) -> int:
    if n_jobs is None:
        return 1
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return max(1, int(n_jobs))


def parallel_map(function, items, n_jobs) -> list:
    """``[function(*item) for item in items]``, over ``n_jobs`` worker threads when > 1.

    Threads suffice: sklearn's liblinear/lbfgs and LightGBM release the GIL in their solvers.
    """
    items = list(items)
    workers = min(resolve_n_jobs(n_jobs), len(items))
    if workers <= 1:
        return [function(*item) for item in items]
    return Parallel(n_jobs=workers, prefer="threads")(delayed(function)(*item) for item in items)
