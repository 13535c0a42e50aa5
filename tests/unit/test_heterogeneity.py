"""hetcv.heterogeneity: values against hand computations and loop references, then simulations
with known truth. Run with ``pytest -s`` to see the simulated figures."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
from scipy import integrate, special
from scipy import stats as scipy_stats
from threadpoolctl import threadpool_limits

import hetcv.heterogeneity as heterogeneity_module
from hetcv.errors import HetcvError
from hetcv.heterogeneity import (
    FoldPartitions,
    SampleSize,
    calibrated_p_correct,
    calibration_test,
    cross_fold_temperatures,
    excess_cv,
    fit_temperature,
    heterogeneity,
    holm,
    permutation_null,
    run_metrics,
    weakest_cluster,
)
from hetcv.stats import cluster_metrics, coefficient_of_variation

# ---------------------------------------------------------------------------------------------
# Values


def small_sample(task: str = "classification", seed: int = 0) -> SampleSize:
    """Two folds (m = 14, 17), three repeats that differ in a few labels, k = 3."""
    rng = np.random.default_rng(seed)
    folds = []
    for m in (14, 17):
        base = np.repeat([0, 1, 2], [5, 4, m - 9])
        labels = np.tile(base, (3, 1))
        labels[1, :2] = 2
        labels[2, -1] = 0
        score = (
            (rng.random(m) < 0.7).astype(float)
            if task == "classification"
            else rng.gamma(2.0, 1.5, m)
        )
        folds.append(FoldPartitions(score, labels))
    return SampleSize(folds, 3, task, 1.0 if task == "classification" else 10.0)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_run_metrics_follow_the_paper(task):
    sample = small_sample(task)
    result = run_metrics(sample)
    assert result.metric.shape == (2, 3, 3)
    for f, fold in enumerate(sample.folds):
        for r in range(3):
            metric, size = cluster_metrics(fold.labels[r], fold.score, 3, sample.cluster_metric)
            assert result.metric[f, r] == pytest.approx(metric)
            assert result.size[f, r] == pytest.approx(size)
            assert result.cv[f, r] == pytest.approx(coefficient_of_variation(metric))
    assert result.raw_cv == pytest.approx(result.cv.mean())
    assert result.cluster_metric == pytest.approx(result.metric.mean(axis=(0, 1)))
    assert result.n_empty_runs == 0


def test_an_empty_cluster_is_left_out_and_counted():
    score = np.array([1, 0, 1, 1, 0, 1.0])
    labels = np.array([[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 2, 2]])
    result = run_metrics(SampleSize([FoldPartitions(score, labels)], 3, "classification"))
    assert result.n_empty_runs == 1
    assert np.isnan(result.metric[0, 0, 2])
    assert result.cv[0, 0] == pytest.approx(coefficient_of_variation(np.array([0.5, 0.75])))
    assert result.cluster_metric[2] == pytest.approx(0.5)  # from the one run that has it


def reference_bootstrap(sample: SampleSize, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Loop reference: resample each fold's samples once per replicate with the documented
    draws, recompute every repeat with hetcv.stats, average over runs."""
    seeds = np.random.SeedSequence(seed).spawn(len(sample.folds))
    draws = [
        np.random.default_rng(fold_seed).integers(
            0, len(fold.score), size=(n_boot, len(fold.score))
        )
        for fold, fold_seed in zip(sample.folds, seeds, strict=True)
    ]
    out = {"cv": [], "pooled": [], "cluster": []}
    for b in range(n_boot):
        cvs, spreads, levels, metrics = [], [], [], []
        for fold, rows in zip(sample.folds, draws, strict=True):
            score = fold.score[rows[b]]
            for labels in fold.labels:
                labels = labels[rows[b]]
                metric, size = cluster_metrics(labels, score, sample.k, sample.cluster_metric)
                metrics.append(metric)
                if np.any(size == 0):  # a resample emptied a cluster: the run has no statistic
                    cvs.append(np.nan), spreads.append(np.nan), levels.append(np.nan)
                    continue
                cvs.append(coefficient_of_variation(metric))
                spreads.append(np.var(metric, ddof=1))
                levels.append(metric.mean())
        out["cv"].append(np.mean(cvs))
        out["pooled"].append(100 * np.sqrt(np.mean(spreads)) / np.mean(levels))
        out["cluster"].append(np.mean(metrics, axis=0))
    return {name: np.array(values) for name, values in out.items()}


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_vectorised_bootstrap_matches_a_loop(task):
    sample = small_sample(task, seed=3)
    result = heterogeneity(sample, n_boot=60, seed=11)
    reference = reference_bootstrap(sample, 60, 11)
    np.testing.assert_allclose(result.cv_replicates, reference["cv"], rtol=1e-10)
    np.testing.assert_allclose(result.pooled_cv_replicates, reference["pooled"], rtol=1e-10)
    np.testing.assert_allclose(result.cluster_metric_replicates, reference["cluster"], rtol=1e-10)
    assert result.n_nonfinite_cv == np.sum(np.isnan(reference["cv"]))
    assert result.raw_cv == pytest.approx(run_metrics(sample).raw_cv)
    low, high = np.quantile(reference["cv"][np.isfinite(reference["cv"])], [0.025, 0.975])
    centre = np.nanmean(reference["cv"])
    assert result.raw_cv_ci == pytest.approx(
        (result.raw_cv - (high - centre), result.raw_cv + (centre - low))
    )


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_sampling_variances_by_hand(task):
    """The noise removed from the debiased CV: p̂(1 − p̂)/(n − 1), or the delta method."""
    sample = small_sample(task, seed=4)
    fold = sample.folds[0]
    y, v = [], []
    for c in range(3):
        x = fold.score[fold.labels[0] == c]
        if task == "classification":
            y.append(x.mean()), v.append(x.mean() * (1 - x.mean()) / (len(x) - 1))
        else:
            y.append(1 - np.sqrt(x.mean()) / 10)
            v.append(np.var(x, ddof=1) / len(x) / (4 * x.mean() * 10.0**2))
    one = SampleSize([FoldPartitions(fold.score, fold.labels[:1])], 3, task, sample.normaliser)
    result = heterogeneity(one, 20, 0)
    assert result.tau2 == pytest.approx(np.var(y, ddof=1) - np.mean(v))


