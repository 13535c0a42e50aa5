"""Speed of the analysis stage (cluster + summarize) at the paper's larger study shape.

5,674 samples, sample sizes 300 / 700 / 2,837 / 5,674, 4 folds, 512-d synthetic features,
3 algorithms × k 2..8 × 10 repeats, 500 permutations, 1,000 bootstrap replicates. Runs the
same functions the cluster and summarize rules call (one cluster job per sample size, as the
workflow runs them) on two worker processes (one per core), and prints the time and peak
memory of each stage; writes them to ``results/bench/analysis.csv``.
Usage: ``python benchmarks/analysis_speed.py [--quick]``.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scale import ALGORITHMS, run_size

from hetcv.columns import FEATURE_COLUMNS, SUMMARY_TABLES
from hetcv.io import write_parquet
from hetcv.summarize import run_summarize_job


def synthetic_fold(n: int, sample_size: int, fold: int, seed: int) -> pd.DataFrame:
    """Held-out features with some cluster structure and a regression error per sample."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(6, 512))
    group = rng.integers(0, 6, size=n)
    features = (centres[group] + rng.normal(size=(n, 512))).astype(np.float32)
    target = rng.uniform(0, 228, size=n)
    prediction = target + rng.normal(scale=10 + 3 * group, size=n)
    table = pd.DataFrame(features, columns=FEATURE_COLUMNS)
    table.insert(0, "sample_id", [f"s{seed}_{i}" for i in range(n)])
    table.insert(1, "n", sample_size)
    table.insert(2, "fold", fold)
    table.insert(3, "target", target)
    table.insert(4, "prediction", prediction)
    table.insert(5, "sq_error", (prediction - target) ** 2)
    table.insert(6, "loss", (prediction - target) ** 2)
    return table


def cluster_job(args):
    directory, n, folds, settings = args
    started = time.perf_counter()
    fold_directories = {fold: directory / f"n{n}_f{fold}" for fold in range(folds)}
    run_size(
        fold_directories, directory / f"n{n}", directory / "manifest.parquet", settings, n, n * 10
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats, 50 permutations")
    args = parser.parse_args()
    repeats, permutations, boot = (2, 50, 100) if args.quick else (10, 500, 1000)
    sizes, folds = (300, 700, 2837, 5674), 4
    settings = dict(
        k=list(range(2, 9)),
        repeats=repeats,
        pca_components=10,
        fcm={"m": 2.0, "error": 1e-5, "maxiter": 1000},
        within="all",
        error_aware=False,
        null_permutations=permutations,
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_parquet(
            pd.DataFrame({"sample_id": ["a", "b"], "target": [0.0, 228.0]}),
            directory / "manifest.parquet",
        )
        for n in sizes:
            for fold in range(folds):
                held_out = n // folds + (fold < n % folds)
                write_parquet(
                    synthetic_fold(held_out, n, fold, n * 10 + fold),
                    directory / f"n{n}_f{fold}" / "features.parquet",
                )
        # The largest sample size first, so that two workers finish close together.
        jobs = [(directory, n, folds, settings) for n in sorted(sizes, reverse=True)]
        started = time.perf_counter()
        with ProcessPoolExecutor(max_workers=2) as pool:
            timings = list(pool.map(cluster_job, jobs))
        cluster_wall = time.perf_counter() - started
        started = time.perf_counter()
        kinds = lambda kind, algorithms=ALGORITHMS: [  # noqa: E731
            str(directory / f"n{n}" / f"{kind}_{a}.parquet") for n in sizes for a in algorithms
        ]
        features = [
            str(directory / f"n{n}_f{f}" / "features.parquet") for n in sizes for f in range(folds)
        ]
        run_summarize_job(
            {
                "fold_cluster_runs": kinds("fold_cluster_runs"),
                "fold_cluster_stats": kinds("fold_cluster_stats"),
                "fold_cluster_pairs": kinds("fold_cluster_pairs"),
                "selected_fold_assignments": kinds("fold_assignments", ["fcm"]),
                "features": features,
                "manifest": str(directory / "manifest.parquet"),
            },
            {name: str(directory / f"summary_{name}.parquet") for name in SUMMARY_TABLES},
            {
                "task": "regression",
                "metric": "nrmse",
                "nrmse_normalizer": "range",
                "metadata_columns": [],
                "summary": {
                    "selected": {"algorithm": "fcm", "k": 4},
                    "within": "all",
                    "error_aware": False,
                    "bootstrap": boot,
                    "null_permutations": permutations,
                    "seed": 0,
                },
            },
        )
        summarize_s = time.perf_counter() - started
    print(
        f"analysis stage, paper shape ({'quick' if args.quick else 'full'}): "
        f"{len(jobs)} cluster jobs (one per sample size: {folds} folds × {len(ALGORITHMS)} "
        "algorithms), "
        f"{repeats} repeats, {permutations} permutations"
    )
    print(f"cluster job: longest {max(timings):.1f} s, mean {np.mean(timings):.1f} s")
    print(
        f"cluster stage wall time on 2 workers: {cluster_wall:.1f} s (compute {sum(timings):.1f} s)"
    )
    print(f"summarize: {summarize_s:.1f} s")
    total = cluster_wall + summarize_s
    print(f"total wall time: {total:.1f} s (target: under 120 s)")
    # ru_maxrss is in KiB on Linux; children = the cluster workers, self = summarize.
    peak = {
        who: resource.getrusage(getattr(resource, f"RUSAGE_{who.upper()}")).ru_maxrss / 1024
        for who in ("children", "self")
    }
    print(
        f"peak memory: cluster worker {peak['children']:.0f} MiB, summarize {peak['self']:.0f} MiB"
    )
    out = Path("results/bench/analysis.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        [
            {
                "shape": "paper (5,674 samples, 4 sizes × 4 folds)",
                "mode": "quick" if args.quick else "full",
                "cluster_jobs": len(jobs),
                "cluster_wall_s": round(cluster_wall, 1),
                "cluster_compute_s": round(sum(timings), 1),
                "summarize_s": round(summarize_s, 1),
                "total_s": round(total, 1),
                "cluster_peak_mib": round(peak["children"]),
                "summarize_peak_mib": round(peak["self"]),
            }
        ]
    ).to_csv(out, index=False)


if __name__ == "__main__":
    main()
