"""The metric registry: every metric as a MetricSpec (observation plan + scoring), and presets.

``spec.sample(dataset, seed=..., **params)`` decides from the seed alone which observations the
metric needs; ``spec.score(request, codes, seed=..., **params)`` scores the codes of
``request.indices``. Both accept the metric's whole parameter set (each uses its own part), so an
evaluator can pass one dict to both.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from harness.errors import InputError
from harness.metrics import _bootstrap
from harness.metrics import intervention as _intervention
from harness.metrics.dci import DEFAULT_ESTIMATOR as _DCI_DEFAULT_ESTIMATOR
from harness.metrics.dci import ESTIMATORS as _DCI_ESTIMATORS
from harness.metrics.dci import dci as _dci
from harness.metrics.dci_es import dci_es as _dci_es
from harness.metrics.downstream import ESTIMATORS as _DOWNSTREAM_ESTIMATORS
from harness.metrics.downstream import PREDICTORS as _DOWNSTREAM_PREDICTORS
from harness.metrics.downstream import downstream as _downstream
from harness.metrics.flatness import sample_flatness as _sample_flatness
from harness.metrics.flatness import score_flatness as _score_flatness
from harness.metrics.infomec import infomec as _infomec
from harness.metrics.irs import irs as _irs
from harness.datasets import splits as _splits
from harness.metrics.mcc import CORRELATIONS as _MCC_CORRELATIONS
from harness.metrics.mcc import mcc as _mcc
from harness.metrics.med import med as _med
from harness.metrics.regression import CATEGORICAL_FACTORS as _CATEGORICAL_FACTORS
from harness.metrics.regression import PREDICTORS as _REGRESSION_PREDICTORS
from harness.metrics.regression import regression_informativeness as _regression_informativeness
from harness.metrics.readout import PREDICTORS as _READOUT_PREDICTORS
from harness.metrics.readout import generalization_readout as _generalization_readout
from harness.metrics.mig import dcimig as _dcimig
from harness.metrics.mig import jemmig as _jemmig
from harness.metrics.mig import mig as _mig
from harness.metrics.mig import mig_sup as _mig_sup
from harness.metrics.modularity import modularity_explicitness as _modularity_explicitness
from harness.metrics.sap import sap as _sap
from harness.metrics.unsupervised import unsupervised as _unsupervised
from harness.metrics.request import ObservationRequest, request_rngs

PRESETS = ("challenge", "dlib", "full")


# --- parameter constraints (sklearn's validate_params style): checked before anything is encoded ---

@dataclass(frozen=True)
class Interval:
    """A number of ``kind`` (int or float) in [low, high] (``None``: unbounded; open ends by flag)."""

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def problem(self, value) -> str | None:
        kinds = (int, np.integer) if self.kind is int else (int, float, np.integer, np.floating)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return f"must be {'an integer' if self.kind is int else 'a number'}"
        low_ok = self.low is None or (value > self.low if self.open_low else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.open_high else value <= self.high)
        if low_ok and high_ok:
            return None
        lo = "" if self.low is None else f"{'>' if self.open_low else '>='} {self.low:g}"
        hi = "" if self.high is None else f"{'<' if self.open_high else '<='} {self.high:g}"
        return f"must be {'an integer' if self.kind is int else 'a number'} {' and '.join(x for x in (lo, hi) if x)}"


@dataclass(frozen=True)
class Options:
    values: tuple

    def problem(self, value) -> str | None:
        ok = value in self.values and not (isinstance(value, bool) and not any(isinstance(v, bool) for v in self.values))
        return None if ok else f"must be one of {', '.join(map(repr, self.values))}"


@dataclass(frozen=True)
class NJobs:
    """scikit-learn's n_jobs: None (one), -1 (all cores), or a positive number of processes."""

    def problem(self, value) -> str | None:
        if value is None or (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                             and (value >= 1 or value == -1)):
            return None
        return "must be None, -1 (every core) or an integer >= 1"


@dataclass(frozen=True)
class Sizes:
    """A non-empty sequence of integers >= 1."""

    def problem(self, value) -> str | None:
        if isinstance(value, (list, tuple)) and value and all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in value):
            return None
        return "must be a non-empty list of integers >= 1"


@dataclass(frozen=True)
class Names:
    """A list of at most 64 factor names (strings of at most 100 characters)."""

    def problem(self, value) -> str | None:
        if isinstance(value, (list, tuple)) and len(value) <= 64 and all(
                isinstance(v, str) and 0 < len(v) <= 100 for v in value):
            return None
        return "must be a list of at most 64 factor names"