def test_debiased_cv_and_cochran_q_by_hand():
    # One run: 8/10, 5/10 and 9/10 correct.
    score = np.array([1.0] * 8 + [0] * 2 + [1] * 5 + [0] * 5 + [1] * 9 + [0])
    labels = np.repeat([0, 1, 2], 10)[None, :]
    y, n = np.array([0.8, 0.5, 0.9]), 10
    tau2 = np.var(y, ddof=1) - np.mean(y * (1 - y) / (n - 1))
    guarded = (y * n + 0.5) / (n + 1)
    w = n / (guarded * (1 - guarded))
    q = np.sum(w * (y - np.sum(w * y) / np.sum(w)) ** 2)
    one = heterogeneity(SampleSize([FoldPartitions(score, labels)], 3, "classification"), 50, 0)
    assert one.tau2 == pytest.approx(tau2)
    v = y * (1 - y) / (n - 1)
    centred = (np.eye(3) - 1 / 3) / 2 @ np.diag(v)  # A·V, A = (I − J/k)/(k − 1)
    df = v.mean() ** 2 / np.trace(centred @ centred)
    matched = one.debiased_cv / 100 * y.mean()
    assert matched > np.sqrt(tau2)
    assert expected_root_by_quadrature(matched, v.mean(), df) == pytest.approx(np.sqrt(tau2), 3e-3)
    assert (one.q, one.q_df) == pytest.approx((q, 2))
    assert one.q_p_value == pytest.approx(scipy_stats.chi2.sf(q, 2))
    assert one.i_squared == pytest.approx((q - 2) / q)
    # Two folds of three identical repeats: Q sums over folds, repeats are averaged.
    fold = FoldPartitions(score, np.repeat(labels, 3, axis=0))
    two = heterogeneity(SampleSize([fold, fold], 3, "classification"), 50, 0)
    assert (two.q, two.q_df) == pytest.approx((2 * q, 4))
    assert two.q_p_value == pytest.approx(scipy_stats.chi2.sf(2 * q, 4))
    # Twice the degrees of freedom: the same τ̂² needs less correction.
    assert np.sqrt(tau2) < two.debiased_cv / 100 * y.mean() < matched
    twice = expected_root_by_quadrature(two.debiased_cv / 100 * y.mean(), v.mean(), 2 * df)
    assert twice == pytest.approx(np.sqrt(tau2), 3e-3)
    # Each fold on its own is the one-fold estimate; the noise CV is 100·√mean(v)/mean.
    assert two.fold_debiased_cv == pytest.approx([one.debiased_cv, one.debiased_cv])
    assert one.noise_cv == pytest.approx(100 * np.sqrt(v.mean()) / y.mean())


