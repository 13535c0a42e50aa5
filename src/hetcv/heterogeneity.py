"""Heterogeneity of per-cluster performance at one sample size, with its uncertainty.

Input: every held-out fold of one sample size, each clustered R times with cluster numbers
aligned across repeats (:class:`FoldPartitions`, bundled with k, task, metric and normaliser
in :class:`SampleSize`). As in the paper, a statistic is computed per (fold, repeat) run and then
averaged over all runs. Repeats of a fold share their samples, so they are never treated as
independent: every resample, permutation or Monte Carlo draw of a fold is shared by all its
repeats.

An empty cluster is a named state: a run's statistic is computed over its non-empty clusters,
a cluster's averaged metric over the runs in which it is non-empty, and results count the runs
with an empty cluster (``n_empty_runs``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from hetcv.partitions import (
    SampleSize,
    chunks,
    fold_bootstrap,
    fold_seeds,
    fold_sums,
    membership_matrix,
    run_statistics,
)
from hetcv.stats import (
    coefficient_of_variation,
    expectation_interval,
    finite_mean,
    percentile_interval,
    permutation_p_value,
    wilson_interval,
)


def _cochran_q(metric: np.ndarray, weighting_variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cochran's Q and its degrees of freedom per run, inverse-variance weighted.

    ``weighting_variance`` is the metric's variance under "no cluster differs"
    (:meth:`hetcv.metrics.ClusterMetric.weighting_variance`): for accuracy, the pooled
    p̄(1 − p̄)/n_c, which makes Q the homogeneity chi-square of the clusters × (right, wrong)
    table. A cluster whose variance is 0 (a regression cluster of one sample, a run with no
    error at all) or whose metric is undefined is left out of Q and of its degrees of
    freedom.
    """
    present = np.isfinite(metric) & (weighting_variance > 0)
    weight = np.divide(
        1.0, weighting_variance, out=np.zeros_like(weighting_variance), where=present
    )
    y = np.where(present, metric, 0.0)
    total = weight.sum(-1, keepdims=True)
    centre = np.divide(
        (weight * y).sum(-1, keepdims=True), total, out=np.zeros_like(total), where=total > 0
    )
    q = (weight * (y - centre) ** 2).sum(-1)
    return q, np.maximum(present.sum(-1) - 1.0, 0.0)


# ---------------------------------------------------------------------------------------------
# 1. Per-run metrics and the paper's CV.


@dataclass(frozen=True)
class RunMetrics:
    """Per-cluster metrics of every (fold, repeat) run; returned by `run_metrics`.

    Attributes
    ----------
    metric : ndarray of shape (n_folds, n_repeats, k)
        Per-cluster metric of every run; NaN where the cluster is empty.
    size : ndarray of shape (n_folds, n_repeats, k)
        Cluster sizes (float).
    cv : ndarray of shape (n_folds, n_repeats)
        CV (%) of every run over its non-empty clusters.
    raw_cv : float
        The paper's CV: mean of ``cv`` over runs (runs with < 2 clusters left out).
    cluster_metric : ndarray of shape (k,)
        Metric of each cluster averaged over the runs in which it is non-empty.
    n_empty_runs : int
        Runs with at least one empty cluster.
    """

    metric: np.ndarray  # (F, R, k) per-cluster metric of every run, NaN where empty
    size: np.ndarray  # (F, R, k) cluster sizes
    cv: np.ndarray  # (F, R) CV of every run over its non-empty clusters
    raw_cv: float  # the paper's CV: mean of ``cv`` over runs (runs with < 2 clusters left out)
    cluster_metric: np.ndarray  # (k,) metric averaged over the runs where the cluster exists
    n_empty_runs: int  # runs with at least one empty cluster


def run_metrics(sample: SampleSize) -> RunMetrics:
    """Compute the per-cluster metrics of every (fold, repeat) run and the paper's averaged CV.

    Parameters
    ----------
    sample : SampleSize
        Every fold's partitions and scores at one sample size.

    Returns
    -------
    RunMetrics
        Run metrics, cluster sizes, per-run CVs and their average.
    """
    cluster_metric = sample.cluster_metric
    sums = np.concatenate(
        [
            fold_sums(
                sample,
                fold,
                membership_matrix(fold.labels, sample.k),
                np.ones((1, len(fold.score))),
            )
            for fold in sample.folds
        ],
        axis=1,
    )  # (S, folds, R, k)
    n = cluster_metric.count(sums)
    metric, _ = cluster_metric.value_and_variance(sums)
    cv = coefficient_of_variation(metric)
    return RunMetrics(
        metric=metric,
        size=n,
        cv=cv,
        raw_cv=float(np.nanmean(cv)),
        cluster_metric=np.nanmean(metric, axis=(0, 1)),
        n_empty_runs=int(np.any(cluster_metric.undefined(sums), axis=-1).sum()),
    )


