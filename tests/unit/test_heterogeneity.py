"""hetcv.heterogeneity: values against hand computations and loop references, then simulations
with known truth (the raw CV's interval, per-cluster intervals and Q near accuracy 1, cluster
numbers that carry no winner's curse, the permutation tests and the weakest cluster). The
debiased CV's simulations are in test_spread.py. Run with ``pytest -s`` to see the figures."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
from scipy import integrate, special
from scipy import stats as scipy_stats
from threadpoolctl import threadpool_limits

import hetcv.partitions as partitions_module
from hetcv.cluster import aligned_runs
from hetcv.errors import HetcvError
from hetcv.heterogeneity import excess_cv, heterogeneity, permutation_null, run_metrics
from hetcv.partitions import FoldPartitions, SampleSize
from hetcv.spread import debiased_spread
from hetcv.stats import cluster_metrics, coefficient_of_variation, holm
from hetcv.weakest import weakest_cluster

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
    out = {"cv": [], "cluster": []}
    for b in range(n_boot):
        cvs, metrics = [], []
        for fold, rows in zip(sample.folds, draws, strict=True):
            score = fold.score[rows[b]]
            for labels in fold.labels:
                labels = labels[rows[b]]
                metric, size = cluster_metrics(labels, score, sample.k, sample.cluster_metric)
                metrics.append(metric)
                if np.any(size == 0):  # a resample emptied a cluster: the run has no statistic
                    cvs.append(np.nan)
                    continue
                cvs.append(coefficient_of_variation(metric))
        out["cv"].append(np.mean(cvs))
        out["cluster"].append(np.mean(metrics, axis=0))
    return {name: np.array(values) for name, values in out.items()}


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_vectorised_bootstrap_matches_a_loop(task):
    sample = small_sample(task, seed=3)
    result = heterogeneity(sample, n_boot=60, seed=11)
    reference = reference_bootstrap(sample, 60, 11)
    np.testing.assert_allclose(result.cv_replicates, reference["cv"], rtol=1e-10)
    np.testing.assert_allclose(result.cluster_metric_replicates, reference["cluster"], rtol=1e-10)
    assert result.n_nonfinite_cv == np.sum(np.isnan(reference["cv"]))
    assert result.raw_cv == pytest.approx(run_metrics(sample).raw_cv)
    low, high = np.quantile(reference["cv"][np.isfinite(reference["cv"])], [0.025, 0.975])
    centre = np.nanmean(reference["cv"])
    # The basic interval of the expected raw CV, clipped at 0 (a CV is never negative).
    assert result.raw_cv_ci == pytest.approx(
        (max(0.0, result.raw_cv - (high - centre)), result.raw_cv + (centre - low))
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


def test_cochran_q_is_the_homogeneity_chi_square_by_hand():
    # One run: 8/10, 5/10 and 9/10 correct.
    score = np.array([1.0] * 8 + [0] * 2 + [1] * 5 + [0] * 5 + [1] * 9 + [0])
    labels = np.repeat([0, 1, 2], 10)[None, :]
    y, n = np.array([0.8, 0.5, 0.9]), 10
    one_sample = SampleSize([FoldPartitions(score, labels)], 3, "classification")
    one = heterogeneity(one_sample, 50, 0)
    assert one.tau2 == pytest.approx(np.var(y, ddof=1) - np.mean(y * (1 - y) / (n - 1)))
    # Pooled-proportion weights: Q is Pearson's chi-square of the 3 × 2 table.
    table = np.column_stack([y * n, (1 - y) * n])
    chi_square = scipy_stats.chi2_contingency(table, correction=False)[0]
    assert (one.q, one.q_df) == pytest.approx((chi_square, 2))
    assert one.i_squared == pytest.approx((chi_square - 2) / chi_square)
    # Its p-value is the permutation test's, on the same permutations as the CV's.
    null = permutation_null(one_sample, 199, 0)
    assert null.q == pytest.approx(chi_square)
    reached = null.null_q >= chi_square * (1 - 1e-9)  # permuted tables tie with the observed
    assert null.q_p_value == pytest.approx((1 + np.sum(reached)) / 200)
    # Two folds of three identical repeats: Q sums over folds, repeats are averaged.
    fold = FoldPartitions(score, np.repeat(labels, 3, axis=0))
    two = heterogeneity(SampleSize([fold, fold], 3, "classification"), 50, 0)
    assert (two.q, two.q_df) == pytest.approx((2 * chi_square, 4))
    # A run without any error holds no information on heterogeneity: Q and df 0.
    perfect = SampleSize([FoldPartitions(np.ones(30), labels)], 3, "classification")
    assert (heterogeneity(perfect, 20, 0).q, heterogeneity(perfect, 20, 0).q_df) == (0, 0)


def test_normal_model_debiased_cv_by_hand():
    # Regression clusters (1 − NRMSE): the normal model's mean matching.
    rng = np.random.default_rng(2)
    score = rng.gamma(2.0, 1.5, 60)
    labels = np.repeat([0, 1, 2], 20)[None, :]
    sample = SampleSize([FoldPartitions(score, labels)], 3, "regression", normaliser=10.0)
    spread = debiased_spread(sample, 50, 0)
    assert spread.method == "normal model" and np.isnan(spread.error_cv)
    mse = np.array([score[labels[0] == c].mean() for c in range(3)])
    y = 1 - np.sqrt(mse) / 10
    v = np.array([score[labels[0] == c].var(ddof=1) / 20 for c in range(3)]) / (4 * mse * 100)
    tau2 = np.var(y, ddof=1) - v.mean()
    centred = (np.eye(3) - 1 / 3) / 2 @ np.diag(v)  # A·V, A = (I − J/k)/(k − 1)
    df = v.mean() ** 2 / np.trace(centred @ centred)
    matched = spread.debiased_cv / 100 * y.mean()
    if tau2 > 0:
        assert expected_root_by_quadrature(matched, v.mean(), df) == pytest.approx(
            np.sqrt(tau2), 3e-3
        )
    assert spread.noise_cv == pytest.approx(100 * np.sqrt(v.mean()) / y.mean())


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


def expected_root_by_quadrature(tau, noise, df):
    """E√max(0, τ̂²) when (τ̂² + v̄)·ν/v̄ ~ χ'²_ν(ν·τ²/v̄), by scipy's density and quad."""
    density = scipy_stats.ncx2(df, df * tau**2 / noise).pdf
    integrand = lambda x: np.sqrt(noise * (x / df - 1)) * density(x)  # noqa: E731
    return integrate.quad(integrand, df, np.inf, limit=200)[0]


def test_a_negative_variance_estimate_truncates_to_zero():
    score = np.array([1.0, 0, 1, 0, 1, 0, 0, 1])  # both clusters at 0.5: s² = 0 < mean(v)
    labels = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])
    sample = SampleSize([FoldPartitions(score, labels)], 2, "classification")
    result, spread = heterogeneity(sample, 100, 0), debiased_spread(sample, 100, 0)
    assert result.tau2 < 0 and spread.debiased_cv == 0.0
    assert spread.debiased_cv_ci[0] == 0.0 <= spread.debiased_cv_ci[1]
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
    monkeypatch.setattr(partitions_module, "CHUNK_ELEMENTS", 50)  # 2–3 permutations a chunk
    np.testing.assert_allclose(permutation_null(one_repeat, 200, 4).null_cv, reference.null_cv)
    assert reference.p_value == pytest.approx(
        (1 + np.sum(reference.null_cv >= reference.observed_cv)) / 201
    )
    assert reference.observed_cv == pytest.approx(run_metrics(one_repeat).raw_cv)
    # Each cluster's own null: under permutation its metric centres on the fold's.
    assert reference.cluster_metric == pytest.approx(run_metrics(one_repeat).cluster_metric)
    overall = np.mean([f.score.mean() for f in one_repeat.folds])
    assert reference.null_cluster_metric.mean(axis=0) == pytest.approx(overall, abs=0.05)


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
        (
            FoldPartitions(np.array([1.0, 0]), np.array([[0, 1]]), confidence=np.ones(3)),
            "confidence",
        ),
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
        result, spread = heterogeneity(sample, n_boot, seed=i), debiased_spread(sample, n_boot, i)
        rows.append(
            [result.raw_cv, *result.raw_cv_ci, spread.debiased_cv, *spread.debiased_cv_ci]
            + [truth["paper_cv"], truth["cv"], result.n_nonfinite_cv]
        )
    names = "raw low high debiased d_low d_high paper_truth truth nonfinite".split()
    study = dict(zip(names, np.array(rows).T, strict=True))
    study["seconds"] = time.perf_counter() - start
    return study


def covers(low, high, value):
    return float(np.mean((low <= value) & (value <= high)))


RAW_DESIGNS = [(6, 6, 6, 6), (6, 40, 90, 150), (25, 50, 100, 150)]


def test_simulated_raw_cv_interval_covers_the_expected_raw_cv():
    for sizes in RAW_DESIGNS:
        s = bootstrap_study(sizes, 200 if sizes[0] < 25 else 300)
        expected = s["raw"].mean()  # the expected raw CV at this design (Monte Carlo)
        coverage = covers(s["low"], s["high"], expected)
        print(
            f"\nraw CV, clusters {sizes}: N={len(s['raw'])} mean {expected:.2f} "
            f"(true CV {s['paper_truth'].mean():.2f}); CI covers the expected raw CV "
            f"{coverage:.3f}, the true CV {covers(s['low'], s['high'], s['paper_truth']):.3f}; "
            f"non-finite replicates {s['nonfinite'].mean():.1f}/300; {s['seconds']:.1f} s"
        )
        # What the interval is for: its target, the expected raw CV (SE 1.3–1.5 points).
        assert 0.90 <= coverage <= 0.99


DEBIASED_DESIGNS = [(25, 50, 100, 150), (50, 75, 100, 150), (150, 150, 150, 150)]


@pytest.mark.parametrize("sizes", DEBIASED_DESIGNS)
def test_simulated_debiased_cv_bias_and_coverage(sizes):
    # Accuracies 0.88–0.95: the normal model (docs/methods.md); above, test_spread.py.
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


# ---------------------------------------------------------------------------------------------
# Where good medical models stand: accuracies 0.96–0.995, clusters of 10–40, 2–4 folds.

MEDICAL = [
    ((10, 20, 30, 40), (0.995, 0.99, 0.98, 0.96), 4),
    ((10, 10, 10, 10), (0.99, 0.99, 0.97, 0.95), 4),
    ((40, 40, 40, 40), (0.995, 0.99, 0.98, 0.96), 4),
    ((25, 25, 25, 25), (0.99, 0.99, 0.99, 0.95), 4),
    ((10, 20, 30, 40), (0.995, 0.99, 0.98, 0.96), 3),
]


@pytest.mark.parametrize(("sizes", "accuracy", "n_folds"), MEDICAL)
def test_simulated_cluster_intervals_hold_near_accuracy_one(sizes, accuracy, n_folds):
    start = time.perf_counter()
    rng = np.random.default_rng([*sizes, n_folds])
    n_sets, hits, zero_width = 1000, [], []
    for i in range(n_sets):
        sample, _ = simulate(rng, sizes, np.array(accuracy), n_folds)
        truth = np.mean([t for t in sample_truths(sample, np.array(accuracy), sizes)], axis=0)
        ci = heterogeneity(sample, 2, i).cluster_metric_ci
        hits.append((ci[:, 0] <= truth) & (truth <= ci[:, 1]))
        zero_width.append(ci[:, 1] - ci[:, 0] <= 0)
    coverage = np.mean(hits, axis=0)
    print(
        f"\ncluster intervals, sizes {sizes}, accuracies {accuracy}, {n_folds} folds: cover "
        f"{np.round(coverage, 3)} (N={n_sets}, SE ≤ 0.01), zero width {np.mean(zero_width):.3f}; "
        f"{time.perf_counter() - start:.1f} s"
    )
    # Every position, best and worst: 90–98 % (SE 0.7 points at 95 %), never of zero width.
    assert np.all((coverage >= 0.90) & (coverage <= 0.98))
    assert not np.any(zero_width)


def sample_truths(sample, accuracy, sizes):
    """Each fold's (R, k) true cluster accuracies of its own partitions (base by position)."""
    base = np.repeat(np.arange(len(sizes)), sizes)
    return [
        true_cluster_accuracy(fold.labels, accuracy[base], len(sizes)).mean(axis=0)
        for fold in sample.folds
    ]


