"""The per-cluster metrics: against scikit-learn and hand computations, then by simulation.

Simulations with known truth use k = 4 clusters of 50–150 samples per fold, 4 folds and one
repeat (repeats share the metric code). Rates are judged against binomial standard errors:
with N data sets a
rate near p has SE = √(p(1 − p)/N), e.g. 1.3 points at 95 % and N = 300.
"""

import functools
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from threadpoolctl import threadpool_limits

from hetcv import metrics
from hetcv.errors import HetcvError
from hetcv.heterogeneity import heterogeneity, permutation_null, run_metrics
from hetcv.metrics import ClusterMetric, dataset_metric
from hetcv.partitions import FoldPartitions, SampleSize
from hetcv.spread import debiased_spread
from hetcv.stats import cluster_metrics
from hetcv.weakest import weakest_cluster


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


def tied_binary(rng, m=240):
    """Classes, rounded (so tied) positive-class probabilities, three clusters, weights."""
    classes = rng.integers(0, 2, m)
    probability = np.round(rng.random(m) * 0.6 + 0.3 * classes, 1)
    labels = rng.integers(0, 3, m)
    weights = rng.poisson(1.0, (5, m)).astype(float)
    return classes, probability, labels, weights


def test_auroc_matches_scikit_learn_with_ties_and_weights():
    rng = np.random.default_rng(0)
    classes, probability, labels, weights = tied_binary(rng)
    auroc = ClusterMetric("auroc")
    value, _ = auroc.value_and_variance(
        auroc.sums(probability, weights, np.eye(3)[labels], classes)
    )
    for b in range(len(weights)):
        for c in range(3):
            at = labels == c
            expected = roc_auc_score(classes[at], probability[at], sample_weight=weights[b, at])
            assert value[b, c] == pytest.approx(expected, abs=1e-12)


def test_auroc_variance_is_delong_by_hand():
    rng = np.random.default_rng(1)
    classes, probability, labels, _ = tied_binary(rng)
    auroc = ClusterMetric("auroc")
    sums = auroc.sums(probability, np.ones((1, len(classes))), np.eye(3)[labels], classes)
    value, variance = auroc.value_and_variance(sums)
    for c in range(3):
        positive = probability[(labels == c) & (classes == 1)]
        negative = probability[(labels == c) & (classes == 0)]
        # DeLong et al. (1988): the kernel ψ over all pairs, and its two placement values.
        psi = (positive[:, None] > negative) + 0.5 * (positive[:, None] == negative)
        delong = psi.mean(1).var(ddof=1) / len(positive) + psi.mean(0).var(ddof=1) / len(negative)
        assert value[0, c] == pytest.approx(psi.mean())
        assert variance[0, c] == pytest.approx(delong)


def test_auroc_blocks_match_one_pass(monkeypatch):
    rng = np.random.default_rng(2)
    classes, probability, labels, weights = tied_binary(rng)
    auroc = ClusterMetric("auroc")
    whole = auroc.sums(probability, weights, np.eye(3)[labels], classes)
    monkeypatch.setattr(metrics, "AUROC_BLOCK_ELEMENTS", 1)  # one row per block
    assert np.allclose(auroc.sums(probability, weights, np.eye(3)[labels], classes), whole)


def test_hanley_mcneil_weighting_variance_by_hand():
    # Cluster 0: 3 positives above 2 negatives (U = 6), AUROC 1 and DeLong variance 0.
    classes = np.array([1, 1, 1, 0, 0])
    auroc = ClusterMetric("auroc")
    sums = auroc.sums(
        np.array([0.9, 0.8, 0.7, 0.2, 0.1]), np.ones((1, 5)), np.ones((5, 1)), classes
    )
    assert auroc.value_and_variance(sums)[1][0, 0] == 0
    a = 6.5 / 7  # (U + ½)/(n₊n₋ + 1)
    q1, q2 = a / (2 - a), 2 * a**2 / (1 + a)
    expected = (a * (1 - a) + 2 * (q1 - a**2) + 1 * (q2 - a**2)) / 6
    assert auroc.weighting_variance(sums)[0, 0] == pytest.approx(expected)