# ---------------------------------------------------------------------------------------------
# 2. The raw CV and cluster metrics with their fold-bootstrap intervals; Cochran's Q and I².


@dataclass(frozen=True)
class Heterogeneity:
    """The paper's CV, the cluster metrics and Cochran's Q; returned by `heterogeneity`.

    The debiased CV, the error-scale spread and their intervals are
    :func:`hetcv.spread.debiased_spread`'s.

    Attributes
    ----------
    raw_cv : float
        The paper's CV (%), averaged over runs.
    raw_cv_ci : tuple of (float, float)
        95 % fold-bootstrap interval for the *expected* raw CV at this design. The raw CV is
        biased up by sampling noise: this is not an interval for the clusters' true CV.
    cluster_metric : ndarray of shape (k,)
        Metric of each cluster, averaged over the runs where the cluster exists.
    cluster_metric_ci : ndarray of shape (k, 2)
        95 % interval of each cluster metric: for accuracy, Wilson's on the counts pooled
        over folds (averaged over repeats); otherwise the fold bootstrap's percentile
        interval.
    tau2 : float
        Between-cluster variance of the metric by the method of moments, averaged over runs,
        untruncated.
    q : float
        Cochran's Q: sum over folds of the repeat-averaged Q (its p-value is the permutation
        test's, :class:`PermutationNull`).
    q_df : float
        Degrees of freedom of ``q``.
    i_squared : float
        I² = max(0, (Q − df)/Q), the share of the spread that is real.
    n_empty_runs : int
        Runs with at least one empty cluster.
    n_nonfinite_cv : int
        Bootstrap replicates whose raw CV is not finite.
    n_nonfinite_cluster : ndarray of shape (k,)
        The same per cluster metric.
    cv_replicates : ndarray of shape (n_boot,)
        Raw CV of every replicate.
    cluster_metric_replicates : ndarray of shape (n_boot, k)
        Cluster metrics of every replicate.
    """

    raw_cv: float
    raw_cv_ci: tuple[float, float]
    cluster_metric: np.ndarray
    cluster_metric_ci: np.ndarray
    tau2: float
    q: float
    q_df: float
    i_squared: float
    n_empty_runs: int
    n_nonfinite_cv: int
    n_nonfinite_cluster: np.ndarray
    cv_replicates: np.ndarray
    cluster_metric_replicates: np.ndarray


