"""Parity with disentanglement_lib 1.5 on identical arrays (DESIGN 4): the reference is an
oracle, loaded with its shims from tests/dlib_oracle.py."""

from __future__ import annotations

import numpy as np
import pytest

from harness import metrics
from test_metrics_representations import KINDS, represent, sample_factors

dlib_oracle = pytest.importorskip("dlib_oracle")
try:
    DL = dlib_oracle.load()
except ImportError as exc:  # pragma: no cover - the oracle is in the test extra
    pytest.skip(f"disentanglement_lib not importable: {exc}", allow_module_level=True)

SIZES = [3, 6, 10, 8]
N_TRAIN, N_TEST = 1500, 700
EXACT = 1e-6

# disentanglement_lib itself warns on the degenerate representations (that is what is tested)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::scipy.linalg.LinAlgWarning")


def arrays(kind, seed=0):
    factors = sample_factors(SIZES, N_TRAIN + N_TEST, seed)
    codes = represent(kind, factors, SIZES, seed=seed + 1)
    return codes[:N_TRAIN], factors[:N_TRAIN], codes[N_TRAIN:], factors[N_TRAIN:]


def without_constant(codes, *others):
    keep = codes.var(axis=0) > 0
    return (codes[:, keep],) + tuple(o[:, keep] for o in others)


@pytest.mark.parametrize("kind", KINDS)
def test_mig(kind):
    c, f, _, _ = arrays(kind)
    ours = metrics.mig(c, f, n_bootstrap=0)["discrete_mig"]
    theirs = DL.mig._compute_mig(c.T, f.T)["discrete_mig"]
    assert ours == pytest.approx(theirs, abs=EXACT)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("continuous", [False, True])
def test_sap(kind, continuous):
    c, f, ct, ft = arrays(kind)
    ours = metrics.sap(c, f, ct, ft, continuous_factors=continuous, n_bootstrap=0)["sap_score"]
    theirs = DL.sap_score._compute_sap(c.T, f.T, ct.T, ft.T, continuous)["SAP_score"]
    assert ours == pytest.approx(theirs, abs=EXACT)


def _dl_modularity_explicitness(c, f, ct, ft):
    mi = DL.utils.discrete_mutual_info(DL.utils.make_discretizer(c.T), f.T)
    modularity = DL.modularity_explicitness.modularity(mi)
    train_norm, mean, std = DL.utils.normalize_data(c.T)
    test_norm, _, _ = DL.utils.normalize_data(ct.T, mean, std)
    scores = [DL.modularity_explicitness.explicitness_per_factor(train_norm, f[:, k], test_norm, ft[:, k])
              for k in range(f.shape[1])]
    return modularity, np.mean([s[0] for s in scores]), np.mean([s[1] for s in scores])


@pytest.mark.parametrize("kind", KINDS)
def test_modularity_explicitness(kind):
    c, f, ct, ft = arrays(kind)
    ours = metrics.modularity_explicitness(c, f, ct, ft, n_bootstrap=0)
    if kind == "collapsed":
        # disentanglement_lib divides by the zero std of a constant code and fails; ours keeps the
        # constant code as zeros, which a logistic regression ignores: compare with it dropped.
        with pytest.raises(ValueError):
            _dl_modularity_explicitness(c, f, ct, ft)
        modularity = DL.modularity_explicitness.modularity(
            DL.utils.discrete_mutual_info(DL.utils.make_discretizer(c.T), f.T))
        _, train, test = _dl_modularity_explicitness(*without_constant(c, ct)[:1], f,
                                                     without_constant(c, ct)[1], ft)
    else:
        modularity, train, test = _dl_modularity_explicitness(c, f, ct, ft)
    assert ours["modularity_score"] == pytest.approx(modularity, abs=EXACT)
    assert ours["explicitness_score_train"] == pytest.approx(train, abs=EXACT)
    assert ours["explicitness_score_test"] == pytest.approx(test, abs=EXACT)


@pytest.mark.parametrize("kind", KINDS)
def test_irs(kind):
    c, f, _, _ = arrays(kind)
    ours = metrics.irs(c, f, n_bootstrap=0)
    active = DL.irs._drop_constant_dims(c.T)
    theirs = DL.irs.scalable_disentanglement_score(DL.utils.make_discretizer(f.T).T, active.T, 0.99)["avg_score"]
    assert ours["irs"] == pytest.approx(theirs, abs=EXACT)
    assert ours["num_active_dims"] == active.shape[0]  # disentanglement_lib sums the values instead


