"""Generalization splits (harness.datasets.splits): the built-in ones are Schott et al.'s, every
split's parts are disjoint and cover the grid, held-out values never reach training, composition
keeps each value in training, and a bad split table is one line."""

from __future__ import annotations

import numpy as np
import pytest

from harness import datasets
from harness.datasets.base import GridDataset
from harness.datasets.files import MPI3D_NAMES, MPI3D_SIZES
from harness.datasets.splits import (BUILTIN, CATEGORICAL_FACTOR_NAMES, Split, builtin_split, parse_split,
                                     resolve_split)
from harness.errors import InputError
from harness.metrics.regression import CATEGORICAL_FACTORS


class FactorGrid(GridDataset):
    """A grid with names and sizes only (splits never render): stands in for the MPI3D files."""

    def __init__(self, name, factor_names, factor_sizes):
        self.name, self.factor_names, self.factor_sizes = name, list(factor_names), list(factor_sizes)


def _grids():
    return [datasets.load("dsprites"), datasets.load("shapes3d"), datasets.load("dummy"),
            FactorGrid("mpi3d", MPI3D_NAMES, MPI3D_SIZES[1_036_800]),
            FactorGrid("mpi3d_2019", MPI3D_NAMES, MPI3D_SIZES[460_800])]


def _all_factors(ds):
    return ds.index_to_factors(np.arange(ds.num_observations))


@pytest.mark.parametrize("ds", _grids(), ids=lambda d: d.name)
def test_builtin_parts_are_disjoint_cover_the_grid_and_follow_the_mask(ds):
    factors = _all_factors(ds)
    for name in BUILTIN:
        split = builtin_split(name, ds)
        train, test = split.parts(ds)
        assert len(np.intersect1d(train, test)) == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(ds.num_observations))
        held = split.held_out_mask(ds, factors)  # the rule on the whole grid at once
        np.testing.assert_array_equal(np.flatnonzero(held), test)
        assert 0.4 < len(test) / ds.num_observations < 0.8, (ds.name, name)  # Schott: about 70:30


def test_dsprites_splits_are_schott_et_al_s():
    ds = datasets.load("dsprites")
    ext = builtin_split("extrapolation", ds)
    assert dict(ext.held_out) == {"scale": (4, 5), "orientation": tuple(range(32, 40)),
                                  "posX": tuple(range(25, 32)), "posY": tuple(range(25, 32))}  # top ceil(0.2 n)
    inter = dict(builtin_split("interpolation", ds).held_out)
    assert inter["scale"] == (1, 4) and len(inter["orientation"]) == 8 and len(inter["posX"]) == 7
    assert "shape" not in inter  # categorical: seen with every value in both parts
    comp = builtin_split("composition", ds)
    # q = 1 - (1 - 0.8^4)^(1/4) = 0.1234: scale loses floor(6 q) = 0 values, so it is not in the combination
    assert comp.held_out == ((("orientation", tuple(range(4, 40))), ("posX", tuple(range(3, 32))),
                              ("posY", tuple(range(3, 32)))),)
    train_share = (4 / 6) * (32 / 40) * (25 / 32) ** 2
    assert builtin_split("random", ds).test_fraction == pytest.approx(1 - train_share)
    _, test = ext.parts(ds)
    assert len(test) / ds.num_observations == pytest.approx(1 - train_share)


def test_shapes3d_and_mpi3d_use_their_ratio_and_kept_factors():
    shapes = datasets.load("shapes3d")
    ext = dict(builtin_split("extrapolation", shapes).held_out)
    assert ext == {"floor_hue": (8, 9), "wall_hue": (8, 9), "object_hue": (8, 9), "scale": (6, 7),
                   "orientation": (12, 13, 14)}  # r = 0.15, shape kept
    mpi = FactorGrid("mpi3d", MPI3D_NAMES, MPI3D_SIZES[1_036_800])
    ext = dict(builtin_split("extrapolation", mpi).held_out)
    assert set(ext) == {"object_color", "camera_height", "background_color", "horizontal_axis", "vertical_axis"}
    assert ext["object_color"] == (5,) and ext["horizontal_axis"] == (36, 37, 38, 39)  # r = 0.1
    _, test = builtin_split("extrapolation", mpi).parts(mpi)
    assert len(test) / mpi.num_observations == pytest.approx(0.7)  # 1 - 5/6 * 2/3 * 2/3 * 0.9 * 0.9
    comp = builtin_split("composition", mpi)
    assert comp.held_out == ((("horizontal_axis", tuple(range(6, 40))), ("vertical_axis", tuple(range(6, 40)))),)


