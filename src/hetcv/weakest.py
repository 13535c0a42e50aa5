"""The weakest cluster, cross-fitted: which cluster is worst and by how much, with no winner's
curse."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from hetcv.partitions import (
    FoldPartitions,
    SampleSize,
    chunks,
    fold_seeds,
    fold_sums,
    membership_matrix,
    resample_counts,
)
from hetcv.stats import (
    percentile_interval,
)


@dataclass(frozen=True)
class WeakestCluster:
    """Cross-fitted metric of the weakest cluster; returned by `weakest_cluster`.

    Attributes
    ----------
    estimate : float
        Cross-fitted metric of the cluster ranked worst.
    ci : tuple of (float, float)
        95 % percentile interval of the fold bootstrap.
    cluster : int
        The cluster ranked worst most often.
    chosen_fraction : float
        Share of the (fold, repeat, half) rankings that chose ``cluster``.
    fold_cluster : ndarray of shape (n_folds,)
        The cluster each fold's rankings chose most often: cluster numbers are per fold.
    n_undefined : int
        Rankings whose chosen cluster is empty in the other half (left out of the mean).
    n_nonfinite : int
        Bootstrap replicates that are not finite.
    replicates : ndarray of shape (n_boot,)
        The estimate in every bootstrap replicate.
    rest_metric : float
        Accuracy: the metric of the rest of each measuring half (every other cluster),
        averaged like ``estimate``; NaN for the other metrics.
    error_ratio : float
        Accuracy: the chosen clusters' error rate over the rest's, on the measuring halves'
        counts: how many times the errors of the rest the weakest cluster makes; NaN for
        the other metrics.
    error_ratio_ci : tuple of (float, float)
        Its 95 % interval (Katz's, on the measuring halves' counts given the choices).
    """

    estimate: float
    ci: tuple[float, float]
    cluster: int
    chosen_fraction: float
    fold_cluster: np.ndarray
    n_undefined: int
    n_nonfinite: int
    replicates: np.ndarray
    rest_metric: float
    error_ratio: float
    error_ratio_ci: tuple[float, float]


def weakest_cluster(sample: SampleSize, n_boot: int, seed: int) -> WeakestCluster:
    """Metric of the weakest cluster without the winner's curse, by cross-fitting.

    Each fold's held-out samples are split into two random halves (seeded, the same split for
    every repeat). In each run the clusters are ranked on one half and the worst one's metric
    is measured on the other half, then the halves swap roles; the 2 × folds × repeats values
    are averaged. Selection and measurement use disjoint samples, so each value is unbiased for
    the true metric of the cluster it selected; the naive minimum of the cluster metrics is
    biased low even when all clusters are equal. Ties in the ranking are broken at random.

    CI: percentile interval of a fold bootstrap (each fold resampled once per replicate, halves
    kept, ranking and measurement redone), so that it carries the selection's uncertainty too.
    It is conservative: resampling adds noise to the ranking, and the interval covered the
    common accuracy in 99 % of simulated data sets under the null and the expected estimate in
    99.7–100 % with heterogeneous clusters.

    Parameters
    ----------
    sample : SampleSize
        Folds whose held-out samples are split into halves.
    n_boot : int
        Number of fold-bootstrap replicates for the interval.
    seed : int
        Seed of the half splits, tie-breaks and resamples.

    Returns
    -------
    WeakestCluster
        Estimate, interval, most-chosen cluster and counts of undefined values.
    """
    k, n_repeats, n_folds = sample.k, sample.n_repeats, len(sample.folds)
    seeds = fold_seeds(seed, 2 * n_folds)
    split_seeds, boot_seeds = seeds[:n_folds], seeds[n_folds:]
    values = np.empty((1 + n_boot, n_folds, n_repeats, 2))  # row 0: the estimate
    rest = np.full(values.shape, np.nan)
    tallies = np.zeros(4)  # accuracy: the chosen and the rest's samples and errors
    chosen = np.empty((n_folds, n_repeats, 2), dtype=np.intp)
    for f, fold in enumerate(sample.folds):
        m = len(fold.score)
        rng = np.random.default_rng(split_seeds[f])
        first = rng.permutation(m) < m // 2
        halves = np.stack([first, ~first]).astype(np.float64)
        tiebreak = rng.random((2, n_repeats, k))
        split = (halves, fold, membership_matrix(fold.labels, k), tiebreak, sample)
        point, chosen[f], rest[0, f], fold_tallies = _cross_fit(np.ones((1, m)), *split)
        values[0, f] = point[0]
        tallies += fold_tallies[:, 0].sum(axis=-1).mean(axis=-1)  # halves summed, repeats averaged
        rng = np.random.default_rng(boot_seeds[f])
        for start, stop in chunks(n_boot, 2 * m):
            counts = resample_counts(rng, stop - start, m)
            rows = slice(1 + start, 1 + stop)
            values[rows, f], _, rest[rows, f], _ = _cross_fit(counts, *split)
    averaged = np.nanmean(values, axis=(1, 2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # metrics without a rest: all NaN
        rest_averaged = np.nanmean(rest, axis=(1, 2, 3))
    ratio, ratio_ci = _error_ratio(*tallies)
    times = np.bincount(chosen.ravel(), minlength=k)
    return WeakestCluster(
        estimate=float(averaged[0]),
        ci=percentile_interval(averaged[1:]),
        cluster=int(np.argmax(times)),
        chosen_fraction=float(times.max() / times.sum()),
        fold_cluster=np.array(
            [np.bincount(fold.ravel(), minlength=k).argmax() for fold in chosen], dtype=np.int64
        ),
        n_undefined=int(np.isnan(values[0]).sum()),
        n_nonfinite=int(np.sum(~np.isfinite(averaged[1:]))),
        replicates=averaged[1:],
        rest_metric=float(rest_averaged[0]),
        error_ratio=ratio,
        error_ratio_ci=ratio_ci,
    )


def _error_ratio(
    chosen: float, chosen_errors: float, rest: float, rest_errors: float
) -> tuple[float, tuple[float, float]]:
    """Error-rate ratio of the chosen clusters to the rest, with Katz's log interval.

    The counts are the measuring halves', summed over folds and halves and averaged over
    repeats. Given the choices (made on the other halves), they are binomial, so Katz's
    interval, var log RR = 1/x₁ − 1/n₁ + 1/x₂ − 1/n₂, is one for the chosen clusters' true
    ratio; ½ is added to an error count of 0. NaN for metrics other than accuracy.
    """
    if not chosen > 0 or not rest > 0:
        return np.nan, (np.nan, np.nan)
    x1, x2 = max(chosen_errors, 0.5), max(rest_errors, 0.5)
    ratio = (x1 / chosen) / (x2 / rest)
    spread = np.sqrt(max(1 / x1 - 1 / chosen + 1 / x2 - 1 / rest, 0.0))
    z = scipy_stats.norm.ppf(0.975)
    return float(ratio), (float(ratio * np.exp(-z * spread)), float(ratio * np.exp(z * spread)))


def _cross_fit(
    weights: np.ndarray,
    halves: np.ndarray,
    fold: FoldPartitions,
    indicator: np.ndarray,
    tiebreak: np.ndarray,
    sample: SampleSize,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Value, chosen cluster and rest, ``(B, R, 2)`` each, for ``(B, m)`` sample weights.

    ``halves`` ``(2, m)`` 0/1, ``indicator`` ``(m, R·k)``, ``tiebreak`` ``(2, R, k)`` random
    keys that order tied clusters. The rest is the accuracy of the measuring half's other
    clusters (NaN for the other metrics, whose sums do not add over clusters).
    """
    rows, m = weights.shape
    halved = (weights[:, None, :] * halves).reshape(2 * rows, m)
    sums = fold_sums(sample, fold, indicator, halved)
    metric, _ = sample.cluster_metric.value_and_variance(sums)
    shape = (rows, 2, sample.n_repeats, sample.k)
    metric = metric.reshape(shape)  # (B, half, R, k)
    # Worst first; NaN (undefined in the ranking half) sorts last.
    worst = np.lexsort((np.broadcast_to(tiebreak, metric.shape), metric), axis=-1)[..., 0]
    measured = np.take_along_axis(metric[:, ::-1], worst[..., None], axis=-1)[..., 0]
    rest = np.full(measured.shape, np.nan)
    tallies = np.full((4, *measured.shape), np.nan)
    if sample.metric_name == "accuracy":
        count, right = (x.reshape(shape)[:, ::-1] for x in sums[:2])  # the measuring half's
        chosen_count = np.take_along_axis(count, worst[..., None], axis=-1)[..., 0]
        chosen_right = np.take_along_axis(right, worst[..., None], axis=-1)[..., 0]
        rest_count, rest_right = count.sum(-1) - chosen_count, right.sum(-1) - chosen_right
        with np.errstate(invalid="ignore", divide="ignore"):
            rest = rest_right / rest_count
        tallies = np.stack(
            [chosen_count, chosen_count - chosen_right, rest_count, rest_count - rest_right]
        )
    return (
        measured.transpose(0, 2, 1),
        worst.transpose(0, 2, 1),
        rest.transpose(0, 2, 1),
        tallies.transpose(0, 1, 3, 2),
    )
