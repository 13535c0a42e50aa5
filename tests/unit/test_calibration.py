"""hetcv.calibration: the recalibration fit against reference optimisers, the statistic by
hand, then the test's level through the library's own path (clusters fitted by
hetcv.cluster.aligned_runs on the same held-out samples, calibration fitted, never oracle
probabilities) on miscalibrated models. Run with ``pytest -s`` to see the figures."""

from __future__ import annotations

import time

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize, special
from threadpoolctl import threadpool_limits

from hetcv.calibration import (
    calibration_test,
    confidence_design,
    fit_recalibration,
    recalibrated_p_correct,
)
from hetcv.cluster import aligned_runs
from hetcv.errors import HetcvError
from hetcv.partitions import FoldPartitions, SampleSize


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


def firth_by_optimiser(correct, design):
    """Firth's penalised likelihood maximised by a general-purpose optimiser."""

    def negative(beta):
        p = special.expit(design @ beta)
        information = design.T @ ((p * (1 - p))[:, None] * design)
        likelihood = np.sum(correct * np.log(p) + (1 - correct) * np.log1p(-p))
        return -(likelihood + 0.5 * np.linalg.slogdet(information)[1])

    start = np.r_[np.zeros(design.shape[1] - 1), 1.0]
    return optimize.minimize(negative, start, method="BFGS", options={"gtol": 1e-9}).x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_firth_fit_matches_a_general_optimiser(seed):
    rng = np.random.default_rng(seed)
    m = 60
    predicted = rng.integers(0, 3, m)
    confidence = rng.uniform(0.4, 0.999, m)
    correct = (rng.random(m) < confidence**1.5).astype(float)
    if seed == 2:
        correct[predicted == 1] = 1.0  # a class whose predictions are all right: separated
    design = confidence_design(confidence, predicted, 3)
    ours = fit_recalibration(correct, design)[0][0]
    np.testing.assert_allclose(ours, firth_by_optimiser(correct, design), atol=2e-4)
    assert np.all(np.isfinite(ours))


def test_a_class_never_predicted_gets_the_other_classes_mean_intercept():
    rng = np.random.default_rng(5)
    predicted = rng.integers(0, 2, 80)  # class 2 of 3 is never predicted here
    confidence = rng.uniform(0.5, 0.99, 80)
    correct = (rng.random(80) < confidence).astype(float)
    design = confidence_design(confidence, predicted, 3)
    coefficients = fit_recalibration(correct, design)[0][0]
    reference = fit_recalibration(correct, design[:, [0, 1, 3]])[0][0]
    np.testing.assert_allclose(coefficients[[0, 1, 3]], reference)
    assert coefficients[2] == pytest.approx(reference[:2].mean())


def test_recalibration_is_statsmodels_logistic_regression_at_large_n():
    # Firth's correction is O(1/n): at 20,000 samples it is the maximum-likelihood fit.
    rng = np.random.default_rng(3)
    logit = rng.normal(0, 2.5, 20_000)
    predicted = (logit > 0).astype(int)
    true_logit = 0.4 * np.where(predicted == 1, 1, -1) + 0.8 * np.abs(logit)
    correct = (rng.random(len(logit)) < special.expit(true_logit)).astype(float)
    design = confidence_design(special.expit(np.abs(logit)), predicted, 2)
    ours = fit_recalibration(correct, design)[0][0]
    reference = sm.Logit(correct, design).fit(disp=0).params
    np.testing.assert_allclose(ours, reference, atol=2e-3)
    np.testing.assert_allclose(ours, [-0.4, 0.4, 0.8], atol=0.06)  # the truth


def test_calibration_statistic_by_hand():
    rng = np.random.default_rng(4)
    m = 40
    confidence = rng.uniform(0.55, 0.99, m)
    predicted = rng.integers(0, 2, m)
    correct = (rng.random(m) < confidence).astype(float)
    labels = np.repeat([0, 1, 2, 3], 10)[None, :]
    fold = FoldPartitions(correct, labels, confidence=confidence, predicted=predicted)
    result = calibration_test(SampleSize([fold], 4, "classification"), 49, 0)
    p = recalibrated_p_correct(correct, confidence, predicted, 2)
    cluster = labels[0]
    observed = np.bincount(cluster, weights=correct)
    expected = np.bincount(cluster, weights=p)
    variance = np.bincount(cluster, weights=p * (1 - p))
    assert result.statistic == pytest.approx(np.sum((observed - expected) ** 2 / variance))
    assert result.null.shape == (49,)
    assert result.p_value == pytest.approx((1 + np.sum(result.null >= result.statistic)) / 50)
    # The fit's score equations: each predicted class's correct count is matched in total, up
    # to Firth's pull of the hat values towards ½ (they sum to the 3 coefficients).
    for code in (0, 1):
        assert correct[predicted == code].sum() == pytest.approx(
            p[predicted == code].sum(), abs=1.0
        )


def test_a_fold_without_confidence_is_an_error():
    fold = FoldPartitions(np.array([1.0, 0, 1, 1]), np.array([[0, 0, 1, 1]]))
    with pytest.raises(HetcvError, match="confidence"):
        calibration_test(SampleSize([fold], 2, "classification"), 9, 0)