def test_balanced_accuracy_matches_scikit_learn_with_weights():
    rng = np.random.default_rng(3)
    m = 300
    classes = rng.integers(0, 3, m)
    predicted = np.where(rng.random(m) < 0.7, classes, rng.integers(0, 3, m))
    correct = (predicted == classes).astype(float)
    labels = rng.integers(0, 3, m)
    weights = rng.poisson(1.0, (5, m)).astype(float)
    balanced = ClusterMetric("balanced_accuracy", classes=(0, 1, 2))
    sums = balanced.sums(correct, weights, np.eye(3)[labels], classes)
    value, variance = balanced.value_and_variance(sums)
    for b in range(len(weights)):
        for c in range(3):
            at = labels == c
            expected = balanced_accuracy_score(
                classes[at], predicted[at], sample_weight=weights[b, at]
            )
            assert value[b, c] == pytest.approx(expected, abs=1e-12)
    # Unweighted variance: Σ over classes of p̂(1 − p̂)/(n − 1), over classes².
    sums = balanced.sums(correct, np.ones((1, m)), np.eye(3)[labels], classes)
    _, variance = balanced.value_and_variance(sums)
    for c in range(3):
        recalls = [correct[(labels == c) & (classes == y)] for y in range(3)]
        expected = sum(r.mean() * (1 - r.mean()) / (len(r) - 1) for r in recalls) / 9
        assert variance[0, c] == pytest.approx(expected)


def test_one_class_clusters_are_undefined_for_auroc_and_a_recall_for_balanced_accuracy():
    labels = np.array([0, 0, 0, 1, 1, 1])
    classes = np.array([0, 1, 1, 1, 1, 1])  # cluster 1 holds class 1 only
    auroc = ClusterMetric("auroc")
    value, size = cluster_metrics(
        labels, np.array([0.2, 0.7, 0.9, 0.6, 0.8, 0.4]), 2, auroc, classes
    )
    assert value[0] == 1.0 and np.isnan(value[1]) and size.tolist() == [3, 3]
    sums = auroc.sums(np.zeros(6), np.ones((1, 6)), np.eye(2)[labels], classes)
    assert auroc.undefined(sums)[0].tolist() == [False, True]
    balanced = ClusterMetric("balanced_accuracy", classes=(0, 1))
    correct = np.array([1, 0, 1, 1, 0, 1.0])
    value, _ = cluster_metrics(labels, correct, 2, balanced, classes)
    assert value.tolist() == [pytest.approx(0.75), pytest.approx(2 / 3)]


def test_whole_fold_metric_and_outcome_columns():
    features = pd.DataFrame(
        {
            "target": [3, 3, 8, 8, 8],
            "correct": [True, False, True, True, False],
            "probability_1": [0.1, 0.6, 0.7, 0.9, 0.4],
            "sq_error": [1.0, 4.0, 0.0, 1.0, 4.0],
        }
    )
    auroc = dataset_metric("auroc", np.array([3, 8, 8]), None)
    outcome, codes = auroc.outcome(features)
    assert codes.tolist() == [0, 0, 1, 1, 1]
    assert auroc.of_samples(outcome, codes) == pytest.approx(roc_auc_score(codes, outcome))
    balanced = dataset_metric("balanced_accuracy", np.array([3, 8]), None)
    assert balanced.of_samples(*balanced.outcome(features)) == pytest.approx((0.5 + 2 / 3) / 2)
    nrmse = dataset_metric("nrmse", np.array([0.0, 10.0]), "range")
    outcome, codes = nrmse.outcome(features)
    assert codes is None and nrmse.of_samples(outcome) == pytest.approx(1 - np.sqrt(2) / 10)


