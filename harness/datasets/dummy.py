"""A tiny deterministic dataset for tests: each factor lights its own block of pixels."""

from __future__ import annotations

import numpy as np

from harness.datasets.base import GridDataset


class Dummy(GridDataset):
    """Three factors (sizes 4, 5, 6) on 16x16x1 images: factor k sets the brightness of band k."""

    name = "dummy"
    factor_names = ["a", "b", "c"]
    factor_sizes = [4, 5, 6]
    observation_shape = (16, 16, 1)

    def render(self, factors: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        factors = np.asarray(factors)
        images = np.zeros((len(factors), 16, 16, 1), dtype=np.uint8)
        for k, size in enumerate(self.factor_sizes):
            level = (40 + 215 * factors[:, k] / (size - 1)).astype(np.uint8)
            images[:, 5 * k : 5 * k + 5, :, 0] = level[:, None, None]
        return images