@dataclass(frozen=True)
class SplitParam:
    """A generalization split: a built-in name (harness.datasets.splits.BUILTIN) or a split table
    (checked here for its form; its factors and values are checked on the dataset when planning)."""

    def problem(self, value) -> str | None:
        if isinstance(value, _splits.Split) or (isinstance(value, str) and value in _splits.BUILTIN):
            return None
        if isinstance(value, dict):
            try:
                _splits.parse_split(value)
            except InputError as exc:
                return "table" + str(exc).removeprefix("split")
            return None
        return f"must be a built-in split ({', '.join(_splits.BUILTIN)}) or a split table"


# The same name means the same thing in every metric; a metric's own choices go in its spec.
PARAM_CONSTRAINTS = {
    "num_train": Interval(int, 1), "num_test": Interval(int, 1), "num_eval": Interval(int, 1),
    "num_variance_estimate": Interval(int, 2), "batch_size": Interval(int, 2), "num_bins": Interval(int, 2),
    "n_bootstrap": Interval(int, 0), "n_jobs": NJobs(), "prune_threshold": Interval(float, 0),
    "diff_quantile": Interval(float, 0, 1, open_low=True), "continuous_factors": Options((False, True)),
    "discrete_latents": Options((False, True)), "top_k": Interval(int, 1),
    "train_sizes": Sizes(), "capacities": Sizes(), "repeats": Interval(int, 1), "categorical_factors": Names(),
}


_CALLER_ARGS = ("dataset", "request", "codes", "seed")  # what the evaluator passes, not parameters


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: its outputs, where it is used, and how to plan and score it.

    Output keys (docs/metrics.md, "Keys"): ``values`` are the scalars (what a board can rank);
    ``intervals`` those of them that also come as ``<key>_ci95``; ``extras`` the lists and matrices
    (``*_per_factor``: one entry per factor; ``*_matrix``: codes x factors). ``key_prefixes`` maps the
    parameters to the prefixes every key takes (downstream: one ``<train size>:`` per size).

    The default parameters are the keyword defaults of ``sample_fn`` and ``score_fn``, updated with
    ``overrides`` (where the registered metric deliberately differs from the plain function).
    """

    name: str
    values: tuple[str, ...]
    headline: tuple[str, ...]
    presets: tuple[str, ...]
    citation: str
    sample_fn: Callable = field(repr=False)
    score_fn: Callable = field(repr=False)
    intervals: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    key_prefixes: Callable | None = field(default=None, repr=False)
    overrides: dict = field(default_factory=dict, repr=False)
    preset_params: dict = field(default_factory=dict, repr=False)
    choices: dict = field(default_factory=dict, repr=False)  # param -> Options of this metric's own
    default_params: dict = field(init=False, repr=False)

    def __post_init__(self):
        defaults = {}
        for function in (self.sample_fn, self.score_fn):
            for name, p in inspect.signature(function).parameters.items():
                if name not in _CALLER_ARGS and p.kind is not p.VAR_KEYWORD:
                    if p.default is p.empty and name not in self.overrides:
                        raise TypeError(f"metric {self.name}: parameter {name} has no default")
                    defaults[name] = p.default
        object.__setattr__(self, "default_params", {**defaults, **self.overrides})

    def _prefixes(self, params: dict | None) -> list[str]:
        return list(self.key_prefixes({**self.default_params, **(params or {})})) if self.key_prefixes else [""]

    def scalar_keys(self, params: dict | None = None) -> list[str]:
        """The scalar keys ``score()`` returns with ``params`` (over the defaults)."""
        return [prefix + key for prefix in self._prefixes(params) for key in self.values]

    def output_keys(self, params: dict | None = None) -> list[str]:
        """Every key ``score()`` returns with ``params``: values, intervals, extras."""
        own = [*self.values, *(f"{k}_ci95" for k in self.intervals), *self.extras]
        return [prefix + key for prefix in self._prefixes(params) for key in own]

    def null_values(self, params: dict | None = None) -> dict:
        """What a metric that could not be scored reports: every output key, null."""
        return dict.fromkeys(self.output_keys(params))

    @property
    def keys(self) -> tuple[str, ...]:
        """The scalar keys with the default parameters (the keys a challenge can rank)."""
        return tuple(self.scalar_keys())

    def constraint(self, param: str):
        return self.choices.get(param) or PARAM_CONSTRAINTS[param]

    def validate(self, params: dict) -> dict:
        """The defaults updated with ``params``; ``InputError`` naming the first unknown parameter or
        value out of its range (so a bad ``--param`` stops before anything is encoded)."""
        unknown = sorted(set(params) - set(self.default_params))
        if unknown:
            raise InputError(f"metric {self.name}: unknown parameter(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(self.default_params))}")
        merged = {**self.default_params, **params}
        for name, value in merged.items():
            problem = self.constraint(name).problem(value)
            if problem:
                raise InputError(f"metric {self.name}: {name} {problem}, got {value!r}")
        return merged

    _params = validate

    def sample(self, dataset, *, seed: int, **params) -> ObservationRequest:
        """Which observations this metric needs (decided from ``seed`` and the sizes alone)."""
        return self.sample_fn(dataset, seed=seed, **_select(self.sample_fn, self._params(params)))

    def score(self, request: ObservationRequest, codes, *, seed: int, **params) -> dict:
        """The metric's values (and ``<key>_ci95`` intervals) from the codes of ``request.indices``."""
        if request.metric != self.name:
            raise ValueError(f"request: made for metric {request.metric!r}, not {self.name!r}")
        return self.score_fn(request, codes, seed=seed, **_select(self.score_fn, self._params(params)))

    def __call__(self, dataset, encode, *, seed: int = 0, **params) -> dict:
        """Run alone: sample, encode, score."""
        from harness.metrics.request import encode_request

        request = self.sample(dataset, seed=seed, **params)
        return self.score(request, encode_request(request, dataset, encode), seed=seed, **params)