def test_bad_metric_input_is_one_line():
    with pytest.raises(HetcvError, match="auroc needs a binary task, not 3 classes"):
        dataset_metric("auroc", np.array([0, 1, 2]), None)
    with pytest.raises(HetcvError, match="not one of the classes"):
        ClusterMetric("auroc", classes=(0, 1)).outcome(
            pd.DataFrame({"target": [0, 5], "probability_1": [0.2, 0.4]})
        )
    with pytest.raises(HetcvError, match="needs integer class codes"):
        SampleSize(
            [FoldPartitions(np.ones(4), np.zeros((1, 4), int))], 2, "classification", metric="auroc"
        )


# ---------------------------------------------------------------------------------------------
# Simulations with known truth.

SIZES = (50, 75, 100, 150)
DELTA = np.array([1.6, 1.3, 1.1, 0.9])  # binormal: AUROC = Φ(δ/√2) = 0.871, 0.821, 0.782, 0.738
POSITIVE_SHARE = 0.4
RECALL = np.array([[0.95, 0.85], [0.90, 0.85], [0.85, 0.80], [0.80, 0.80]])  # (cluster, class)
CLASS_ONE_SHARE = np.array([0.2, 0.4, 0.6, 0.8])


def simulated_fold(rng, metric, delta=DELTA, recall=RECALL):
    """One fold: clusters of SIZES, one repeat, outcomes drawn from the truth."""
    base = np.repeat(np.arange(len(SIZES)), SIZES)
    labels = base[None]
    if metric == "auroc":
        classes = (rng.random(len(base)) < POSITIVE_SHARE).astype(int)
        score = rng.normal(delta[base] * classes, 1.0)
    else:
        classes = (rng.random(len(base)) < CLASS_ONE_SHARE[base]).astype(int)
        score = (rng.random(len(base)) < recall[base, classes]).astype(float)
    return FoldPartitions(score, labels, groups=classes, classes=classes)


def true_cv(values):
    return float(100 * np.std(values, ddof=1) / np.mean(values))


TRUTH = {
    "auroc": scipy_stats.norm.cdf(DELTA / np.sqrt(2)),
    "balanced_accuracy": RECALL.mean(axis=1),
}


@functools.cache
def metric_study(metric, n_sets=300, n_boot=200):
    start = time.perf_counter()
    rng = np.random.default_rng(len(metric))
    rows = []
    for i in range(n_sets):
        folds = [simulated_fold(rng, metric) for _ in range(4)]
        sample = SampleSize(folds, 4, "classification", metric=metric)
        result, spread = heterogeneity(sample, n_boot, i), debiased_spread(sample, n_boot, i)
        rows.append(
            (
                spread.debiased_cv,
                *spread.debiased_cv_ci,
                result.raw_cv,
                *result.cluster_metric,
                *result.cluster_metric_ci.ravel(),
            )
        )
    rows = np.array(rows)
    return {
        "debiased": rows[:, 0],
        "d_low": rows[:, 1],
        "d_high": rows[:, 2],
        "raw": rows[:, 3],
        "cluster": rows[:, 4:8],
        "cluster_ci": rows[:, 8:].reshape(-1, 4, 2),
        "seconds": time.perf_counter() - start,
    }


@pytest.mark.parametrize("metric", ["auroc", "balanced_accuracy"])
def test_simulated_variance_estimate_is_unbiased(metric):
    # 4 000 draws of one fold at once (one outcome row each), the classes held fixed.
    rng = np.random.default_rng(5)
    fold = simulated_fold(rng, metric)
    base = fold.labels[0]
    if metric == "auroc":
        draws = rng.normal(DELTA[base] * fold.classes, 1.0, size=(4000, len(base)))
    else:
        draws = (rng.random((4000, len(base))) < RECALL[base, fold.classes]).astype(float)
    chosen = ClusterMetric(metric)
    sums = chosen.sums(draws, np.ones(draws.shape), np.eye(4)[base], fold.classes)
    value, variance = chosen.value_and_variance(sums)
    ratio = variance.mean(axis=0) / value.var(axis=0, ddof=1)
    print(f"\n{metric}: mean estimated / empirical variance per cluster {np.round(ratio, 3)}")
    # 4 000 draws: the empirical variance has a relative SE of about 2.2 %.
    assert np.all(np.abs(ratio - 1) <= 0.1)