@pytest.mark.parametrize(
    ("sizes", "accuracy"),
    [((25, 50, 100, 150), 0.90), ((25, 50, 100, 150), 0.98), ((40, 40, 40, 40), 0.99)],
)
def test_simulated_cochran_q_keeps_its_level_with_unequal_clusters_and_near_one(sizes, accuracy):
    start = time.perf_counter()
    rng = np.random.default_rng([*sizes, int(1000 * accuracy)])
    n_sets = 600
    p = [
        permutation_null(simulate(rng, sizes, np.full(4, accuracy))[0], 99, i).q_p_value
        for i in range(n_sets)
    ]
    rate = np.mean(np.array(p) <= 0.05)
    print(
        f"\nCochran's Q, sizes {sizes}, accuracy {accuracy}: false positives at 5 % {rate:.3f} "
        f"± {np.sqrt(rate * (1 - rate) / n_sets):.3f} (N={n_sets}); "
        f"{time.perf_counter() - start:.1f} s"
    )
    # SE 0.9 points at N = 600: 3–8 % is 2.2–3.4 SE either side of 5 %.
    assert 0.03 <= rate <= 0.08


def test_simulated_cluster_numbers_carry_no_winners_curse():
    # Clusters fitted (k-means, the library's path) on the same held-out samples whose
    # accuracies they compare: with the numbering by size, every cluster's estimate and
    # Wilson interval hold for the true accuracy of its own members; ranked by the measured
    # accuracy, the best one's estimate is biased up.
    start = time.perf_counter()
    rng = np.random.default_rng(12)
    scale = np.array([2.0, 1.5, 1.0, 1.0, 1.0])
    n_sets, m, k = 400, 200, 4
    estimate, truth, hits, best = [], [], [], []
    for i in range(n_sets):
        folds, members_truth = [], []
        for f in range(4):
            x = rng.normal(size=(m, 5)) * scale
            p = special.expit(1.9 + 0.12 * x[:, 0])  # the fitted cells truly differ a little
            correct = (rng.random(m) < p).astype(float)
            labels = np.stack(
                [r.labels for r in aligned_runs(x, None, "kmeans", k, 3, None, 10 * i + f)]
            )
            folds.append(FoldPartitions(correct, labels.astype(np.int64)))
            members_truth.append(true_cluster_accuracy(labels, p, k).mean(axis=0))
            observed = [correct[labels[0] == c].mean() for c in range(k)]
            best.append((max(observed), members_truth[-1][int(np.argmax(observed))]))
        result = heterogeneity(SampleSize(folds, k, "classification"), 2, i)
        cell_truth = np.mean(members_truth, axis=0)
        estimate.append(result.cluster_metric), truth.append(cell_truth)
        ci = result.cluster_metric_ci
        hits.append((ci[:, 0] <= cell_truth) & (cell_truth <= ci[:, 1]))
    bias = np.mean(estimate, axis=0) - np.mean(truth, axis=0)
    se = np.std(np.array(estimate) - np.array(truth), axis=0) / np.sqrt(n_sets)
    coverage = np.mean(hits, axis=0)
    best = np.array(best)
    best_bias = np.mean(best[:, 0] - best[:, 1])
    print(
        f"\nfitted clusters numbered by size: bias per cluster {np.round(bias, 4)} (± "
        f"{np.round(se, 4)}), Wilson coverage {np.round(coverage, 3)} (N={n_sets}); the "
        f"measured-best cluster's accuracy exceeds its truth by {best_bias:.4f}; "
        f"{time.perf_counter() - start:.1f} s"
    )
    assert np.all(np.abs(bias) <= 4 * se + 1e-4)
    assert np.all((coverage >= 0.90) & (coverage <= 0.98))
    assert best_bias >= 0.02  # what numbering by the measured metric would have reported