def _select(function: Callable, params: dict) -> dict:
    accepted = inspect.signature(function).parameters
    return {k: v for k, v in params.items() if k in accepted}


# --- array metrics: uniform samples of the dataset, split into train and test --------------------

# The study's sizes (disentanglement_lib): 10,000 training points, 5,000 test points.
NUM_TRAIN, NUM_TEST = 10000, 5000


def _sample_uniform(name: str, *, with_test: bool = True):
    """The planner of a metric scored on uniform samples: ``num_train`` points (then ``num_test``)."""
    def sample(dataset, *, seed: int, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST) -> ObservationRequest:
        for label, value in (("num_train", num_train), ("num_test", num_test)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise InputError(f"metric {name}: {label} must be an integer >= 0, got {value!r}")
        rng, observation_seed = request_rngs(seed)
        indices = rng.integers(0, dataset.num_observations, size=num_train + num_test)
        return ObservationRequest(metric=name, indices=indices, observation_seed=observation_seed,
                                  factors=np.asarray(dataset.index_to_factors(indices), dtype=np.int64),
                                  structure={"num_train": num_train, "num_test": num_test})

    def sample_train_only(dataset, *, seed: int, num_train: int = NUM_TRAIN) -> ObservationRequest:
        return sample(dataset, seed=seed, num_train=num_train, num_test=0)

    return sample if with_test else sample_train_only


def _split(request: ObservationRequest, codes):
    codes = np.asarray(codes)
    if codes.ndim != 2 or len(codes) != len(request.indices):
        raise ValueError(f"codes: expected {len(request.indices)} rows (one per request index), got shape "
                         f"{codes.shape}")
    n = request.structure["num_train"]
    return codes[:n], request.factors[:n], codes[n:], request.factors[n:]


def _score_train_only(function):
    def score(request, codes, *, seed, **params):
        codes_train, factors_train, _, _ = _split(request, codes)
        return function(codes_train, factors_train, seed=seed, **params)
    score.__signature__ = _merged_signature(function, drop=("codes", "factors"))
    return score


def _score_codes_only(function):
    def score(request, codes, *, seed, **params):
        codes_train, _, _, _ = _split(request, codes)
        return function(codes_train, seed=seed, **params)
    score.__signature__ = _merged_signature(function, drop=("codes",))
    return score


def _score_train_test(function):
    def score(request, codes, *, seed, **params):
        return function(*_split(request, codes), seed=seed, **params)
    score.__signature__ = _merged_signature(function, drop=("codes_train", "factors_train", "codes_test",
                                                            "factors_test"))
    score.uses_test = True
    return score


def _merged_signature(function, drop):
    params = [p for n, p in inspect.signature(function).parameters.items() if n not in drop]
    head = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("codes", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return inspect.Signature(head + params)


def _score_downstream(request, codes, *, seed, predictor, estimator="lightgbm", n_jobs=None,
                      n_bootstrap=_bootstrap.DEFAULT_N_BOOTSTRAP):
    """Per training size, its own train draw and test draw, as disentanglement_lib samples them."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or len(codes) != len(request.indices):
        raise ValueError(f"codes: expected {len(request.indices)} rows (one per request index), got shape "
                         f"{codes.shape}")
    out = {}
    start = 0
    for size in request.structure["train_sizes"]:
        stop_train = start + size
        stop = stop_train + request.structure["num_test"]
        values = _downstream(codes[start:stop_train], request.factors[start:stop_train],
                                        codes[stop_train:stop], request.factors[stop_train:stop],
                                        predictor=predictor, estimator=estimator, n_jobs=n_jobs,
                                        n_bootstrap=n_bootstrap, seed=seed)
        out.update({f"{size}:{key}": value for key, value in values.items()})
        start = stop
    return out


def _sample_downstream(name: str):
    def sample(dataset, *, seed: int, train_sizes=(10, 100, 1000, 10000), num_test: int = 5000):
        sizes = [int(s) for s in train_sizes]
        if not sizes or min(sizes) < 1 or num_test < 1:
            raise InputError(f"metric {name}: train_sizes and num_test must be positive integers")
        rng, observation_seed = request_rngs(seed)
        total = sum(sizes) + num_test * len(sizes)
        indices = rng.integers(0, dataset.num_observations, size=total)
        return ObservationRequest(metric=name, indices=indices, observation_seed=observation_seed,
                                  factors=np.asarray(dataset.index_to_factors(indices), dtype=np.int64),
                                  structure={"train_sizes": sizes, "num_test": int(num_test)})
    return sample


_REGISTRY: dict[str, MetricSpec] = {}


def register(spec: MetricSpec) -> MetricSpec:
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    """Registered metric names, in registry order."""
    return list(_REGISTRY)


def get(name: str) -> MetricSpec:
    """The :class:`MetricSpec` called ``name``; ``InputError`` naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown metric {name!r}; known metrics: {', '.join(_REGISTRY)}") from None


def presets() -> list[str]:
    return list(PRESETS)


def preset(name: str) -> dict[str, dict]:
    """Metric name -> parameters (over each metric's defaults) of a preset, in run order."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return {spec.name: dict(spec.preset_params.get(name, {})) for spec in _REGISTRY.values() if name in spec.presets}


# An evaluation uses every core; the plain functions default to one process, as sklearn's do.
_PARALLEL = {"n_jobs": -1}


def _array_metric(name, score_fn, **spec):
    """A metric on uniform samples: a test split unless ``score_fn`` scores the training split alone."""
    with_test = getattr(score_fn, "uses_test", False)
    return register(MetricSpec(name=name, sample_fn=_sample_uniform(name, with_test=with_test),
                               score_fn=score_fn, **spec))


register(MetricSpec(
    name="beta_vae", values=("train_accuracy", "eval_accuracy"), intervals=("eval_accuracy",),
    headline=("eval_accuracy",), presets=("dlib", "full"),
    citation="Higgins et al., 2017. beta-VAE: Learning Basic Visual Concepts with a Constrained Variational "
             "Framework. ICLR.",
    sample_fn=_intervention.sample_beta_vae, score_fn=_intervention.score_beta_vae))
register(MetricSpec(
    name="factor_vae", values=("train_accuracy", "eval_accuracy", "num_active_dims"), intervals=("eval_accuracy",),
    extras=("eval_accuracy_per_factor",), headline=("eval_accuracy",), presets=("challenge", "dlib", "full"),
    citation="Kim and Mnih, 2018. Disentangling by Factorising. ICML.",
    sample_fn=_intervention.sample_factor_vae, score_fn=_intervention.score_factor_vae))
_array_metric(
    "dci", _score_train_test(_dci),
    values=("disentanglement", "completeness", "informativeness_train", "informativeness_test"),
    intervals=("disentanglement", "completeness", "informativeness_test"), extras=("importance_matrix",),
    headline=("disentanglement",), presets=("challenge", "dlib", "full"),
    citation="Eastwood and Williams, 2018. A Framework for the Quantitative Evaluation of Disentangled "
             "Representations. ICLR.",
    overrides=_PARALLEL, preset_params={"dlib": {"estimator": "gbt"}}, choices={"estimator": Options(_DCI_ESTIMATORS)})
_array_metric(
    "dci_es", _score_train_test(_dci_es), values=("explicitness", "size"), intervals=("explicitness",),
    extras=("explicitness_per_factor",), headline=("explicitness",), presets=("full",),
    citation="Eastwood, Nicolicioiu, von Kuegelgen, Kekic, Traeuble, Dittadi and Schoelkopf, 2023. DCI-ES: An "
             "Extended Disentanglement Framework with Connections to Identifiability. ICLR.",
    overrides=_PARALLEL)
_array_metric(
    "sap", _score_train_test(_sap), values=("sap_score",), intervals=("sap_score",), headline=("sap_score",),
    presets=("challenge", "dlib", "full"),
    citation="Kumar, Sattigeri and Balakrishnan, 2018. Variational Inference of Disentangled Latent Concepts "
             "from Unlabeled Observations. ICLR.",
    overrides=_PARALLEL)
_array_metric(
    "mig", _score_train_only(_mig), values=("discrete_mig",), intervals=("discrete_mig",),
    extras=("mutual_info_matrix", "entropy_per_factor"), headline=("discrete_mig",),
    presets=("challenge", "dlib", "full"),
    citation="Chen, Li, Grosse and Duvenaud, 2018. Isolating Sources of Disentanglement in Variational "
             "Autoencoders. NeurIPS.")
_array_metric(
    "irs", _score_train_only(_irs), values=("irs", "num_active_dims"), intervals=("irs",), headline=("irs",),
    presets=("challenge", "dlib", "full"),
    citation="Suter, Miladinovic, Schoelkopf and Bauer, 2019. Robustly Disentangled Causal Mechanisms: "
             "Validating Deep Representations for Interventional Robustness. ICML.",
    overrides=_PARALLEL)
_array_metric(
    "modularity_explicitness", _score_train_test(_modularity_explicitness),
    values=("modularity_score", "explicitness_score_train", "explicitness_score_test"),
    intervals=("modularity_score", "explicitness_score_test"),
    headline=("modularity_score", "explicitness_score_test"), presets=("dlib", "full"),
    citation="Ridgeway and Mozer, 2018. Learning Deep Disentangled Embeddings With the F-Statistic Loss. "
             "NeurIPS.",
    overrides=_PARALLEL)
_UNSUPERVISED = ("gaussian_total_correlation", "gaussian_wasserstein_correlation",
                 "gaussian_wasserstein_correlation_norm", "mutual_info_score")
_array_metric(
    "unsupervised", _score_codes_only(_unsupervised), values=_UNSUPERVISED, intervals=_UNSUPERVISED,
    headline=("gaussian_total_correlation", "mutual_info_score"), presets=("dlib", "full"),
    citation="Locatello et al., 2019. Challenging Common Assumptions in the Unsupervised Learning of "
             "Disentangled Representations. ICML.")
_DOWNSTREAM = dict(
    values=("mean_train_accuracy", "mean_test_accuracy", "min_train_accuracy", "min_test_accuracy"),
    intervals=("mean_test_accuracy",), extras=("train_accuracy_per_factor", "test_accuracy_per_factor"),
    key_prefixes=lambda params: [f"{size}:" for size in params["train_sizes"]],
    headline=("100:mean_test_accuracy", "10000:mean_test_accuracy"), presets=("dlib", "full"),
    citation="Locatello et al., 2019. Challenging Common Assumptions in the Unsupervised Learning of "
             "Disentangled Representations. ICML.",
    choices={"estimator": Options(_DOWNSTREAM_ESTIMATORS), "predictor": Options(_DOWNSTREAM_PREDICTORS)})
register(MetricSpec(
    name="downstream_logistic_regression", **_DOWNSTREAM,
    overrides={"predictor": "logistic_regression", **_PARALLEL},
    sample_fn=_sample_downstream("downstream_logistic_regression"), score_fn=_score_downstream))
register(MetricSpec(
    name="downstream_boosted_trees", **_DOWNSTREAM, overrides={"predictor": "boosted_trees", **_PARALLEL},
    preset_params={"dlib": {"estimator": "gbt"}},
    sample_fn=_sample_downstream("downstream_boosted_trees"), score_fn=_score_downstream))
_array_metric(
    "sap_continuous", _score_train_test(_sap), values=("sap_score",), intervals=("sap_score",),
    headline=("sap_score",), presets=("full",),
    citation="Kumar, Sattigeri and Balakrishnan, 2018. Variational Inference of Disentangled Latent Concepts "
             "from Unlabeled Observations. ICLR.",
    overrides={"continuous_factors": True, **_PARALLEL})
_array_metric(
    "mig_sup", _score_train_only(_mig_sup), values=("mig_sup",), intervals=("mig_sup",), headline=("mig_sup",),
    presets=("full",),
    citation="Li, Murkute, Gyawali and Wang, 2020. Progressive Learning and Disentanglement of Hierarchical "
             "Representations. ICLR.")
_array_metric(
    "dcimig", _score_train_only(_dcimig), values=("dcimig",), intervals=("dcimig",), headline=("dcimig",),
    presets=("full",),
    citation="Sepliarskaia, Kiseleva and de Rijke, 2019. Evaluating Disentangled Representations. "
             "arXiv:1910.05587.")
_array_metric(
    "jemmig", _score_train_only(_jemmig), values=("jemmig",), intervals=("jemmig",), headline=("jemmig",),
    presets=("full",),
    citation="Do and Tran, 2020. Theory and Evaluation Metrics for Learning Disentangled Representations. ICLR.")
_array_metric(
    "mcc", _score_train_only(_mcc), values=("mcc",), intervals=("mcc",), extras=("mcc_per_factor",),
    headline=("mcc",), presets=("full",),
    citation="Khemakhem, Kingma, Monti and Hyvarinen, 2020. Variational Autoencoders and Nonlinear ICA: A "
             "Unifying Framework. AISTATS.",
    choices={"correlation": Options(_MCC_CORRELATIONS)})
_array_metric(
    "infomec", _score_train_test(_infomec), values=("infom", "infoe", "infoc", "num_active_latents"),
    intervals=("infom", "infoe", "infoc"), headline=("infom", "infoe", "infoc"), presets=("full",),
    citation="Hsu, Dorrell, Whittington, Wu and Finn, 2023. Disentanglement via Latent Quantization. NeurIPS.",
    overrides=_PARALLEL)
_array_metric(
    "med", _score_train_test(_med),
    values=("disentanglement", "completeness", "top_k_disentanglement", "top_k_completeness",
            "informativeness_train", "informativeness_test"),
    intervals=("disentanglement", "completeness", "top_k_disentanglement", "top_k_completeness",
               "informativeness_test"),
    extras=("mutual_info_matrix",), headline=("disentanglement", "top_k_disentanglement"), presets=("full",),
    citation="Cao, Wang, Zhang, Zheng and Wang, 2022. An Empirical Study on Disentanglement of Negative-free "
             "Contrastive Learning. NeurIPS.",
    overrides=_PARALLEL)
register(MetricSpec(
    name="z_max_var", values=("train_accuracy", "eval_accuracy", "num_active_dims"), intervals=("eval_accuracy",),
    extras=("eval_accuracy_per_factor",), headline=("eval_accuracy",), presets=("full",),
    citation="Kim, Wang, Sahu and Pavlovic, 2019. Relevance Factor VAE: Learning and Identifying Disentangled "
             "Factors. arXiv:1902.01568.",
    sample_fn=_intervention.sample_z_max_var, score_fn=_intervention.score_z_max_var))


def _sample_regression(dataset, *, seed: int, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST,
                       categorical_factors=_CATEGORICAL_FACTORS) -> ObservationRequest:
    """Uniform samples; the dataset's factors named in ``categorical_factors`` are recorded as categories."""
    request = _sample_uniform("regression_informativeness")(dataset, seed=seed, num_train=num_train,
                                                            num_test=num_test)
    request.structure["categorical"] = [k for k, name in enumerate(dataset.factor_names)
                                        if name in set(categorical_factors)]
    return request


def _score_regression(request, codes, *, seed, predictor="linear", n_jobs=None,
                      n_bootstrap=_bootstrap.DEFAULT_N_BOOTSTRAP):
    return _regression_informativeness(*_split(request, codes), predictor=predictor,
                                       categorical=request.structure["categorical"], n_jobs=n_jobs,
                                       n_bootstrap=n_bootstrap, seed=seed)


register(MetricSpec(
    name="regression_informativeness", values=("r2_train", "r2_test"), intervals=("r2_test",),
    extras=("r2_per_factor",), headline=("r2_test",), presets=("full",),
    citation="Eastwood and Williams, 2018. A Framework for the Quantitative Evaluation of Disentangled "
             "Representations. ICLR (informativeness as prediction error).",
    overrides=_PARALLEL, choices={"predictor": Options(_REGRESSION_PREDICTORS)},
    sample_fn=_sample_regression, score_fn=_score_regression))
register(MetricSpec(
    name="flatness", values=("flatness", "flatness_l1", "flatness_l2"), intervals=("flatness",),
    extras=("flatness_per_factor",), headline=("flatness",), presets=("full",),
    citation="Michlo, 2021. The flatness metric of disent (github.com/nmichlo/disent), from "
             "github.com/nmichlo/msc-research.",
    sample_fn=_sample_flatness, score_fn=_score_flatness))


# The in-distribution test points of `generalization` come from this share of the split's training
# part, set apart at random (from the metric's seed) before the fitted points are drawn from the rest.
IID_SHARE = 0.2


def _sample_generalization(dataset, *, seed: int, split="extrapolation", num_train: int = NUM_TRAIN,
                           num_iid: int = NUM_TEST, num_test: int = NUM_TEST,
                           categorical_factors=_CATEGORICAL_FACTORS) -> ObservationRequest:
    """Rows: ``num_train`` fitted points and ``num_iid`` in-distribution test points from the split's
    training part (disjoint shares of it), then ``num_test`` points of its held-out part; each draw
    distinct where its share holds enough points."""
    resolved = _splits.resolve_split(split, dataset)
    train, held_out = resolved.parts(dataset)
    if len(train) < 2:
        raise InputError(f"metric generalization: split {resolved.name!r} leaves {len(train)} training point(s) "
                         f"on {dataset.name}; it needs two (one to fit, one to test in distribution)")
    rng, observation_seed = request_rngs(seed)
    order = rng.permutation(len(train))
    n_iid = min(len(train) - 1, max(1, round(IID_SHARE * len(train))))
    iid_pool, fit_pool = np.sort(train[order[:n_iid]]), np.sort(train[order[n_iid:]])
    indices = np.concatenate([_splits.draw(fit_pool, num_train, rng), _splits.draw(iid_pool, num_iid, rng),
                              _splits.draw(held_out, num_test, rng)])
    return ObservationRequest(
        metric="generalization", indices=indices, observation_seed=observation_seed,
        factors=np.asarray(dataset.index_to_factors(indices), dtype=np.int64),
        structure={"num_train": num_train, "num_iid": num_iid, "num_test": num_test, "split": resolved.to_dict(),
                   "held_out_fraction": len(held_out) / (len(train) + len(held_out)),
                   "categorical": [k for k, name in enumerate(dataset.factor_names)
                                   if name in set(categorical_factors)]})


def _score_generalization(request, codes, *, seed, predictor="linear", n_bootstrap=_bootstrap.DEFAULT_N_BOOTSTRAP):
    codes = np.asarray(codes)
    if codes.ndim != 2 or len(codes) != len(request.indices):
        raise ValueError(f"codes: expected {len(request.indices)} rows (one per request index), got shape "
                         f"{codes.shape}")
    a = request.structure["num_train"]
    b = a + request.structure["num_iid"]
    f = request.factors
    out = _generalization_readout(codes[:a], f[:a], codes[b:], f[b:], codes[a:b], f[a:b], predictor=predictor,
                                  categorical=request.structure["categorical"], n_bootstrap=n_bootstrap, seed=seed)
    return {**out, "held_out_fraction": float(request.structure["held_out_fraction"])}


register(MetricSpec(
    name="generalization", values=("r2_held_out", "r2_iid", "held_out_fraction"),
    intervals=("r2_held_out", "r2_iid"), extras=("r2_held_out_per_factor", "r2_iid_per_factor"),
    headline=("r2_held_out", "r2_iid"), presets=("full",),
    citation="Schott, von Kuegelgen, Traeuble, Gehler, Russell, Bethge, Schoelkopf, Locatello and Brendel, 2022. "
             "Visual Representation Learning Does Not Generalize Strongly Within the Same Domain. ICLR.",
    choices={"split": SplitParam(), "predictor": Options(_READOUT_PREDICTORS), "num_iid": Interval(int, 1)},
    sample_fn=_sample_generalization, score_fn=_score_generalization))
