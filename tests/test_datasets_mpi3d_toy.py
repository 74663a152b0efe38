"""Procedural mpi3d_toy: factor structure, determinism, every factor's visible effect, layer bounds."""

import hashlib
import itertools

import numpy as np
import pytest

from harness import datasets
from harness.datasets import GroundTruthDataset, mpi3d
from harness.datasets.mpi3d import MPI3DToy

SIZES = [6, 6, 2, 3, 3, 40, 40]
# A visible change: at least CHANGED_PIXELS pixels move by at least LEVELS grey levels in some
# channel. 8 levels is 8x the rounding step of the integer blend, 10 pixels more than a 3x3 block,
# so a rod edge re-antialiased by a sub-pixel shift does not count. The weakest changes measured
# over 80 random base points (all pairs; joint values at least 10 apart) were 24 pixels (a small
# cone vs a pyramid), 25 (blue vs brown) and, over every shape, size and camera at the singular
# pose (rod upright), 24 for vertical_axis.
LEVELS, CHANGED_PIXELS = 8, 10


@pytest.fixture(scope="module")
def ds():
    return datasets.load("mpi3d_toy")


def _traverse(ds, base, k):
    f = np.repeat(np.asarray(base)[None], ds.factor_sizes[k], 0)
    f[:, k] = np.arange(ds.factor_sizes[k])
    return ds.render(f).astype(np.int16)


def _object_centroids(images):
    """(y, x) centroid of the green object's pixels: green beats red and blue by 30, which no arm,
    table or purple ring pixel does."""
    mask = (images[..., 1] - np.maximum(images[..., 0], images[..., 2]) > 30).astype(float)
    assert (mask.sum((1, 2)) >= 10).all(), "the object is always in view"
    yy, xx = np.mgrid[:64, :64]
    return np.stack([(mask * yy).sum((1, 2)), (mask * xx).sum((1, 2))], -1) / mask.sum((1, 2))[:, None]


def test_factor_structure(ds):
    assert isinstance(ds, MPI3DToy) and isinstance(ds, GroundTruthDataset)
    assert "mpi3d_toy" in datasets.names()
    assert ds.factor_names == ["object_color", "object_shape", "object_size", "camera_height", "background_color",
                               "horizontal_axis", "vertical_axis"]
    assert ds.factor_sizes == SIZES and ds.num_observations == 1_036_800
    assert ds.observation_shape == (64, 64, 3) and not ds.stochastic and ds.full_grid
    values = ds.factor_values
    assert values["object_color"] == ["white", "green", "red", "blue", "brown", "olive"]
    assert values["object_shape"] == ["cone", "cube", "cylinder", "hexagonal", "pyramid", "sphere"]
    assert values["camera_height"] == ["top", "center", "bottom"]
    assert values["background_color"] == ["purple", "sea green", "salmon"]
    for name, names in values.items():
        assert len(names) == SIZES[ds.factor_names.index(name)]


def test_index_round_trip(ds):
    rng = np.random.default_rng(3)
    idx = rng.integers(0, ds.num_observations, size=1000)
    np.testing.assert_array_equal(ds.factors_to_index(ds.index_to_factors(idx)), idx)
    # the public files' order (rr-learning/disentanglement_dataset README): C order, vertical_axis fastest
    f = [1, 2, 1, 2, 1, 3, 4]
    assert ds.factors_to_index([f])[0] == 1 * 172800 + 2 * 28800 + 1 * 14400 + 2 * 4800 + 1 * 1600 + 3 * 40 + 4
    np.testing.assert_array_equal(ds.index_to_factors([ds.num_observations - 1])[0], np.array(SIZES) - 1)


