"""The debiased spread of the clusters' true metrics: the headline CV, and its error scale.

The raw CV is inflated by sampling noise. τ², the variance of the clusters' true metrics, is
estimated per run by the method of moments, τ̂² = s²(cluster metrics) − mean sampling
variance, averaged untruncated over folds × repeats (unbiased for τ²), and its root is
debiased in one of two ways:

- **accuracy of 0.95 and more: a parametric bootstrap of the outcomes**
  (:func:`accuracy_spread`), where the normal model below fails because a cluster of a few
  dozen images makes one or two errors. A one-parameter family of truths: each sample is
  right with probability expit(μ + a·d), d its reference cluster's observed accuracy on the
  logit scale (smoothed, (correct + ½)/(n + 1), centred per fold and standardised), μ chosen
  so that the family's overall accuracy is the observed one; a = 0 is "no spread", and each a
  implies a true τ(a) over every run's partition. For each a on a grid, correctness is drawn
  (the same uniforms for every a) and τ̂² recomputed as observed; τ̃ is median-unbiased (the a
  at which half the draws exceed the observed τ̂²), the 95 % interval inverts the same test,
  the one-sided 95 % upper bound is where 5 % of draws fall below, and ``p_no_spread`` is the
  share of draws at a = 0 that reach the observed τ̂².
- **lower accuracies and the other metrics: the normal model** (:func:`normal_spread`): with
  normal cluster metrics, (τ̂² + v̄)·ν/v̄ is noncentral χ²; τ̃ is the root whose expected
  √max(0, τ̂²) is the observed one (mean matching), and its interval comes from the fold
  bootstrap of the pooled raw CV with the noise removed on the squared scale.

The debiased CV is 100·τ̃/mean metric. For accuracy, the error-scale CV, 100·τ̃/mean error
rate, is the same spread against the error rate, which a CV of accuracy hides near accuracy 1
(an eight-fold spread of error rates, 0.5–4 %, is a CV of accuracy of 1.5 %). Bias and
coverage of both, on the designs they were checked on, are in docs/methods.md.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special
from scipy import stats as scipy_stats

from hetcv.partitions import SampleSize, fold_bootstrap, membership_matrix, run_statistics
from hetcv.stats import expectation_interval, finite_mean

# Scales a of the accuracy family on the logit scale, in sds of the observed pattern.
SCALES = np.concatenate([[0.0], np.geomspace(0.05, 6.0, 23)])
DRAWS = 400
# Mean cluster accuracy from which the parametric bootstrap replaces the normal model.
PARAMETRIC_FROM = 0.95
FOLD_DRAWS = 100  # a fold's own point estimate needs only the median crossing
LEVEL = 0.95
# Draws × samples of one block of uniforms held at once (about 32 MiB of float64).
BLOCK_ELEMENTS = 2**22
# Midpoint quantile grids that integrate the noncentral χ² model of τ̂² (see _expected_root).
_CENTRAL_QUANTILES = (np.arange(400) + 0.5) / 400
_NORMAL_QUANTILES = scipy_stats.norm.ppf((np.arange(100) + 0.5) / 100)


@dataclass(frozen=True)
class DebiasedSpread:
    """The debiased CV and, for accuracy, its error scale; returned by `debiased_spread`.

    Attributes
    ----------
    debiased_cv : float
        100·τ̃/mean metric: the CV of the clusters' true metrics, sampling noise removed.
    debiased_cv_ci : tuple of (float, float)
        Its 95 % interval.
    debiased_cv_upper : float
        Its one-sided 95 % upper bound: what the data rule out.
    p_no_spread : float
        The parametric bootstrap's p-value of "no spread"; NaN under the normal model.
    error_cv : float
        Accuracy: 100·τ̃/mean error rate, the CV of the clusters' true error rates; NaN
        for the other metrics.
    error_cv_ci : tuple of (float, float)
        Its 95 % interval.
    error_cv_upper : float
        Its one-sided 95 % upper bound.
    fold_debiased_cv : ndarray of shape (n_folds,)
        Each fold's debiased CV on its own (its repeats averaged), for learning curves.
    noise_cv : float
        100·√mean(v)/mean metric: the CV that sampling noise alone gives clusters of these
        sizes; raw CV² ≈ debiased CV² + noise CV².
    method : str
        ``"parametric bootstrap"`` (accuracy ≥ :data:`PARAMETRIC_FROM`) or ``"normal model"``.
    n_nonfinite : int
        Normal model: bootstrap replicates of the pooled CV that were not finite.
    """

    debiased_cv: float
    debiased_cv_ci: tuple[float, float]
    debiased_cv_upper: float
    p_no_spread: float
    error_cv: float
    error_cv_ci: tuple[float, float]
    error_cv_upper: float
    fold_debiased_cv: np.ndarray
    noise_cv: float
    method: str
    n_nonfinite: int


def debiased_spread(sample: SampleSize, n_boot: int, seed: int) -> DebiasedSpread:
    """The debiased CV of one sample size, by the method that holds for its metric.

    Parameters
    ----------
    sample : SampleSize
        The folds and their repeated partitions.
    n_boot : int
        Fold-bootstrap replicates of the normal model's interval (the parametric bootstrap
        uses :data:`DRAWS` draws instead).
    seed : int
        Seed of the draws or resamples.

    Returns
    -------
    DebiasedSpread
    """
    metric, variance = _observed(sample)
    _, _, noise, level = run_statistics(metric, variance, ~np.isnan(metric))
    valid = np.isfinite(noise) & np.isfinite(level)
    noise_cv = float(100 * np.sqrt(noise[valid].mean()) / level[valid].mean())
    accuracy = sample.metric_name == "accuracy"
    if not accuracy or level[valid].mean() < PARAMETRIC_FROM:
        normal = normal_spread(sample, n_boot, seed, noise_cv)
        if not accuracy:
            return normal
        # The same spread against the mean error rate instead of the mean accuracy.
        to_error = level[valid].mean() / (1 - level[valid].mean())
        return dataclasses.replace(
            normal,
            error_cv=normal.debiased_cv * to_error,
            error_cv_ci=tuple(bound * to_error for bound in normal.debiased_cv_ci),
            error_cv_upper=normal.debiased_cv_upper * to_error,
        )
    pooled = accuracy_spread(sample, seed)
    folds = [
        accuracy_spread(
            SampleSize([fold], sample.k, sample.task, sample.normaliser, sample.metric),
            seed,
            FOLD_DRAWS,
        )
        for fold in sample.folds
    ]
    debiased, error = _scaled(pooled, pooled.level), _scaled(pooled, pooled.error)
    return DebiasedSpread(
        *debiased,
        p_no_spread=pooled.p_no_spread,
        error_cv=error[0],
        error_cv_ci=error[1],
        error_cv_upper=error[2],
        fold_debiased_cv=np.array([_scaled(own, own.level)[0] for own in folds]),
        noise_cv=noise_cv,
        method="parametric bootstrap",
        n_nonfinite=0,
    )


def _observed(sample: SampleSize) -> tuple[np.ndarray, np.ndarray]:
    """``(folds, R, k)`` observed cluster metrics and their sampling variances."""
    shape = (len(sample.folds), sample.n_repeats, sample.k)
    metric, variance = np.empty(shape), np.empty(shape)
    for f, fold in enumerate(sample.folds):
        members = membership_matrix(fold.labels, sample.k)
        sums = sample.cluster_metric.sums(
            fold.score, np.ones((1, len(fold.score))), members, fold.classes
        )
        metric[f], variance[f] = (
            x.reshape(shape[1:]) for x in sample.cluster_metric.value_and_variance(sums)
        )
    return metric, variance


def _scaled(spread: AccuracySpread, level: float) -> tuple[float, tuple[float, float], float]:
    """(estimate, (low, high), upper) of 100·τ/level, in %."""
    scale = 100 / level if level > 0 else np.nan
    low, high = spread.tau_ci
    return (
        float(spread.tau * scale),
        (float(low * scale), float(high * scale)),
        float(spread.tau_upper * scale),
    )


# ---------------------------------------------------------------------------------------------
# The normal model (balanced accuracy, AUROC, 1 − NRMSE).


def normal_spread(sample: SampleSize, n_boot: int, seed: int, noise_cv: float) -> DebiasedSpread:
    """The debiased CV by mean matching under the normal model, with a fold-bootstrap interval.

    The pooled raw CV √R, R = 10⁴·mean s²(y)/mean², gets the raw CV's expectation interval
    (the bootstrap world's value: √mean R*, since E[R] = D + N is what the bootstrap
    mimics), and the noise N = 10⁴·mean(v)/mean² is removed on the squared scale:
    √max(0, bound² − N).

    Parameters
    ----------
    sample : SampleSize
    n_boot : int
        Fold-bootstrap replicates.
    seed : int
        Seed of the resamples (:func:`hetcv.partitions.fold_bootstrap`).
    noise_cv : float
        The noise CV, in %.

    Returns
    -------
    DebiasedSpread
        With NaN ``p_no_spread`` and error-scale fields.
    """
    boot = fold_bootstrap(sample, n_boot, seed)
    metric, variance = boot.metric, boot.variance
    expected = ~np.isnan(metric)
    cv, spread, noise, level = run_statistics(metric, variance, expected)
    boot_cv, boot_spread, _, boot_level = run_statistics(
        boot.boot_metric, boot.boot_variance, expected
    )
    valid = np.isfinite(cv)

    def average(x: np.ndarray) -> np.ndarray:
        return x[..., valid].mean(axis=-1)

    pooled_sq, noise_sq = (1e4 * average(x) / average(level) ** 2 for x in (spread, noise))
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample with metric 0 is counted
        replicates = np.sqrt(1e4 * average(boot_spread) / average(boot_level) ** 2)
    reference = np.sqrt(finite_mean(replicates**2))
    interval = expectation_interval(np.sqrt(pooled_sq), replicates, reference)
    upper = expectation_interval(np.sqrt(pooled_sq), replicates, reference, 1 - 2 * (1 - LEVEL))
    return DebiasedSpread(
        debiased_cv=_debiased_cv(metric, variance),
        debiased_cv_ci=tuple(_remove_noise(bound, noise_sq) for bound in interval),
        debiased_cv_upper=_remove_noise(upper[1], noise_sq),
        p_no_spread=np.nan,
        error_cv=np.nan,
        error_cv_ci=(np.nan, np.nan),
        error_cv_upper=np.nan,
        fold_debiased_cv=np.array(
            [_debiased_cv(metric[f : f + 1], variance[f : f + 1]) for f in range(len(metric))]
        ),
        noise_cv=noise_cv,
        method="normal model",
        n_nonfinite=int(np.sum(~np.isfinite(replicates))),
    )


def _remove_noise(bound: float, noise_sq: float) -> float:
    """√max(0, bound² − noise²): a bound of the pooled raw CV as one of the debiased CV."""
    return float(np.sqrt(max(0.0, max(bound, 0.0) ** 2 - noise_sq)))


def _debiased_cv(metric: np.ndarray, variance: np.ndarray) -> float:
    """100·τ̃/mean metric over the runs of ``(folds, R, k)`` metrics and sampling variances."""
    cv, spread, noise, level = run_statistics(metric, variance, ~np.isnan(metric))
    valid = np.isfinite(cv)
    if not valid.any():
        return np.nan
    noise_mean = noise[valid].mean()
    tau2 = spread[valid].mean() - noise_mean
    return float(
        100 * _mean_matched_tau(tau2, noise_mean, _noise_df(variance)) / level[valid].mean()
    )


def _noise_df(variance: np.ndarray) -> float:
    """Satterthwaite degrees of freedom of the noise in the fold-averaged spread s²(y).

    Per fold, with v the repeat-averaged sampling variances of its non-empty clusters and
    A = (I − J/k)/(k − 1), the noise part of s²(y) = yᵀAy has mean tr(AV) = mean(v) and
    variance 2·tr((AV)²), i.e. (mean v)²/tr((AV)²) degrees of freedom (k − 1 when the v are
    equal); independent folds add theirs. Repeats of a fold share its samples and count once:
    where they partition it differently, their average is a little less noisy than this
    assumes, and the mean matching corrects a little too much.
    """
    total = 0.0
    for fold in variance:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a cluster empty in every repeat
            v = np.nanmean(fold, axis=0)
        v = v[np.isfinite(v)]
        k = len(v)
        if k < 2 or v.sum() <= 0:
            continue
        trace_sq = ((1 - 2 / k) * np.sum(v**2) + v.sum() ** 2 / k**2) / (k - 1) ** 2
        total += v.mean() ** 2 / trace_sq
    return total


def _expected_root(tau: float, noise: float, df: float) -> float:
    """E√max(0, τ̂²) under the noncentral χ² model of the method-of-moments τ̂².

    With normal cluster metrics, (τ̂² + v̄)·ν/v̄ ~ χ'²_ν(ν·τ²/v̄) exactly when the sampling
    variances are equal (fixed true metrics: the noncentral, not the random-effects, model).
    χ'²_ν(λ) is χ²_{ν−1} + (Z + √λ)², integrated on a fixed grid of quantiles of both.
    """
    central = scipy_stats.chi2.ppf(_CENTRAL_QUANTILES, df - 1) if df > 1 else np.zeros(1)
    shifted = (_NORMAL_QUANTILES + tau * np.sqrt(df / noise)) ** 2
    x = central[:, None] + shifted[None, :]
    return float(np.sqrt(noise * np.maximum(x / df - 1, 0.0)).mean())


def _mean_matched_tau(tau2: float, noise: float, df: float) -> float:
    """τ̃ ≥ 0 whose expected √max(0, τ̂²) equals the observed one; 0 when none does.

    √max(0, τ̂²) is biased low while τ̂²'s standard error is comparable to τ² (Jensen, with
    the truncation at 0 only partly offsetting it): 14 % at clusters of 25 to 150 and 4 folds.
    Matching its mean under the model of :func:`_expected_root` removes most of that bias.
    """
    observed = np.sqrt(max(tau2, 0.0))
    if noise <= 0 or df <= 0 or observed <= _expected_root(0.0, noise, df):
        return observed if noise <= 0 or df <= 0 else 0.0
    gap = lambda tau: _expected_root(tau, noise, df) - observed  # noqa: E731
    high = 2 * observed
    while gap(high) < 0:
        high *= 2
    return float(optimize.brentq(gap, 0.0, high, xtol=1e-6 * observed))


# ---------------------------------------------------------------------------------------------
# The parametric bootstrap (accuracy).


@dataclass(frozen=True)
class AccuracySpread:
    """The spread of the clusters' true accuracies; returned by `accuracy_spread`.

    Attributes
    ----------
    tau : float
        Median-unbiased sd of the clusters' true accuracies (0 to 1 scale).
    tau_ci : tuple of (float, float)
        95 % interval of ``tau`` by test inversion.
    tau_upper : float
        One-sided 95 % upper bound of ``tau``.
    p_no_spread : float
        (1 + #(draws at a = 0 with τ̂² ≥ observed)) / (1 + draws): is there any spread?
    tau2 : float
        The observed method-of-moments τ̂² (untruncated).
    level : float
        Mean of the cluster accuracies over runs (the CV's denominator).
    error : float
        1 − ``level``: the mean cluster error rate.
    """

    tau: float
    tau_ci: tuple[float, float]
    tau_upper: float
    p_no_spread: float
    tau2: float
    level: float
    error: float


def observed_tau2(sample: SampleSize, outcomes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """τ̂² and the mean cluster accuracy of each row of 0/1 outcomes, averaged over runs.

    Parameters
    ----------
    sample : SampleSize
        The partitions (its folds' ``labels``); scores are replaced by ``outcomes``.
    outcomes : list of ndarray of shape (n_rows, n_samples)
        Per fold, 0/1 correctness, one data set per row.

    Returns
    -------
    tau2, level : ndarray of shape (n_rows,)
        Over the runs with at least two non-empty clusters: mean s² of the cluster
        accuracies (ddof=1) minus the mean of their unbiased sampling variances
        p̂(1 − p̂)/(n − 1), and the mean cluster accuracy.
    """
    return _average_runs(_Runs(sample), outcomes)


class _Runs:
    """What every draw of a sample shares: each fold's membership matrix and cluster sizes."""

    def __init__(self, sample: SampleSize):
        self.k, self.repeats = sample.k, sample.n_repeats
        self.members = [membership_matrix(fold.labels, sample.k) for fold in sample.folds]
        self.count = [members.sum(axis=0) for members in self.members]
        present = [(count > 0).reshape(self.repeats, self.k) for count in self.count]
        self.present = [p.astype(np.float64) for p in present]
        # Runs with at least two clusters carry a spread; the others are left out.
        self.clusters = [p.sum(axis=-1) for p in self.present]
        self.valid = [c >= 2 for c in self.clusters]
        self.n_valid = sum(int(v.sum()) for v in self.valid)


def _average_runs(runs: _Runs, outcomes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    rows = len(outcomes[0])
    spread = np.zeros(rows)
    noise = np.zeros(rows)
    level = np.zeros(rows)
    for members, count, present, clusters, valid, correct in zip(
        runs.members, runs.count, runs.present, runs.clusters, runs.valid, outcomes, strict=True
    ):
        safe = np.maximum(count, 1)
        accuracy = ((correct @ members) / safe).reshape(rows, runs.repeats, runs.k) * present
        variance = accuracy * (1 - accuracy) / np.maximum(count - 1, 1).reshape(present.shape)
        n_clusters = np.maximum(clusters, 1)
        mean = accuracy.sum(axis=-1) / n_clusters
        squares = (((accuracy - mean[..., None]) * present) ** 2).sum(axis=-1)
        spread += (squares / np.maximum(clusters - 1, 1))[:, valid].sum(axis=-1)
        noise += ((variance * present).sum(axis=-1) / n_clusters)[:, valid].sum(axis=-1)
        level += mean[:, valid].sum(axis=-1)
    return (spread - noise) / runs.n_valid, level / runs.n_valid


def _pattern(sample: SampleSize) -> list[np.ndarray]:
    """Per fold, each sample's standardised logit deviation of its reference cluster."""
    patterns = []
    for fold in sample.folds:
        reference = fold.labels[0]
        count = np.bincount(reference, minlength=sample.k)
        right = np.bincount(reference, weights=fold.score, minlength=sample.k)
        logit = special.logit((right + 0.5) / (count + 1))
        present = count > 0
        logit = logit - logit[present].mean()
        patterns.append(np.where(present, logit, 0.0)[reference])
    scale = np.concatenate(patterns).std()
    return [pattern / scale if scale > 0 else pattern for pattern in patterns]


def _intercept(patterns: list[np.ndarray], scale: float, accuracy: float) -> float:
    """μ at which the family's mean accuracy over all samples is ``accuracy``."""
    deviations = np.concatenate(patterns) * scale
    target = special.logit(accuracy)

    def gap(mu: float) -> float:
        return special.expit(mu + deviations).mean() - accuracy

    return float(optimize.brentq(gap, target - 60.0, target + 60.0, xtol=1e-10))


def _induced_tau(sample: SampleSize, probabilities: list[np.ndarray]) -> float:
    """True τ of per-sample probabilities over every run: √mean s²(cluster means)."""
    spreads = []
    for fold, p in zip(sample.folds, probabilities, strict=True):
        members = membership_matrix(fold.labels, sample.k)
        count = members.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = ((p @ members) / count).reshape(sample.n_repeats, sample.k)
        spreads.append(np.nanvar(means, axis=-1, ddof=1))
    return float(np.sqrt(np.mean(np.concatenate(spreads))))


def accuracy_spread(sample: SampleSize, seed: int, n_draws: int = DRAWS) -> AccuracySpread:
    """Estimate the sd of the clusters' true accuracies by a parametric bootstrap.

    Parameters
    ----------
    sample : SampleSize
        Accuracy folds (0/1 scores) with their repeated partitions.
    seed : int
        Seed of the draws (see :func:`_draws`).
    n_draws : int, default=DRAWS
        Draws at each scale of the family.

    Returns
    -------
    AccuracySpread
    """
    observed, level = (x[0] for x in observed_tau2(sample, [f.score[None] for f in sample.folds]))
    right = sum(float(fold.score.sum()) for fold in sample.folds)
    total = sum(len(fold.score) for fold in sample.folds)
    accuracy = (right + 0.5) / (total + 1)
    patterns = _pattern(sample)
    probabilities, truth = [], np.empty(len(SCALES))
    for g, scale in enumerate(SCALES):
        mu = _intercept(patterns, scale, accuracy)
        probabilities.append([special.expit(mu + scale * pattern) for pattern in patterns])
        truth[g] = _induced_tau(sample, probabilities[g])
    draws = _draws(sample, probabilities, n_draws, seed)
    exceed = (draws >= observed).mean(axis=1)  # rises with the scale
    below = (draws <= observed).mean(axis=1)  # falls with the scale
    tail = (1 - LEVEL) / 2
    return AccuracySpread(
        tau=_crossing(exceed, 0.5, truth, rising=True),
        tau_ci=(
            _crossing(exceed, tail, truth, rising=True),
            _crossing(below, tail, truth, rising=False),
        ),
        tau_upper=_crossing(below, 1 - LEVEL, truth, rising=False),
        p_no_spread=float((1 + (draws[0] >= observed).sum()) / (1 + n_draws)),
        tau2=float(observed),
        level=float(level),
        error=float(1 - level),
    )


def _draws(
    sample: SampleSize, probabilities: list[list[np.ndarray]], n_draws: int, seed: int
) -> np.ndarray:
    """``(scales, n_draws)`` τ̂² of correctness drawn at every scale from the same uniforms.

    Draws are made in blocks of rows, the uniforms of fold f's block b from
    ``SeedSequence(seed, spawn_key=(f, b))``, so that memory holds one block.
    """
    largest = max(len(fold.score) for fold in sample.folds)
    step = max(1, BLOCK_ELEMENTS // largest)
    out = np.empty((len(probabilities), n_draws))
    runs = _Runs(sample)
    for block, start in enumerate(range(0, n_draws, step)):
        stop = min(start + step, n_draws)
        uniforms = [
            np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(f, block))).random(
                (stop - start, len(fold.score))
            )
            for f, fold in enumerate(sample.folds)
        ]
        for g, scale_probabilities in enumerate(probabilities):
            outcomes = [
                (u < p).astype(np.float64)
                for u, p in zip(uniforms, scale_probabilities, strict=True)
            ]
            out[g, start:stop] = _average_runs(runs, outcomes)[0]
    return out


def _crossing(share: np.ndarray, target: float, truth: np.ndarray, rising: bool) -> float:
    """τ(a) where a tail share (monotone in the scale) crosses ``target``, interpolated.

    Below the family's smallest τ the answer is 0 (a rising share already above the target
    at a = 0); beyond its largest, the largest τ of the grid.
    """
    monotone = np.maximum.accumulate(share) if rising else np.minimum.accumulate(share)
    if rising:
        if monotone[0] >= target:
            return 0.0
        if monotone[-1] < target:
            return float(truth[-1])
        return float(np.interp(target, monotone, truth))
    if monotone[0] <= target:
        return 0.0
    if monotone[-1] > target:
        return float(truth[-1])
    return float(np.interp(-target, -monotone, truth))
