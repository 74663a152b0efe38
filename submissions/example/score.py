"""Score the example submission against a randomly initialised encoder of the same architecture.

    python submissions/example/score.py            # the exported encoder.onnx next to this file
    python submissions/example/score.py --checkpoint submissions/example/checkpoint.safetensors

Challenge settings on procedural dSprites: FactorVAE score (eval_accuracy) and MIG (discrete_mig),
``seed=0`` and the study sizes, through ``harness.metrics`` with in-process encoders (our own
models, so no sandbox). Each metric draws its observations once (``MetricSpec.sample``); both
encoders encode the same images, and each is scored from its own half of the codes. Writes
``scores.json`` next to this file (unless --no-write) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from harness import datasets, metrics
from harness.allocator import keep_freed_memory
from harness.baseline.models import ConvEncoder

HERE = Path(__file__).resolve().parent
METRICS = {"factor_vae": "eval_accuracy", "mig": "discrete_mig"}


def torch_encoder(module):
    module.eval()

    def encode(images):
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        with torch.no_grad():
            return module(x)[0].numpy()

    return encode


def onnx_encoder(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def encode(images):
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
        return session.run(None, {name: x})[0]

    return encode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="score this harness train checkpoint instead of encoder.onnx")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # the in-process torch encoders would page-fault their batch buffers in every call
    dataset = datasets.load("dsprites")
    if args.checkpoint:
        from harness.baseline.checkpoint import module_state, read_checkpoint

        meta, tensors = read_checkpoint(args.checkpoint)
        trained = ConvEncoder(1, 64, 64, meta["config"]["latent_dim"])
        trained.load_state_dict(module_state(tensors, "encoder"))
        trained_encode, trained_label = torch_encoder(trained), f"checkpoint step {meta['step']}"
    else:
        trained_encode, trained_label = onnx_encoder(HERE / "encoder.onnx"), "example (encoder.onnx)"
    torch.manual_seed(0)  # the random baseline: torch's default init of the same architecture, seed 0
    random_encode = torch_encoder(ConvEncoder(1, 64, 64, 10))

    def both(images):
        return np.concatenate([trained_encode(images), random_encode(images)], axis=1)

    results = {trained_label: {}, "random init (seed 0)": {}}
    timing = {}
    for name, key in METRICS.items():
        spec = metrics.get(name)
        t0 = time.perf_counter()
        request = spec.sample(dataset, seed=0)
        codes = metrics.encode_request(request, dataset, both)
        half = codes.shape[1] // 2
        for label, part in zip(results, (codes[:, :half], codes[:, half:])):
            scored = spec.score(request, part, seed=0)
            results[label][f"{name}.{key}"] = float(scored[key])
            if f"{key}_ci95" in scored:
                results[label][f"{name}.{key}_ci95"] = [float(v) for v in scored[f"{key}_ci95"]]
            if f"{key}_per_factor" in scored:  # FactorVAE: which factors' votes miss
                results[label][f"{name}.{key}_per_factor"] = dict(zip(dataset.factor_names,
                                                                      scored[f"{key}_per_factor"]))
        timing[name] = round(time.perf_counter() - t0, 1)
    print(f"| encoder | FactorVAE eval_accuracy | MIG |\n|---|---|---|")
    for label, row in results.items():
        print(f"| {label} | {row['factor_vae.eval_accuracy']:.3f} | {row['mig.discrete_mig']:.3f} |")
    for label, row in results.items():
        per_factor = row.get("factor_vae.eval_accuracy_per_factor", {})
        print(f"FactorVAE votes right, by fixed factor, {label}:",
              ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} n/a" for k, v in per_factor.items()))
    print("seconds per metric (both encoders):", timing)
    if not args.no_write:
        record = {"dataset": "dsprites (procedural)", "seed": 0, "metrics": METRICS, "results": results,
                  "seconds": timing, "threads": args.threads}
        (HERE / "scores.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
