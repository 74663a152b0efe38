"""Every single-factor change changes the image, except the symmetries listed in docs/datasets.md."""

import numpy as np

from harness import datasets
from harness.datasets.dsprites import ORIENTATIONS


def _angle_gap(a, b, period):
    """Distance between orientations a and b (indices) modulo the shape's symmetry period, in degrees."""
    d = np.rad2deg(abs(ORIENTATIONS[a] - ORIENTATIONS[b])) % period
    return min(d, period - d)


STEP_DEG = np.rad2deg(ORIENTATIONS[1])  # 9.23 degrees


def test_dsprites_orientation_coincidences_are_documented_symmetries():
    ds = datasets.load("dsprites")
    periods = {0: 90.0, 1: 180.0, 2: 360.0}  # square, ellipse, heart
    for shape, period in periods.items():
        for scale in range(6):
            for px, py in [(15, 15), (16, 17)]:
                f = np.array([[shape, scale, o, px, py] for o in range(40)])
                images = ds.binary(f).reshape(40, -1)
                same = (images[:, None, :] == images[None, :, :]).all(-1)
                assert same[0, 39], "orientation 0 and 2pi are the same angle"
                for a, b in zip(*np.nonzero(np.triu(same, 1))):
                    if (a, b) == (0, 39):
                        continue
                    # only the square's 90 and the ellipse's 180 degree symmetry, up to one step of
                    # orientation at the pixel grid's resolution, may give the same image
                    assert shape != 2, f"heart orientations {a} and {b} coincide"
                    assert _angle_gap(a, b, period) <= STEP_DEG + 1e-6, (shape, scale, a, b)
                if shape == 2 or scale >= 2 and shape == 1:
                    assert same.sum() == 40 + 2  # the diagonal and (0, 39)


def test_dsprites_other_factor_changes_always_change_the_image():
    ds = datasets.load("dsprites")
    f = ds.sample_factors(1000, np.random.default_rng(0))
    base = ds.binary(f)
    for k in (0, 1, 3, 4):
        for shift in range(1, ds.factor_sizes[k]):
            g = f.copy()
            g[:, k] = (g[:, k] + shift) % ds.factor_sizes[k]
            unchanged = (ds.binary(g) == base).all(axis=(1, 2))
            assert not unchanged.any(), (ds.factor_names[k], shift, f[unchanged][:3])
            if k >= 3:  # positions: one shift tested for all samples is enough
                break


def test_shapes3d_every_factor_change_changes_the_image():
    ds = datasets.load("shapes3d")
    rng = np.random.default_rng(1)
    bases = ds.sample_factors(3, rng)
    bases[:, 3:] = [[0, 0, 0], [7, 1, 14], [3, 3, 7]]  # few templates: each costs a ray trace
    for base in bases:
        for k, size in enumerate(ds.factor_sizes):
            f = np.repeat(base[None, :], size, axis=0)
            f[:, k] = np.arange(size)
            images = ds.render(f).reshape(size, -1)
            distinct = len(np.unique(images, axis=0))
            assert distinct == size, (ds.factor_names[k], base)
