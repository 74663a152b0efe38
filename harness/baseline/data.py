"""Training batches from any ``harness.datasets`` dataset, streamed and resumable.

Every batch is a uniform random draw of grid indices (with replacement) from an explicit numpy
Generator, rendered by ``dataset.observations``: procedural datasets stream endlessly, file
datasets read only the rows of each batch (sorted, so an HDF5 file reads them in one pass) and are
never loaded whole. The generator's state is saved in each checkpoint, so a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset


class BatchStream(IterableDataset):
    """Endless uint8 NHWC batches of ``batch_size`` observations drawn with ``numpy.random.Generator(seed)``."""

    def __init__(self, dataset, batch_size: int, seed: int):
        super().__init__()
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def state(self) -> dict:
        """The generator state before the next batch (JSON-serialisable)."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def next_batch(self) -> np.ndarray:
        idx = np.sort(self.rng.integers(0, self.dataset.num_observations, size=self.batch_size))
        return self.dataset.observations(idx, self.rng)

    def __iter__(self):
        while True:
            yield self.next_batch()


def loader(stream: BatchStream) -> DataLoader:
    """A DataLoader over the stream. In-process (no worker processes) so the saved RNG state is exact."""
    return DataLoader(stream, batch_size=None, num_workers=0)


def to_tensor(batch, device) -> torch.Tensor:
    """uint8 NHWC (array or tensor) -> float32 NCHW in [0, 1] on ``device``."""
    x = torch.as_tensor(np.asarray(batch))
    return x.to(device).permute(0, 3, 1, 2).float().div_(255.0)