def test_the_generic_rule_keeps_the_categorical_factors_the_metrics_leave_out():
    assert set(CATEGORICAL_FACTOR_NAMES) == set(CATEGORICAL_FACTORS)
    xy = datasets.load("xyobject")  # factors x, y, scale, color: not one of Schott et al.'s datasets
    assert "color" not in dict(builtin_split("extrapolation", xy).held_out)


@pytest.mark.parametrize("name", ["extrapolation", "interpolation"])
def test_held_out_values_never_reach_training(name):
    ds = datasets.load("dsprites")
    split = builtin_split(name, ds)
    parts = split.parts(ds)
    train = ds.index_to_factors(split.sample(ds, 20000, np.random.default_rng(0), parts=parts))
    test = ds.index_to_factors(split.sample(ds, 5000, np.random.default_rng(1), part="held_out", parts=parts))
    for factor, values in split.held_out:
        k = ds.factor_names.index(factor)
        assert not np.isin(train[:, k], values).any(), factor
    # every held-out point carries at least one held-out value
    hit = np.zeros(len(test), dtype=bool)
    for factor, values in split.held_out:
        hit |= np.isin(test[:, ds.factor_names.index(factor)], values)
    assert hit.all()
    if name == "interpolation":  # inner values only: both ends of every split factor are trained on
        for factor, values in split.held_out:
            k = ds.factor_names.index(factor)
            assert {0, ds.factor_sizes[k] - 1} <= set(np.unique(train[:, k]).tolist())


def test_composition_never_trains_on_the_combination_but_on_every_value():
    ds = datasets.load("dsprites")
    split = parse_split({"kind": "composition", "held_out": [{"shape": 2, "scale": "4..5"},
                                                             {"posX": "0..7", "posY": "0..7"}]})
    train, test = split.parts(ds)
    f_train, f_test = ds.index_to_factors(train), ds.index_to_factors(test)
    big_hearts = (f_train[:, 0] == 2) & (f_train[:, 1] >= 4)
    corner = (f_train[:, 3] <= 7) & (f_train[:, 4] <= 7)
    assert not big_hearts.any() and not corner.any()
    for k, size in enumerate(ds.factor_sizes):  # each value alone is still seen in training
        assert set(np.unique(f_train[:, k]).tolist()) == set(range(size)), ds.factor_names[k]
    assert (((f_test[:, 0] == 2) & (f_test[:, 1] >= 4)) | ((f_test[:, 3] <= 7) & (f_test[:, 4] <= 7))).all()
    # the built-in one too
    comp = builtin_split("composition", ds)
    f_train = ds.index_to_factors(comp.parts(ds)[0])
    for k, size in enumerate(ds.factor_sizes):
        assert len(np.unique(f_train[:, k])) == size


def test_random_split_is_seeded_and_depends_on_the_grid_point_only():
    ds = datasets.load("dsprites")
    a = parse_split({"kind": "random", "test_fraction": 0.3, "seed": 7})
    factors = _all_factors(ds)
    mask = a.held_out_mask(ds, factors)
    assert mask.mean() == pytest.approx(0.3, abs=0.005)
    np.testing.assert_array_equal(mask, parse_split({"kind": "random", "test_fraction": 0.3, "seed": 7})
                                  .held_out_mask(ds, factors))
    other = parse_split({"kind": "random", "test_fraction": 0.3, "seed": 8}).held_out_mask(ds, factors)
    assert 0.3 < (mask != other).mean() < 0.5  # another seed, another (independent) split
    rows = np.random.default_rng(0).permutation(ds.num_observations)[:1000]  # in any order, any subset
    np.testing.assert_array_equal(a.held_out_mask(ds, factors[rows]), mask[rows])
    assert builtin_split("random", ds) == builtin_split("random", ds)  # nothing unseeded


def test_sampling_is_deterministic_and_distinct_when_the_part_is_large_enough():
    ds = datasets.load("dsprites")
    split = builtin_split("extrapolation", ds)
    a = split.sample(ds, 3000, np.random.default_rng(5))
    np.testing.assert_array_equal(a, split.sample(ds, 3000, np.random.default_rng(5)))
    assert len(np.unique(a)) == 3000
    tiny = datasets.load("dummy")  # 120 points: draws repeat once the part runs out
    small = builtin_split("extrapolation", tiny)
    draws = small.sample(tiny, 500, np.random.default_rng(0), part="held_out")
    assert len(draws) == 500 and set(draws.tolist()) <= set(small.parts(tiny)[1].tolist())


GOOD_TABLES = [
    ({"kind": "extrapolation", "factor": "posX", "held_out": [24, "25..31"]}, {"posX": tuple(range(24, 32))}),
    ({"kind": "extrapolation", "held_out": {"posX": "28..31", "scale": 0}}, {"posX": (28, 29, 30, 31), "scale": (0,)}),
    ({"kind": "interpolation", "name": "mid", "held_out": {"posY": "10..12"}}, {"posY": (10, 11, 12)}),
]


