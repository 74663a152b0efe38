"""File loaders on small files written in the original layouts, and the organizer format."""

import os

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from harness import datasets
from harness.cli import cli
from harness.datasets import ANY
from harness.datasets.files import MPI3D_SIZES, SHAPES3D_SIZES
from harness.errors import InputError


def _grid(sizes):
    return np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=-1)


def _pattern(n, shape):
    """Images whose pixels encode their row, so a wrong row is caught."""
    rows = np.arange(n, dtype=np.int64)[:, None] * 7 + np.arange(int(np.prod(shape)))[None, :]
    return (rows % 251).astype(np.uint8).reshape(n, *shape)


@pytest.mark.parametrize("compressed", [False, True])
def test_dsprites_npz(tmp_path, monkeypatch, compressed):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    sizes = [1, 3, 2, 4, 3, 3]
    classes = _grid(sizes)
    imgs = (np.random.default_rng(0).random((len(classes), 64, 64)) < 0.3).astype(np.uint8)  # 0/1 like the original
    metadata = {"latents_sizes": np.array(sizes), "latents_names": ("color", "shape", "scale", "orientation", "posX", "posY"),
                "description": "test"}
    save = np.savez_compressed if compressed else np.savez
    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    save(path, imgs=imgs, latents_classes=classes, latents_values=classes.astype(float), metadata=np.array(metadata, dtype=object))
    ds = datasets.load(path)
    assert ds.factor_names == ["shape", "scale", "orientation", "posX", "posY"]
    assert ds.factor_sizes == sizes[1:] and ds.observation_shape == (64, 64, 1)
    idx = np.array([5, 0, 215, 5, 100])
    np.testing.assert_array_equal(ds.observations(idx)[..., 0], imgs[idx] * 255)
    np.testing.assert_array_equal(ds.index_to_factors(idx), classes[idx, 1:])


