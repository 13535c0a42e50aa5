"""hetcv.spread: the debiased spread where good medical models stand (accuracies 0.95–0.995,
clusters of 25–40, 2–4 folds), through the library's own estimator, against the truth of
each data set's own partitions. The normal model's simulations at accuracies 0.88–0.95 are in
test_heterogeneity.py and test_metrics.py. Run with ``pytest -s`` to see the figures."""

from __future__ import annotations

import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from hetcv.heterogeneity import heterogeneity
from hetcv.partitions import FoldPartitions, SampleSize
from hetcv.spread import PARAMETRIC_FROM, accuracy_spread, debiased_spread, observed_tau2


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


def medical_sample(rng, sizes, accuracy, n_folds, n_repeats=10, moved=0.02):
    """Fixed clusters of the given sizes and true accuracies; repeats move ~2 % of samples.

    Returns the sample and its true τ: √(mean over runs of the sample variance of the true
    accuracies of each run's clusters), with the mean true error rate.
    """
    k, accuracy = len(sizes), np.asarray(accuracy)
    folds, spreads, means = [], [], []
    for _ in range(n_folds):
        base = np.repeat(np.arange(k), sizes)
        labels = np.tile(base, (n_repeats, 1))
        move = rng.random(labels.shape) < moved
        labels[move] = rng.integers(0, k, move.sum())
        p = accuracy[base]
        folds.append(FoldPartitions((rng.random(len(p)) < p).astype(float), labels))
        one_hot = labels[:, :, None] == np.arange(k)
        theta = (one_hot * p[None, :, None]).sum(1) / one_hot.sum(1)
        spreads.append(np.var(theta, axis=-1, ddof=1)), means.append(theta.mean())
    return SampleSize(folds, k, "classification"), np.sqrt(np.mean(spreads)), 1 - np.mean(means)


def test_observed_tau2_is_the_method_of_moments_of_heterogeneity():
    rng = np.random.default_rng(0)
    sample, _, _ = medical_sample(rng, (5, 10, 20, 2), (0.9, 0.8, 0.7, 0.9), 3, 4, moved=0.2)
    tau2, _ = observed_tau2(sample, [fold.score[None] for fold in sample.folds])
    assert tau2[0] == pytest.approx(heterogeneity(sample, 10, 0).tau2)


def test_the_spread_is_reported_consistently():
    rng = np.random.default_rng(1)
    sample, _, _ = medical_sample(rng, (40, 40, 40, 40), (0.995, 0.99, 0.98, 0.96), 4)
    spread = debiased_spread(sample, 50, 0)
    assert spread.method == "parametric bootstrap"  # mean accuracy above PARAMETRIC_FROM
    low, high = spread.debiased_cv_ci
    assert low <= spread.debiased_cv <= spread.debiased_cv_upper <= high
    assert 0 < spread.p_no_spread <= 1
    # The same τ against the error rate: the CVs' ratio is mean accuracy / mean error.
    level = np.mean([fold.score.mean() for fold in sample.folds])
    assert spread.error_cv / spread.debiased_cv == pytest.approx(level / (1 - level), rel=0.02)
    assert len(spread.fold_debiased_cv) == 4 and np.all(spread.fold_debiased_cv >= 0)
    # Below PARAMETRIC_FROM the normal model, still with an error scale for accuracy.
    ordinary, _, _ = medical_sample(rng, (40, 40, 40, 40), (0.95, 0.92, 0.9, 0.88), 4)
    assert np.mean([f.score.mean() for f in ordinary.folds]) < PARAMETRIC_FROM
    normal = debiased_spread(ordinary, 50, 0)
    assert normal.method == "normal model" and np.isnan(normal.p_no_spread)
    assert normal.error_cv > normal.debiased_cv


# (sizes, accuracies, folds): the review's designs with clusters of at least 25 (an eight-fold
# spread of error rates, 0.5–4 %, and one cluster five times as wrong as three others), 3 folds.
DESIGNS = [
    ((40, 40, 40, 40), (0.995, 0.99, 0.98, 0.96), 4),
    ((25, 25, 25, 25), (0.99, 0.99, 0.99, 0.95), 4),
    ((40, 40, 40, 40), (0.995, 0.99, 0.98, 0.96), 3),
]


@pytest.mark.parametrize(("sizes", "accuracy", "n_folds"), DESIGNS)
def test_simulated_error_scale_spread_near_accuracy_one(sizes, accuracy, n_folds):
    start = time.perf_counter()
    rng = np.random.default_rng([*sizes, n_folds])
    n_sets, rows = 500, []
    for i in range(n_sets):
        sample, tau, error = medical_sample(rng, sizes, accuracy, n_folds)
        spread = accuracy_spread(sample, seed=i)
        rows.append([spread.tau, *spread.tau_ci, spread.tau_upper, spread.error, tau, error])
    estimate, low, high, upper, observed_error, tau, error = np.array(rows).T
    coverage = np.mean((low <= tau) & (tau <= high))
    # A data set without a single error has no error scale (NaN, and the summary says so).
    defined = observed_error > 0
    error_cv = 100 * estimate[defined] / observed_error[defined]
    true_error_cv = 100 * tau[defined] / error[defined]
    bias = error_cv.mean() / true_error_cv.mean() - 1
    tau_bias = estimate.mean() / tau.mean() - 1
    se = error_cv.std() / np.sqrt(defined.sum()) / true_error_cv.mean()
    print(
        f"\nerror-scale CV, sizes {sizes}, accuracies {accuracy}, {n_folds} folds (N={n_sets}):"
        f" true {true_error_cv.mean():.1f} %, estimate {error_cv.mean():.1f} % (bias "
        f"{bias:+.1%} ± {se:.1%}; τ {tau_bias:+.1%}; {np.sum(~defined)} without errors), zero "
        f"in {np.mean(estimate == 0):.0%}; "
        f"interval covers {coverage:.3f} (misses high {np.mean(high < tau):.3f}), one-sided "
        f"upper bound {np.mean(upper >= tau):.3f}; {time.perf_counter() - start:.1f} s"
    )
    # The bounds: |bias| ≤ 10 % of the truth; coverage 90–98 % (SE 1.0 point).
    assert abs(bias) <= 0.10 and abs(tau_bias) <= 0.10
    assert 0.90 <= coverage <= 0.98


def test_simulated_no_spread_is_reported_with_its_bound():
    # No heterogeneity at accuracy 0.985: the estimate is 0 in about half the data sets, the
    # interval starts at 0 in at least 95 %, and "no spread" is rejected at its level.
    start = time.perf_counter()
    rng = np.random.default_rng(9)
    n_sets, rows = 300, []
    for i in range(n_sets):
        sample, _, _ = medical_sample(rng, (25, 25, 25, 25), (0.985,) * 4, 4)
        spread = accuracy_spread(sample, seed=i)
        rows.append([spread.tau, spread.tau_ci[0], spread.p_no_spread])
    estimate, low, p = np.array(rows).T
    print(
        f"\nno spread, accuracy 0.985, clusters of 25, 4 folds (N={n_sets}): estimate 0 in "
        f"{np.mean(estimate == 0):.0%}, interval from 0 in {np.mean(low == 0):.3f}, 'no spread' "
        f"rejected at 5 % in {np.mean(p <= 0.05):.3f}; {time.perf_counter() - start:.1f} s"
    )
    assert np.mean(low == 0) >= 0.95
    assert np.mean(p <= 0.05) <= 0.08
