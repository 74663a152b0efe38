"""What the example's codes carry about each factor, beyond what the two metrics say.

    python submissions/example/probe.py [--samples 20000] [--seed 0]

On procedural dSprites (factors drawn uniformly with ``numpy.random.default_rng(seed)``), for the
active codes (std > 0.05) of ``encoder.onnx``:

- probe accuracy: a gradient-boosted classifier (scikit-learn) trained on all active codes of 3/4
  of the samples predicts each factor on the other 1/4; against chance, it says whether the
  information is there at all, however it is encoded;
- best single-code eta^2: the largest share of one code's variance explained by the factor's value
  (between-value variance of the code's means); near 0 when no code follows the factor on its own;
- the std of each active code at each scale value: a code that grows with scale carries scale as an
  amplitude rather than as a value of its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from harness import datasets

HERE = Path(__file__).resolve().parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from score import onnx_encoder  # the sibling script's ONNX encode function

    encode = onnx_encoder(HERE / "encoder.onnx")
    dataset = datasets.load("dsprites")
    factors = dataset.sample_factors(args.samples, np.random.default_rng(args.seed))
    codes = np.concatenate([encode(dataset.observations(dataset.factors_to_index(factors[i:i + 2000])))
                            for i in range(0, args.samples, 2000)])
    active = np.flatnonzero(codes.std(axis=0) > 0.05)
    z = codes[:, active]
    split = args.samples * 3 // 4
    print(f"active codes {active.tolist()}; {args.samples} samples, seed {args.seed}")
    print("| factor | probe accuracy (all codes) | chance | best single-code eta^2 |\n|---|---|---|---|")
    for k, name in enumerate(dataset.factor_names):
        probe = HistGradientBoostingClassifier(max_iter=40, random_state=args.seed).fit(z[:split], factors[:split, k])
        accuracy = float((probe.predict(z[split:]) == factors[split:, k]).mean())
        values = np.unique(factors[:, k])
        means = np.array([z[factors[:, k] == v].mean(axis=0) for v in values])
        weights = np.array([(factors[:, k] == v).mean() for v in values])
        eta2 = (weights[:, None] * (means - z.mean(axis=0)) ** 2).sum(axis=0) / z.var(axis=0)
        print(f"| {name} | {accuracy:.2f} | {1 / dataset.factor_sizes[k]:.2f} | {eta2.max():.2f} |")
    scale = dataset.factor_names.index("scale")
    print("\nstd of each active code by scale value (rows: scale 0..5):")
    for v in range(dataset.factor_sizes[scale]):
        print(v, " ".join(f"{s:5.2f}" for s in z[factors[:, scale] == v].std(axis=0)))


if __name__ == "__main__":
    main()