@pytest.mark.parametrize("table,held", GOOD_TABLES)
def test_split_tables(table, held):
    split = resolve_split(table, datasets.load("dsprites"))
    assert dict(split.held_out) == held and split.kind == table["kind"]
    assert parse_split(split.to_dict()) == split  # the record reads back


BAD_TABLES = [
    ("cross", "expected a built-in name"),
    ({"kind": "sideways"}, "kind must be one of random, composition"),
    ({"kind": "extrapolation"}, "held_out is required"),
    ({"kind": "extrapolation", "held_out": {"posX": "31..24"}}, r'inclusive range "a\.\.b"'),
    ({"kind": "extrapolation", "held_out": {"posX": -1}}, "a value is an integer >= 0"),
    ({"kind": "extrapolation", "held_out": {"posX": []}}, "no values"),
    ({"kind": "extrapolation", "held_out": {}}, "must be a table of 1..64 factors"),
    ({"kind": "extrapolation", "held_out": {"posX": 1}, "seed": 3}, "unknown key"),
    ({"kind": "composition", "held_out": [{"posX": "0..3"}]}, "names one factor"),
    ({"kind": "composition", "held_out": {"posX": 1, "posY": 1}}, "must be a list of 1..256 tables"),
    ({"kind": "random"}, "test_fraction must be a number in"),
    ({"kind": "random", "test_fraction": 1.0}, "test_fraction must be a number in"),
    ({"kind": "random", "test_fraction": 0.5, "seed": -1}, "seed must be an integer"),
    ({"kind": "extrapolation", "held_out": {"posX": "0..999999999"}}, "more than 100,000 values"),
]


@pytest.mark.parametrize("table,message", BAD_TABLES, ids=[str(i) for i in range(len(BAD_TABLES))])
def test_bad_split_tables_are_one_line(table, message):
    with pytest.raises(InputError, match=message) as info:
        parse_split(table)
    assert "\n" not in str(info.value)


ON_THE_DATASET = [
    ({"kind": "extrapolation", "held_out": {"pos_x": 31}}, "no factor 'pos_x'; its factors: shape, scale"),
    ({"kind": "extrapolation", "held_out": {"scale": 6}}, "scale has values 0..5, the split names 6"),
    ({"kind": "extrapolation", "held_out": {"scale": "0..5"}}, "every value of scale is held out"),
    ({"kind": "extrapolation", "held_out": {"posX": "10..12"}}, "ends of posX's range .*use interpolation"),
    ({"kind": "interpolation", "held_out": {"posX": "28..31"}}, "31 is an end of its range"),
    ({"kind": "composition", "held_out": [{"shape": 0, "scale": "0..5"}, {"shape": 0, "posX": "0..31"}]},
     "value 0 of shape never appears in training"),
    ("diagonal", "unknown split 'diagonal'"),
]


@pytest.mark.parametrize("value,message", ON_THE_DATASET, ids=[str(i) for i in range(len(ON_THE_DATASET))])
def test_a_split_that_does_not_fit_the_dataset_is_one_line(value, message):
    ds = datasets.load("dsprites")
    with pytest.raises(InputError, match=message) as info:
        resolve_split(value, ds).parts(ds)
    assert "\n" not in str(info.value)


def test_an_empty_part_is_refused():
    ds = datasets.load("dummy")  # 120 points: a random split can leave a part empty
    with pytest.raises(InputError, match="training part is empty"):
        parse_split({"kind": "random", "test_fraction": 0.9999}).parts(ds)
    with pytest.raises(InputError, match="held-out part is empty"):
        parse_split({"kind": "random", "test_fraction": 0.0001}).parts(ds)


def test_a_labelled_subset_is_split_by_its_rows_factors():
    from harness.datasets.files import LabelledSubset

    grid = datasets.load("dsprites")
    rows = np.sort(np.random.default_rng(0).choice(grid.num_observations, 20000, replace=False))
    subset = LabelledSubset(name="held", factor_names=grid.factor_names, factor_sizes=grid.factor_sizes,
                            observation_shape=grid.observation_shape, factors=grid.index_to_factors(rows),
                            store=None, source="test")
    for name in BUILTIN:  # the same points held out as on the grid they come from
        split = builtin_split(name, subset)
        assert split == builtin_split(name, grid)
        _, test_rows = split.parts(subset)
        np.testing.assert_array_equal(rows[test_rows], np.intersect1d(rows, split.parts(grid)[1]))