def heterogeneity(sample: SampleSize, n_boot: int, seed: int) -> Heterogeneity:
    """The paper's CV with its interval, cluster metrics with theirs, Cochran's Q and I².

    Parameters
    ----------
    sample : SampleSize
        The folds and their repeated partitions at one sample size.
    n_boot : int
        Number of fold-bootstrap replicates (:func:`hetcv.partitions.fold_bootstrap`).
    seed : int
        Seed of the resamples.

    Returns
    -------
    Heterogeneity
        Estimates, 95 % intervals, counts of non-finite replicates and the replicates.

    Notes
    -----
    A replicate whose resample empties a cluster that the estimate has is non-finite for
    the statistics that need that cluster, and is counted, not dropped silently. The raw CV
    is biased up by sampling noise, and the bootstrap adds that noise a second time, so the
    raw CV gets an interval for what it estimates, its expectation at this design: the basic
    interval with the replicates' mean as the bootstrap world's value
    (:func:`hetcv.stats.expectation_interval`). Q is the inverse-variance weighted spread of
    each run's clusters (:meth:`hetcv.metrics.ClusterMetric.weighting_variance`), averaged
    over repeats (which share their samples) and summed over the independent folds. How
    each was validated: docs/methods.md.
    """
    k, cluster_metric = sample.k, sample.cluster_metric
    boot = fold_bootstrap(sample, n_boot, seed)
    metric = boot.metric
    q, df = np.empty(metric.shape[:2]), np.empty(metric.shape[:2])
    pooled_counts = np.zeros((2, k))  # accuracy: samples and correct, over folds, per repeat
    for f, sums in enumerate(boot.sums):
        q[f], df[f] = _cochran_q(metric[f], cluster_metric.weighting_variance(sums))
        pooled_counts += sums[:2].mean(axis=1)
    expected = ~np.isnan(metric)
    cv, spread, noise, _ = run_statistics(metric, boot.variance, expected)
    boot_cv = run_statistics(boot.boot_metric, boot.boot_variance, expected)[0]
    valid = np.isfinite(cv)

    def cluster_average(x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):  # a cluster empty in every run has none: NaN
            return np.where(expected, x, 0.0).sum(axis=(-3, -2)) / expected.sum(axis=(0, 1))

    raw_cv, cv_replicates = cv[valid].mean(), boot_cv[..., valid].mean(axis=-1)
    cluster_replicates = cluster_average(boot.boot_metric)
    q_total, df_total = q.mean(axis=1).sum(), df.mean(axis=1).sum()
    return Heterogeneity(
        raw_cv=float(raw_cv),
        raw_cv_ci=_at_least_zero(
            expectation_interval(raw_cv, cv_replicates, finite_mean(cv_replicates))
        ),
        cluster_metric=cluster_average(metric),
        cluster_metric_ci=(
            np.column_stack(wilson_interval(pooled_counts[1], pooled_counts[0]))
            if sample.metric_name == "accuracy"
            else np.array([percentile_interval(cluster_replicates[:, c]) for c in range(k)])
        ),
        tau2=float(spread[valid].mean() - noise[valid].mean()),
        q=float(q_total),
        q_df=float(df_total),
        i_squared=float(max(0.0, (q_total - df_total) / q_total) if q_total > 0 else 0.0),
        n_empty_runs=int(np.any(~expected, axis=-1).sum()),
        n_nonfinite_cv=int(np.sum(~np.isfinite(cv_replicates))),
        n_nonfinite_cluster=np.sum(~np.isfinite(cluster_replicates), axis=0),
        cv_replicates=cv_replicates,
        cluster_metric_replicates=cluster_replicates,
    )


# ---------------------------------------------------------------------------------------------
# 3. Permutation null of the averaged raw CV.


@dataclass(frozen=True)
class PermutationNull:
    """Observed averaged CV against its permutation null; returned by `permutation_null`.

    Attributes
    ----------
    observed_cv : float
        The paper's averaged CV (%).
    null_cv : ndarray of shape (n_permutations,)
        Averaged CV under each permutation.
    p_value : float
        (1 + #(null >= observed)) / (1 + P).
    cluster_metric : ndarray of shape (k,)
        Each cluster's metric averaged over the runs where it is defined.
    null_cluster_metric : ndarray of shape (n_permutations, k)
        The same under each permutation: each cluster's band under "no cluster differs".
    q : float
        Cochran's Q of the observed scores (see :func:`heterogeneity`).
    null_q : ndarray of shape (n_permutations,)
        Q under each permutation.
    q_p_value : float
        (1 + #(null_q >= q)) / (1 + P): Q's permutation p-value, exact at any accuracy
        where chi²(df) is not (a few expected errors per cluster).
    n_empty_runs : int
        Runs with at least one empty cluster.
    """

    observed_cv: float  # the paper's averaged CV
    null_cv: np.ndarray  # (P,) averaged CV under each permutation
    p_value: float  # (1 + #(null >= observed)) / (1 + P)
    cluster_metric: np.ndarray  # (k,) each cluster's metric averaged over runs
    null_cluster_metric: np.ndarray  # (P, k) the same under each permutation
    q: float
    null_q: np.ndarray  # (P,)
    q_p_value: float
    n_empty_runs: int


