"""harness.evaluation: the encode-once plan, the code cache, evaluate()/evaluate_dataset and results.json.

Everything runs for real on the tiny 'dummy' dataset (120 grid points, 16x16x1) with an ONNX
encoder written in a fixture, through onnxruntime and the process sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness import datasets
from harness.evaluation.plan import Timing, build_code_table

REPO = Path(__file__).resolve().parents[1]

# Small sizes for every metric of the presets (the study sizes are for bench/).
SMALL = {
    "factor_vae": {"num_train": 300, "num_eval": 200, "num_variance_estimate": 500, "batch_size": 16},
    "beta_vae": {"num_train": 300, "num_eval": 200, "batch_size": 16},
    "dci": {"num_train": 300, "num_test": 200},
    "sap": {"num_train": 300, "num_test": 200},
    "mig": {"num_train": 500},
    "irs": {"num_train": 500},
    "modularity_explicitness": {"num_train": 300, "num_test": 200},
    "unsupervised": {"num_train": 500},
}


# -- a tiny ONNX encoder for the dummy dataset ------------------------------------------------------

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


def write_onnx_submission(root: Path, *, name: str = "tiny", latent_dim: int = 4, weights=None,
                          emit_nan: bool = False) -> Path:
    """A real ONNX submission: Flatten -> MatMul -> Add (-> Sqrt(-|.|-1) = NaN when ``emit_nan``)."""
    root.mkdir(parents=True, exist_ok=True)
    w, b = weights if weights is not None else band_weights(latent_dim)
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["mean" if not emit_nan else "lin"])]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")]
    if emit_nan:
        nodes += [helper.make_node("Abs", ["lin"], ["a"]), helper.make_node("Neg", ["a"], ["n"]),
                  helper.make_node("Sub", ["n", "one"], ["m"]), helper.make_node("Sqrt", ["m"], ["mean"])]
        inits.append(numpy_helper.from_array(np.ones(1, np.float32), "one"))
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["N", latent_dim])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, root / "encoder.onnx")
    manifest = {"name": name, "format": "onnx", "model": "encoder.onnx",
                "input": {"channels": 1, "height": 16, "width": 16}, "latent_dim": latent_dim,
                "outputs": ["mean"]}
    (root / "submission.json").write_text(json.dumps(manifest))
    return root


def numpy_encoder(latent_dim: int = 4):
    """The same linear encoder in numpy, for in-process (trusted) runs; counts the images it sees."""
    w, b = band_weights(latent_dim)

    def encode(images):
        encode.calls.append(len(images))
        x = np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0
        return x @ w + b

    encode.calls = []
    return encode


class Request:
    """The two fields of an ObservationRequest the plan reads (indices, observation_seed)."""

    def __init__(self, indices, observation_seed):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.observation_seed = observation_seed


@pytest.fixture(scope="module")
def submission(tmp_path_factory):
    return write_onnx_submission(tmp_path_factory.mktemp("sub") / "tiny")


# -- plan: encode once -----------------------------------------------------------------------------

def test_deterministic_plan_encodes_each_unique_index_once():
    ds = datasets.load("dummy")
    rng = np.random.default_rng(1)
    requests = {"a": Request(rng.integers(0, 120, 400), 11), "b": Request(rng.integers(0, 120, 300), 12)}
    encode = numpy_encoder()
    table, timing = build_code_table(ds, requests, encode, chunk_size=17, batch_size=5)
    unique = np.unique(np.concatenate([r.indices for r in requests.values()]))
    assert timing.images_requested == 700
    assert timing.images_encoded == len(unique) == sum(encode.calls)
    assert max(encode.calls) <= 5
    for name, request in requests.items():
        direct = numpy_encoder()(ds.observations(request.indices))
        np.testing.assert_allclose(table.lookup(name, request), direct, rtol=1e-6)


@pytest.mark.parametrize("name", ["noisy_dsprites", "color_dsprites"])
def test_stochastic_plan_renders_each_sample_in_chunks_like_the_whole_request(name):
    ds = datasets.load(name)
    rng = np.random.default_rng(2)
    idx = rng.integers(0, ds.num_observations, 50)
    requests = {"a": Request(idx, 5), "b": Request(idx, 6)}  # same indices, different nuisances
    w = np.random.default_rng(0).integers(-3, 4, size=(64 * 64 * 3, 3))

    def encode(images):  # integer arithmetic: equal codes mean equal pixels, whatever the batching
        return np.asarray(images, np.int64).reshape(len(images), -1) @ w

    table, timing = build_code_table(ds, requests, encode, chunk_size=7, batch_size=3)
    assert timing.images_encoded == 100  # every sample is its own on a stochastic dataset
    for key, request in requests.items():
        whole = encode(ds.observations(request.indices, rng=np.random.default_rng(request.observation_seed)))
        np.testing.assert_array_equal(table.lookup(key, request), whole)
    assert not np.allclose(table.lookup("a", requests["a"]), table.lookup("b", requests["b"]))


def test_cache_rerun_encodes_only_new_indices(tmp_path):
    from harness.evaluation.cache import DatasetCache

    ds = datasets.load("dummy")
    first = {"m": Request(np.arange(0, 60), 0)}
    second = {"m": Request(np.arange(30, 100), 1), "n": Request(np.array([5, 99, 119]), 2)}
    sha = "ab" * 32
    enc1 = numpy_encoder()
    build_code_table(ds, first, enc1, cache=DatasetCache(tmp_path, sha, ds))
    enc2 = numpy_encoder()
    table, timing = build_code_table(ds, second, enc2, cache=DatasetCache(tmp_path, sha, ds))
    assert timing.images_encoded == sum(enc2.calls) == len(np.setdiff1d(np.r_[30:100, 119], np.arange(60)))
    assert timing.images_from_cache == 31  # 30..59 and 5 were encoded by the first run
    for key, request in second.items():
        np.testing.assert_allclose(table.lookup(key, request), numpy_encoder()(ds.observations(request.indices)),
                                   rtol=1e-6)
    # another submission hash shares nothing
    enc3 = numpy_encoder()
    _, timing3 = build_code_table(ds, second, enc3, cache=DatasetCache(tmp_path, "cd" * 32, ds))
    assert timing3.images_from_cache == 0


def test_cache_ignores_a_corrupt_file(tmp_path):
    from harness.evaluation.cache import DatasetCache

    ds = datasets.load("dummy")
    cache = DatasetCache(tmp_path, "ef" * 32, ds)
    cache.grid_path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable cache"):
        table, timing = build_code_table(ds, {"m": Request([1, 2, 3], 0)}, numpy_encoder(), cache=cache)
    assert timing.images_encoded == 3
    assert DatasetCache(tmp_path, "ef" * 32, ds).lookup(np.array([1, 2, 3]))[0].tolist() == [1, 2, 3]


def test_cache_stochastic_requests(tmp_path):
    from harness.evaluation.cache import DatasetCache

    ds = datasets.load("noisy_dsprites")
    req = {"m": Request([3, 3, 700], 9)}
    w = np.ones((64 * 64 * 3, 2), np.float32)

    def encode(images):
        return np.asarray(images, np.float32).reshape(len(images), -1) @ w

    t1, _ = build_code_table(ds, req, encode, cache=DatasetCache(tmp_path, "aa" * 32, ds))
    t2, timing = build_code_table(ds, req, encode, cache=DatasetCache(tmp_path, "aa" * 32, ds))
    assert timing.images_encoded == 0 and timing.images_from_cache == 3
    np.testing.assert_array_equal(t1.lookup("m", req["m"]), t2.lookup("m", req["m"]))
