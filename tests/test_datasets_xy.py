"""xyobject, xysquares (after disent) and dsprites_noshape (after disentanglement_lib)."""

import numpy as np
import pytest

from harness import datasets
from harness.datasets.xy import RAINBOW_4
from harness.errors import InputError

NEW = {
    # name: (factor names, factor sizes, observation shape)
    "xyobject": (["x", "y", "scale", "color"], [25, 25, 5, 24], (64, 64, 3)),
    "xysquares": (["x_R", "y_R", "x_G", "y_G", "x_B", "y_B"], [8] * 6, (64, 64, 3)),
    "dsprites_noshape": (["scale", "orientation", "posX", "posY"], [6, 40, 32, 32], (64, 64, 1)),
}


@pytest.fixture(scope="module", params=sorted(NEW))
def dataset(request):
    return datasets.load(request.param)


def test_factor_structure(dataset):
    names, sizes, shape = NEW[dataset.name]
    assert dataset.factor_names == names and dataset.factor_sizes == sizes
    assert dataset.observation_shape == shape and dataset.num_observations == int(np.prod(sizes))
    assert dataset.stochastic == (dataset.name == "dsprites_noshape")
    x = dataset.observations([0, dataset.num_observations - 1], np.random.default_rng(0))
    assert x.dtype == np.uint8 and x.shape == (2, *shape)


def test_every_factor_changes_the_image(dataset):
    """On random base points, changing any one factor to another value changes the image (the
    nuisance held fixed by giving both renders the same seed)."""
    rng = np.random.default_rng(1)
    sizes = np.array(dataset.factor_sizes)
    base = dataset.sample_factors(60, rng)
    before = dataset.observations(dataset.factors_to_index(base), np.random.default_rng(9))
    for k, size in enumerate(sizes):
        changed = base.copy()
        if dataset.name == "dsprites_noshape" and dataset.factor_names[k] == "orientation":
            # 46 degrees on: never 0 <-> 2pi, nor the square's 90 / the ellipse's 180 degrees
            changed[:, k] = (base[:, k] + 5) % 39
        else:
            changed[:, k] = (base[:, k] + rng.integers(1, size, size=len(base))) % size
        after = dataset.observations(dataset.factors_to_index(changed), np.random.default_rng(9))
        differs = (after != before).reshape(len(base), -1).any(axis=1)
        assert differs.all(), f"{dataset.factor_names[k]} left {np.sum(~differs)} images unchanged"


def test_deterministic_across_batch_compositions():
    rng = np.random.default_rng(4)
    for name in ["xyobject", "xysquares"]:
        ds = datasets.load(name)
        idx = rng.integers(0, ds.num_observations, size=41)
        whole = ds.observations(idx)
        singles = np.concatenate([ds.observations(idx[i : i + 1]) for i in range(len(idx))])
        np.testing.assert_array_equal(whole, singles)
        order = rng.permutation(len(idx))
        np.testing.assert_array_equal(ds.observations(idx[order]), whole[order])
        np.testing.assert_array_equal(ds.observations(idx, np.random.default_rng(1)), whole)  # rng ignored


def test_xyobject_square_geometry_and_colours():
    ds = datasets.load("xyobject")
    assert len(np.unique(RAINBOW_4, axis=0)) == 24
    assert RAINBOW_4[[0, 6, 12, 18]].tolist() == [[63, 0, 0], [127, 0, 0], [191, 0, 0], [255, 0, 0]]
    rng = np.random.default_rng(2)
    factors = ds.sample_factors(200, rng)
    images = ds.observations(ds.factors_to_index(factors))
    for (x, y, scale, color), img in zip(factors, images):
        side = 7 + 2 * scale
        lit = np.argwhere(img.any(axis=-1))
        top, left = 2 * y + (15 - side) // 2, 2 * x + (15 - side) // 2
        assert len(lit) == side * side
        assert lit.min(axis=0).tolist() == [top, left] and lit.max(axis=0).tolist() == [top + side - 1, left + side - 1]
        assert (img[top, left] == RAINBOW_4[color]).all()
        assert 2 * top + side - 1 == 4 * y + 14  # every scale shares the cell's centre


def test_xysquares_one_square_per_channel():
    ds = datasets.load("xysquares")
    factors = ds.sample_factors(200, np.random.default_rng(5))
    images = ds.observations(ds.factors_to_index(factors))
    assert set(np.unique(images)) <= {0, 255}
    for f, img in zip(factors, images):
        for channel in range(3):
            x, y = f[2 * channel], f[2 * channel + 1]
            lit = np.argwhere(img[..., channel])
            assert len(lit) == 64 and lit.min(axis=0).tolist() == [8 * y, 8 * x]