def test_a_regression_cluster_without_variance_is_left_out_of_q():
    # Cluster 2 holds one sample: its variance estimate is 0, an infinite weight.
    score = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 6.0, 2.5])
    labels = np.array([[0, 0, 0, 1, 1, 1, 2]])
    sample = SampleSize([FoldPartitions(score, labels)], 3, "regression", normaliser=10.0)
    result = heterogeneity(sample, 20, 0)
    mse = np.array([score[:3].mean(), score[3:6].mean()])
    variance = np.array([score[:3].var(ddof=1), score[3:6].var(ddof=1)]) / 3
    variance = variance / (4 * mse * 10.0**2)
    y = 1 - np.sqrt(mse) / 10.0
    w = 1 / variance
    q = np.sum(w * (y - np.sum(w * y) / np.sum(w)) ** 2)
    assert (result.q, result.q_df) == pytest.approx((q, 1))
    assert result.q_p_value == pytest.approx(scipy_stats.chi2.sf(q, 1))


def expected_root_by_quadrature(tau, noise, df):
    """E√max(0, τ̂²) when (τ̂² + v̄)·ν/v̄ ~ χ'²_ν(ν·τ²/v̄), by scipy's density and quad."""
    density = scipy_stats.ncx2(df, df * tau**2 / noise).pdf
    integrand = lambda x: np.sqrt(noise * (x / df - 1)) * density(x)  # noqa: E731
    return integrate.quad(integrand, df, np.inf, limit=200)[0]


def test_a_negative_variance_estimate_truncates_to_zero():
    score = np.array([1.0, 0, 1, 0, 1, 0, 0, 1])  # both clusters at 0.5: s² = 0 < mean(v)
    labels = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])
    result = heterogeneity(SampleSize([FoldPartitions(score, labels)], 2, "classification"), 100, 0)
    assert result.tau2 < 0 and result.debiased_cv == 0.0
    assert result.debiased_cv_ci[0] == 0.0 <= result.debiased_cv_ci[1]
    assert result.i_squared == 0.0


def test_resamples_that_empty_a_cluster_are_counted_not_dropped():
    rng = np.random.default_rng(0)
    score = (rng.random(40) < 0.8).astype(float)
    labels = np.zeros((2, 40), dtype=int)
    labels[:, 0] = 1  # a one-sample cluster: absent from ~37 % of resamples
    result = heterogeneity(SampleSize([FoldPartitions(score, labels)], 2, "classification"), 400, 0)
    assert 100 < result.n_nonfinite_cv < 200
    assert result.n_nonfinite_cv == np.sum(~np.isfinite(result.cv_replicates))
    assert result.n_nonfinite_cluster[1] == result.n_nonfinite_cv
    assert np.all(np.isfinite(result.raw_cv_ci))


def test_permutations_are_shared_by_repeats_and_chunked_reproducibly(monkeypatch):
    sample = small_sample(seed=5)
    one_repeat = SampleSize(
        [FoldPartitions(f.score, f.labels[:1]) for f in sample.folds], 3, "classification"
    )
    identical = SampleSize(
        [FoldPartitions(f.score, np.repeat(f.labels[:1], 4, axis=0)) for f in sample.folds],
        3,
        "classification",
    )
    reference = permutation_null(one_repeat, 200, 4)
    np.testing.assert_allclose(permutation_null(identical, 200, 4).null_cv, reference.null_cv)
    monkeypatch.setattr(heterogeneity_module, "CHUNK_ELEMENTS", 50)  # 2–3 permutations a chunk
    np.testing.assert_allclose(permutation_null(one_repeat, 200, 4).null_cv, reference.null_cv)
    assert reference.p_value == pytest.approx(
        (1 + np.sum(reference.null_cv >= reference.observed_cv)) / 201
    )
    assert reference.observed_cv == pytest.approx(run_metrics(one_repeat).raw_cv)
    assert np.all(np.diff(reference.null_sorted_metric, axis=1) >= 0)
    assert reference.sorted_metric == pytest.approx(
        np.sort(run_metrics(one_repeat).metric).mean((0, 1))
    )


