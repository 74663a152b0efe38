"""Factor-labelled datasets behind one protocol (DESIGN 3.3) and a registry.

>>> from harness import datasets
>>> ds = datasets.load("dummy")
>>> ds.observations([0, 1]).shape
(2, 16, 16, 1)
"""

from __future__ import annotations

from harness.datasets.base import ANY, DEFAULT_SEED, GridDataset, GroundTruthDataset
from harness.datasets.registry import DatasetInfo, describe, load, names, register

__all__ = ["ANY", "DEFAULT_SEED", "DatasetInfo", "GroundTruthDataset", "GridDataset", "describe", "load", "names",
           "register"]
