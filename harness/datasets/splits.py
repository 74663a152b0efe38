"""Generalization splits: which points of a dataset's factor grid a readout is fitted on, and which
it is tested on (Schott et al., 2022, "Visual representation learning does not generalize
strongly within the same domain", ICLR; Montero et al., 2021, "The role of disentanglement in
generalisation", ICLR).

A :class:`Split` is a rule on factor values, so it is evaluated on factor arrays (vectorised) and
never needs the grid materialised. Kinds:

``extrapolation`` / ``interpolation``
    ``held_out`` maps factors to values; a point is held out when *any* listed factor takes one of
    its listed values, so no held-out value is ever seen in training. Extrapolation values lie at
    the ends of a factor's range, interpolation values strictly inside it.
``composition``
    ``held_out`` is a list of combinations (factor -> values); a point is held out when it matches
    *every* entry of one combination, so the combination is never seen together in training while
    each value alone still is (checked on the dataset).
``random``
    each point held out with probability ``test_fraction``, from a hash of its grid position and
    ``seed`` (the same point is held out however it is reached; nothing depends on an unseeded draw).

Built-in splits (``random``, ``composition``, ``interpolation``, ``extrapolation``) follow Schott
et al.'s construction (their supplementary code), applied to the dataset's own factor sizes: every
factor but the ones kept whole (categorical) loses a share ``r`` of its values: extrapolation the
top ``ceil(r n)``; interpolation the ``ceil(r n)`` values off ``round(linspace(0, n-1, n - ceil(r n)))``;
composition, with ``q = 1 - (1 - (1 - r)^m)^(1/m)`` over the ``m`` split factors, holds out the one
combination of every split factor at or above value ``floor(q n)`` (as many points as
extrapolation); random holds out the same share as extrapolation. ``r`` and the kept factors are
theirs for dSprites (0.2; shape kept), Shapes3D (0.15; shape kept) and MPI3D (0.1; object shape and
size kept), recognised by factor names; every other grid dataset gets ``r = 0.2`` (their value for
their test datasets) with the factors named in :data:`CATEGORICAL_FACTOR_NAMES` kept.

:func:`parse_split` reads a split from a plain table (a challenge file's TOML); docs/datasets.md
"Generalization splits" has the schema.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from harness.errors import InputError

KINDS = ("random", "composition", "interpolation", "extrapolation")
#: The built-in splits every grid dataset has, by name (each is the kind of the same name).
BUILTIN = KINDS

#: Factors kept whole (seen with every value in both parts) by the built-in rule on datasets it
#: does not know: categories, not quantities (the names regression_informativeness leaves out).
CATEGORICAL_FACTOR_NAMES = ("shape", "object_shape", "object_color", "background_color", "color")

_DSPRITES = ("shape", "scale", "orientation", "posX", "posY")
_SHAPES3D = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
_MPI3D = ("object_color", "object_shape", "object_size", "camera_height", "background_color",
          "horizontal_axis", "vertical_axis")
#: Schott et al.'s per-dataset ratio and kept factors, by factor names: (names, r, kept)
SCHOTT_RULES = (
    (_DSPRITES, 0.2, ("shape",)),
    (_SHAPES3D, 0.15, ("shape",)),
    (_MPI3D, 0.1, ("object_shape", "object_size")),
)
DEFAULT_RATIO = 0.2

_CHUNK = 1 << 20  # grid points per pass when a part is enumerated
# bounds on a split table (a challenge file is read before anything else runs)
_MAX_FACTORS, _MAX_COMBINATIONS, _MAX_VALUES, _MAX_NAME = 64, 256, 100_000, 100
_RANGE = re.compile(r"^\s*(\d{1,9})\s*(?:\.\.\s*(\d{1,9})\s*)?$")


@dataclass(frozen=True)
class Split:
    """A train / held-out split of a factor grid (see the module docstring for the kinds).

    ``held_out``: extrapolation and interpolation ``((factor, (values, ...)), ...)``; composition a
    tuple of such combinations. ``test_fraction`` and ``seed``: random only. ``source``: where the
    definition comes from (a built-in rule, or a table).
    """

    name: str
    kind: str
    held_out: tuple = ()
    test_fraction: float | None = None
    seed: int = 0
    source: str = "table"

    # -- the rule --------------------------------------------------------------------------------

    def held_out_mask(self, dataset, factors) -> np.ndarray:
        """bool (n,): which rows of ``factors`` (int (n, K), the dataset's factor order) are held out."""
        factors = np.asarray(factors, dtype=np.int64)
        if factors.ndim == 1:
            factors = factors[None, :]
        names = list(dataset.factor_names)
        if self.kind == "random":
            grid = np.ravel_multi_index(tuple(factors.T), [int(s) for s in dataset.factor_sizes])
            return _unit_hash(grid, self.seed) < self.test_fraction
        if self.kind == "composition":
            mask = np.zeros(len(factors), dtype=bool)
            for combination in self.held_out:
                match = np.ones(len(factors), dtype=bool)
                for name, values in combination:
                    match &= np.isin(factors[:, names.index(name)], values)
                mask |= match
            return mask
        mask = np.zeros(len(factors), dtype=bool)
        for name, values in self.held_out:
            mask |= np.isin(factors[:, names.index(name)], values)
        return mask

    def parts(self, dataset) -> tuple[np.ndarray, np.ndarray]:
        """(training indices, held-out indices) of ``dataset``, sorted int64, enumerated in chunks.

        Raises :class:`InputError` when the split does not fit the dataset (unknown factor, value
        out of range) or leaves a part empty, and for composition when a value of a factor it
        names never reaches training.
        """
        self.check(dataset)
        train, test = [], []
        seen = [np.zeros(int(s), dtype=bool) for s in dataset.factor_sizes]
        for start in range(0, int(dataset.num_observations), _CHUNK):
            idx = np.arange(start, min(start + _CHUNK, int(dataset.num_observations)), dtype=np.int64)
            factors = np.asarray(dataset.index_to_factors(idx), dtype=np.int64)
            held = self.held_out_mask(dataset, factors)
            train.append(idx[~held])
            test.append(idx[held])
            if self.kind == "composition":  # which values reach training (checked below)
                for k, column in enumerate(factors[~held].T):
                    seen[k][column] = True
        train, test = np.concatenate(train), np.concatenate(test)
        where = f"split {self.name!r} on {dataset.name}"
        if not len(train):
            raise InputError(f"{where}: the training part is empty; hold out fewer values")
        if not len(test):
            raise InputError(f"{where}: the held-out part is empty; no point of this dataset is held out")
        if self.kind == "composition":
            for name, _ in {pair for combination in self.held_out for pair in combination}:
                k = dataset.factor_names.index(name)
                missing = np.flatnonzero(~seen[k])
                if missing.size:
                    raise InputError(f"{where}: value {int(missing[0])} of {name} never appears in training, "
                                     "so this is not a composition split; hold out fewer combinations")
        return train, test

    def sample(self, dataset, n: int, rng: np.random.Generator, *, part: str = "train",
               parts: tuple | None = None) -> np.ndarray:
        """``n`` indices drawn uniformly from one part (``"train"`` or ``"held_out"``): distinct
        when the part holds ``n`` points, with replacement otherwise. ``parts``: :meth:`parts`'s
        result, to enumerate the grid once for several draws."""
        if part not in ("train", "held_out"):
            raise ValueError(f"part: expected 'train' or 'held_out', got {part!r}")
        train, test = parts if parts is not None else self.parts(dataset)
        pool = train if part == "train" else test
        return draw(pool, n, rng)

    def check(self, dataset) -> "Split":
        """``InputError`` (one line) unless every factor and value it names exists in ``dataset``."""
        names, sizes = list(dataset.factor_names), [int(s) for s in dataset.factor_sizes]
        where = f"split {self.name!r} on {dataset.name}"
        if self.kind == "random":
            return self
        pairs = [p for c in self.held_out for p in c] if self.kind == "composition" else list(self.held_out)
        for name, values in pairs:
            if name not in names:
                raise InputError(f"{where}: no factor {name!r}; its factors: {', '.join(names)}")
            size = sizes[names.index(name)]
            if max(values) >= size:
                raise InputError(f"{where}: {name} has values 0..{size - 1}, the split names {max(values)}")
            if len(values) >= size and self.kind != "composition":  # composition: parts() checks coverage
                raise InputError(f"{where}: every value of {name} is held out; leave some for training")
            if self.kind == "interpolation" and (values[0] == 0 or values[-1] == size - 1):
                raise InputError(f"{where}: interpolation holds out inner values of {name} (1..{size - 2}); "
                                 f"{0 if values[0] == 0 else size - 1} is an end of its range (use extrapolation)")
            if self.kind == "extrapolation" and not _at_the_ends(values, size):
                raise InputError(f"{where}: extrapolation holds out values at the ends of {name}'s range "
                                 f"(0..a and/or b..{size - 1}), got {_describe_values(values)} "
                                 "(use interpolation for inner values)")
        return self

    def to_dict(self) -> dict:
        """A plain record of the split (what :func:`parse_split` reads back)."""
        out: dict = {"name": self.name, "kind": self.kind}
        if self.kind == "random":
            out.update(test_fraction=self.test_fraction, seed=self.seed)
        elif self.kind == "composition":
            out["held_out"] = [{n: _record_values(v) for n, v in c} for c in self.held_out]
        else:
            out["held_out"] = {n: _record_values(v) for n, v in self.held_out}
        return out

    def describe(self) -> str:
        """One line: what is held out."""
        if self.kind == "random":
            return f"{self.name}: random, {self.test_fraction:.3f} of the points held out (seed {self.seed})"
        if self.kind == "composition":
            combos = " or ".join("(" + ", ".join(f"{n} {_describe_values(v)}" for n, v in c) + ")"
                                 for c in self.held_out)
            return f"{self.name}: composition, held out where {combos}"
        listed = ", ".join(f"{n} {_describe_values(v)}" for n, v in self.held_out)
        return f"{self.name}: {self.kind}, held out where any of {listed}"


def draw(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` entries of ``pool`` drawn uniformly: without replacement when it is large enough."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n: expected an integer >= 0, got {n!r}")
    if len(pool) >= n:
        return np.sort(pool[rng.choice(len(pool), size=int(n), replace=False)]) if n else pool[:0]
    return pool[rng.integers(0, len(pool), size=int(n))]


def _unit_hash(keys: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per key (splitmix64 of the key and a seed-derived offset)."""
    offset = np.random.SeedSequence([0x5B117, int(seed)]).generate_state(1, np.uint64)[0]
    z = np.asarray(keys, dtype=np.uint64) + offset + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _at_the_ends(values: tuple, size: int) -> bool:
    """Whether ``values`` (sorted, distinct) are 0..a and/or b..size-1."""
    values = list(values)
    low = 0
    while low < len(values) and values[low] == low:
        low += 1
    high = values[low:]
    return not high or high == list(range(size - len(high), size))


def _record_values(values):
    """The table form of sorted values: ``"a..b"`` per run, an int per lone value (one item unwrapped)."""
    items = [int(r) if ".." not in r else r for r in _describe_values(values).split(", ")]
    return items[0] if len(items) == 1 else items


def _describe_values(values) -> str:
    """Sorted distinct ints as ``"a..b"`` runs: ``[0, 1, 2, 7]`` -> ``"0..2, 7"``."""
    values, runs = list(values), []
    start = prev = values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        runs.append(str(start) if start == prev else f"{start}..{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(runs)


# -- built-in splits -----------------------------------------------------------------------------

def schott_rule(dataset) -> tuple[float, tuple[str, ...], str]:
    """(ratio r, factors kept whole, where the parameters come from) of the built-in splits."""
    names = tuple(dataset.factor_names)
    for rule_names, ratio, kept in SCHOTT_RULES:
        if names == rule_names:
            return ratio, kept, "Schott et al. 2022's parameters for this dataset"
    kept = tuple(n for n in names if n in CATEGORICAL_FACTOR_NAMES)
    return DEFAULT_RATIO, kept, "Schott et al. 2022's construction with r = 0.2 (a dataset they did not split)"


def builtin_split(name: str, dataset) -> Split:
    """The built-in split ``name`` (one of :data:`BUILTIN`) of ``dataset``."""
    if name not in BUILTIN:
        raise InputError(f"unknown split {name!r}; built-in splits: {', '.join(BUILTIN)} (or a split table)")
    ratio, kept, source = schott_rule(dataset)
    split_factors = [(n, int(s)) for n, s in zip(dataset.factor_names, dataset.factor_sizes)
                     if n not in kept and int(s) >= 2]
    if not split_factors:
        raise InputError(f"{dataset.name}: no factor to split (every factor is kept whole or has one value)")
    if name in ("extrapolation", "random"):
        held = [(n, tuple(range(s - math.ceil(s * ratio), s))) for n, s in split_factors]
        if name == "extrapolation":
            return Split(name=name, kind=name, held_out=tuple(held), source=source)
        train_share = math.prod(1 - len(v) / s for (_, v), (_, s) in zip(held, split_factors))
        return Split(name=name, kind="random", test_fraction=float(1 - train_share), seed=0, source=source)
    if name == "interpolation":
        held = []
        for n, s in split_factors:
            on_grid = set(np.round(np.linspace(0, s - 1, s - math.ceil(s * ratio))).astype(np.int64).tolist())
            inner = tuple(v for v in range(s) if v not in on_grid)
            if inner and inner[0] > 0 and inner[-1] < s - 1:  # a 2-valued factor has no inner value
                held.append((n, inner))
        return Split(name=name, kind=name, held_out=tuple(held), source=source)
    m = len(split_factors)
    q = 1 - (1 - (1 - ratio) ** m) ** (1 / m)
    combination = tuple((n, tuple(range(math.floor(s * q), s))) for n, s in split_factors if math.floor(s * q) > 0)
    return Split(name=name, kind="composition", held_out=(combination,), source=source)


def resolve_split(value, dataset) -> Split:
    """A :class:`Split` checked against ``dataset``: from a built-in name, a table or a Split."""
    if isinstance(value, Split):
        split = value
    elif isinstance(value, str):
        split = builtin_split(value, dataset)
    else:
        split = parse_split(value)
    return split.check(dataset)


# -- split tables ---------------------------------------------------------------------------------

def parse_split(table) -> Split:
    """A :class:`Split` from a plain table (a TOML table / JSON object); ``InputError`` in one line.

    ``{kind = "extrapolation", held_out = {posX = "24..31", scale = [4, 5]}}`` (or for one factor
    ``{kind = "extrapolation", factor = "posX", held_out = "24..31"}``); ``interpolation`` alike;
    ``{kind = "composition", held_out = [{shape = 0, posX = "16..31"}]}``;
    ``{kind = "random", test_fraction = 0.3, seed = 0}``. Optional ``name``. Values are factor
    value indices: an integer, an inclusive ``"a..b"`` range, or a list of both.
    """
    if not isinstance(table, dict):
        raise InputError(f"split: expected a built-in name ({', '.join(BUILTIN)}) or a table, "
                         f"got {type(table).__name__}")
    kind = table.get("kind")
    if kind not in KINDS:
        raise InputError(f"split: kind must be one of {', '.join(KINDS)}, got {_short(kind)}")
    allowed = {"random": {"kind", "name", "test_fraction", "seed"},
               "composition": {"kind", "name", "held_out"}}.get(kind, {"kind", "name", "held_out", "factor"})
    unknown = sorted(set(map(str, table)) - allowed)
    if unknown:
        raise InputError(f"split ({kind}): unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    name = table.get("name", f"custom {kind}")
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
        raise InputError(f"split: name must be a string of 1..{_MAX_NAME} characters")
    if kind == "random":
        fraction, seed = table.get("test_fraction"), table.get("seed", 0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise InputError(f"split (random): test_fraction must be a number in (0, 1), got {_short(fraction)}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise InputError(f"split (random): seed must be an integer >= 0, got {_short(seed)}")
        return Split(name=name, kind=kind, test_fraction=float(fraction), seed=seed)
    if "held_out" not in table:
        raise InputError(f"split ({kind}): held_out is required")
    held_out = table["held_out"]
    if kind == "composition":
        if not isinstance(held_out, list) or not held_out or len(held_out) > _MAX_COMBINATIONS:
            raise InputError(f"split (composition): held_out must be a list of 1..{_MAX_COMBINATIONS} tables "
                             "(factor -> values), e.g. [{shape = 0, posX = \"16..31\"}]")
        combinations = []
        for i, combination in enumerate(held_out):
            pairs = _factor_values(combination, f"split (composition): held_out[{i}]")
            if len(pairs) < 2:
                raise InputError(f"split (composition): held_out[{i}] names one factor; a combination needs two "
                                 "or more (holding out values of one factor is extrapolation or interpolation)")
            combinations.append(pairs)
        return Split(name=name, kind=kind, held_out=tuple(combinations))
    if "factor" in table:
        factor = table["factor"]
        if not isinstance(factor, str) or not 0 < len(factor) <= _MAX_NAME:
            raise InputError(f"split ({kind}): factor must be a factor name")
        held_out = {factor: held_out}
    pairs = _factor_values(held_out, f"split ({kind}): held_out")
    return Split(name=name, kind=kind, held_out=pairs)


def _factor_values(table, where: str) -> tuple:
    """``((factor, sorted distinct values), ...)`` from a factor -> values table."""
    if not isinstance(table, dict) or not table or len(table) > _MAX_FACTORS:
        raise InputError(f"{where} must be a table of 1..{_MAX_FACTORS} factors -> values, "
                         "e.g. {posX = \"24..31\"}")
    pairs = []
    for factor, spec in table.items():
        if not isinstance(factor, str) or not 0 < len(factor) <= _MAX_NAME:
            raise InputError(f"{where}: factor names must be strings of 1..{_MAX_NAME} characters")
        pairs.append((factor, _values(spec, f"{where}.{factor}")))
    return tuple(pairs)


def _values(spec, where: str) -> tuple[int, ...]:
    items = spec if isinstance(spec, list) else [spec]
    if not items:
        raise InputError(f"{where}: no values")
    values: set[int] = set()
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 2**31:
            values.add(item)
            continue
        match = _RANGE.match(item) if isinstance(item, str) and len(item) <= 32 else None
        if not match or int(match.group(1)) > int(match.group(2) or match.group(1)):
            raise InputError(f"{where}: a value is an integer >= 0 or an inclusive range \"a..b\" (a <= b), "
                             f"got {_short(item)}")
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        if hi - lo + 1 + len(values) > _MAX_VALUES:
            raise InputError(f"{where}: more than {_MAX_VALUES:,} values")
        values.update(range(lo, hi + 1))
    return tuple(sorted(values))


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