def test_dsprites_npz_refuses_code_in_metadata(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    sizes = [1, 2, 2]
    np.savez(tmp_path / "d.npz", imgs=np.zeros((4, 8, 8), np.uint8), latents_classes=_grid(sizes),
             metadata=np.array({"latents_sizes": np.array(sizes), "x": Evil()}, dtype=object))
    with pytest.raises(InputError, match="refusing to load builtins.print"):
        datasets.load(tmp_path / "d.npz")


def test_dsprites_npz_inconsistent(tmp_path):
    sizes = [1, 2, 3]
    classes = _grid(sizes)[::-1]
    np.savez(tmp_path / "d.npz", imgs=np.zeros((6, 8, 8), np.uint8), latents_classes=classes,
             metadata=np.array({"latents_sizes": np.array(sizes)}, dtype=object))
    with pytest.raises(InputError, match="not the full grid in C order"):
        datasets.load(tmp_path / "d.npz")


def test_mpi3d_sizes_from_count(tmp_path):
    n = 460_800
    images = _pattern(n, (1, 1, 1))
    np.savez(tmp_path / "mpi3d_toy.npz", images=images)
    ds = datasets.load(tmp_path / "mpi3d_toy.npz")
    assert ds.factor_sizes == MPI3D_SIZES[n] and ds.num_observations == n
    idx = np.array([n - 1, 3, 123_456])
    np.testing.assert_array_equal(ds.observations(idx), images[idx])
    np.testing.assert_array_equal(ds.factors_to_index(ds.index_to_factors(idx)), idx)
    np.savez(tmp_path / "bad.npz", images=np.zeros((1000, 1, 1, 3), np.uint8))
    with pytest.raises(InputError, match="1,036,800"):
        datasets.load(tmp_path / "bad.npz")


def test_shapes3d_h5(tmp_path):
    n = int(np.prod(SHAPES3D_SIZES))
    grid = _grid(SHAPES3D_SIZES)
    values = [np.linspace(0, 0.9, 10)] * 3 + [np.linspace(0.75, 1.25, 8), np.arange(4.0), np.linspace(-30, 30, 15)]
    labels = np.stack([v[grid[:, k]] for k, v in enumerate(values)], axis=-1)
    images = _pattern(n, (1, 1, 3))
    with h5py.File(tmp_path / "3dshapes.h5", "w") as f:
        f["images"] = images
        f["labels"] = labels
    ds = datasets.load(str(tmp_path / "3dshapes.h5"))
    assert ds.factor_sizes == SHAPES3D_SIZES and ds.factor_names[-1] == "orientation"
    idx = np.random.default_rng(0).integers(0, n, 50)
    np.testing.assert_array_equal(ds.observations(idx), images[idx])
    np.testing.assert_array_equal(ds.index_to_factors(idx), grid[idx])


def _write_organizer(path, images, factors, names, sizes, **extra):
    with h5py.File(path, "w") as f:
        if images is not None:
            f.create_dataset("images", data=images, chunks=(4, *images.shape[1:]))
        if factors is not None:
            f["factors"] = factors
        if names is not None:
            f.attrs["factor_names"] = names
        if sizes is not None:
            f.attrs["factor_sizes"] = sizes
        for k, v in extra.items():
            f.attrs[k] = v


def test_organizer_full_grid_round_trip(tmp_path):
    source = datasets.load("dummy")
    out = tmp_path / "dummy.h5"
    result = CliRunner().invoke(cli, ["datasets", "export", "dummy", "--out", str(out)])
    assert result.exit_code == 0, result.output
    ds = datasets.load(out)
    assert ds.full_grid and ds.factor_sizes == source.factor_sizes and ds.factor_names == source.factor_names
    idx = np.array([119, 0, 7, 7, 64])
    np.testing.assert_array_equal(ds.observations(idx), source.observations(idx))
    result = CliRunner().invoke(cli, ["datasets", "check", str(out)])
    assert result.exit_code == 0 and "full grid" in result.output


def test_organizer_subset_lookup(tmp_path):
    source = datasets.load("dsprites")
    out = tmp_path / "subset.h5"
    result = CliRunner().invoke(cli, ["datasets", "export", "dsprites", "--out", str(out), "--subset", "300", "--seed", "4"])
    assert result.exit_code == 0, result.output
    ds = datasets.load(out)
    assert not ds.full_grid and ds.num_observations == 300
    rows = np.arange(300)
    factors = ds.index_to_factors(rows)
    np.testing.assert_array_equal(ds.observations(rows[:20]), source.observations(source.factors_to_index(factors[:20])))
    # exact lookup returns the row; index_of_factors agrees when nothing is ANY
    np.testing.assert_array_equal(ds.factors_to_index(factors), rows)
    np.testing.assert_array_equal(ds.index_of_factors(factors, np.random.default_rng(0)), rows)
    # ANY: a random existing row with the fixed value, reproducible from the rng
    request = np.full((500, 5), ANY)
    request[:, 0] = 2
    picked = ds.index_of_factors(request, np.random.default_rng(1))
    assert (ds.index_to_factors(picked)[:, 0] == 2).all()
    assert len(np.unique(picked)) > 20
    np.testing.assert_array_equal(picked, ds.index_of_factors(request, np.random.default_rng(1)))
    sampled = ds.sample_factors(100, np.random.default_rng(2))
    ds.factors_to_index(sampled)  # sampled combinations exist
    missing = factors[0].copy()
    missing[4] = (missing[4] + 1) % 32
    while (factors == missing).all(axis=1).any():
        missing[3] = (missing[3] + 1) % 32
    with pytest.raises(InputError, match="no row with shape="):
        ds.index_of_factors(missing[None, :])


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_key", "missing dataset 'factors'"),
        ("missing_attr", "missing attribute 'factor_sizes'"),
        ("out_of_range", "label out of range: factor 'b'"),
        ("row_mismatch", "shape mismatch: 6 images but 5 factor rows"),
        ("column_mismatch", "shape mismatch"),
        ("duplicate", "duplicated factor combination a=1, b=0 at rows 2 and 4"),
        ("float_images", "'images' must be uint8"),
    ],
)
def test_organizer_corrupt(tmp_path, case, message):
    names, sizes = ["a", "b"], [2, 3]
    images = np.zeros((6, 4, 4, 1), np.uint8)
    factors = _grid(sizes)[::-1].copy()
    kwargs = dict(images=images, factors=factors, names=names, sizes=sizes)
    if case == "missing_key":
        kwargs["factors"] = None
    elif case == "missing_attr":
        kwargs["sizes"] = None
    elif case == "out_of_range":
        kwargs["factors"][3, 1] = 3
    elif case == "row_mismatch":
        kwargs["factors"] = factors[:5]
    elif case == "column_mismatch":
        kwargs["sizes"] = [2, 3, 4]
    elif case == "duplicate":
        kwargs["factors"][4] = kwargs["factors"][2]
    elif case == "float_images":
        kwargs["images"] = images.astype(np.float32)
    path = tmp_path / "bad.h5"
    _write_organizer(path, **kwargs)
    with pytest.raises(InputError, match=message):
        datasets.load(path)
    result = CliRunner().invoke(cli, ["datasets", "check", str(path)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message.split(":")[0] in result.stderr


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(InputError, match=r"no such file .*nothere.h5: expected .*'images', 'labels'.*'factors'"):
        datasets.load(tmp_path / "nothere.h5")
    with pytest.raises(InputError, match=r"no such file .*'imgs', 'latents_classes'"):
        datasets.load(tmp_path / "nothere.npz")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5"):
        datasets.load(tmp_path / "junk.h5")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError, match=r"found keys \['x'\]"):
        datasets.load(tmp_path / "other.npz")


def test_chunked_reads_any_order(tmp_path):
    images = _pattern(5000, (2, 2, 1))
    path = tmp_path / "g.h5"
    _write_organizer(path, images, _grid([50, 100]), ["a", "b"], [50, 100])
    ds = datasets.load(path)
    idx = np.concatenate([np.random.default_rng(0).integers(0, 5000, 3000), np.arange(1000, 3500), [4999, 0, 0]])
    np.testing.assert_array_equal(ds.observations(idx), images[idx])
    with pytest.raises(IndexError):
        ds.observations([5000])


def test_contiguous_h5_memmap_pickle_and_show(tmp_path):
    import pickle

    images = _pattern(120, (16, 16, 1))
    path = tmp_path / "contiguous.h5"
    with h5py.File(path, "w") as f:
        f["images"] = images  # contiguous, uncompressed: memory-mapped
        f["factors"] = _grid([4, 5, 6])[::-1]  # not C order: a labelled subset of the same grid
        f.attrs["factor_names"] = ["a", "b", "c"]
        f.attrs["factor_sizes"] = [4, 5, 6]
    ds = pickle.loads(pickle.dumps(datasets.load(path)))  # picklable for worker processes
    assert not ds.full_grid
    np.testing.assert_array_equal(ds.observations([3, 119, 3]), images[[3, 119, 3]])
    np.testing.assert_array_equal(ds.index_to_factors([0]), [[3, 4, 5]])
    result = CliRunner().invoke(cli, ["datasets", "show", str(path), "--out", str(tmp_path / "m.png")])
    assert result.exit_code == 0 and (tmp_path / "m.png").stat().st_size > 1000, result.output


def test_scream_texture_file(tmp_path):
    from PIL import Image

    texture = np.zeros((100, 120, 3), np.uint8)
    texture[:, :, 1] = 200
    Image.fromarray(texture).save(tmp_path / "t.png")
    ds = datasets.load("scream_dsprites", texture=str(tmp_path / "t.png"))
    x = ds.observations([0], np.random.default_rng(0))[0]
    sprite = datasets.load("dsprites").observations([0])[0, :, :, 0] > 0
    assert (x[~sprite][:, 1] > x[~sprite][:, 0]).all()  # green texture behind
    with pytest.raises(InputError, match="cannot read texture"):
        datasets.load("scream_dsprites", texture=str(tmp_path / "missing.png"))


@pytest.mark.parametrize("member", ["imgs", "latents_classes"])
def test_a_damaged_compressed_member_is_one_line_and_leaves_no_cache(tmp_path, member):
    """A file cut short or flipped on the way (a failed download) is bad input in every command that
    reads it, never a zlib traceback, and no half-extracted cache file is left to be taken for data."""
    import subprocess
    import sys
    import zipfile

    sizes = [1, 3, 2, 4, 3, 3]
    classes = _grid(sizes)
    imgs = (np.random.default_rng(0).random((len(classes), 64, 64)) < 0.3).astype(np.uint8)
    metadata = {"latents_sizes": np.array(sizes), "latents_names": ("color", "shape", "scale", "orientation", "posX", "posY")}
    good = tmp_path / "good.npz"
    np.savez_compressed(good, imgs=imgs, latents_classes=classes, latents_values=classes.astype(float),
                        metadata=np.array(metadata, dtype=object))
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo(member + ".npy")
    data = bytearray(good.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 40  # inside the compressed data
    data[start:start + 64] = bytes(range(64))
    bad = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    bad.write_bytes(bytes(data))
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")}
    for args in (["datasets", "check", str(bad)], ["datasets", "show", str(bad), "--out", str(tmp_path / "x.png")]):
        out = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                             timeout=120)
        assert out.returncode == 2, out.stderr
        assert f"{member!r} is damaged" in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert not any(p.name.endswith(".part") for p in (tmp_path / "cache").rglob("*"))