@pytest.mark.parametrize("kind", KINDS)
def test_unsupervised(kind):
    c, _, _, _ = arrays(kind)
    ours = metrics.unsupervised(c, n_bootstrap=0)
    reduced = without_constant(c)[0]  # disentanglement_lib's TC is NaN with a constant code
    cov = np.cov(reduced.T)
    assert ours["gaussian_total_correlation"] == pytest.approx(
        DL.unsupervised_metrics.gaussian_total_correlation(cov), rel=EXACT, abs=EXACT)
    full_cov = np.cov(c.T)
    wasserstein = np.real(DL.unsupervised_metrics.gaussian_wasserstein_correlation(full_cov))
    assert ours["gaussian_wasserstein_correlation"] == pytest.approx(wasserstein, abs=EXACT)
    assert ours["gaussian_wasserstein_correlation_norm"] == pytest.approx(
        wasserstein / np.trace(full_cov), abs=EXACT)
    binned = DL.utils.make_discretizer(c.T)
    mi = DL.utils.discrete_mutual_info(binned, binned)
    np.fill_diagonal(mi, 0)
    assert ours["mutual_info_score"] == pytest.approx(mi.sum() / (c.shape[1] ** 2 - c.shape[1]), abs=EXACT)


def test_total_correlation_nan_in_dlib_with_constant_code():
    c, _, _, _ = arrays("collapsed")
    with np.errstate(divide="ignore", invalid="ignore"):
        assert np.isnan(DL.unsupervised_metrics.gaussian_total_correlation(np.cov(c.T)))
    assert np.isfinite(metrics.unsupervised(c, n_bootstrap=0)["gaussian_total_correlation"])


@pytest.mark.parametrize("kind", ["identity", "rotated", "noisy"])
def test_dci_gbt(kind):
    sizes = [3, 4, 5]
    factors = sample_factors(sizes, 900, seed=3)
    codes = represent(kind, factors, sizes, seed=4, num_dims=4)
    c, f, ct, ft = codes[:600], factors[:600], codes[600:], factors[600:]
    ours = metrics.dci(c, f, ct, ft, estimator="gbt", n_bootstrap=0, n_jobs=1)
    # sklearn breaks ties between equally good splits with numpy's global state (~0.01 of spread
    # on 600 samples): seed it so the comparison is the same on every run
    np.random.seed(0)
    theirs = DL.dci._compute_dci(c.T, f.T, ct.T, ft.T)
    for key in ("disentanglement", "completeness", "informativeness_train", "informativeness_test"):
        assert ours[key] == pytest.approx(theirs[key], abs=0.01), key


@pytest.mark.parametrize("estimator", ["gbt", "lightgbm"])
def test_dci_on_a_constant_code_matches(estimator):
    factors = sample_factors([3, 4, 5], 600, seed=5)
    codes = np.zeros((600, 4))
    ours = metrics.dci(codes[:400], factors[:400], codes[400:], factors[400:], estimator=estimator, n_bootstrap=0)
    theirs = DL.dci._compute_dci(codes[:400].T, factors[:400].T, codes[400:].T, factors[400:].T)
    for key in ("disentanglement", "completeness", "informativeness_train", "informativeness_test"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), key


class _Encoder:
    """A deterministic encoder of the dummy dataset: band brightnesses, mixed and bent."""

    def __init__(self, mixing):
        self.mixing = np.asarray(mixing, dtype=np.float64)

    def __call__(self, images):
        x = np.asarray(images, dtype=np.float64)
        if np.asarray(images).dtype == np.uint8:
            x = x / 255.0
        bands = np.stack([x[:, 5 * k:5 * k + 5].mean(axis=(1, 2, 3)) for k in range(3)], axis=1)
        wobble = np.sin(40.0 * bands)  # deterministic "noise": a function of the image
        return np.concatenate([bands, wobble], axis=1) @ self.mixing