def permutation_null(sample: SampleSize, n_permutations: int, seed: int) -> PermutationNull:
    """Permutation null of the averaged CV: scores shuffled over a fold's samples.

    Permutation p of fold f is shared by every repeat of fold f (the repeats partition the
    same samples), and the null value is averaged over folds × repeats like the observed CV.
    Where a fold has ``groups``, scores are shuffled only within each group (class), so that
    clusters whose classes differ in accuracy are not mistaken for heterogeneity beyond the
    class mix. Cluster sizes are those of the partitions, so empty clusters stay empty, and
    a cluster's averaged metric leaves out the runs in which it is empty.

    Parameters
    ----------
    sample : SampleSize
        The folds to test; a fold's ``groups``, if set, restrict the shuffles.
    n_permutations : int
        Number of permutations of every fold's scores.
    seed : int
        Seed of the permutations, spawned into one independent stream per fold.

    Returns
    -------
    PermutationNull
        Observed and null averaged CVs and Q, their p-values and the cluster metrics.
    """
    k, n_repeats = sample.k, sample.n_repeats
    cv = np.empty((1 + n_permutations, len(sample.folds), n_repeats))  # row 0: observed
    per_cluster = np.empty((*cv.shape, k))
    q = np.empty(cv.shape)
    n_empty_runs = 0
    for f, (fold, fold_seed) in enumerate(
        zip(sample.folds, fold_seeds(seed, cv.shape[1]), strict=True)
    ):
        m = len(fold.score)
        indicator = membership_matrix(fold.labels, k)
        observed = fold_sums(sample, fold, indicator, np.ones((1, m)))
        n_empty_runs += int(np.any(sample.cluster_metric.undefined(observed[:, 0]), axis=-1).sum())
        cv[0, f], per_cluster[0, f], q[0, f] = (x[0] for x in _cv_and_metric(observed, sample))
        code = (
            np.zeros(m) if fold.groups is None else np.unique(fold.groups, return_inverse=True)[1]
        )
        # Samples in group order; a row of argsort(code + uniform) visits the same group blocks
        # in a random order within each block, so score[order] permutes within groups.
        by_group = np.argsort(code, kind="stable")
        rng = np.random.default_rng(fold_seed)
        for start, stop in chunks(n_permutations, m):
            order = np.argsort(code + rng.random((stop - start, m)), axis=1)
            permuted = np.empty((stop - start, m))
            permuted[:, by_group] = fold.score[order]
            rows = slice(1 + start, 1 + stop)
            sums = fold_sums(sample, fold, indicator, np.ones((stop - start, m)), permuted)
            cv[rows, f], per_cluster[rows, f], q[rows, f] = _cv_and_metric(sums, sample)
    valid = np.isfinite(cv[0])
    averaged = cv[:, valid].mean(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cluster empty in every run: NaN
        cluster_metric = np.nanmean(per_cluster, axis=(1, 2))
    q_total = q.mean(axis=-1).sum(axis=-1)  # repeats averaged, folds summed
    return PermutationNull(
        observed_cv=float(averaged[0]),
        null_cv=averaged[1:],
        p_value=permutation_p_value(averaged[0], averaged[1:]),
        cluster_metric=cluster_metric[0],
        null_cluster_metric=cluster_metric[1:],
        q=float(q_total[0]),
        null_q=q_total[1:],
        q_p_value=permutation_p_value(q_total[0], q_total[1:]),
        n_empty_runs=n_empty_runs,
    )


def _cv_and_metric(
    sums: np.ndarray, sample: SampleSize
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CV ``(P, R)``, cluster metrics ``(P, R, k)`` and Q ``(P, R)`` from ``(S, P, R, k)`` sums."""
    metric, _ = sample.cluster_metric.value_and_variance(sums)
    q, _ = _cochran_q(metric, sample.cluster_metric.weighting_variance(sums))
    return coefficient_of_variation(metric), metric, q


def _at_least_zero(interval: tuple[float, float]) -> tuple[float, float]:
    """An interval of a CV (≥ 0 by definition) with its bounds clipped at 0."""
    return float(max(interval[0], 0.0)), float(max(interval[1], 0.0))


def excess_cv(raw_cv: float, null_cv: np.ndarray) -> float:
    """√max(0, CV² − mean null CV²): the raw CV beyond what chance alone gives, in CV points.

    Chance and real between-cluster variation add as variances (E[CV²] ≈ CV²_true +
    CV²_chance), so they are subtracted on the squared scale, not on the CV scale.

    Parameters
    ----------
    raw_cv : float
        Observed (averaged) CV, in %.
    null_cv : ndarray of shape (n_permutations,)
        CV under each permutation, e.g. ``PermutationNull.null_cv``.

    Returns
    -------
    excess : float
        Excess CV in CV points (%), ≥ 0.
    """
    return float(np.sqrt(max(0.0, raw_cv**2 - np.mean(np.square(null_cv)))))


# ---------------------------------------------------------------------------------------------
# 4. Cross-fitted weakest cluster.
