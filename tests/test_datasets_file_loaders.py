"""SmallNORB and Cars3D folders, and MPI3D variants, on small files written in the original formats.

SmallNORB: NYU binary matrices (int32 magic, int32 ndim, max(3, ndim) int32 dims, little-endian
data), both halves with the real 24,300 rows each but 8x8 images. Cars3D: MATLAB files written by
scipy.io.savemat with a small ``im``. MPI3D: 1x1x1 images, so a 460,800-image file is 0.5 MB.
"""

import gzip
import os
import shutil
import struct
import warnings

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from PIL import Image

from harness import datasets
from harness.cli import cli
from harness.datasets import cars3d, smallnorb
from harness.datasets.files import MPI3D_VARIANTS, check_file, mpi3d_variant
from harness.errors import InputError

SIZES = [5, 10, 9, 18, 6]  # category, instance, elevation, azimuth, lighting
TRAIN_STEM, TEST_STEM = "5x46789x9x18x6x2x96x96", "5x01235x9x18x6x2x96x96"
SIDE = 8  # image side in the test files (the published: 96)


def _matrix(magic, array, *, pad=True) -> bytes:
    """A NYU binary matrix: magic, ndim, dims (padded with 1s to 3 unless pad=False), data."""
    dims = list(array.shape) + ([1] * max(0, 3 - array.ndim) if pad else [])
    return struct.pack(f"<ii{len(dims)}i", magic, array.ndim, *dims) + np.ascontiguousarray(array).tobytes()


def _value(keys):
    """Camera-0 pixel value of the grid key (a constant image, so resizing keeps it exactly)."""
    return (np.asarray(keys) % 251).astype(np.uint8)


def _half(instances, rng):
    """(dat, cat, info) arrays of one half, rows in random order; the row at key 0 (if here) is structured."""
    grid = np.stack(np.unravel_index(np.arange(int(np.prod(SIZES))), SIZES), axis=-1)
    rows = grid[np.isin(grid[:, 1], instances)]
    rows = rows[rng.permutation(len(rows))]
    keys = np.ravel_multi_index(tuple(rows.T), SIZES)
    dat = np.empty((len(rows), 2, SIDE, SIDE), np.uint8)
    dat[:, 0] = _value(keys)[:, None, None]
    dat[:, 1] = 255 - dat[:, 0]  # the second camera, which DL ignores
    if (keys == 0).any():
        dat[np.flatnonzero(keys == 0)[0], 0] = _STRUCTURED
    info = np.column_stack([rows[:, 1], rows[:, 2], rows[:, 3] * 2, rows[:, 4]]).astype("<i4")
    return dat, rows[:, 0].astype("<i4"), info