def test_uint8_and_same_bytes_in_any_batch(ds):
    rng = np.random.default_rng(0)
    idx = rng.integers(0, ds.num_observations, size=400)
    images = ds.observations(idx)
    assert images.dtype == np.uint8 and images.shape == (400, 64, 64, 3)
    np.testing.assert_array_equal(ds.observations(idx), images)
    perm = rng.permutation(len(idx))
    np.testing.assert_array_equal(ds.observations(idx[perm]), images[perm])
    singles = np.concatenate([ds.observations(idx[i : i + 1]) for i in range(0, 400, 37)])
    np.testing.assert_array_equal(singles, images[::37])
    # across the composition's batch boundary, mixed with other images
    big = np.concatenate([rng.integers(0, ds.num_observations, size=MPI3DToy._BATCH - 100), idx])
    np.testing.assert_array_equal(ds.observations(big)[-400:], images)
    # a fresh instance that fills its caches in another order (bottom camera and spheres first)
    fresh = MPI3DToy()
    fresh.render(np.array([[0, 5, 1, 2, 0, 0, 0], [3, 5, 0, 2, 2, 39, 39]]))
    np.testing.assert_array_equal(fresh.observations(idx[::-1]), images[::-1])


def test_pinned_bytes(ds):
    """The same bytes on every machine: the templates use only IEEE-exact elementwise float math
    and libm for the angle tables, rounded to uint8; images are integer blends. A machine that
    fails this renders differently (digest from an AVX-512 x86-64 machine, numpy 2.4)."""
    images = ds.observations(np.arange(0, ds.num_observations, 10_007))
    assert hashlib.sha256(images.tobytes()).hexdigest()[:16] == "53ff05ec0af07e84"


@pytest.mark.parametrize("k", range(7))
def test_every_factor_changes_the_image(ds, k):
    rng = np.random.default_rng(10 + k)
    bases = ds.sample_factors(10, rng)
    if k == 6:
        bases[0, 5] = 22  # the singular pose: the rod 1.5 degrees from vertical
    for base in bases:
        images = _traverse(ds, base, k)
        assert len({im.tobytes() for im in images}) == len(images), "two values of one factor, one image"
        for i, j in itertools.combinations(range(len(images)), 2):
            if len(images) == 40 and j - i < 10:
                continue  # neighbouring joint angles (4.6 and 4.4 degrees apart) may differ by little
            changed = (np.abs(images[i] - images[j]).max(-1) >= LEVELS).sum()
            assert changed >= CHANGED_PIXELS, (ds.factor_names[k], tuple(base), i, j, changed)


@pytest.mark.parametrize("k", [5, 6])
def test_joints_move_the_object(ds, k):
    """Over each joint's range the object travels: >= 3 px everywhere (4.1 px measured at the
    singular pose for vertical_axis), and across the frame for horizontal_axis."""
    rng = np.random.default_rng(20 + k)
    travel = []
    for base in ds.sample_factors(12, rng):
        base[0], base[4] = 1, 0  # a green object, a purple ring
        c = _object_centroids(_traverse(ds, base, k))
        travel.append(np.hypot(c[:, None, 0] - c[None, :, 0], c[:, None, 1] - c[None, :, 1]).max())
    assert min(travel) >= 3.0
    if k == 5:
        assert np.median(travel) >= 15.0


def test_cache_cover_fills_every_cache():
    fresh = MPI3DToy()
    cover = fresh.cache_cover()
    assert len(cover) == 4800 and (cover[:, 1:].max(0) == np.array(SIZES[1:]) - 1).all()  # colour is a tint only
    fresh.render(cover)
    assert fresh._camera_ready.all() and fresh._sprite_ready.all() and fresh._backgrounds is not None


def test_sprites_fit_their_patch_and_circle(monkeypatch):
    """No object reaches its patch's border or its ray-casting circle (the circle only skips empty rays)."""
    for shape, size in itertools.product(range(6), range(2)):
        sprites = mpi3d.render_sprites(shape, size)
        alpha = sprites[..., 0].reshape(sprites.shape[0], -1, mpi3d._PATCH, mpi3d._PATCH)
        border = np.concatenate([alpha[..., 0, :], alpha[..., -1, :], alpha[..., :, 0], alpha[..., :, -1]], -1)
        assert (border == 0).all(), (shape, size)
        if size == 1:
            monkeypatch.setattr(mpi3d, "_OBJECT_RADIUS", 10.0)
            np.testing.assert_array_equal(mpi3d.render_sprites(shape, size), sprites)
            monkeypatch.undo()
