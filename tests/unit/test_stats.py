import itertools

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.cluster import KMeans

from hetcv.metrics import ClusterMetric, nrmse_normaliser
from hetcv.stats import (
    PERMUTATION_CHUNK,
    cluster_metrics,
    coefficient_of_variation,
    correlation,
    pearson_rows,
    permutation_p_value,
    permutations_within,
    permuted_cluster_metrics,
    permuted_values,
    spearman_rows,
    wilson_interval,
)


def test_cv_is_sample_sd_over_mean_in_percent():
    assert coefficient_of_variation(np.array([0.9, 0.8, 0.7])) == pytest.approx(12.5)
    # An empty cluster (NaN) is left out.
    assert coefficient_of_variation(np.array([0.9, np.nan, 0.7])) == pytest.approx(
        np.std([0.9, 0.7], ddof=1) / 0.8 * 100
    )


def test_cluster_metrics_accuracy_and_one_minus_nrmse():
    labels = np.array([0, 0, 1, 1, 1])
    metric, size = cluster_metrics(
        labels, np.array([1, 0, 1, 1, 1.0]), 3, ClusterMetric("accuracy")
    )
    assert list(size) == [2, 3, 0]
    assert metric[:2] == pytest.approx([0.5, 1.0]) and np.isnan(metric[2])
    sq_error = np.array([4.0, 0.0, 1.0, 1.0, 1.0])
    metric, _ = cluster_metrics(labels, sq_error, 2, ClusterMetric("nrmse", 10.0))
    assert metric == pytest.approx([1 - np.sqrt(2) / 10, 1 - 1 / 10])


def test_nrmse_normalisers():
    targets = np.array([2.0, 4.0, 9.0])
    assert nrmse_normaliser(targets, "range") == 7.0
    assert nrmse_normaliser(targets, "mean") == 5.0
    assert nrmse_normaliser(targets, "std") == pytest.approx(np.std(targets, ddof=1))


@pytest.mark.parametrize(("successes", "n"), [(8, 10), (0, 25), (97, 100), (3, 7)])
def test_wilson_interval_matches_scipy(successes, n):
    reference = scipy_stats.binomtest(successes, n).proportion_ci(method="wilson")
    assert wilson_interval(successes, n) == pytest.approx((reference.low, reference.high))


def test_permutation_p_value_counts_the_observed_statistic():
    assert permutation_p_value(5.0, np.array([1, 2, 5, 7.0])) == pytest.approx(3 / 5)
    assert permutation_p_value(9.0, np.zeros(99)) == pytest.approx(1 / 100)


def test_permuted_metrics_keep_sizes_and_the_overall_mean():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    score = (rng.random(60) < 0.7).astype(float)
    permutations = np.array([rng.permutation(60) for _ in range(50)])
    metric = permuted_cluster_metrics(labels, score[permutations], 3, ClusterMetric("accuracy"))
    assert metric.shape == (50, 3)
    sizes = np.array([10, 20, 30])
    assert np.allclose(metric @ sizes, score.sum())
    first = score[permutations[0]]
    assert metric[0, 0] == pytest.approx(first[:10].mean())


def test_correlation_matches_scipy_and_exact_permutations():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([10.0, 8.0, 9.0, 1.0])
    result = correlation(x, y, permutations=100, n_boot=200, seed=0)
    assert result["pearson"] == pytest.approx(scipy_stats.pearsonr(x, y)[0])
    assert result["spearman"] == pytest.approx(scipy_stats.spearmanr(x, y)[0])
    assert result["pearson_p"] == pytest.approx(scipy_stats.pearsonr(x, y)[1])
    exact = np.mean(
        [
            abs(scipy_stats.pearsonr(x, y[list(order)])[0]) >= abs(result["pearson"]) - 1e-12
            for order in itertools.permutations(range(4))
        ]
    )
    assert result["pearson_perm_p"] == pytest.approx(exact)
    # Four points are too few for a bootstrap interval of r: none is given.
    assert np.isnan(result["pearson_ci_low"]) and np.isnan(result["pearson_ci_high"])
    perfect = correlation(x, -x, permutations=100, n_boot=100, seed=0)
    assert perfect["pearson"] == pytest.approx(-1.0)
    assert perfect["pearson_perm_p"] == pytest.approx(2 / 24)