_STRUCTURED = (np.add.outer(np.arange(SIDE), np.arange(SIDE)) * 255 // (2 * SIDE - 2)).astype(np.uint8)
_STRUCTURED[2:4, 5:7] = 0


def write_smallnorb(folder, *, gzip_testing=True):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, split, instances in ((TRAIN_STEM, "training", [4, 6, 7, 8, 9]), (TEST_STEM, "testing", [0, 1, 2, 3, 5])):
        dat, cat, info = _half(instances, rng)
        for part, blob in (("dat", _matrix(0x1E3D4C55, dat)), ("cat", _matrix(0x1E3D4C54, cat)), ("info", _matrix(0x1E3D4C54, info))):
            name = os.path.join(folder, f"smallnorb-{stem}-{split}-{part}.mat")
            if split == "testing" and gzip_testing:
                with gzip.open(name + ".gz", "wb", compresslevel=1) as f:
                    f.write(blob)
            else:
                with open(name, "wb") as f:
                    f.write(blob)


@pytest.fixture(scope="module")
def norb_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("norb") / "small_norb"
    write_smallnorb(folder)
    return folder


@pytest.fixture(scope="module")
def norb_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("norb_cache")


@pytest.fixture
def norb(norb_folder, norb_cache, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(norb_cache))
    return datasets.load(str(norb_folder))


def test_smallnorb_follows_dl(norb, norb_folder, norb_cache, monkeypatch):
    assert norb.name == "smallnorb" and norb.stochastic and norb.full_grid
    assert norb.factor_names == ["category", "elevation", "azimuth", "lighting"]
    assert norb.factor_sizes == [5, 9, 18, 6] and norb.num_observations == 4860
    assert norb.observation_shape == (64, 64, 1) and norb.factor_values["category"][2] == "airplane"
    idx = np.array([0, 17, 4859, 2000, 17])
    images = norb.observations(idx, np.random.default_rng(3))
    assert images.shape == (5, 64, 64, 1) and images.dtype == np.uint8
    # the instance of each sample is one raw 64-bit word of the generator, modulo 10
    instance = np.random.default_rng(3).integers(0, 2**64, size=5, dtype=np.uint64) % np.uint64(10)
    f = norb.index_to_factors(idx)
    keys = np.ravel_multi_index((f[:, 0], instance.astype(np.int64), f[:, 1], f[:, 2], f[:, 3]), SIZES)
    for img, key in zip(images, keys):
        if key == 0:  # the structured image, resized like DL: Lanczos on 32-bit pixels
            expected = np.asarray(Image.fromarray(_STRUCTURED.astype(np.int32)).resize((64, 64), Image.LANCZOS))
            np.testing.assert_array_equal(img[..., 0], np.clip(expected, 0, 255))
        else:
            assert (img == _value(key)).all()  # camera 0, not camera 1 (255 - value)
    # a request in chunks with one generator gives the same images; every instance turns up
    rng = np.random.default_rng(9)
    chunked = np.concatenate([norb.observations(idx[:2], rng), norb.observations(idx[2:], rng)])
    np.testing.assert_array_equal(chunked, norb.observations(idx, np.random.default_rng(9)))
    many = norb.observations(np.full(200, 1000), np.random.default_rng(1))[:, 0, 0, 0]
    assert len(np.unique(many)) == 10
    # the cache holds one resized copy; a second load reads it
    cached = [n for n in os.listdir(norb_cache) if n.startswith("smallnorb.")]
    assert len(cached) == 1 and cached[0].endswith(".npy")
    assert os.path.getsize(norb_cache / cached[0]) >= 48_600 * 64 * 64
    again = datasets.load(str(norb_folder))
    np.testing.assert_array_equal(again.observations(idx, np.random.default_rng(3)), images)


def test_smallnorb_instance_as_factor(norb_folder, norb_cache, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(norb_cache))
    ds = datasets.load(str(norb_folder), instance="factor")
    assert ds.factor_sizes == SIZES and not ds.stochastic and ds.num_observations == 48_600
    idx = np.array([1, 972 * 3 + 5, 48_599])
    assert all((img == _value(k)).all() for img, k in zip(ds.observations(idx), idx))
    np.testing.assert_array_equal(ds.factors_to_index(ds.index_to_factors(idx)), idx)
    with pytest.raises(InputError, match="instance='bogus'"):
        datasets.load(str(norb_folder), instance="bogus")
    with pytest.raises(InputError, match="takes only instance="):
        datasets.load(str(norb_folder), variant="complex")


def test_resize_like_dl_shape_and_overshoot():
    edge = np.zeros((96, 96), np.uint8)
    edge[:, 48:] = 255
    out = smallnorb.resize_like_dl(edge)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    raw = np.asarray(Image.fromarray(edge.astype(np.int32)).resize((64, 64), Image.LANCZOS))
    assert raw.min() < 0 and raw.max() > 255  # DL keeps this ringing as floats; uint8 clips it
    np.testing.assert_array_equal(out, np.clip(raw, 0, 255))


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _rewrite(path, blob):
    with open(path, "wb") as f:
        f.write(blob)


def _train(folder, part):
    return os.path.join(folder, f"smallnorb-{TRAIN_STEM}-training-{part}.mat")


def _cat_rows():
    return np.zeros(24_300, "<i4")


@pytest.mark.parametrize("case, message", [
    ("truncated_dat", "truncated: .* bytes, the header declares"),
    ("long_dat", "longer than its header declares"),
    ("bad_magic", "not a NORB binary matrix"),
    ("absurd_ndim", "header declares 100000 dimensions"),
    ("huge_image", "dims \\[24300, 2, 100000, 100000\\]; expected"),
    ("huge_rows", "dims \\[2000000000\\]; expected \\(N,\\) with N <= 48,600"),
    ("negative_dim", "must be positive"),
    ("byte_info", "holds a byte matrix; expected int32"),
    ("unpadded_cat", "truncated: 97,212 bytes, the header declares 97,220"),
    ("symlink", "symbolic link"),
    ("missing", "missing \\*-training-info.mat"),
    ("not_covered", "is missing .* in the training and testing files together"),
    ("odd_azimuth", "azimuth 3 at row 0"),
    ("damaged_gz", "damaged|truncated"),
])
def test_smallnorb_bad_files_are_one_line(norb_folder, tmp_path, monkeypatch, case, message):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    folder = _copy(norb_folder, tmp_path / "norb")
    dat, cat, info = _train(folder, "dat"), _train(folder, "cat"), _train(folder, "info")
    if case == "truncated_dat":
        os.truncate(dat, os.path.getsize(dat) - 100)
    elif case == "long_dat":
        with open(dat, "ab") as f:
            f.write(b"\0" * 7)
    elif case == "bad_magic":
        with open(cat, "r+b") as f:
            f.write(struct.pack("<i", 0x1E3D4C52))  # "packed": no published layout
    elif case == "absurd_ndim":
        _rewrite(cat, struct.pack("<ii", 0x1E3D4C54, 100_000))
    elif case == "huge_image":
        with open(dat, "r+b") as f:
            f.seek(16)
            f.write(struct.pack("<ii", 100_000, 100_000))
    elif case == "huge_rows":
        _rewrite(cat, struct.pack("<iiiii", 0x1E3D4C54, 1, 2_000_000_000, 1, 1))
    elif case == "negative_dim":
        _rewrite(cat, struct.pack("<iiiii", 0x1E3D4C54, 1, -5, 1, 1))
    elif case == "byte_info":
        _rewrite(info, _matrix(0x1E3D4C55, np.zeros((24_300, 4), np.uint8)))
    elif case == "unpadded_cat":  # ndim 1 written without the two padding dims
        _rewrite(cat, _matrix(0x1E3D4C54, _cat_rows(), pad=False))
    elif case == "symlink":
        os.replace(cat, cat + ".real")
        os.symlink(cat + ".real", cat)
    elif case == "missing":
        os.remove(info)
    elif case == "not_covered":
        _rewrite(cat, _matrix(0x1E3D4C54, _cat_rows()))  # every training row says 'animal'
    elif case == "odd_azimuth":
        with open(info, "r+b") as f:
            f.seek(20 + 8)  # row 0, third column
            f.write(struct.pack("<i", 3))
    elif case == "damaged_gz":
        gz = os.path.join(folder, f"smallnorb-{TEST_STEM}-testing-cat.mat.gz")
        os.truncate(gz, os.path.getsize(gz) // 2)
    with pytest.raises(InputError, match=message) as err:
        datasets.load(str(folder))
    assert "\n" not in str(err.value)
    leftovers = os.listdir(tmp_path / "cache") if os.path.isdir(tmp_path / "cache") else []
    assert not leftovers  # nothing half-written is left to be taken for the data


def test_smallnorb_cli_check(norb_folder, norb_cache, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(norb_cache))
    result = CliRunner().invoke(cli, ["datasets", "check", str(norb_folder)])
    assert result.exit_code == 0, result.output
    assert "smallnorb: 4,860 images 64x64x1, full grid, stochastic" in result.output


# --------------------------------------------------------------------------- Cars3D


def _car_images(obj, side=16):
    """uint8 (side, side, 3, 24, 4): constant images whose value encodes (object, azimuth, elevation)."""
    a, e = np.meshgrid(np.arange(24), np.arange(4), indexing="ij")
    value = ((obj * 97 + a * 4 + e) % 256).astype(np.uint8)  # (24, 4)
    return np.broadcast_to(value, (side, side, 3, 24, 4)).copy()


def write_cars(folder, n=3, *, structured_side=80):
    os.makedirs(folder, exist_ok=True)
    for obj in range(n):
        im = _car_images(obj)
        if obj == 1:  # one larger car with a structured first image, compressed as MATLAB saves by default
            im = np.repeat(np.repeat(im, 5, axis=0), 5, axis=1)[:structured_side, :structured_side]
            im[:, :, :, 0, 0] = np.random.default_rng(0).integers(0, 256, (structured_side, structured_side, 3))
        scipy.io.savemat(os.path.join(folder, f"car_{obj + 1:03d}_mesh.mat"), {"im": im, "mask": im[:, :, 0]},
                         do_compression=obj == 1)
    with open(os.path.join(folder, "list.txt"), "w") as f:
        f.write("\n".join(f"car_{i + 1:03d}_mesh" for i in range(n)))


def test_cars3d_follows_dl(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cars"
    write_cars(folder)
    ds = datasets.load(str(folder))
    assert ds.name == "cars3d" and not ds.stochastic
    assert ds.factor_names == ["elevation", "azimuth", "object_type"] and ds.factor_sizes == [4, 24, 3]
    assert ds.observation_shape == (64, 64, 3)
    assert ds.factor_values["object_type"] == ["car_001", "car_002", "car_003"]
    factors = np.array([[0, 0, 0], [3, 23, 2], [2, 5, 1], [1, 17, 0]])
    idx = ds.factors_to_index(factors)
    np.testing.assert_array_equal(idx, (factors[:, 0] * 24 + factors[:, 1]) * 3 + factors[:, 2])
    images = ds.observations(idx)
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
    for img, (e, a, o) in zip(images[[0, 1, 3]], factors[[0, 1, 3]]):
        assert (img == (o * 97 + a * 4 + e) % 256).all()  # im[..., azimuth, elevation]
    # the structured image: DL's thumbnail((64, 64)) with Lanczos
    src = scipy.io.loadmat(folder / "car_002_mesh.mat")["im"][:, :, :, 0, 0]
    thumb = Image.fromarray(src)
    thumb.thumbnail((64, 64), Image.LANCZOS)
    np.testing.assert_array_equal(ds.observations(ds.factors_to_index([[0, 0, 1]]))[0], np.asarray(thumb))
    assert "NOTE: 3 car files (the published set has 183)" in check_file(folder)
    result = CliRunner().invoke(cli, ["datasets", "check", str(folder)])
    assert result.exit_code == 0 and "cars3d: 288 images 64x64x3, full grid" in result.output, result.output
    with pytest.raises(InputError, match="a Cars3D folder takes no options; got instance"):
        datasets.load(str(folder), instance="factor")


@pytest.mark.parametrize("case, message", [
    ("symlink", "symbolic link"),
    ("wrong_shape", "'im' is uint8 \\(16, 16, 3, 24, 3\\); expected uint8"),
    ("float_im", "'im' is double"),
    ("no_im", "no variable 'im' \\(found pixels\\)"),
    ("garbage", "not a readable MATLAB file"),
    ("oversized", "more than the 67,108,864 this file can hold"),
    ("folder_entry", "is not a regular file"),
    ("too_many", "1,001 car_\\*_mesh.mat files; at most 1,000"),
])
def test_cars3d_bad_files_are_one_line(tmp_path, monkeypatch, case, message):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cars"
    write_cars(folder, n=2)
    bad = folder / "car_009_mesh.mat"
    if case == "symlink":
        os.symlink(folder / "car_001_mesh.mat", bad)
    elif case == "wrong_shape":
        scipy.io.savemat(bad, {"im": _car_images(0)[..., :3]})
    elif case == "float_im":
        scipy.io.savemat(bad, {"im": _car_images(0).astype(float)})
    elif case == "no_im":
        scipy.io.savemat(bad, {"pixels": _car_images(0)})
    elif case == "garbage":
        bad.write_bytes(b"MATLAB 5.0 MAT-file" + os.urandom(300))
    elif case == "oversized":
        with open(bad, "wb") as f:
            f.truncate(cars3d.MAX_FILE_BYTES + 1)  # sparse: costs no disk
    elif case == "folder_entry":
        bad.mkdir()
    elif case == "too_many":
        for i in range(cars3d.MAX_CARS - 1):
            (folder / f"car_x{i}_mesh.mat").touch()
    with pytest.raises(InputError, match=message) as err:
        datasets.load(str(folder))
    assert "\n" not in str(err.value)
    assert not os.path.isdir(tmp_path / "cache") or not os.listdir(tmp_path / "cache")


def test_folder_dispatch(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="folder without dataset files: expected a SmallNORB folder"):
        datasets.load(str(empty))
    both = tmp_path / "both"
    both.mkdir()
    (both / "car_001_mesh.mat").touch()
    (both / f"smallnorb-{TRAIN_STEM}-training-dat.mat").touch()
    with pytest.raises(InputError, match="both SmallNORB and Cars3D"):
        datasets.load(str(both))
    unpacked = tmp_path / "unpacked"  # the download and its unpacked copy: the uncompressed one is read
    unpacked.mkdir()
    for split, stem in (("training", TRAIN_STEM), ("testing", TEST_STEM)):
        for part in ("dat", "cat", "info"):
            (unpacked / f"smallnorb-{stem}-{split}-{part}.mat.gz").touch()
    (unpacked / f"smallnorb-{TRAIN_STEM}-training-cat.mat").touch()
    found = smallnorb.find_files(str(unpacked))
    assert found[("training", "cat")].endswith("-cat.mat") and found[("training", "dat")].endswith(".mat.gz")
    (unpacked / "smallnorb-5x01235x9x18x6x2x32x32-testing-info.mat").touch()
    with pytest.raises(InputError, match="testing files of different sets"):
        smallnorb.find_files(str(unpacked))


# --------------------------------------------------------------------------- MPI3D


@pytest.mark.parametrize("name, count, expected, assumed", [
    ("mpi3d_toy.npz", 1_036_800, "public", False),
    ("mpi3d_real.npz", 1_036_800, "public", False),
    ("real3d_complicated_shapes_ordered.npz", 460_800, "complex", False),
    ("mpi3d_complex.npz", 460_800, "complex", False),
    ("mpi3d_toy.npz", 460_800, "challenge2019", False),
    ("sim_realistic_64x_ordered_without_heldout_factors.npz", 460_800, "challenge2019", False),
    ("mpi3d_real.npz", 460_800, "challenge2019", True),  # real: the 2019 real set or complex
    ("held_out.npz", 460_800, "challenge2019", True),
])
def test_mpi3d_variant_from_count_and_name(name, count, expected, assumed):
    variant, note = mpi3d_variant(count, name)
    assert variant == expected and (note is not None) == assumed
    assert MPI3D_VARIANTS[variant][0] == count
    if assumed:
        assert "variant='complex'" in note


def test_mpi3d_variant_option_and_value_names(tmp_path):
    n = 460_800
    images = (np.arange(n) % 251).astype(np.uint8).reshape(n, 1, 1, 1)
    np.savez(tmp_path / "held_out.npz", images=images)
    with pytest.warns(UserWarning, match="taken as the 2019 challenge set"):
        ds = datasets.load(tmp_path / "held_out.npz")
    assert ds.factor_values["object_color"] == ["green", "red", "blue", "brown"]
    assert ds.factor_values["object_shape"] == ["cone", "cube", "hexagonal prism", "sphere"]
    assert "NOTE: held_out.npz: 460,800 MPI3D images and no name hint" in check_file(tmp_path / "held_out.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = datasets.load(tmp_path / "held_out.npz", variant="complex")
        assert ds.factor_values["object_shape"] == ["coffee-cup", "tennis-ball", "croissant", "beer-cup"]
        assert ds.factor_values["object_color"] == ["yellow", "green", "olive", "red"]
        assert ds.factor_sizes == [4, 4, 2, 3, 3, 40, 40] and ds.note is None
        assert "NOTE" not in check_file(tmp_path / "held_out.npz", variant="complex")
    np.testing.assert_array_equal(ds.observations([n - 1, 7]), images[[n - 1, 7]])
    with pytest.raises(InputError, match="variant 'public' has 1,036,800 images, the file 460,800"):
        datasets.load(tmp_path / "held_out.npz", variant="public")
    with pytest.raises(InputError, match="variant='fancy': use one of public, challenge2019, complex"):
        datasets.load(tmp_path / "held_out.npz", variant="fancy")
    big = 1_036_800
    np.savez(tmp_path / "mpi3d_real.npz", images=np.zeros((big, 1, 1, 1), np.uint8))
    ds = datasets.load(tmp_path / "mpi3d_real.npz")
    assert ds.name == "mpi3d_real_original" and ds.factor_sizes == [6, 6, 2, 3, 3, 40, 40]
    assert ds.factor_values["object_color"] == ["white", "green", "red", "blue", "brown", "olive"]
    assert ds.factor_values["object_shape"] == ["cone", "cube", "cylinder", "hexagonal", "pyramid", "sphere"]
    assert ds.factor_values["background_color"] == ["purple", "sea green", "salmon"]
    assert ds.factor_values["camera_height"] == ["top", "center", "bottom"]
    with pytest.raises(InputError, match="an MPI3D file takes only variant=; got instance"):
        datasets.load(tmp_path / "mpi3d_real.npz", instance="factor")