@pytest.mark.parametrize(
    ("sizes", "accuracy"),
    [((40, 40, 40, 40), (0.995, 0.99, 0.98, 0.96)), ((25, 25, 25, 25), (0.9, 0.9, 0.9, 0.9))],
)
def test_simulated_weakest_error_ratio_covers_the_ratio_of_the_clusters_it_chose(sizes, accuracy):
    # The truth of a cross-fitted choice: the true error rates of the clusters that the
    # rankings chose (and of the rest), on the measuring halves, pooled as the estimate is.
    start = time.perf_counter()
    rng = np.random.default_rng([*sizes, 7])
    accuracy, hits, estimates, truths = np.array(accuracy), [], [], []
    base = np.repeat(np.arange(4), sizes)
    for i in range(300):
        sample, _ = simulate(rng, sizes, accuracy)
        result = weakest_cluster(sample, 20, i)
        truth = chosen_error_ratio(sample, accuracy[base], i)
        hits.append(result.error_ratio_ci[0] <= truth <= result.error_ratio_ci[1])
        estimates.append(result.error_ratio), truths.append(truth)
    coverage = np.mean(hits)
    print(
        f"\nweakest cluster's error ratio, sizes {sizes}, accuracies {accuracy.tolist()}: median "
        f"{np.median(estimates):.2f} for a true {np.median(truths):.2f}, Katz interval covers "
        f"{coverage:.3f} (N=300); {time.perf_counter() - start:.1f} s"
    )
    assert coverage >= 0.90  # conservative where errors are few (99.8 % in a design study)


