"""Factor-traversal montage of a dataset: one row per factor, the other factors held fixed."""

from __future__ import annotations

import os

import numpy as np

from harness.datasets.base import ANY
from harness.errors import InputError


def traversal_indices(dataset, *, max_columns: int = 10, base=None, rng=None):
    """Indices of a traversal per factor: ``[(factor_name, values, indices), ...]``.

    ``base`` is the factor combination held fixed (default: the dataset's ``montage_base`` if it
    has one, else the middle value of each factor; on
    a subset dataset, the existing row nearest to it is used and only existing combinations are
    shown). Each row shows up to ``max_columns`` values spread evenly from first to last.
    """
    sizes = np.asarray(dataset.factor_sizes)
    if base is None:
        base = getattr(dataset, "montage_base", None)
    if base is None:
        base = sizes // 2
        if not dataset.full_grid:
            base = dataset.index_to_factors(dataset.index_of_factors(np.full((1, len(sizes)), ANY), rng))[0]
    base = np.asarray(base, dtype=np.int64)
    rows = []
    for k, (name, size) in enumerate(zip(dataset.factor_names, sizes)):
        values = np.unique(np.round(np.linspace(0, size - 1, min(size, max_columns))).astype(np.int64))
        factors = np.repeat(base[None, :], len(values), axis=0)
        factors[:, k] = values
        if dataset.full_grid:
            indices = dataset.factors_to_index(factors)
        else:  # keep only combinations present in the subset
            found = [(v, dataset.find_rows(f)) for v, f in zip(values, factors)]
            values = np.array([v for v, r in found if len(r)], dtype=np.int64)
            indices = np.array([r[0] for v, r in found if len(r)], dtype=np.int64)
        rows.append((name, values, indices))
    return rows


def save_montage(dataset, out, *, max_columns: int = 10, seed: int = 0, base=None) -> str:
    """Render a traversal montage of ``dataset`` to the PNG file ``out`` and return its path.

    Stochastic datasets draw their nuisance from ``np.random.default_rng(seed)``, the same draw
    for every cell, so that only the factor changes along a row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = os.fspath(out)
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise InputError(f"cannot write montage to {out}: folder {parent} does not exist")
    rows = traversal_indices(dataset, max_columns=max_columns, base=base, rng=np.random.default_rng(seed))
    ncols = max(len(values) for _, values, _ in rows)
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(1.1 * ncols + 1.6, 1.25 * len(rows) + 0.6), squeeze=False
    )
    for r, (name, values, indices) in enumerate(rows):
        # every cell gets the same nuisance draw (a fresh generator per image), so only the factor varies
        images = [dataset.observations([i], np.random.default_rng(seed))[0] for i in indices]
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(values):
                ax.axis("off")
                continue
            img = images[c]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(str(values[c]), fontsize=7, pad=2)
            if c == 0:
                size = dataset.factor_sizes[r]
                ax.set_ylabel(f"{name}\n({size})", fontsize=8, rotation=0, ha="right", va="center")
    fixed = f" (nuisance fixed: seed {seed})" if dataset.stochastic else ""
    fig.suptitle(f"{dataset.name}: one factor varies per row, the others fixed{fixed}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    try:
        fig.savefig(out, dpi=90)
    except OSError as exc:
        raise InputError(f"cannot write montage to {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return out