MIXINGS = {
    "clean": np.eye(6),
    # every code mixes every factor's brightness and wobble: accuracies well below 1
    "wobbly": np.diag([1.0, 1.0, 1.0, 3.0, 3.0, 3.0]) @ np.random.default_rng(3).normal(size=(6, 6)),
}
# (mixing, FactorVAE batch, BetaVAE batch): the study's batch on a clean code, and small batches
# on the mixed one so that neither score saturates.
CASES = [("clean", 64, 16), ("wobbly", 8, 2)]


@pytest.mark.parametrize("mixing,batch,_", CASES)
def test_factor_vae(mixing, batch, _):
    from harness import datasets

    dataset = datasets.load("dummy")
    encoder = _Encoder(MIXINGS[mixing])
    dlib_oracle.configure(["prune_dims.threshold = 0.05"])
    theirs = DL.factor_vae.compute_factor_vae(dlib_oracle.GroundTruthAdapter(dataset), encoder,
                                              np.random.RandomState(0), None, batch_size=batch, num_train=3000,
                                              num_eval=5000, num_variance_estimate=3000)
    ours = metrics.factor_vae(dataset, encoder, seed=0, batch_size=batch, num_train=3000, num_eval=5000,
                              num_variance_estimate=3000, n_bootstrap=0)
    assert ours["eval_accuracy"] == pytest.approx(theirs["eval_accuracy"], abs=0.02)
    assert ours["train_accuracy"] == pytest.approx(theirs["train_accuracy"], abs=0.02)
    assert ours["num_active_dims"] == 6


@pytest.mark.parametrize("mixing,_,batch", CASES)
def test_beta_vae(mixing, _, batch):
    from harness import datasets

    dataset = datasets.load("dummy")
    encoder = _Encoder(MIXINGS[mixing])
    theirs = DL.beta_vae.compute_beta_vae_sklearn(dlib_oracle.GroundTruthAdapter(dataset), encoder,
                                                  np.random.RandomState(0), None, batch_size=batch, num_train=3000,
                                                  num_eval=5000)
    ours = metrics.beta_vae(dataset, encoder, seed=0, batch_size=batch, num_train=3000, num_eval=5000,
                            n_bootstrap=0)
    assert ours["eval_accuracy"] == pytest.approx(theirs["eval_accuracy"], abs=0.02)


# InfoMEC against its authors' code (kylehkhsu/latent_quantization, disentangle/metrics/infomec.py),
# run on these arrays once (sklearn 1.9: LogisticRegression without multi_class, lbfgs multinomial);
# the authors' function takes one set of samples, so ours gets it as both train and test.
INFOMEC_REFERENCE = {  # kind: (discrete_latents, infom, infoe, infoc); None: not comparable (see below)
    "quantized4": (True, 0.8154952290678247, 0.758266756427055, 0.9872926205984659),  # 2 constant latents
    "quantized2": (True, 0.7237067735092304, 0.3643169277538502, 0.9846344171515191),
    "collapsed": (False, None, 0.6669314585449534, None),
    "identity": (False, None, 0.9998633293406559, None),
    "noisy": (False, None, 0.4751555182650442, None),
}


@pytest.mark.parametrize("kind", list(INFOMEC_REFERENCE))
def test_infomec_matches_its_authors_code(kind):
    """Discrete latents: every value of InfoM, InfoE and InfoC (the pruning of inactive latents
    included) to 1e-6. Continuous latents: InfoE (unpenalized, class-balanced logistic regression
    against the null model); the authors' InfoM/InfoC there use a nearest-neighbour MI estimator
    with random jitter, ours binned MI (docs/metrics.md)."""
    from harness import metrics

    discrete, infom, infoe, infoc = INFOMEC_REFERENCE[kind]
    factors = sample_factors([3, 5, 8], 1500, seed=2)
    codes = represent(kind, factors, [3, 5, 8], seed=3, num_dims=6)
    if kind == "quantized4":
        codes[:, 4:] = 0.0
    out = metrics.infomec(codes, factors, codes, factors, discrete_latents=discrete, n_bootstrap=0, n_jobs=1)
    assert out["infoe"] == pytest.approx(infoe, abs=1e-6)
    if infom is not None:
        assert out["infom"] == pytest.approx(infom, abs=1e-6)
        assert out["infoc"] == pytest.approx(infoc, abs=1e-6)
    if kind == "quantized4":
        assert out["num_active_latents"] == 4