def test_within_group_permutations_keep_each_group_together():
    # Score is constant within each class, so shuffling within class changes nothing.
    groups = np.array([0, 1, 0, 1, 1, 0, 1, 0, 0, 1])
    labels = np.array([[0, 0, 0, 1, 1, 1, 2, 2, 2, 2], [0, 0, 1, 1, 1, 1, 2, 2, 2, 0]])
    fold = FoldPartitions(groups.astype(float), labels, groups=groups)
    result = permutation_null(SampleSize([fold], 3, "classification"), 50, 0)
    assert np.allclose(result.null_cv, result.observed_cv) and result.p_value == 1.0
    plain = permutation_null(
        SampleSize([FoldPartitions(fold.score, labels)], 3, "classification"), 50, 0
    )
    assert np.ptp(plain.null_cv) > 0


def test_excess_cv_subtracts_on_the_squared_scale():
    assert excess_cv(5.0, np.array([3.0, 4.0])) == pytest.approx(np.sqrt(25 - 12.5))
    assert excess_cv(2.0, np.array([3.0, 4.0])) == 0.0


def test_calibration_statistic_by_hand():
    p = np.array([0.9, 0.8, 0.6, 0.7, 0.95, 0.5])
    score = np.array([1.0, 0, 1, 1, 1, 0])
    labels = np.array([[0, 0, 0, 1, 1, 1]])
    sample = SampleSize([FoldPartitions(score, labels, p_correct=p)], 2, "classification")
    result = calibration_test(sample, 99, 0)
    observed, expected = np.array([2.0, 2.0]), np.array([2.3, 2.15])
    variance = np.array([0.09 + 0.16 + 0.24, 0.21 + 0.0475 + 0.25])
    assert result.statistic == pytest.approx(np.sum((observed - expected) ** 2 / variance))
    assert result.null.shape == (99,)
    with pytest.raises(HetcvError, match="p_correct"):
        calibration_test(SampleSize([FoldPartitions(score, labels)], 2, "classification"), 9, 0)


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(20000, 5))
    # The truth is softmax(logits / 2): a model reporting softmax(logits) is overconfident.
    truth = (rng.random(20000)[:, None] > np.cumsum(special.softmax(logits / 2, 1), 1)).sum(1)
    log_probabilities = special.log_softmax(logits, axis=1)
    assert fit_temperature(log_probabilities, truth) == pytest.approx(2.0, rel=0.05)
    p = calibrated_p_correct(log_probabilities, 2.0)
    assert p == pytest.approx(special.softmax(logits / 2, 1)[np.arange(20000), logits.argmax(1)])
    folds = [(log_probabilities[i::3], truth[i::3]) for i in range(3)]
    temperatures = cross_fold_temperatures(folds)
    pooled = fit_temperature(
        np.concatenate([folds[1][0], folds[2][0]]), np.concatenate([folds[1][1], folds[2][1]])
    )
    assert temperatures[0] == pytest.approx(pooled)
    with pytest.raises(HetcvError):
        cross_fold_temperatures(folds[:1])


def test_holm_against_a_hand_computation():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max.
    adjusted = holm(np.array([0.01, 0.04, 0.03, 0.005, np.nan]))
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02, np.nan])
    assert holm(np.array([0.5, 0.6]))[1] == 1.0  # capped at 1


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_weakest_cluster_when_every_half_agrees(task):
    # Each cluster's samples share one score, so any half ranks and measures them alike.
    base = np.repeat([0, 1, 2], 20)
    per_cluster = np.array([1.0, 0.0, 1.0]) if task == "classification" else np.array([1, 9, 4.0])
    folds = [FoldPartitions(per_cluster[base], np.tile(base, (3, 1))) for _ in range(2)]
    result = weakest_cluster(SampleSize(folds, 3, task, 10.0 if task == "regression" else 1), 50, 0)
    worst = 0.0 if task == "classification" else 1 - np.sqrt(9) / 10
    assert result.estimate == pytest.approx(worst)
    assert result.ci == pytest.approx((worst, worst))
    assert (result.cluster, result.chosen_fraction, result.n_undefined) == (1, 1.0, 0)


