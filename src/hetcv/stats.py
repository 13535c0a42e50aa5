"""Per-cluster metrics, the coefficient of variation and the statistics the paper lacked.

Per-sample scores: ``correct`` (0/1) for classification, ``sq_error`` for regression. A
cluster's metric is then accuracy = mean(correct), or 1 − NRMSE = 1 − sqrt(mean(sq_error)) /
normaliser, where the normaliser is taken over the whole dataset's targets so that every
cluster of a dataset shares one scale.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import stats as scipy_stats


def nrmse_normaliser(targets: np.ndarray, kind: str) -> float:
    """``range`` = max − min, ``mean``, or ``std`` (sample sd) of the dataset's targets."""
    targets = np.asarray(targets, dtype=np.float64)
    value = {
        "range": lambda: targets.max() - targets.min(),
        "mean": lambda: targets.mean(),
        "std": lambda: targets.std(ddof=1),
    }[kind]()
    if not value > 0:
        raise ValueError(f"metric.nrmse_normalizer: {kind} of the targets is {value}, not > 0")
    return float(value)


def metric_from_means(mean_score: np.ndarray, task: str, normaliser: float) -> np.ndarray:
    """Cluster metric from the mean per-sample score (NaN where a cluster is empty)."""
    if task == "classification":
        return mean_score
    return 1.0 - np.sqrt(mean_score) / normaliser


def cluster_metrics(
    labels: np.ndarray, score: np.ndarray, k: int, task: str, normaliser: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(metric (k,), size (k,))`` of each cluster; metric is NaN for an empty cluster."""
    size = np.bincount(labels, minlength=k).astype(np.float64)
    total = np.bincount(labels, weights=score, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / size
    return metric_from_means(mean, task, normaliser), size


def coefficient_of_variation(metric: np.ndarray, axis: int = -1) -> np.ndarray:
    """CV = sample sd / mean × 100 of per-cluster metrics, over the non-empty clusters."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanstd(metric, axis=axis, ddof=1) / np.nanmean(metric, axis=axis) * 100.0


def permuted_cluster_metrics(
    labels: np.ndarray,
    permuted_score: np.ndarray,
    k: int,
    task: str,
    normaliser: float,
) -> np.ndarray:
    """Per-cluster metrics after shuffling the scores across samples: ``(P, k)``.

    ``permuted_score`` is ``(P, n_samples)``: ``score[permutation]`` for P permutations
    (computed once and shared by every clustering of the fold). Cluster sizes stay those of
    ``labels``, so this is the metric spread that chance alone gives clusters of these sizes.
    """
    one_hot = np.eye(k)[labels]
    size = one_hot.sum(axis=0)
    totals = permuted_score @ one_hot
    with np.errstate(invalid="ignore", divide="ignore"):
        return metric_from_means(totals / size, task, normaliser)


def bootstrap_cluster_metrics(
    labels: np.ndarray,
    score: np.ndarray,
    k: int,
    n_boot: int,
    rng: np.random.Generator,
    task: str,
    normaliser: float,
) -> np.ndarray:
    """Per-cluster metrics of ``n_boot`` stratified bootstrap resamples: ``(n_boot, k)``.

    Each cluster's samples are resampled with replacement within the cluster, so cluster
    sizes are fixed and only the sampling noise of the per-cluster metric is measured.
    """
    out = np.full((n_boot, k), np.nan)
    for cluster in range(k):
        member_score = score[labels == cluster]
        m = len(member_score)
        if m == 0:
            continue
        resampled = member_score[rng.integers(0, m, size=(n_boot, m))]
        out[:, cluster] = metric_from_means(resampled.mean(axis=1), task, normaliser)
    return out


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """One-sided p-value ``(1 + #(null >= observed)) / (1 + P)``."""
    null = np.asarray(null)
    return float((1 + np.sum(null >= observed)) / (1 + len(null)))


def wilson_interval(
    successes: float, n: float, z: float = 1.959963984540054
) -> tuple[float, float]:
    """Wilson score interval for a proportion (95 % by default)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return (centre - half, centre + half)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return (math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


def correlation(
    x: np.ndarray, y: np.ndarray, permutations: int, n_boot: int, seed: int
) -> dict[str, float]:
    """Pearson r and Spearman rho of ``x`` and ``y`` with permutation p-values and bootstrap CIs.

    Two-sided permutation p-values are exact (all orderings of ``y``) when there are at most
    8 points, Monte Carlo otherwise. Bootstrap CIs resample (x, y) pairs; resamples with a
    constant coordinate are skipped.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    result = {"n_points": n}
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        for name in ("pearson", "spearman"):
            result.update(
                {
                    name: math.nan,
                    f"{name}_p": math.nan,
                    f"{name}_perm_p": math.nan,
                    f"{name}_ci_low": math.nan,
                    f"{name}_ci_high": math.nan,
                }
            )
        return result
    rng = np.random.default_rng(seed)
    if n <= 8:
        orders = np.array(list(itertools.permutations(range(n))))
    else:
        orders = np.array([rng.permutation(n) for _ in range(permutations)])
    boot = rng.integers(0, n, size=(n_boot, n))
    functions = {"pearson": scipy_stats.pearsonr, "spearman": scipy_stats.spearmanr}
    for name, function in functions.items():
        observed = function(x, y)
        null = np.abs([function(x, y[order])[0] for order in orders])
        extreme = np.sum(null >= abs(observed[0]) - 1e-12)
        estimates = [
            function(x[rows], y[rows])[0]
            for rows in boot
            if np.ptp(x[rows]) > 0 and np.ptp(y[rows]) > 0
        ]
        low, high = percentile_interval(np.array(estimates))
        result.update(
            {
                name: float(observed[0]),
                f"{name}_p": float(observed[1]),
                # Exact: the identity is among the orders; Monte Carlo: count it once more.
                f"{name}_perm_p": float(
                    extreme / len(orders) if n <= 8 else (1 + extreme) / (1 + len(orders))
                ),
                f"{name}_ci_low": low,
                f"{name}_ci_high": high,
            }
        )
    return result
