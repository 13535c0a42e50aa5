"""Per-cluster metrics, the coefficient of variation and the statistics the paper lacked.

The metrics themselves (accuracy, balanced accuracy, AUROC, 1 − NRMSE) are defined in
:mod:`hetcv.metrics`; ``SCORE_COLUMN`` names the per-sample error column of each task
(``correct`` or ``sq_error``), which the export carries whatever the metric.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.proportion import proportion_confint

from hetcv.metrics import ClusterMetric

SIGNIFICANCE = 0.05
SCORE_COLUMN = {"classification": "correct", "regression": "sq_error", "score": "score"}
PAPER_CV_GUIDELINE = 5.0  # the paper's "CV below 5 %", in %
PERMUTATION_CHUNK = 50  # permutations whose temporaries are held at once
TIE_TOLERANCE = 1e-9  # relative: null values this close to the observed one tie with it


def cluster_metrics(
    labels: np.ndarray,
    score: np.ndarray,
    k: int,
    metric: ClusterMetric,
    classes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the metric and size of each cluster of one partition.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Cluster of each sample, integers in 0..k-1.
    score : ndarray of shape (n_samples,)
        Per-sample outcome of ``metric`` (:meth:`hetcv.metrics.ClusterMetric.outcome`).
    k : int
        Number of clusters.
    metric : ClusterMetric
        Which metric to compute.
    classes : ndarray of shape (n_samples,) or None, default=None
        Class codes, for balanced accuracy and AUROC.

    Returns
    -------
    metric : ndarray of shape (k,)
        Metric of each cluster; NaN where it is undefined (empty; one class for AUROC).
    size : ndarray of shape (k,)
        Number of samples in each cluster, as float.
    """
    sums = metric.sums(score, np.ones((1, len(score))), np.eye(k)[labels], classes)[:, 0]
    return metric.value_and_variance(sums)[0], np.bincount(labels, minlength=k).astype(float)


