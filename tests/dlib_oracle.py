"""disentanglement_lib 1.5 as a test oracle (DESIGN 4), loaded with the shims it needs on 3.11.

Test-only: the library never imports this. disentanglement_lib is installed with ``--no-deps``;
its metric modules need gin's old ``configurable(blacklist=...)`` (now ``denylist``), an alias
module ``gin.tf`` and, for the data utilities, a ``tensorflow.compat.v1`` stub.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np

_MODULES = ("beta_vae", "dci", "factor_vae", "irs", "mig", "modularity_explicitness", "sap_score",
            "unsupervised_metrics", "utils")


def _install_shims() -> None:
    import gin

    if not getattr(gin, "_harness_shimmed", False):
        original = gin.configurable

        def configurable(*args, blacklist=None, **kwargs):
            if blacklist is not None:
                kwargs["denylist"] = blacklist
            return original(*args, **kwargs)

        gin.configurable = configurable
        gin._harness_shimmed = True
    sys.modules.setdefault("gin.tf", gin)
    if "tensorflow" not in sys.modules:
        tensorflow = types.ModuleType("tensorflow")
        compat = types.ModuleType("tensorflow.compat")
        v1 = types.ModuleType("tensorflow.compat.v1")
        tensorflow.compat = compat
        compat.v1 = v1
        sys.modules.update({"tensorflow": tensorflow, "tensorflow.compat": compat, "tensorflow.compat.v1": v1})


def load():
    """A namespace of disentanglement_lib's metric modules, gin configured with the study's
    histogram discretizer (20 bins); raises ImportError when the library is not installed."""
    _install_shims()
    import gin

    modules = {name: importlib.import_module(f"disentanglement_lib.evaluation.metrics.{name}") for name in _MODULES}
    # The modules keep their reference to the stub; drop it from sys.modules so that torch, which
    # probes for tensorflow with importlib.util.find_spec, does not trip over a spec-less module.
    for name in [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]:
        if getattr(sys.modules[name], "__spec__", None) is None:
            del sys.modules[name]
    gin.clear_config()
    gin.parse_config(["discretizer.discretizer_fn = @histogram_discretizer", "discretizer.num_bins = 20"])
    return types.SimpleNamespace(**modules)


def configure(bindings: list[str]) -> None:
    """Add gin bindings (e.g. ``prune_dims.threshold = 0.05``) on top of the discretizer's."""
    import gin

    gin.parse_config(["discretizer.discretizer_fn = @histogram_discretizer", "discretizer.num_bins = 20",
                      *bindings])


class GroundTruthAdapter:
    """disentanglement_lib's GroundTruthData interface over one of our grid datasets."""

    def __init__(self, dataset):
        self.dataset = dataset

    @property
    def num_factors(self):
        return len(self.dataset.factor_sizes)

    @property
    def factors_num_values(self):
        return list(self.dataset.factor_sizes)

    @property
    def observation_shape(self):
        return list(self.dataset.observation_shape)

    def sample_factors(self, num, random_state):
        return np.stack([random_state.randint(size, size=num) for size in self.dataset.factor_sizes], axis=1)

    def sample_observations_from_factors(self, factors, random_state):
        images = self.dataset.observations(self.dataset.factors_to_index(factors))
        return images.astype(np.float32) / 255.0

    def sample(self, num, random_state):
        factors = self.sample_factors(num, random_state)
        return factors, self.sample_observations_from_factors(factors, random_state)

    def sample_observations(self, num, random_state):
        return self.sample(num, random_state)[1]