@pytest.mark.parametrize(
    ("fold", "match"),
    [
        (FoldPartitions(np.array([1.0, 0]), np.array([[0, 3]])), "labels"),
        (FoldPartitions(np.array([1.0, 0.5]), np.array([[0, 1]])), "0 or 1"),
        (FoldPartitions(np.array([1.0, 0]), np.array([0, 1])), r"\(R, m\)"),
        (FoldPartitions(np.array([1.0, 0]), np.array([[0, 1]]), p_correct=np.ones(3)), "p_correct"),
    ],
)
def test_bad_input_is_a_hetcv_error(fold, match):
    with pytest.raises(HetcvError, match=match):
        SampleSize([fold], 2, "classification")


# ---------------------------------------------------------------------------------------------
# Simulations with known truth: k = 4 clusters, 4 folds × 10 nearly identical repeats.
#
# Rates are judged against binomial standard errors: with N data sets a rate near p has
# SE = √(p(1 − p)/N), e.g. 1.3 points at 95 % and N = 300, 0.8 points at 5 % and N = 800.

ACCURACY = np.array([0.95, 0.92, 0.90, 0.88])  # true CV (sample sd / mean) = 3.27 %


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Thousands of small matrix products: BLAS threads only add overhead on a busy machine."""
    with threadpool_limits(1):
        yield


def partitions(rng, sizes, n_repeats=10, moved=0.02):
    """Base cluster of each sample, and R repeats that each move ~2 % of samples at random."""
    base = np.repeat(np.arange(len(sizes)), sizes)
    labels = np.tile(base, (n_repeats, 1))
    move = rng.random(labels.shape) < moved
    labels[move] = rng.integers(0, len(sizes), move.sum())
    return base, labels


def true_cluster_accuracy(labels, p, k):
    """(R, k) mean of the samples' true accuracies over each repeat's clusters."""
    one_hot = labels[:, :, None] == np.arange(k)
    return (one_hot * p[None, :, None]).sum(1) / one_hot.sum(1)


def simulate(rng, sizes, accuracy=ACCURACY, n_folds=4):
    """A sample size, and the truth of its own partitions (moved samples dilute a cluster)."""
    folds, theta = [], []
    for _ in range(n_folds):
        base, labels = partitions(rng, sizes)
        p = accuracy[base]
        folds.append(FoldPartitions((rng.random(len(p)) < p).astype(float), labels))
        theta.append(true_cluster_accuracy(labels, p, len(sizes)))
    theta = np.array(theta)
    truth = {
        "paper_cv": float(np.mean(np.std(theta, -1, ddof=1) / theta.mean(-1)) * 100),
        "cv": float(100 * np.sqrt(np.mean(np.var(theta, -1, ddof=1))) / theta.mean()),
    }
    return SampleSize(folds, len(sizes), "classification"), truth


@functools.cache
def bootstrap_study(sizes, n_sets, n_boot=300):
    """Estimates, intervals and truths of ``n_sets`` simulated data sets (cached per design)."""
    start = time.perf_counter()
    rng = np.random.default_rng(sum(sizes))
    rows = []
    for i in range(n_sets):
        sample, truth = simulate(rng, sizes)
        result = heterogeneity(sample, n_boot, seed=i)
        rows.append(
            [result.raw_cv, *result.raw_cv_ci, result.debiased_cv, *result.debiased_cv_ci]
            + [truth["paper_cv"], truth["cv"], result.n_nonfinite_cv]
        )
    names = "raw low high debiased d_low d_high paper_truth truth nonfinite".split()
    study = dict(zip(names, np.array(rows).T, strict=True))
    study["seconds"] = time.perf_counter() - start
    return study


def covers(low, high, value):
    return float(np.mean((low <= value) & (value <= high)))


RAW_DESIGNS = [(6, 6, 6, 6), (6, 40, 90, 150), (25, 50, 100, 150)]


def test_simulated_raw_cv_interval_contains_its_estimate():
    for sizes in RAW_DESIGNS:
        s = bootstrap_study(sizes, 200 if sizes[0] < 25 else 300)
        expected = s["raw"].mean()  # the expected raw CV at this design (Monte Carlo)
        contains = covers(s["low"], s["high"], s["raw"])
        print(
            f"\nraw CV, clusters {sizes}: N={len(s['raw'])} mean {expected:.2f} "
            f"(true CV {s['paper_truth'].mean():.2f}); CI contains estimate {contains:.3f}, "
            f"covers expected raw CV {covers(s['low'], s['high'], expected):.3f}, "
            f"covers true CV {covers(s['low'], s['high'], s['paper_truth']):.3f}; "
            f"non-finite replicates {s['nonfinite'].mean():.1f}/300; {s['seconds']:.1f} s"
        )
        assert contains >= 0.99
        # What the interval is for: 95–98 % in the design study; 0.90 is 4 SE below 0.95.
        assert covers(s["low"], s["high"], expected) >= 0.90


DEBIASED_DESIGNS = [(25, 50, 100, 150), (50, 75, 100, 150), (150, 150, 150, 150)]


@pytest.mark.parametrize("sizes", DEBIASED_DESIGNS)
def test_simulated_debiased_cv_bias_and_coverage(sizes):
    s = bootstrap_study(sizes, 300)
    truth = s["truth"].mean()
    bias, raw_bias = s["debiased"].mean() - truth, s["raw"].mean() - s["paper_truth"].mean()
    bias_se = s["debiased"].std() / np.sqrt(len(s["debiased"]))
    coverage = covers(s["d_low"], s["d_high"], s["truth"])
    print(
        f"\ndebiased CV, clusters {sizes}: N=300 true CV {truth:.2f}; debiased mean "
        f"{s['debiased'].mean():.2f} (bias {bias:+.3f} ± {bias_se:.3f} = {bias / truth:+.1%}, "
        f"zero in {np.mean(s['debiased'] == 0):.0%}), raw CV bias {raw_bias:+.2f}; "
        f"CI covers true CV {coverage:.3f} (below {np.mean(s['d_high'] < s['truth']):.3f}), "
        f"contains its estimate {covers(s['d_low'], s['d_high'], s['debiased']):.3f}; "
        f"{s['seconds']:.1f} s"
    )
    # The CI must tell 95 % from 90 %: SE 1.3 points at N = 300.
    assert 0.90 <= coverage <= 0.98
    assert covers(s["d_low"], s["d_high"], s["debiased"]) >= 0.99
    # √max(0, D̂) alone was biased low by 14 % at clusters of 25 to 150 (Jensen); the mean-matched
    # estimate must meet the bound: 10 % of the true CV or 0.3 points, with 2 SE to spare
    # being too strict at N = 300 (SE ≈ 3 % of the truth), the bound is on the mean bias.
    assert abs(bias) < raw_bias / 3
    assert abs(bias) <= max(0.1 * truth, 0.3)


def test_simulated_within_class_permutation_false_positive_rate():
    # Two classes of accuracy 0.95 and 0.75; clusters differ only in their class mix (10–70 %
    # of class 1), so the clusters' accuracies differ but not within a class.
    start = time.perf_counter()
    rng = np.random.default_rng(1)
    class_one, class_accuracy = np.array([0.1, 0.3, 0.5, 0.7]), np.array([0.95, 0.75])
    within, plain = [], []
    for i in range(1000):
        folds = []
        for _ in range(4):
            base, labels = partitions(rng, (25, 50, 100, 150))
            group = (rng.random(len(base)) < class_one[base]).astype(int)
            correct = (rng.random(len(base)) < class_accuracy[group]).astype(float)
            folds.append(FoldPartitions(correct, labels, groups=group))
        within.append(permutation_null(SampleSize(folds, 4, "classification"), 99, i).p_value)
        if i < 200:
            across = [FoldPartitions(f.score, f.labels) for f in folds]
            plain.append(permutation_null(SampleSize(across, 4, "classification"), 99, i).p_value)
    within_rate, plain_rate = np.mean(np.array(within) <= 0.05), np.mean(np.array(plain) <= 0.05)
    print(
        f"\nwithin-class permutation: false positives at 5 % {within_rate:.3f} (N=1000); "
        f"plain permutation {plain_rate:.3f} (N=200); {time.perf_counter() - start:.1f} s"
    )
    # SE 0.7 points at N = 1000: 3–8 % is ≥ 2.9 SE either side of 5 %.
    assert 0.03 <= within_rate <= 0.08
    # Shuffling across classes mistakes the class mix for heterogeneity: ≥ 4 × the nominal
    # rate (SE ≤ 3.4 points at N = 200).
    assert plain_rate >= 0.2


def calibrated_folds(rng, sizes, worse=None, shortfall=0.10):
    """Per-sample calibrated p_correct ~ Beta around the cluster's accuracy (so clusters differ
    in confidence); correctness ~ Bernoulli(p), or p − shortfall in cluster ``worse``."""
    folds = []
    for _ in range(4):
        base, labels = partitions(rng, sizes)
        mean = ACCURACY[base]
        p = rng.beta(30 * mean, 30 * (1 - mean))
        actual = p - shortfall * (base == worse)
        folds.append(FoldPartitions((rng.random(len(p)) < actual).astype(float), labels, None, p))
    return SampleSize(folds, len(sizes), "classification")


def test_simulated_calibration_test_size_and_power():
    start = time.perf_counter()
    rng = np.random.default_rng(2)
    sizes = (25, 50, 100, 150)
    null = [calibration_test(calibrated_folds(rng, sizes), 99, i).p_value for i in range(800)]
    # Cluster 0 (25 samples a fold, confidence ≈ 0.95) is right 10 points less often.
    power = [
        calibration_test(calibrated_folds(rng, sizes, worse=0), 99, i).p_value for i in range(300)
    ]
    size_rate, power_rate = np.mean(np.array(null) <= 0.05), np.mean(np.array(power) <= 0.05)
    print(
        f"\nconfidence-calibrated test: false positives at 5 % {size_rate:.3f} (N=800); power "
        f"against one 25-sample cluster 10 points below its confidence {power_rate:.3f} (N=300); "
        f"{time.perf_counter() - start:.1f} s"
    )
    # SE 0.8 points at N = 800: 3–8 % is ≥ 2.5 SE either side of 5 %.
    assert 0.03 <= size_rate <= 0.08
    # Per fold the shortfall is 2.5 errors against an SD of about 1.1, z ≈ 2.3 in one of four
    # clusters: the test should catch it in most data sets. 0.6 is ≥ 5 SE below the 0.79 seen
    # in the design study, and far above the 5 % a blind test would give.
    assert power_rate >= 0.6


def test_simulated_cross_fitted_weakest_cluster_is_unbiased_under_the_null():
    start = time.perf_counter()
    rng = np.random.default_rng(3)
    cross, naive, inside = [], [], []
    for i in range(400):
        sample, _ = simulate(rng, (25, 25, 25, 25), accuracy=np.full(4, 0.9))
        result = weakest_cluster(sample, 200, i)
        cross.append(result.estimate)
        inside.append(result.ci[0] <= 0.9 <= result.ci[1])
        naive.append(np.nanmin(run_metrics(sample).metric, axis=-1).mean())
    cross, naive = np.array(cross), np.array(naive)
    se = cross.std() / np.sqrt(len(cross))
    print(
        f"\nweakest cluster, all four at 0.90 (clusters of 25, N=400): cross-fitted mean "
        f"{cross.mean():.4f} ± {se:.4f}, naive minimum {naive.mean():.4f}; cross-fitted CI "
        f"covers 0.90 in {np.mean(inside):.3f}; {time.perf_counter() - start:.1f} s"
    )
    # Unbiased within 4 Monte Carlo SE (a false alarm 1 in 16 000); the naive minimum is the
    # winner's curse: ≥ 10 SE low.
    assert abs(cross.mean() - 0.9) <= 4 * se
    assert naive.mean() <= 0.9 - 10 * se
