"""The benchmark's measures: precision@k, within-class AUROC, the gate, the ceiling, profiles."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from hetcv.planted import (
    class_profile,
    membership_ceiling,
    precision_at,
    validity_gate,
    within_class_auroc,
)
from hetcv.slice_finders import SliceInputs, confidence_bins, neighbours


def test_precision_at_k_by_hand():
    score = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.6])
    member = np.array([True, True, False, True, False, False])
    # ranked: 0 (yes), 2 (no), 3 (yes), 5 (no), 4, 1
    assert precision_at(score, member, 1) == 1.0
    assert precision_at(score, member, 2) == 0.5
    assert precision_at(score, member, 4) == 0.5
    assert precision_at(score, member, 6) == 0.5


def test_within_class_auroc_is_the_mean_of_each_class_auroc():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 2, 300)
    member = rng.random(300) < 0.2
    score = rng.random(300) + member * (0.3 + 0.4 * classes)
    expected = np.mean([roc_auc_score(member[classes == c], score[classes == c]) for c in (0, 1)])
    assert within_class_auroc(score, member, classes) == pytest.approx(expected)


def test_within_class_auroc_by_hand_ignores_a_class_without_members():
    classes = np.array([0, 0, 0, 1, 1])
    member = np.array([True, False, False, False, False])
    score = np.array([0.5, 0.9, 0.1, 0.0, 1.0])
    # class 0: the member beats one of two others → 0.5; class 1 has no member
    assert within_class_auroc(score, member, classes) == pytest.approx(0.5)
    assert np.isnan(within_class_auroc(score, np.zeros(5, bool), classes))


def test_a_score_that_only_separates_the_classes_has_within_class_auroc_one_half():
    classes = np.repeat([0, 1], 50)
    member = np.tile([True, False], 50)
    score = classes.astype(float)  # the confusion cell's view: the class, nothing within it
    assert within_class_auroc(score, member, classes) == pytest.approx(0.5)


def test_the_validity_gate_by_hand():
    # 60 planted, 30 right; 940 others, 893 right
    member = np.r_[np.ones(60, bool), np.zeros(940, bool)]
    correct = np.r_[np.arange(60) < 30, np.arange(940) < 893]
    gate = validity_gate(correct, member)
    assert gate["planted_accuracy"] == pytest.approx(0.5)
    assert gate["other_accuracy"] == pytest.approx(893 / 940)
    assert gate["gate_gap"] == pytest.approx(893 / 940 - 0.5)
    assert gate["gate_gap_low"] < gate["gate_gap"] < gate["gate_gap_high"]
    assert gate["planted_held_out"] == 60
    assert gate["planted_error_share"] == pytest.approx(30 / 77)
    assert gate["strong"]
    # the same failure on 40 planted samples is too few to count
    assert not validity_gate(correct[20:], member[20:])["strong"]
    # a gap of 10 points is too small
    small = np.r_[np.arange(60) < 51, np.arange(940) < 893]
    assert not validity_gate(small, member)["strong"]


@pytest.mark.parametrize(
    ("planted", "others", "planted_accuracy", "other_accuracy"),
    [(50, 1000, 0.65, 0.97), (63, 2300, 0.32, 0.998), (228, 2200, 0.62, 0.97)],
    ids=["shift-like", "marker-like", "noisy-like"],
)
def test_the_gate_interval_covers_the_true_gap(planted, others, planted_accuracy, other_accuracy):
    # The benchmark's designs (planted groups of 50–230 against 1,000–2,300 others, accuracies
    # up to 0.998): over N = 1,000 draws the Agresti–Caffo interval covers the true gap in
    # 93–97 % (Monte Carlo error 0.7 points at 95 %).
    rng = np.random.default_rng(7)
    member = np.r_[np.ones(planted, bool), np.zeros(others, bool)]
    truth = other_accuracy - planted_accuracy
    covered = []
    for _ in range(1000):
        correct = np.r_[rng.random(planted) < planted_accuracy, rng.random(others) < other_accuracy]
        gate = validity_gate(correct, member)
        covered.append(gate["gate_gap_low"] <= truth <= gate["gate_gap_high"])
    coverage = np.mean(covered)
    print(f"gate interval coverage {coverage:.3f} (N = 1000)")
    assert 0.93 <= coverage <= 0.97


def test_the_ceiling_is_cross_fitted_and_finds_a_separable_group():
    rng = np.random.default_rng(1)
    n = 400
    classes = rng.integers(0, 2, n)
    member = rng.random(n) < 0.15
    embedding = rng.normal(size=(n, 5))
    embedding[member, 0] += 4
    half = rng.integers(0, 2, n)
    score = membership_ceiling(embedding, classes, member, half)
    assert roc_auc_score(member, score) > 0.95
    # half 0's scores come from half 1's labels only: shuffling half 0's labels changes nothing
    shuffled = member.copy()
    shuffled[half == 0] = rng.permutation(member[half == 0])
    again = membership_ceiling(embedding, classes, shuffled, half)
    assert np.allclose(again[half == 0], score[half == 0])
    assert not np.allclose(again[half == 1], score[half == 1])


def test_class_profile_names_the_level_over_represented_within_each_class():
    classes = np.repeat([0, 1], 10)
    marker = np.array(["no"] * 5 + ["yes"] * 5 + ["yes"] * 5 + ["no"] * 5)
    inside = np.zeros(20, bool)
    inside[[0, 1, 2, 5]] = True  # class 0: three "no" of four
    inside[[15, 16, 17, 18]] = True  # class 1: four "no" of four
    rows = {
        row["class"]: row
        for row in class_profile(inside, classes, pd.DataFrame({"marker": marker}))
    }
    assert rows[0]["level"] == "no" and rows[0]["share"] == pytest.approx(0.75)
    assert rows[0]["class_share"] == pytest.approx(0.5) and rows[0]["lift"] == pytest.approx(1.5)
    assert rows[1]["level"] == "no" and rows[1]["share"] == pytest.approx(1.0)
    assert rows[1]["members"] == 4


def inputs(embedding, classes, failure, confidence=None):
    confidence = np.full(len(classes), 0.9) if confidence is None else confidence
    probabilities = np.where(
        (classes == 1)[:, None] == np.array([False, True]),
        confidence[:, None],
        1 - confidence[:, None],
    )
    return SliceInputs(embedding, classes, probabilities, failure.astype(float), failure * 1.0)


def test_neighbours_rank_a_failing_pocket_first_within_its_class():
    rng = np.random.default_rng(2)
    n = 400
    embedding = rng.normal(size=(n, 4))
    classes = rng.integers(0, 2, n)
    pocket = np.arange(n) < 40
    embedding[pocket, 1] += 5
    failure = rng.random(n) < np.where(pocket, 0.7, 0.05)
    fit, evaluation = np.arange(n) % 2 == 0, np.arange(n) % 2 == 1
    data = inputs(embedding, classes, failure)
    found = neighbours(data.take(fit), data.take(evaluation), {"k": 10}, seed=0)
    member = pocket[evaluation]
    assert roc_auc_score(member, found.score) > 0.9
    assert precision_at(found.score, member, 10) >= 0.8
    assert (found.slice[member] == 0).mean() > 0.7


def test_confidence_bins_rank_the_least_confident_failing_bin_first():
    n = 200
    confidence = np.linspace(0.5, 1.0, n)
    failure = confidence < 0.55  # the lowest tenth fails
    classes = np.arange(n) % 2
    data = inputs(np.zeros((n, 2)), classes, failure, confidence)
    fit, evaluation = np.arange(n) % 2 == 0, np.arange(n) % 2 == 1
    found = confidence_bins(data.take(fit), data.take(evaluation), {}, seed=0)
    worst = found.slice == 0
    assert worst.any() and (confidence[evaluation][worst] < 0.56).all()
    assert np.argmax(found.score) == 0  # the least confident evaluation sample


def test_neighbours_slice_stays_small_when_most_samples_share_the_lowest_rate():
    # An accurate model: 0.5 % fail, so over 90 % have no failing neighbour and tie.
    rng = np.random.default_rng(3)
    n = 2000
    embedding = rng.normal(size=(n, 4))
    classes = rng.integers(0, 2, n)
    failure = rng.random(n) < 0.005
    data = inputs(embedding, classes, failure)
    fit, evaluation = np.arange(n) % 2 == 0, np.arange(n) % 2 == 1
    found = neighbours(data.take(fit), data.take(evaluation), {"k": 10}, seed=0)
    assert 0 < (found.slice == 0).mean() <= 0.15