@pytest.mark.parametrize("metric", ["auroc", "balanced_accuracy"])
def test_simulated_intervals_cover_the_true_metrics_and_cv(metric):
    s = metric_study(metric)
    truth = TRUTH[metric]
    cluster_coverage = np.mean(
        (s["cluster_ci"][..., 0] <= truth) & (truth <= s["cluster_ci"][..., 1]), axis=0
    )
    cv = true_cv(truth)
    bias = s["debiased"].mean() - cv
    coverage = np.mean((s["d_low"] <= cv) & (cv <= s["d_high"]))
    print(
        f"\n{metric}: N=300, true CV {cv:.2f}; debiased mean {s['debiased'].mean():.2f} (bias "
        f"{bias / cv:+.1%}), raw {s['raw'].mean():.2f}; CI covers the true CV {coverage:.3f}; "
        f"cluster CIs cover {np.round(cluster_coverage, 3)}; {s['seconds']:.1f} s"
    )
    # SE 1.3 points at 95 % and N = 300: 0.90 is 4 SE below.
    assert 0.90 <= coverage <= 0.99
    assert np.all(cluster_coverage >= 0.90)
    assert abs(bias) <= max(0.1 * cv, 0.3)
    assert abs(bias) < (s["raw"].mean() - cv) / 3
    assert np.allclose(s["cluster"].mean(axis=0), truth, atol=0.01)


@pytest.mark.parametrize("metric", ["auroc", "balanced_accuracy"])
def test_simulated_permutation_test_false_positive_rate(metric):
    # Equal true metrics in every cluster; for balanced accuracy the class mix still differs
    # between clusters (so their accuracies differ), which must not count.
    start = time.perf_counter()
    rng = np.random.default_rng(6)
    flat = {"delta": np.full(4, 1.2), "recall": np.tile([0.95, 0.75], (4, 1))}
    p_values, q_p_values = [], []
    for i in range(400):
        folds = [simulated_fold(rng, metric, **flat) for _ in range(4)]
        sample = SampleSize(folds, 4, "classification", metric=metric)
        null = permutation_null(sample, 99, i)
        p_values.append(null.p_value), q_p_values.append(null.q_p_value)
    rate, q_rate = np.mean(np.array(p_values) <= 0.05), np.mean(np.array(q_p_values) <= 0.05)
    print(
        f"\n{metric}, no heterogeneity: permutation test false positives at 5 % {rate:.3f}, "
        f"Cochran's Q (permutation p) {q_rate:.3f} (N=400); {time.perf_counter() - start:.1f} s"
    )
    # SE 1.1 points at N = 400: 2–9 % is ≥ 2.7 SE either side of 5 %.
    assert 0.02 <= rate <= 0.09
    assert 0.02 <= q_rate <= 0.09


def test_weakest_cluster_and_run_metrics_use_the_chosen_metric():
    rng = np.random.default_rng(7)
    folds = [simulated_fold(rng, "auroc") for _ in range(4)]
    sample = SampleSize(folds, 4, "classification", metric="auroc")
    by_hand = [
        [roc_auc_score(f.classes[f.labels[0] == c], f.score[f.labels[0] == c]) for c in range(4)]
        for f in folds
    ]
    assert np.allclose(run_metrics(sample).metric[:, 0], by_hand)
    weakest = weakest_cluster(sample, 50, 0)
    # Cluster 3 (AUROC 0.74) is the weakest by 0.04 over 150 samples a fold.
    assert weakest.cluster == 3
    assert weakest.ci[0] <= TRUTH["auroc"][3] <= weakest.ci[1]
