"""Disentanglement metrics (DESIGN 3.4): plain functions on samples-first arrays, intervention
metrics over a dataset and an ``encode`` callable, a registry of :class:`MetricSpec` and presets.

Pure numpy/scipy/scikit-learn/LightGBM: no torch, sandbox or CLI imports.
"""

from harness.metrics.dci import dci
from harness.metrics.dci_es import dci_es
from harness.metrics.downstream import downstream
from harness.metrics.flatness import flatness
from harness.metrics.infomec import infomec
from harness.metrics.intervention import beta_vae, factor_vae, z_max_var
from harness.metrics.irs import irs
from harness.metrics.mcc import mcc
from harness.metrics.med import med
from harness.metrics.mig import dcimig, jemmig, mig, mig_sup
from harness.metrics.modularity import modularity_explicitness
from harness.metrics.registry import PRESETS, MetricSpec, get, names, preset, presets
from harness.metrics.readout import generalization_readout
from harness.metrics.request import ObservationRequest, encode_request
from harness.metrics.regression import regression_informativeness
from harness.metrics.sap import sap
from harness.metrics.unsupervised import unsupervised

__all__ = [
    "MetricSpec", "ObservationRequest", "PRESETS", "beta_vae", "dci", "dci_es", "dcimig", "downstream", "encode_request",
    "factor_vae", "flatness", "generalization_readout", "get", "infomec", "irs", "jemmig", "mcc", "med", "mig", "mig_sup", "modularity_explicitness", "names",
    "preset", "presets", "regression_informativeness", "sap", "unsupervised", "z_max_var",
]