# ---------------------------------------------------------------------------------------------
# Level on miscalibrated models, with the calibration and the clusters fitted.
#
# The model's logit for class 1 is s = x·w + 0.3 of 5-d features x; the truth is a function of
# s that the model gets wrong in a fold-specific way, but never in a way that depends on the
# cluster beyond s: the null ("errors are explained by confidence") holds for every scenario.

SCALE = np.array([2.0, 1.5, 1.0, 1.0, 1.0])
WEIGHT = np.array([1.2, 0.8, 0.0, 0.0, 0.0])
SCENARIOS = {
    # name: true logit from the model's logit s, per fold (T: the fold's over-confidence)
    "calibrated": lambda s, fold: s,
    "over-confident": lambda s, fold: s / 1.5,
    "fold over-confidence": lambda s, fold: s / fold["temperature"],
    "not a temperature": lambda s, fold: 0.4 + 0.8 * s,
    "fold intercept shift": lambda s, fold: s + fold["shift"],
}
# (scenario, samples a fold, folds): every scenario, and 2, 3 and 4 folds of 50 to 200.
DESIGNS = [
    ("calibrated", 200, 4),
    ("calibrated", 50, 2),
    ("over-confident", 100, 3),
    ("fold over-confidence", 200, 4),
    ("fold over-confidence", 50, 2),
    ("not a temperature", 200, 2),
    ("not a temperature", 50, 4),
    ("fold intercept shift", 100, 3),
]


def simulated_sample(rng, scenario, m, n_folds, seed, shortfall=0.0, sharpness=1.0):
    """One study: k-means clusters (library path) of each fold's features, correctness drawn
    from the scenario's truth; with a shortfall, the cluster whose size is nearest 25 is right
    that much less often than the truth says. ``sharpness`` scales the model's logit (2.5: about
    95 % right)."""
    folds = []
    for f in range(n_folds):
        x = rng.normal(size=(m, 5)) * SCALE
        s = sharpness * (x @ WEIGHT) + 0.3
        labels = np.stack([p.labels for p in aligned_runs(x, None, "kmeans", 4, 1, None, seed + f)])
        truth = special.expit(
            SCENARIOS[scenario](s, {"temperature": rng.uniform(1, 2), "shift": rng.normal(0, 0.4)})
        )
        predicted = (s > 0).astype(int)
        p_correct = np.where(predicted == 1, truth, 1 - truth)
        if shortfall:
            planted = labels[0] == np.argmin(np.abs(np.bincount(labels[0], minlength=4) - 25))
            p_correct[planted] = np.clip(p_correct[planted] - shortfall, 0, 1)
        correct = (rng.random(m) < p_correct).astype(float)
        confidence = special.expit(np.abs(s))
        folds.append(
            FoldPartitions(
                correct, labels.astype(np.int64), confidence=confidence, predicted=predicted
            )
        )
    return SampleSize(folds, 4, "classification")


@pytest.mark.parametrize(("scenario", "m", "n_folds"), DESIGNS)
def test_simulated_calibrated_test_keeps_its_level_on_miscalibrated_models(scenario, m, n_folds):
    start = time.perf_counter()
    rng = np.random.default_rng([m, n_folds, len(scenario)])
    n_sets = 600
    p = np.array(
        [
            calibration_test(simulated_sample(rng, scenario, m, n_folds, 100 * i), 99, i).p_value
            for i in range(n_sets)
        ]
    )
    rate = np.mean(p <= 0.05)
    se = np.sqrt(rate * (1 - rate) / n_sets)
    print(
        f"\ncalibrated test, {scenario}, {m} a fold, {n_folds} folds: false positives at 5 % "
        f"{rate:.3f} ± {se:.3f} (N={n_sets}); {time.perf_counter() - start:.1f} s"
    )
    # 3–7 %: SE 0.9 points at N = 600, so 7 % is 2.2 SE above 5 % and 8 % would be 3.4.
    assert 0.03 <= rate <= 0.07


@pytest.mark.parametrize("scenario", ["calibrated", "fold over-confidence"])
def test_simulated_calibrated_test_power_against_a_cluster_that_fails_beyond_confidence(
    scenario,
):
    start = time.perf_counter()
    rng = np.random.default_rng(8)
    n_sets = 300
    samples = [
        simulated_sample(rng, scenario, 100, 4, 100 * i, shortfall=0.10, sharpness=2.5)
        for i in range(n_sets)
    ]
    accuracy = np.mean([fold.score.mean() for sample in samples for fold in sample.folds])
    power = np.mean(
        [calibration_test(sample, 99, i).p_value <= 0.05 for i, sample in enumerate(samples)]
    )
    print(
        f"\ncalibrated test: power against one cluster of about 25 a fold, 10 points below "
        f"its confidence ({scenario}, {accuracy:.0%} right, 100 a fold, 4 folds): "
        f"{power:.3f} ± {np.sqrt(power * (1 - power) / n_sets):.3f} (N={n_sets}); "
        f"{time.perf_counter() - start:.1f} s"
    )
    # Well above the 5 % a blind test gives: 0.12 is more than 4 SE above it.
    assert power >= 0.12
