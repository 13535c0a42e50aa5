"""How the analysis of one held-out fold grows with its size: time and peak memory.

Synthetic 512-d features in folds of 5,000, 20,000 and 50,000 held-out samples: six
overlapping groups, as a CNN's features of one imaging task overlap, with a regression error
that grows from group to group. Each fold gets what the workflow's cluster job does for each
of its sample size's folds:
3 algorithms × k 2..8 × 10 repeats × 500 permutations, in its own process with one BLAS
thread, as Snakemake runs a ``threads: 1`` job. The folds run two at a time (one per core),
the largest first; each job's peak resident memory is read from its own process.

Writes ``results/bench/scale.csv`` (one row per fold size) and prints how the time grows
with n. Usage: ``python benchmarks/scale.py [--sizes ...]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from hetcv.cluster import run_cluster_job
from hetcv.columns import FEATURE_COLUMNS
from hetcv.io import write_parquet
from hetcv.paths import FOLD_TABLES

ALGORITHMS = ("kmeans", "fcm", "gmm")
GROUP_SPREAD = 0.3  # sd of the group centres, against unit noise per feature: overlapping groups
SETTINGS = dict(
    k=list(range(2, 9)),
    repeats=10,
    pca_components=10,
    fcm={"m": 2.0, "error": 1e-5, "maxiter": 1000},
    within="all",
    error_aware=False,
    null_permutations=500,
)


def synthetic_fold(size: int, seed: int) -> pd.DataFrame:
    """One held-out fold's features table: overlapping groups, error growing by group."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=GROUP_SPREAD, size=(6, 512))
    group = rng.integers(0, 6, size=size)
    features = (centres[group] + rng.normal(size=(size, 512))).astype(np.float32)
    target = rng.uniform(0, 228, size=size)
    prediction = target + rng.normal(scale=10 + 3 * group, size=size)
    table = pd.DataFrame(features, columns=FEATURE_COLUMNS)
    table.insert(0, "sample_id", [f"s{i}" for i in range(size)])
    table.insert(1, "target", target)
    table.insert(2, "prediction", prediction)
    table.insert(3, "sq_error", (prediction - target) ** 2)
    table.insert(4, "loss", (prediction - target) ** 2)
    return table


def run_size(
    folds: dict[int, Path], out: Path, manifest: Path, clustering: dict, n: int, seed: int
) -> None:
    """The cluster rule's job on one sample size's folds (``{fold: directory}``, each with a
    regression ``features.parquet``), with one BLAS thread as Snakemake runs a ``threads: 1``
    job; its tables are written to ``out``. Fold ``f`` gets the seed ``seed + f``."""
    with threadpool_limits(1):
        run_cluster_job(
            {
                "features": [str(directory / "features.parquet") for directory in folds.values()],
                "manifest": str(manifest),
            },
            {
                kind: [str(out / f"{kind}_{algorithm}.parquet") for algorithm in ALGORITHMS]
                for kind in FOLD_TABLES
            },
            {
                "metric": "nrmse",
                "nrmse_normalizer": "range",
                "n": n,
                "folds": list(folds),
                "clustering": {
                    **clustering,
                    "algorithms": list(ALGORITHMS),
                    "seeds": [seed + fold for fold in folds],
                },
            },
        )


def cluster_job(args: tuple[Path, int]) -> dict:
    """The cluster job of the fold of ``size`` samples, in a fresh process."""
    directory, size = args
    started = time.perf_counter()
    fold = directory / f"fold{size}"
    run_size({0: fold}, fold, directory / "manifest.parquet", SETTINGS, n=size, seed=size)
    return {
        "held_out": size,
        "job_s": round(time.perf_counter() - started, 1),
        # ru_maxrss is in KiB on Linux; the process ran this job only.
        "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "assignment_rows": len(ALGORITHMS) * len(SETTINGS["k"]) * SETTINGS["repeats"] * size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000, 50_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_parquet(
            pd.DataFrame({"sample_id": ["a", "b"], "target": [0.0, 228.0]}),
            directory / "manifest.parquet",
        )
        for size in args.sizes:
            write_parquet(
                synthetic_fold(size, seed=size), directory / f"fold{size}" / "features.parquet"
            )
        with ProcessPoolExecutor(
            max_workers=2, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
        ) as pool:
            jobs = [(directory, size) for size in sorted(args.sizes, reverse=True)]
            table = pd.DataFrame(pool.map(cluster_job, jobs)).sort_values("held_out")
    print(table.to_string(index=False))
    if len(table) > 1:
        growth = np.polyfit(np.log(table["held_out"]), np.log(table["job_s"]), 1)[0]
        print(f"time grows as n^{growth:.2f} over {table['held_out'].tolist()} samples")
    largest = table.iloc[-1]
    print(
        f"largest fold ({int(largest['held_out']):,} samples): {largest['job_s'] / 60:.1f} min "
        f"on one core (target ≤ 10 on 2), peak {largest['peak_mib'] / 1024:.2f} GiB (target ≤ 2)"
    )
    out = Path("results/bench/scale.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)


if __name__ == "__main__":
    main()
