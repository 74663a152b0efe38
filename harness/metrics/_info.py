"""Discretization and mutual information from joint histograms (nats), vectorized over pairs.

Joint counts of every (code dim, factor) pair come from one ``np.bincount`` over combined cell
indices, so a (D, K) mutual-information matrix costs a single pass over the data; bootstrap
replicates reuse the same cell indices through a sparse matrix product.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

# Above this many cells the joint table is built one factor at a time to bound memory.
_MAX_CELLS = 20_000_000


def histogram_discretize(values: np.ndarray, num_bins: int) -> np.ndarray:
    """Per column, ``num_bins`` equal-width bins over that column's own min..max; labels 0..num_bins-1.

    Same bins as disentanglement_lib's histogram discretizer (numpy's ``histogram`` edges, a
    constant column lands in one bin).
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.empty(values.shape, dtype=np.int64)
    for j in range(values.shape[1]):
        edges = np.histogram_bin_edges(values[:, j], bins=num_bins)
        out[:, j] = np.digitize(values[:, j], edges[:-1]) - 1
    return out


def encode_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map each column to 0..cardinality-1; return (codes, cardinalities)."""
    labels = np.asarray(labels)
    out = np.empty(labels.shape, dtype=np.int64)
    cards = np.empty(labels.shape[1], dtype=np.int64)
    for j in range(labels.shape[1]):
        uniques, inverse = np.unique(labels[:, j], return_inverse=True)
        out[:, j] = inverse.reshape(-1)
        cards[j] = len(uniques)
    return out, cards


def _cell_index(a: np.ndarray, size_a: int, b: np.ndarray, size_b: int) -> np.ndarray:
    """(N, Da*Db) cell ids of each sample in the (Da, Db, size_a, size_b) joint table."""
    n, da = a.shape
    db = b.shape[1]
    pair = (np.arange(da)[:, None] * db + np.arange(db)[None, :]).reshape(-1)  # (P,)
    cells = a[:, :, None] * size_b + b[:, None, :]  # (N, Da, Db)
    return pair[None, :] * (size_a * size_b) + cells.reshape(n, -1)


def joint_counts(a: np.ndarray, size_a: int, b: np.ndarray, size_b: int,
                 weights: np.ndarray | None = None) -> np.ndarray:
    """Joint histograms of every column pair: (Da, Db, size_a, size_b) for labels in 0..size-1.

    ``weights`` (R, N), e.g. bootstrap multiplicities, gives (R, Da, Db, size_a, size_b).
    """
    da, db = a.shape[1], b.shape[1]
    shape = (da, db, size_a, size_b)
    cells_total = da * db * size_a * size_b
    if cells_total * (1 if weights is None else len(weights)) > _MAX_CELLS and db > 1:
        parts = [joint_counts(a, size_a, b[:, k:k + 1], size_b, weights) for k in range(db)]
        return np.concatenate(parts, axis=-3)
    idx = _cell_index(a, size_a, b, size_b)
    if weights is None:
        return np.bincount(idx.reshape(-1), minlength=cells_total).reshape(shape).astype(np.float64)
    n, p = idx.shape
    rows = np.repeat(np.arange(n), p)
    onehot = scipy.sparse.csr_matrix((np.ones(n * p), (rows, idx.reshape(-1))), shape=(n, cells_total))
    counts = (onehot.T @ np.asarray(weights, dtype=np.float64).T).T  # (R, cells)
    return np.asarray(counts).reshape((len(weights),) + shape)


def code_factor_counts(codes: np.ndarray, factors: np.ndarray, num_bins: int,
                       weights: np.ndarray | None = None) -> np.ndarray:
    """Joint histograms of histogram-discretized codes and factors, (1 [+ R], D, K, num_bins, B).

    Row 0 is the sample itself; with ``weights`` (R, N), bootstrap multiplicities, the R
    replicates follow. B is the largest factor cardinality.
    """
    binned = histogram_discretize(codes, num_bins)
    labels, cards = encode_labels(factors)
    size = int(cards.max())
    counts = joint_counts(binned, num_bins, labels, size)[None]
    if weights is not None:
        counts = np.concatenate([counts, joint_counts(binned, num_bins, labels, size, weights)])
    return counts


def _xlogx(counts: np.ndarray) -> np.ndarray:
    positive = counts > 0
    return np.where(positive, counts * np.log(np.where(positive, counts, 1.0)), 0.0)


def entropy_from_counts(counts: np.ndarray, axis=-1) -> np.ndarray:
    """Entropy (nats) of histograms along ``axis``."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=axis)
    s = _xlogx(counts).sum(axis=axis)
    safe_total = np.where(total > 0, total, 1.0)
    return np.where(total > 0, np.log(safe_total) - s / safe_total, 0.0)


def mutual_info_from_counts(counts: np.ndarray) -> np.ndarray:
    """Mutual information (nats) from joint tables whose last two axes are the two variables."""
    counts = np.asarray(counts, dtype=np.float64)
    h_a = entropy_from_counts(counts.sum(axis=-1))
    h_b = entropy_from_counts(counts.sum(axis=-2))
    h_ab = entropy_from_counts(counts.reshape(counts.shape[:-2] + (-1,)))
    return np.maximum(h_a + h_b - h_ab, 0.0)


def joint_entropy_from_counts(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return entropy_from_counts(counts.reshape(counts.shape[:-2] + (-1,)))


def mutual_info_matrix(a: np.ndarray, size_a: int, b: np.ndarray, size_b: int,
                       weights: np.ndarray | None = None) -> np.ndarray:
    """(Da, Db) mutual information between label columns (or (R, Da, Db) with weights)."""
    return mutual_info_from_counts(joint_counts(a, size_a, b, size_b, weights))


def label_entropy(labels: np.ndarray, size: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Entropy (nats) of each label column: (K,) or (R, K) with weights."""
    labels = np.asarray(labels)
    n, k = labels.shape
    idx = (np.arange(k)[None, :] * size + labels).reshape(-1)
    if weights is None:
        counts = np.bincount(idx, minlength=k * size).reshape(k, size)
    else:
        rows = np.repeat(np.arange(n), k)
        onehot = scipy.sparse.csr_matrix((np.ones(n * k), (rows, idx)), shape=(n, k * size))
        counts = np.asarray((onehot.T @ np.asarray(weights, dtype=np.float64).T).T).reshape(len(weights), k, size)
    return entropy_from_counts(counts)
