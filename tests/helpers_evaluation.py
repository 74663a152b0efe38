"""Evaluation test helpers: small metric sizes for the presets, and the dummy dataset's band encoder
(the same linear code an ONNX submission of test_evaluation computes) as a trusted numpy callable."""

from __future__ import annotations

import numpy as np

# Small sizes for every metric of the presets (the study sizes are for bench/); one job, few replicates.
FAST = {"n_bootstrap": 20}
SMALL = {
    "factor_vae": {"num_train": 300, "num_eval": 200, "num_variance_estimate": 500, "batch_size": 16, **FAST},
    "beta_vae": {"num_train": 300, "num_eval": 200, "batch_size": 16, **FAST},
    "dci": {"num_train": 300, "num_test": 200, "n_jobs": 1, **FAST},
    "sap": {"num_train": 300, "num_test": 200, "n_jobs": 1, **FAST},
    "sap_continuous": {"num_train": 300, "num_test": 200, **FAST},
    "mig": {"num_train": 500, **FAST},
    "mig_sup": {"num_train": 500, **FAST},
    "dcimig": {"num_train": 500, **FAST},
    "jemmig": {"num_train": 500, **FAST},
    "irs": {"num_train": 500, **FAST},
    "modularity_explicitness": {"num_train": 300, "num_test": 200, "n_jobs": 1, **FAST},
    "unsupervised": {"num_train": 500, **FAST},
    "infomec": {"num_train": 300, "num_test": 200, "n_jobs": 1, **FAST},
    "mcc": {"num_train": 300, **FAST},
    "downstream_logistic_regression": {"train_sizes": [10, 100], "num_test": 200, "n_jobs": 1, **FAST},
    "downstream_boosted_trees": {"train_sizes": [10, 100], "num_test": 200, "n_jobs": 1, **FAST},
}


def band_weights(latent_dim: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Linear encoder on the dummy dataset's 16x16 pixels: code k = brightness of band k (k < 3),
    the last code mixes bands 0 and 1 (so not every dimension is disentangled)."""
    w = np.zeros((16, 16, latent_dim), dtype=np.float32)
    for k in range(min(3, latent_dim)):
        w[5 * k : 5 * k + 5, :, k] = 1.0 / 80.0
    if latent_dim > 3:
        w[0:5, :, 3] = 0.5 / 80.0
        w[5:10, :, 3] = 0.5 / 80.0
    return w.reshape(256, latent_dim), np.zeros(latent_dim, dtype=np.float32)


def numpy_encoder(latent_dim: int = 4):
    """The same linear encoder in numpy, for in-process (trusted) runs; counts the images it sees."""
    w, b = band_weights(latent_dim)

    def encode(images):
        encode.calls.append(len(images))
        x = np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0
        return x @ w + b

    encode.calls = []
    encode.weights, encode.bias = w, b
    return encode
