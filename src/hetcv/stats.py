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

from hetcv.errors import HetcvError

SIGNIFICANCE = 0.05
SCORE_COLUMN = {"classification": "correct", "regression": "sq_error"}
PAPER_CV_GUIDELINE = 5.0  # the paper's "CV below 5 %", in %
METRIC_LABEL = {"classification": "accuracy", "regression": "1 − NRMSE"}


def task_normaliser(task: str, targets: np.ndarray | None, kind: str) -> float:
    """The metric's normaliser: 1 for classification, the dataset's NRMSE normaliser else."""
    return 1.0 if task == "classification" else nrmse_normaliser(targets, kind)


def nrmse_normaliser(targets: np.ndarray, kind: str) -> float:
    """``range`` = max − min, ``mean``, or ``std`` (sample sd) of the dataset's targets."""
    targets = np.asarray(targets, dtype=np.float64)
    value = {
        "range": lambda: targets.max() - targets.min(),
        "mean": lambda: targets.mean(),
        "std": lambda: targets.std(ddof=1),
    }[kind]()
    if not value > 0:
        raise HetcvError(f"metric.nrmse_normalizer: {kind} of the targets is {value}, not > 0")
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


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of ``x`` and ``y`` (both ``(rows, n)``); NaN where constant."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(axis=1) / np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row pair: Pearson r of the (average-tie) ranks."""
    return pearson_rows(scipy_stats.rankdata(x, axis=1), scipy_stats.rankdata(y, axis=1))


MIN_POINTS_FOR_BOOTSTRAP = 6  # fewer points: a bootstrap of r spans (almost) −1 to 1


def permutations_within(
    strata: np.ndarray, permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """``(permutations, n)`` index arrays, each a random permutation within every stratum."""
    n = len(strata)
    orders = np.tile(np.arange(n), (permutations, 1))
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        orders[:, members] = members[
            rng.permuted(np.tile(np.arange(len(members)), (permutations, 1)), axis=1)
        ]
    return orders


def correlation(
    x: np.ndarray,
    y: np.ndarray,
    permutations: int,
    n_boot: int,
    seed: int,
    strata: np.ndarray | None = None,
) -> dict[str, float]:
    """Pearson r and Spearman rho of ``x`` and ``y`` with permutation p-values and bootstrap CIs.

    Parameters
    ----------
    x, y : (n_points,) float
    permutations, n_boot : Monte Carlo permutations and bootstrap resamples.
    seed : seed of both.
    strata : (n_points,) optional
        Permute ``y`` only within each stratum (e.g. within a sample size, which drives both
        quantities: permuting across sizes would count that shared driver as association).

    Two-sided permutation p-values are exact (all orderings of ``y``) when there are at most
    8 points and no strata, Monte Carlo otherwise. Bootstrap CIs resample (x, y) pairs
    (resamples with a constant coordinate are skipped) and are NaN below
    ``MIN_POINTS_FOR_BOOTSTRAP`` points.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    result = {"n_points": n}
    names = ("pearson", "spearman")
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        for name in names:
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
    exact = n <= 8 and strata is None
    if exact:
        orders = np.array(list(itertools.permutations(range(n))))
    else:
        orders = permutations_within(
            np.zeros(n) if strata is None else np.asarray(strata), permutations, rng
        )
    boot = rng.integers(0, n, size=(n_boot, n))
    boot = boot[(np.ptp(x[boot], axis=1) > 0) & (np.ptp(y[boot], axis=1) > 0)]
    for name, function in {"pearson": pearson_rows, "spearman": spearman_rows}.items():
        observed = float(function(x[None], y[None])[0])
        null = np.nan_to_num(np.abs(function(np.broadcast_to(x, orders.shape), y[orders])))
        extreme = np.sum(null >= abs(observed) - 1e-12)
        low = high = math.nan
        if n >= MIN_POINTS_FOR_BOOTSTRAP:
            low, high = percentile_interval(function(x[boot], y[boot]))
        result.update(
            {
                name: observed,
                f"{name}_p": float(
                    (scipy_stats.pearsonr if name == "pearson" else scipy_stats.spearmanr)(x, y)[1]
                ),
                # Exact: the identity is among the orders; Monte Carlo: count it once more.
                f"{name}_perm_p": float(
                    extreme / len(orders) if exact else (1 + extreme) / (1 + len(orders))
                ),
                f"{name}_ci_low": low,
                f"{name}_ci_high": high,
            }
        )
    return result
