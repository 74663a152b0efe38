"""Metric timings at study size, ours beside disentanglement_lib's on the same arrays.

    python bench/bench_metrics.py                 # everything (disentanglement_lib's DCI: ~7 min)
    python bench/bench_metrics.py --skip-dlib-dci # without that one
    python bench/bench_metrics.py --dci-table 2000 --skip-dlib   # DCI lightgbm vs gbt per representation
    python bench/bench_metrics.py --dci-table 600 2000 10000 --dci-families noisy,mixed --skip-dlib
    python bench/bench_metrics.py --skip-challenge --skip-side-by-side --dci-table 10000 --gbt-cache gbt.json
    python bench/bench_metrics.py --challenge-codes entangled quantized4 --skip-dlib

Arrays: 10,000 train / 5,000 test samples, 10-dim codes, factors shaped like dSprites
[3, 6, 40, 32, 32]. Wall and CPU seconds are printed: on a shared machine the wall time depends
on the load, which the script reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from test_metrics_representations import DCI_FAMILIES, represent, sample_factors  # noqa: E402

from harness import metrics  # noqa: E402

SIZES = [3, 6, 40, 32, 32]


class Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def arrays(kind, n_train, n_test, seed=0):
    factors = sample_factors(SIZES, n_train + n_test, seed)
    codes = represent(kind, factors, SIZES, seed=seed + 1, num_dims=10)
    return codes[:n_train], factors[:n_train], codes[n_train:], factors[n_train:]


def challenge_preset(kind: str) -> None:  # noqa: C901
    """Everything the challenge preset does except rendering and encoding images: plans on the
    procedural dSprites grid, codes computed from the factors, scoring with intervals."""
    from harness import datasets

    dataset = datasets.load("dsprites")
    print(f"\n== challenge preset, array-level work ({kind} code of the dSprites factors) ==")
    total = Timer().__enter__()
    metric_wall = metric_cpu = 0.0
    for name, preset_params in metrics.preset("challenge").items():
        spec = metrics.get(name)
        params = {**spec.default_params, **preset_params}
        with Timer() as t_sample:
            request = spec.sample(dataset, seed=0, **params)
        factors = dataset.index_to_factors(request.indices)
        codes = represent(kind, factors, SIZES, seed=1, num_dims=10)
        with Timer() as t_score:
            values = spec.score(request, codes, seed=0, **params)
        head = ", ".join(f"{k}={values[k]:.4f} {np.round(values.get(k + '_ci95', []), 4).tolist()}"
                         for k in spec.headline)
        print(f"{name:12s} rows={len(request):>8d} sample {t_sample.wall:6.2f}s  score {t_score.wall:6.2f}s "
              f"(cpu {t_score.cpu:6.2f}s)  {head}")
        metric_wall += t_sample.wall + t_score.wall
        metric_cpu += t_sample.cpu + t_score.cpu
    total.__exit__()
    print(f"{'metrics':12s} wall {metric_wall:.2f}s  cpu {metric_cpu:.2f}s  (sample + score, first imports "
          f"included: what evaluate spends after encoding; target <= 8 s)")
    print(f"{'total':12s} wall {total.wall:.2f}s  cpu {total.cpu:.2f}s  (with making the synthetic codes)")


def side_by_side(n_train, n_test, skip_dlib, skip_dlib_dci) -> None:
    c, f, ct, ft = arrays("entangled", n_train, n_test)
    dl = None
    if not skip_dlib:
        import dlib_oracle

        dl = dlib_oracle.load()
    rows = [  # (name, ours(n_bootstrap) -> value, theirs() -> value)
        ("mig", lambda b: metrics.mig(c, f, n_bootstrap=b)["discrete_mig"],
         lambda: dl.mig._compute_mig(c.T, f.T)["discrete_mig"]),
        ("sap (discrete)", lambda b: metrics.sap(c, f, ct, ft, n_jobs=-1, n_bootstrap=b)["sap_score"],
         lambda: dl.sap_score._compute_sap(c.T, f.T, ct.T, ft.T, False)["SAP_score"]),
        ("irs", lambda b: metrics.irs(c, f, n_jobs=-1, n_bootstrap=b)["irs"],
         lambda: dl.irs.scalable_disentanglement_score(dl.utils.make_discretizer(f.T).T, c, 0.99)["avg_score"]),
        ("modularity+explicit.", lambda b: metrics.modularity_explicitness(c, f, ct, ft, n_jobs=-1, n_bootstrap=b)[
            "explicitness_score_test"], lambda: _dl_modularity_explicitness(dl, c, f, ct, ft)),
        ("unsupervised", lambda b: metrics.unsupervised(c, n_bootstrap=b)["mutual_info_score"],
         lambda: _dl_unsupervised(dl, c)),
        ("dci (ours: lightgbm)", lambda b: metrics.dci(c, f, ct, ft, n_jobs=-1, n_bootstrap=b)["disentanglement"],
         None if skip_dlib_dci else lambda: dl.dci._compute_dci(c.T, f.T, ct.T, ft.T)["disentanglement"]),
    ]
    print(f"\n== ours vs disentanglement_lib, same arrays ({n_train}/{n_test}, 10 dims, factors {SIZES}) ==")
    print(f"{'metric':22s} {'ours s':>7s} {'cpu':>7s} {'+CI s':>7s} {'cpu':>7s} {'value':>8s} | "
          f"{'dlib s':>8s} {'cpu':>8s} {'value':>8s} | dlib/ours (cpu)")
    total_ours = total_ci = total_dl = 0.0
    cpu_ours = cpu_dl = 0.0
    for name, ours, theirs in rows:
        with Timer() as t:
            value = ours(0)
        with Timer() as t_ci:
            ours(100)
        total_ours += t.wall
        total_ci += t_ci.wall
        line = f"{name:22s} {t.wall:7.2f} {t.cpu:7.2f} {t_ci.wall:7.2f} {t_ci.cpu:7.2f} {value:8.4f} |"
        if dl is not None and theirs is not None:
            with Timer() as t_dl:
                value_dl = theirs()
            total_dl += t_dl.wall
            cpu_ours += t.cpu
            cpu_dl += t_dl.cpu
            line += (f" {t_dl.wall:8.2f} {t_dl.cpu:8.2f} {value_dl:8.4f} | {t_dl.wall / max(t.wall, 1e-9):6.1f}x "
                     f"({t_dl.cpu / max(t.cpu, 1e-9):.1f}x)")
        else:
            line += f" {'skipped':>8s}"
        print(line, flush=True)
    print(f"{'total':22s} {total_ours:7.2f} {'':7s} {total_ci:7.2f} {'':7s} {'':8s} | {total_dl:8.2f} {cpu_dl:8.2f} "
          f"{'':8s} | {total_dl / max(total_ours, 1e-9):6.1f}x ({cpu_dl / max(cpu_ours, 1e-9):.1f}x, rows run by both)")
    print("ours s: without intervals (the same work as disentanglement_lib); +CI s: with 100-replicate intervals")


def _dl_modularity_explicitness(dl, c, f, ct, ft):
    dl.modularity_explicitness.modularity(dl.utils.discrete_mutual_info(dl.utils.make_discretizer(c.T), f.T))
    train_norm, mean, std = dl.utils.normalize_data(c.T)
    test_norm, _, _ = dl.utils.normalize_data(ct.T, mean, std)
    return np.mean([dl.modularity_explicitness.explicitness_per_factor(train_norm, f[:, k], test_norm, ft[:, k])[1]
                    for k in range(f.shape[1])])


def _dl_unsupervised(dl, c):
    cov = np.cov(c.T)
    dl.unsupervised_metrics.gaussian_total_correlation(cov)
    dl.unsupervised_metrics.gaussian_wasserstein_correlation(cov)
    return _dl_unsupervised_mi(dl, c)


def _dl_unsupervised_mi(dl, c):
    binned = dl.utils.make_discretizer(c.T)
    mi = dl.utils.discrete_mutual_info(binned, binned)
    np.fill_diagonal(mi, 0)
    return mi.sum() / (c.shape[1] ** 2 - c.shape[1])


def _gbt(kind, n_train, data, cache_path):
    """disentanglement_lib's estimator on these arrays: (D, C, wall s), read from ``cache_path`` (JSON,
    "kind:n" -> [D, C, s], written by an earlier run of this script) or computed and recorded there."""
    key = f"{kind}:{n_train}"
    cache = json.loads(Path(cache_path).read_text()) if cache_path and Path(cache_path).exists() else {}
    if key not in cache:
        with Timer() as t_gbt:
            gbt = metrics.dci(*data, estimator="gbt", n_bootstrap=0, n_jobs=-1)
        cache[key] = [gbt["disentanglement"], gbt["completeness"], t_gbt.wall]
        if cache_path:
            Path(cache_path).write_text(json.dumps(cache, indent=1))
    return cache[key]


def dci_table(n_train, families=DCI_FAMILIES, gbt_cache=None) -> float:
    n_test = n_train // 2
    print(f"\n== DCI: lightgbm (default) vs gbt (disentanglement_lib's), {n_train}/{n_test} samples ==")
    print(f"{'representation':12s} {'D gbt':>7s} {'D lgbm':>7s} {'diff':>7s} {'C gbt':>7s} {'C lgbm':>7s} "
          f"{'diff':>7s} {'gbt s':>7s} {'lgbm s':>7s} {'faster':>7s}")
    worst = 0.0
    gbt_s = lgbm_s = 0.0
    for kind in families:
        data = arrays(kind, n_train, n_test)
        d, cc, gbt_wall = _gbt(kind, n_train, data, gbt_cache)
        with Timer() as t_lgb:
            lgb = metrics.dci(*data, estimator="lightgbm", n_bootstrap=0, n_jobs=-1)
        dl_, cl = lgb["disentanglement"], lgb["completeness"]
        worst = max(worst, abs(dl_ - d), abs(cl - cc))
        gbt_s, lgbm_s = gbt_s + gbt_wall, lgbm_s + t_lgb.wall
        print(f"{kind:12s} {d:7.3f} {dl_:7.3f} {dl_ - d:+7.3f} {cc:7.3f} {cl:7.3f} {cl - cc:+7.3f} "
              f"{gbt_wall:7.1f} {t_lgb.wall:7.1f} {gbt_wall / max(t_lgb.wall, 1e-9):6.1f}x", flush=True)
    print(f"largest |lightgbm - gbt|: {worst:.3f} (goal <= 0.03); lightgbm {gbt_s / max(lgbm_s, 1e-9):.1f}x "
          f"faster in all (wall)")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--skip-dlib", action="store_true", help="only our timings")
    parser.add_argument("--skip-dlib-dci", action="store_true", help="skip disentanglement_lib's DCI (~7 min)")
    parser.add_argument("--skip-challenge", action="store_true")
    parser.add_argument("--skip-side-by-side", action="store_true", help="skip the per-metric timings")
    parser.add_argument("--dci-table", type=int, nargs="+", default=[], metavar="N",
                        help="also compare DCI estimators per representation on N training samples (several N: "
                             "one table each)")
    parser.add_argument("--dci-families", default=",".join(DCI_FAMILIES),
                        help="comma-separated representations for --dci-table (default: all)")
    parser.add_argument("--gbt-cache", metavar="FILE",
                        help="--dci-table: read gbt's results from FILE where recorded, record the rest there "
                             "(gbt takes 2-4 min per representation at 10,000 points)")
    parser.add_argument("--challenge-codes", nargs="+", default=["entangled"], metavar="KIND",
                        help="representations the challenge preset is timed on (default: entangled)")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()}")
    if not args.skip_challenge:
        for kind in args.challenge_codes:
            challenge_preset(kind)
    if not args.skip_side_by_side:
        side_by_side(args.n_train, args.n_test, args.skip_dlib, args.skip_dlib_dci)
    families = [f for f in args.dci_families.split(",") if f]
    unknown = sorted(set(families) - set(DCI_FAMILIES))
    if unknown:
        parser.error(f"unknown representation(s) {', '.join(unknown)}; known: {', '.join(DCI_FAMILIES)}")
    for n_train in args.dci_table:
        dci_table(n_train, families, args.gbt_cache)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
