"""Input checks shared by the metric functions: bad arrays raise ValueError naming the argument."""

from __future__ import annotations

import numpy as np


def check_codes(codes, name: str = "codes", *, min_samples: int = 2, min_dims: int = 1) -> np.ndarray:
    """Return ``codes`` as float64 (N, D); raise ValueError on wrong shape, dtype, NaN/inf or size."""
    try:
        array = np.asarray(codes)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name}: expected a numeric array of shape (num_samples, num_dims): {exc}") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{name}: expected a numeric array, got dtype {array.dtype}")
    if np.iscomplexobj(array):
        raise ValueError(f"{name}: expected real numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-d array (num_samples, num_dims), got shape {array.shape}")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or inf values")
    if array.shape[0] < min_samples:
        raise ValueError(f"{name}: expected at least {min_samples} samples, got {array.shape[0]}")
    if array.shape[1] < min_dims:
        raise ValueError(f"{name}: expected at least {min_dims} code dimensions, got {array.shape[1]}")
    return array


def check_factors(factors, name: str = "factors", *, num_samples: int | None = None,
                  samples_name: str = "codes", min_factors: int = 1) -> np.ndarray:
    """Return ``factors`` as int64 (N, K); raise ValueError on a non-integer dtype or a shape mismatch."""
    try:
        array = np.asarray(factors)
    except Exception as exc:
        raise ValueError(f"{name}: expected an integer array of shape (num_samples, num_factors): {exc}") from None
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-d array (num_samples, num_factors), got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise ValueError(f"{name}: expected integer factor values (class indices), got non-integer floats")
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"{name}: expected an integer array, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if num_samples is not None and array.shape[0] != num_samples:
        raise ValueError(f"{name}: has {array.shape[0]} samples but {samples_name} has {num_samples}")
    if array.shape[1] < min_factors:
        raise ValueError(f"{name}: expected at least {min_factors} factors, got {array.shape[1]}")
    return array


def check_pair(codes_train, factors_train, codes_test, factors_test, *, min_dims: int = 1,
               min_samples: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate a train/test split of codes and factors, with matching widths."""
    codes_train = check_codes(codes_train, "codes_train", min_samples=min_samples, min_dims=min_dims)
    factors_train = check_factors(factors_train, "factors_train", num_samples=len(codes_train),
                                  samples_name="codes_train")
    codes_test = check_codes(codes_test, "codes_test", min_samples=1, min_dims=min_dims)
    factors_test = check_factors(factors_test, "factors_test", num_samples=len(codes_test),
                                 samples_name="codes_test")
    if codes_test.shape[1] != codes_train.shape[1]:
        raise ValueError(f"codes_test: has {codes_test.shape[1]} dims but codes_train has {codes_train.shape[1]}")
    if factors_test.shape[1] != factors_train.shape[1]:
        raise ValueError(f"factors_test: has {factors_test.shape[1]} factors but factors_train has "
                         f"{factors_train.shape[1]}")
    return codes_train, factors_train, codes_test, factors_test


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_fraction(value, name: str, *, low: float = 0.0, high: float = 1.0) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number in [{low}, {high}], got {value!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name}: expected a number in [{low}, {high}], got {value!r}")
    return value