def test_correlation_permutes_within_strata_only():
    # Two strata (sample sizes) shift both x and y: across strata they correlate strongly,
    # within each stratum not at all. Permuting within strata must not call that association.
    rng = np.random.default_rng(3)
    strata = np.repeat([0, 1, 2, 3], 4)
    x = strata * 10 + rng.normal(size=16)
    y = -strata * 5 + rng.normal(size=16)
    across = correlation(x, y, permutations=999, n_boot=200, seed=0)
    within = correlation(x, y, permutations=999, n_boot=200, seed=0, strata=strata)
    assert across["pearson"] == within["pearson"] < -0.9
    assert across["pearson_perm_p"] <= 0.002
    assert within["pearson_perm_p"] > 0.05
    assert within["pearson_ci_low"] < within["pearson_ci_high"]  # 16 points: an interval
    boot_rows = np.random.default_rng(1).integers(0, 16, size=(5, 16))
    for rows in boot_rows:
        assert pearson_rows(x[rows][None], y[rows][None])[0] == pytest.approx(
            scipy_stats.pearsonr(x[rows], y[rows])[0]
        )
        assert spearman_rows(x[rows][None], y[rows][None])[0] == pytest.approx(
            scipy_stats.spearmanr(x[rows], y[rows])[0]
        )
    orders = permutations_within(strata, 50, np.random.default_rng(0))
    assert all((strata[order] == strata).all() for order in orders)


def test_permuted_values_in_chunks_permute_within_strata_and_differ_between_rows():
    rng = np.random.default_rng(0)
    strata = rng.integers(0, 3, size=40)
    values = rng.normal(size=40)
    permuted = permuted_values(values, strata, 2 * PERMUTATION_CHUNK + 7, rng)
    assert permuted.shape == (2 * PERMUTATION_CHUNK + 7, 40)
    for stratum in range(3):
        members = strata == stratum
        assert (np.sort(permuted[:, members], axis=1) == np.sort(values[members])).all()
    assert len(np.unique(permuted, axis=0)) == len(permuted)


def test_within_strata_permutation_test_has_its_nominal_false_positive_rate():
    # Strata drive both x and y; within strata they are independent. 400 data sets: the
    # rate's binomial sd at 5 % is 1.1 points, so 2–9 % tells a working test from a broken one.
    strata = np.repeat(np.arange(4), 4)
    p_values = []
    for seed in range(400):
        rng = np.random.default_rng(seed)
        x = strata * 3 + rng.normal(size=16)
        y = strata * 2 + rng.normal(size=16)
        p_values.append(
            correlation(x, y, permutations=199, n_boot=1, seed=seed, strata=strata)[
                "pearson_perm_p"
            ]
        )
    assert 0.02 <= np.mean(np.array(p_values) < 0.05) <= 0.09


def test_null_calibration_without_heterogeneity():
    """Correctness independent of the features: CV sits at its null and p is uniform."""
    p_values, excess = [], []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        points = rng.normal(size=(100, 10))
        correct = (rng.random(100) < 0.8).astype(float)
        labels = KMeans(4, n_init=1, random_state=seed).fit_predict(points)
        metric, _ = cluster_metrics(labels, correct, 4, ClusterMetric("accuracy"))
        permutations = rng.permuted(np.tile(np.arange(100), (199, 1)), axis=1)
        null = coefficient_of_variation(
            permuted_cluster_metrics(labels, correct[permutations], 4, ClusterMetric("accuracy")),
            axis=1,
        )
        cv = coefficient_of_variation(metric)
        p_values.append(permutation_p_value(cv, null))
        excess.append(cv - null.mean())
    false_positive_rate = np.mean(np.array(p_values) < 0.05)
    assert 0.02 <= false_positive_rate <= 0.09
    assert abs(np.mean(excess)) < 1.0  # CV points; the null mean itself is about 10
    assert scipy_stats.kstest(p_values, "uniform").pvalue > 0.01