def coefficient_of_variation(metric: np.ndarray, axis: int = -1) -> np.ndarray:
    """Return the CV = sample sd / mean × 100 of per-cluster metrics, over non-empty clusters.

    Parameters
    ----------
    metric : ndarray of shape (..., k)
        Per-cluster metrics (along ``axis``); NaN marks an empty cluster and is skipped.
    axis : int, default=-1
        Axis of the clusters.

    Returns
    -------
    cv : ndarray of shape ``metric.shape`` without ``axis``
        CV in %; NaN where fewer than two clusters are non-empty.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanstd(metric, axis=axis, ddof=1) / np.nanmean(metric, axis=axis) * 100.0


def permuted_cluster_metrics(
    labels: np.ndarray,
    permuted_score: np.ndarray,
    k: int,
    metric: ClusterMetric,
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """Return per-cluster metrics after shuffling the scores across samples.

    The permuted scores are computed once and shared by every clustering of the fold. Cluster
    sizes stay those of ``labels``, so this is the metric spread that chance alone gives
    clusters of these sizes. For balanced accuracy and AUROC the scores must be shuffled
    within class, since ``classes`` stay where they are.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Cluster of each sample, integers in 0..k-1.
    permuted_score : ndarray of shape (n_permutations, n_samples)
        ``score[permutation]`` for each permutation.
    k, metric, classes : see :func:`cluster_metrics`

    Returns
    -------
    metric : ndarray of shape (n_permutations, k)
        Metric of each cluster under each permutation; NaN where undefined.
    """
    indicator = np.eye(k)[labels]
    values = np.empty((len(permuted_score), k))
    # A chunk of permutations at a time bounds the metric's per-sample temporaries.
    for start in range(0, len(permuted_score), PERMUTATION_CHUNK):
        chunk = permuted_score[start : start + PERMUTATION_CHUNK]
        sums = metric.sums(chunk, np.ones(chunk.shape), indicator, classes)
        values[start : start + PERMUTATION_CHUNK] = metric.value_and_variance(sums)[0]
    return values


def permuted_values(
    values: np.ndarray, strata: np.ndarray, permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """Return ``values`` permuted within every stratum, once per row.

    The permutation indices are drawn :data:`PERMUTATION_CHUNK` rows at a time, so memory
    holds the result and one chunk of indices, never a ``permutations × n_samples`` index array
    beside it.

    Parameters
    ----------
    values : ndarray of shape (n_samples,)
    strata : ndarray of shape (n_samples,)
        Stratum of each sample (see :func:`permutations_within`).
    permutations : int
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of shape (permutations, n_samples)
    """
    permuted = np.empty((permutations, len(values)), dtype=np.asarray(values).dtype)
    for start in range(0, permutations, PERMUTATION_CHUNK):
        rows = min(PERMUTATION_CHUNK, permutations - start)
        permuted[start : start + rows] = values[permutations_within(strata, rows, rng)]
    return permuted


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """Return the one-sided Monte Carlo p-value ``(1 + #(null >= observed)) / (1 + P)``.

    A null value equal to the observed one up to rounding (1e-9 relative) counts as reaching
    it: discrete statistics (a permuted table with the observed counts) tie exactly in
    arithmetic and differ only in the last bits of floating point.

    Parameters
    ----------
    observed : float
        The observed statistic.
    null : ndarray of shape (P,)
        The statistic under each of the P permutations or draws.

    Returns
    -------
    p_value : float
        In (0, 1]; never 0, since the observed value counts as one of the null draws.
    """
    null = np.asarray(null, dtype=np.float64)
    reached = null >= observed - TIE_TOLERANCE * max(abs(observed), 1e-300)
    return float((1 + np.sum(reached)) / (1 + len(null)))


def wilson_interval(
    successes: np.ndarray | float, n: np.ndarray | float, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Return the Wilson score interval of a proportion (statsmodels' ``proportion_confint``).

    Counts may be fractional (e.g. pooled over folds and averaged over repeats). The
    interval never has zero width and stays within [0, 1], which is what clusters of a few
    dozen samples near accuracy 1 need (docs/methods.md).

    Parameters
    ----------
    successes : float or ndarray
        Number of successes (e.g. correct predictions).
    n : float or ndarray
        Number of trials, the same shape.
    level : float, default=0.95
        Confidence level.

    Returns
    -------
    low, high : float or ndarray
        Bounds of the interval; NaN where ``n <= 0``.
    """
    successes, n = np.asarray(successes, dtype=np.float64), np.asarray(n, dtype=np.float64)
    positive = n > 0
    safe = np.where(positive, n, 1.0)
    low, high = proportion_confint(
        np.where(positive, successes, 0.0), safe, alpha=1 - level, method="wilson"
    )
    low, high = np.where(positive, low, np.nan), np.where(positive, high, np.nan)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Return the central percentile interval of the finite values (e.g. bootstrap replicates).

    Parameters
    ----------
    values : ndarray of shape (n_values,)
        Values to summarise; non-finite ones are left out.
    level : float, default=0.95
        Coverage of the interval.

    Returns
    -------
    low, high : float
        The (1 − level)/2 and (1 + level)/2 percentiles; NaN if no value is finite.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return (math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


def finite_mean(values: np.ndarray) -> float:
    """Return the mean of the finite values; NaN if there are none."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


def expectation_interval(
    estimate: float, replicates: np.ndarray, reference: float, level: float = 0.95
) -> tuple[float, float]:
    """Return the basic bootstrap interval whose bootstrap-world parameter is ``reference``.

    The distribution of θ̂ − θ is taken to be that of θ* − reference: with ``reference`` the
    replicates' mean, an interval for the expectation of a biased estimate (the raw CV)
    rather than for the parameter it is biased for.

    Parameters
    ----------
    estimate : float
        The observed θ̂.
    replicates : ndarray of shape (n_boot,)
        Bootstrap replicates θ*; non-finite ones are left out.
    reference : float
        The bootstrap world's value of the parameter.
    level : float, default=0.95
        Coverage of the interval.

    Returns
    -------
    low, high : float
    """
    low, high = percentile_interval(replicates, level)
    return float(estimate - (high - reference)), float(estimate + (reference - low))


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return the Pearson r of each row pair of ``x`` and ``y``, vectorised over rows.

    Parameters
    ----------
    x : ndarray of shape (n_rows, n_points)
        First variable, one data set per row.
    y : ndarray of shape (n_rows, n_points)
        Second variable, paired element-wise with ``x``.

    Returns
    -------
    r : ndarray of shape (n_rows,)
        Pearson correlation of each row pair; NaN where either row is constant.
    """
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(axis=1) / np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return the Spearman rho of each row pair: Pearson r of the (average-tie) ranks.

    Parameters
    ----------
    x, y : ndarray of shape (n_rows, n_points)
        Paired rows, ranked within each row.

    Returns
    -------
    rho : ndarray of shape (n_rows,)
        Rank correlation per row pair; NaN where a row's ranks are constant.
    """
    return pearson_rows(scipy_stats.rankdata(x, axis=1), scipy_stats.rankdata(y, axis=1))


MIN_POINTS_FOR_BOOTSTRAP = 6  # fewer points: a bootstrap of r spans (almost) −1 to 1


def permutations_within(
    strata: np.ndarray, permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """Return index arrays that each permute the samples only within every stratum.

    Parameters
    ----------
    strata : ndarray of shape (n_points,)
        Stratum of each sample; samples are only exchanged with others of their stratum.
    permutations : int
        Number of permutations to draw.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    orders : ndarray of shape (permutations, n_points)
        Integer indices; ``values[orders[i]]`` is the i-th permutation of ``values``.
    """
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

    Two-sided permutation p-values are exact (all orderings of ``y``) when there are at most
    8 points and no strata, Monte Carlo otherwise. Bootstrap CIs resample (x, y) pairs
    (resamples with a constant coordinate are skipped) and are NaN below
    ``MIN_POINTS_FOR_BOOTSTRAP`` points.

    Parameters
    ----------
    x : ndarray of shape (n_points,)
        First variable (e.g. the CV at each point).
    y : ndarray of shape (n_points,)
        Second variable (e.g. the test metric), the one that is permuted.
    permutations : int
        Monte Carlo permutations (unused when the test is exact).
    n_boot : int
        Bootstrap resamples of the (x, y) pairs.
    seed : int
        Seed of both the permutations and the bootstrap.
    strata : ndarray of shape (n_points,), default=None
        Permute ``y`` only within each stratum (e.g. within a sample size, which drives both
        quantities: permuting across sizes would count that shared driver as association).

    Returns
    -------
    result : dict of str to float
        ``n_points`` and, for ``name`` in ``pearson`` and ``spearman``: ``name`` (the
        coefficient), ``name_p`` (SciPy's parametric p), ``name_perm_p`` (permutation p),
        ``name_ci_low`` and ``name_ci_high`` (95 % bootstrap percentile CI). All but
        ``n_points`` are NaN with fewer than 3 points or a constant ``x`` or ``y``.
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


def holm(p_values: np.ndarray) -> np.ndarray:
    """Return Holm's step-down adjusted p-values (family-wise error).

    Parameters
    ----------
    p_values : ndarray of shape (n_tests,)
        Unadjusted p-values; NaN entries pass through and are not counted as tests.

    Returns
    -------
    adjusted : ndarray of shape (n_tests,)
        Adjusted p-values, capped at 1, in the input order.
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full_like(p_values, np.nan)
    tested = ~np.isnan(p_values)
    values = p_values[tested]
    order = np.argsort(values)
    n = len(values)
    stepped = np.minimum(1.0, np.maximum.accumulate((n - np.arange(n)) * values[order]))
    adjusted[np.flatnonzero(tested)[order]] = stepped
    return adjusted