def test_xysquares_pixel_distance_is_blind_to_how_far_a_square_moves():
    """The adversarial property: moving one square by one cell or across the canvas costs the same
    pixel distance (2 x 64 pixels x 255), since positions never overlap; with overlap it orders."""
    rng = np.random.default_rng(6)
    for spacing, constant in [(8, True), (2, False)]:
        ds = datasets.load("xysquares", grid_spacing=spacing)
        base = ds.sample_factors(300, rng)
        moved = base.copy()
        k = rng.integers(0, 6, size=len(base))
        step = rng.integers(1, ds.factor_sizes[0], size=len(base))
        moved[np.arange(len(base)), k] = (base[np.arange(len(base)), k] + step) % ds.factor_sizes[0]
        a = ds.observations(ds.factors_to_index(base)).astype(np.int64)
        b = ds.observations(ds.factors_to_index(moved)).astype(np.int64)
        l1 = np.abs(a - b).reshape(len(base), -1).sum(axis=1)
        if constant:
            assert (l1 == 2 * 64 * 255).all()
        else:  # a one-cell move (2 px) overlaps most of the square: smaller distance than a far move
            near = np.abs(base[np.arange(len(base)), k] - moved[np.arange(len(base)), k]) == 1
            assert l1[near].max() < l1[~near].max() == 2 * 64 * 255


def test_xysquares_options():
    ds = datasets.load("xysquares", square_size=4, grid_spacing=4)
    assert ds.factor_sizes == [16] * 6 and ds.num_observations == 16**6
    assert datasets.load("xysquares", grid_spacing=3).factor_sizes == [19] * 6
    img = datasets.load("xysquares", square_size=10).observations([0])[0]
    assert np.argwhere(img[..., 0]).min(axis=0).tolist() == [2, 2]  # 6 positions x 10 px, centred
    for bad in [{"grid_spacing": 0}, {"grid_spacing": 2.5}, {"square_size": 65}, {"square_size": True}]:
        with pytest.raises(InputError, match="xysquares: .* must be a whole number"):
            datasets.load("xysquares", **bad)


# ---- dsprites_noshape: the shape is a per-sample nuisance ------------------------------------------

def test_noshape_randomness_contract():
    ds = datasets.load("dsprites_noshape")
    idx = np.random.default_rng(7).integers(0, ds.num_observations, size=53)
    whole = ds.observations(idx, np.random.default_rng(11))
    np.testing.assert_array_equal(whole, ds.observations(idx, np.random.default_rng(11)))
    rng = np.random.default_rng(11)
    chunks = np.concatenate([ds.observations(idx[a:b], rng) for a, b in [(0, 1), (1, 30), (30, 53)]])
    np.testing.assert_array_equal(whole, chunks)
    np.testing.assert_array_equal(ds.observations(idx), ds.observations(idx))  # rng=None: default_rng(0)
    assert not np.array_equal(whole, ds.observations(idx, np.random.default_rng(12)))
    # one raw word per sample: the generator has advanced by exactly len(idx) outputs
    probe = np.random.default_rng(11)
    probe.integers(0, 2**64, size=len(idx), dtype=np.uint64)
    assert rng.integers(0, 2**64, dtype=np.uint64) == probe.integers(0, 2**64, dtype=np.uint64)


def test_noshape_shape_is_uniform_over_three_and_the_rest_is_dsprites():
    noshape, full = datasets.load("dsprites_noshape"), datasets.load("dsprites")
    base = np.array([3, 7, 10, 20])  # scale 3, orientation 7: the three shapes differ
    n = 3000
    images = noshape.observations(np.full(n, noshape.factors_to_index(base)), np.random.default_rng(0))
    candidates = full.observations(full.factors_to_index([[s, *base] for s in range(3)]))
    assert len({c.tobytes() for c in candidates}) == 3
    match = (images[:, None] == candidates[None]).reshape(n, 3, -1).all(axis=-1)
    assert (match.sum(axis=1) == 1).all()  # every sample is exactly one dSprites shape
    counts = np.bincount(match.argmax(axis=1), minlength=3)
    assert (np.abs(counts - n / 3) < 100).all(), counts  # sd of a count is 26
    # across random grid points as well: each image is dSprites at the same factors, some shape
    idx = np.random.default_rng(8).integers(0, noshape.num_observations, size=300)
    got = noshape.observations(idx, np.random.default_rng(3))
    factors = noshape.index_to_factors(idx)
    per_shape = [full.observations(full.factors_to_index(np.column_stack([np.full(300, s), factors])))
                 for s in range(3)]
    hit = np.stack([(got == p).reshape(300, -1).all(axis=1) for p in per_shape], axis=1)
    assert hit.any(axis=1).all() and (hit.argmax(axis=1) == 0).mean() < 0.5
