"""The ``score`` task's metric (a cluster's mean per-sample score: Dice, or the share of labels
right): by hand, then its debiased CV and permutation test by simulation with known truth,
for Dice-like scores and for the macro share of three labels. Run with ``pytest -s``."""

import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from hetcv.heterogeneity import heterogeneity, permutation_null
from hetcv.metrics import ClusterMetric
from hetcv.partitions import FoldPartitions, SampleSize
from hetcv.spread import debiased_spread


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


def test_mean_score_and_its_variance_by_hand():
    score = np.array([0.9, 0.7, 0.8, 0.4, 0.6])
    metric = ClusterMetric("mean_score")
    sums = metric.sums(score, np.ones((1, 5)), np.eye(2)[[0, 0, 0, 1, 1]])
    value, variance = metric.value_and_variance(sums)
    assert value[0] == pytest.approx([0.8, 0.5])
    assert variance[0] == pytest.approx([np.var([0.9, 0.7, 0.8], ddof=1) / 3, 0.02 / 2])
    # Q's weights: the variance of the scores over the whole run, as under "no cluster
    # differs", over each cluster's size (the homogeneity test of the means).
    total = np.var(score, ddof=1)
    assert metric.weighting_variance(sums)[0] == pytest.approx([total / 3, total / 2])


def score_study(rng, sizes, means, kind, n_folds=4, repeats=10):
    """Fixed clusters with repeats that move ~2 % of samples; per-sample scores:
    ``dice`` ~ Beta(20 m, 20 (1 − m)), ``macro`` the share of 3 labels right, each ~ Bernoulli(m).
    Returns the sample and the truth: √(mean over runs of s² of the clusters' true means) over
    the mean of those means, as the debiased CV is defined."""
    k, means = len(sizes), np.asarray(means)
    folds, spreads, levels = [], [], []
    for _ in range(n_folds):
        base = np.repeat(np.arange(k), sizes)
        labels = np.tile(base, (repeats, 1))
        move = rng.random(labels.shape) < 0.02
        labels[move] = rng.integers(0, k, move.sum())
        mean = means[base]
        if kind == "dice":
            score = rng.beta(20 * mean, 20 * (1 - mean))
        else:
            score = (rng.random((3, len(base))) < mean).mean(axis=0)
        folds.append(FoldPartitions(score, labels))
        one_hot = labels[:, :, None] == np.arange(k)
        theta = (one_hot * mean[None, :, None]).sum(1) / one_hot.sum(1)
        spreads.append(np.var(theta, axis=-1, ddof=1)), levels.append(theta.mean())
    sample = SampleSize(folds, k, "score")
    return sample, 100 * np.sqrt(np.mean(spreads)) / np.mean(levels)


@pytest.mark.parametrize(
    ("kind", "sizes", "means"),
    [
        ("dice", (25, 50, 100, 150), (0.85, 0.8, 0.75, 0.7)),
        ("macro", (50, 75, 100, 150), (0.9, 0.85, 0.8, 0.75)),
    ],
)
def test_simulated_debiased_cv_of_a_mean_score(kind, sizes, means):
    start = time.perf_counter()
    rng = np.random.default_rng([len(kind), *sizes])
    rows = []
    for i in range(300):
        sample, truth = score_study(rng, sizes, means, kind)
        spread, raw = debiased_spread(sample, 200, i), heterogeneity(sample, 50, i).raw_cv
        rows.append([spread.debiased_cv, *spread.debiased_cv_ci, truth, raw])
    estimate, low, high, truth, raw = np.array(rows).T
    bias = estimate.mean() / truth.mean() - 1
    coverage = np.mean((low <= truth) & (truth <= high))
    print(
        f"\nmean score ({kind}), sizes {sizes}: true CV {truth.mean():.2f}, debiased "
        f"{estimate.mean():.2f} (bias {bias:+.1%}), raw {raw.mean():.2f}; CI covers "
        f"{coverage:.3f} (N=300); {time.perf_counter() - start:.1f} s"
    )
    # The bounds: |bias| ≤ 10 %, coverage 90–98 % (SE 1.3 points at N = 300).
    assert abs(bias) <= 0.10
    assert 0.90 <= coverage <= 0.98
    assert raw.mean() > truth.mean()  # the paper's CV carries the noise


@pytest.mark.parametrize("kind", ["dice", "macro"])
def test_simulated_permutation_test_of_a_mean_score_keeps_its_level(kind):
    start = time.perf_counter()
    rng = np.random.default_rng([len(kind), 9])
    p = np.array(
        [
            permutation_null(score_study(rng, (25, 50, 100, 150), (0.8,) * 4, kind)[0], 99, i)
            for i in range(400)
        ],
        dtype=object,
    )
    rate = np.mean([null.p_value <= 0.05 for null in p])
    q_rate = np.mean([null.q_p_value <= 0.05 for null in p])
    print(
        f"\nmean score ({kind}), no heterogeneity: permutation test {rate:.3f}, Cochran's Q "
        f"{q_rate:.3f} at 5 % (N=400); {time.perf_counter() - start:.1f} s"
    )
    # SE 1.1 points at N = 400: 3–8 % is ≥ 1.8 SE below and 2.7 above 5 %.
    assert 0.03 <= rate <= 0.08 and 0.03 <= q_rate <= 0.08