def chosen_error_ratio(sample, p, seed):
    """True error rate of the chosen clusters over the rest's, on the measuring halves."""
    from hetcv.partitions import fold_seeds, membership_matrix
    from hetcv.weakest import _cross_fit

    n_folds = len(sample.folds)
    totals = np.zeros(4)
    for fold, split_seed in zip(sample.folds, fold_seeds(seed, 2 * n_folds)[:n_folds], strict=True):
        m = len(fold.score)
        rng = np.random.default_rng(split_seed)
        first = rng.permutation(m) < m // 2
        halves = np.stack([first, ~first]).astype(np.float64)
        tiebreak = rng.random((2, sample.n_repeats, sample.k))
        members = membership_matrix(fold.labels, sample.k)
        chosen = _cross_fit(np.ones((1, m)), halves, fold, members, tiebreak, sample)[1][0]
        for r, labels in enumerate(fold.labels):
            for h in range(2):
                measuring = halves[1 - h] > 0
                inside = measuring & (labels == chosen[r, h])
                outside = measuring & (labels != chosen[r, h])
                totals += (
                    np.array(
                        [inside.sum(), (1 - p[inside]).sum(), outside.sum(), (1 - p[outside]).sum()]
                    )
                    / sample.n_repeats
                )
    return (totals[1] / totals[0]) / (totals[3] / totals[2])