# MED / top-k MED against the authors' algorithm (Cao et al., 2022; their med.py on
# disentanglement_lib's discretizer and MI, sklearn 1.9), run on these arrays once.
MED_REFERENCE = {  # (kind, top_k): the authors' values
("identity", 1): {"informativeness_train": 0.9856666667, "informativeness_test": 0.9785714286, "disentanglement": 0.8302685305, "completeness": 0.7642174694, "top_k_disentanglement": 0.8914977762, "top_k_completeness": 0.8914357978},
    ("identity", 2): {"informativeness_train": 0.9856666667, "informativeness_test": 0.9785714286, "disentanglement": 0.8302685305, "completeness": 0.7642174694, "top_k_disentanglement": 0.8599779573, "top_k_completeness": 0.8184004990},
    ("rotated", 1): {"informativeness_train": 1.0000000000, "informativeness_test": 0.9992857143, "disentanglement": 0.1587082745, "completeness": 0.1074348536, "top_k_disentanglement": 0.1842839436, "top_k_completeness": 0.1775749125},
    ("rotated", 2): {"informativeness_train": 1.0000000000, "informativeness_test": 0.9992857143, "disentanglement": 0.1587082745, "completeness": 0.1074348536, "top_k_disentanglement": 0.1686123095, "top_k_completeness": 0.1207715416},
    ("collapsed", 1): {"informativeness_train": 0.7778333333, "informativeness_test": 0.7685714286, "disentanglement": 0.5154012189, "completeness": 0.8164282912, "top_k_disentanglement": 0.5154012189, "top_k_completeness": 0.6525374423},
    ("collapsed", 2): {"informativeness_train": 0.7778333333, "informativeness_test": 0.7685714286, "disentanglement": 0.5154012189, "completeness": 0.8164282912, "top_k_disentanglement": 0.5154012189, "top_k_completeness": 0.7246424376},
    ("quantized4", 1): {"informativeness_train": 0.6598333333, "informativeness_test": 0.6292857143, "disentanglement": 0.9259303396, "completeness": 0.9309171977, "top_k_disentanglement": 0.9316576632, "top_k_completeness": 0.9317089239},
    ("quantized4", 2): {"informativeness_train": 0.6598333333, "informativeness_test": 0.6292857143, "disentanglement": 0.9259303396, "completeness": 0.9309171977, "top_k_disentanglement": 0.9271644741, "top_k_completeness": 0.9314053292},
}


@pytest.mark.parametrize("kind, top_k", list(MED_REFERENCE))
def test_med_matches_its_authors_code(kind, top_k):
    from harness import metrics

    sizes = (3, 6, 10, 8)
    factors, factors_test = sample_factors(sizes, 1500, 1), sample_factors(sizes, 700, 2)
    codes = represent(kind, np.concatenate([factors, factors_test]), sizes, seed=4, num_dims=8)
    out = metrics.med(codes[:1500], factors, codes[1500:], factors_test, top_k=top_k, n_bootstrap=0, n_jobs=1)
    for key, value in MED_REFERENCE[kind, top_k].items():
        assert out[key] == pytest.approx(value, abs=1e-9), key


# Flatness against disent 0.8.0's metric_flatness (disent/metrics/_flatness.py, loaded alone with its
# dataset handing out these traversals), run once.
FLATNESS_REFERENCE = {"flatness": 0.42959626406680895, "flatness_l1": 0.5640472234420532,
                      "flatness_l2": 0.5482061440135348}


def test_flatness_matches_disent():
    from harness.metrics.flatness import flatness_from_traversals

    rng = np.random.default_rng(7)
    traversals = []
    for size in [3, 6, 1, 40, 2]:  # a factor of one value is left out, as disent does
        t = np.linspace(0, 2 * np.pi, size)
        curve = np.stack([np.cos(t), np.sin(t), 0.3 * t, np.zeros(size), np.zeros(size)], axis=1)
        traversals.append(curve[None] + 0.05 * rng.normal(size=(32, size, 5)))
    out = flatness_from_traversals(traversals, n_bootstrap=0)
    for key, value in FLATNESS_REFERENCE.items():
        assert out[key] == pytest.approx(value, abs=1e-6), key
    assert out["flatness_per_factor"][2] is None
