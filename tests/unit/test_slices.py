"""Cross-fitted slice discovery: hand computations, planted slices and the null by simulation."""

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from hetcv.calibration import confidence_design, fit_recalibration
from hetcv.profiles import slice_profile
from hetcv.slice_finders import (
    BASELINES,
    METHODS,
    SliceInputs,
    principal_scores,
    ranked,
    shrunk_failure,
    standardised,
)
from hetcv.slices import (
    PER_SAMPLE_COLUMNS,
    combined_gap,
    cross_fitted,
    dataset_slices,
    expected_failure,
    fold_slices,
    gap_estimate,
    halves,
    slice_inputs,
    slice_summary,
)

SETTINGS = {
    "pca_components": 5,
    "domino": {"components": 12, "gamma": 10.0},
    "george": {"components": 4},
    "error_predictor": {"c": 1.0},
    "neighbours": {"k": 10},
}
CLUSTERING = {"algorithm": "kmeans", "k": 4, "fcm": {"m": 2.0, "error": 1e-5, "maxiter": 100}}


def planted_fold(n=800, planted=60, seed=0, failing=0.6, base=0.05, dims=8):
    """A fold whose planted samples form one blob of class 1 that fails at ``failing``."""
    rng = np.random.default_rng(seed)
    member = np.arange(n) < planted
    target = np.where(member, 1, rng.integers(0, 2, n))
    points = rng.normal(size=(n, dims))
    points[member, :2] += 4.0
    failure = rng.random(n) < np.where(member, failing, base)
    predicted = np.where(failure, 1 - target, target)
    confidence = 0.6 + 0.4 * rng.random(n)
    probability_1 = np.where(predicted == 1, confidence, 1 - confidence)
    fold = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(n)],
            "n": n,
            "fold": 0,
            "target": target,
            "prediction": predicted,
            "predicted_label": predicted,
            "correct": (~failure).astype(int),
            "loss": -np.log(np.where(failure, 1 - confidence, confidence)),
            "probability_0": 1 - probability_1,
            "probability_1": probability_1,
        }
    )
    return fold, points, member


def test_halves_split_every_class_evenly():
    classes = np.repeat([0, 1, 2], [101, 50, 7])
    half = halves(classes, np.random.default_rng(0))
    for value in range(3):
        counts = np.bincount(half[classes == value], minlength=2)
        assert abs(counts[0] - counts[1]) <= 1
    assert abs(np.sum(half == 0) - np.sum(half == 1)) <= 1


def test_gap_and_its_variance_by_hand():
    failure = np.array([1, 1, 0, 0, 0, 0, 0, 1, 0, 0], dtype=float)
    inside = np.arange(10) < 4
    gap, variance = gap_estimate(failure, inside)
    assert gap == pytest.approx(2 / 4 - 1 / 6)
    slice_rate, rest_rate = (2 + 1) / (4 + 2), (1 + 1) / (6 + 2)  # Agresti–Caffo
    assert variance == pytest.approx(
        slice_rate * (1 - slice_rate) / 6 + rest_rate * (1 - rest_rate) / 8
    )
    squared = np.array([0.5, 2.0, 1.5, 0.1, 0.2, 0.3, 0.1])
    inside = np.arange(7) < 3
    gap, variance = gap_estimate(squared, inside)
    assert gap == pytest.approx(squared[:3].mean() - squared[3:].mean())
    assert variance == pytest.approx(squared[:3].var(ddof=1) / 3 + squared[3:].var(ddof=1) / 4)
    assert np.isnan(gap_estimate(squared, np.arange(7) < 1)[0])


def test_combined_gap_by_hand():
    found = combined_gap(
        np.array([0.10, 0.20, np.nan]), np.array([0.0016, 0.0009, 0.1]), np.array([30, 10, 5])
    )
    error = np.sqrt(0.75**2 * 0.0016 + 0.25**2 * 0.0009)
    assert found["gap"] == pytest.approx(0.75 * 0.10 + 0.25 * 0.20)
    assert found["gap_low"] == pytest.approx(0.125 - stats.norm.ppf(0.975) * error)
    assert found["p_value"] == pytest.approx(stats.norm.sf(0.125 / error))


def test_slices_are_ranked_by_their_shrunk_failure():
    # Slice 0: 2 samples, both failing; slice 1: 40 samples, 20 failing; slice 2: none failing.
    weights = np.zeros((100, 3))
    weights[:2, 0] = 1
    weights[2:42, 1] = 1
    weights[42:, 2] = 1
    failure = np.zeros(100)
    failure[:2] = 1
    failure[2:22] = 1
    rates = shrunk_failure(weights, failure)
    overall = 0.22
    assert rates[0] == pytest.approx((2 + 10 * overall) / 12)
    assert rates[1] == pytest.approx((20 + 10 * overall) / 50)
    found = ranked(weights, failure, np.eye(3)[[0, 1, 2, 1]])
    # The 40-sample slice at 50 % outranks the 2-sample one at 100 %.
    assert found.slice.tolist() == [1, 0, 2, 0]
    assert found.score.tolist() == pytest.approx(rates[[0, 1, 2, 1]])


@pytest.mark.parametrize(
    "method", ["domino", "george", "error_predictor", "worst_cluster", "neighbours"]
)
def test_each_method_finds_a_planted_failing_blob_on_the_other_half(method):
    fold, points, member = planted_fold()
    per_sample, _ = dataset_slices(
        [fold],
        [points],
        fold[["sample_id"]],
        task="classification",
        settings=SETTINGS,
        clustering=CLUSTERING,
        metadata_columns=[],
        seed=1,
    )
    planted = pd.Series(member, index=fold["sample_id"])
    rows = per_sample[per_sample["method"] == method]
    for half in (0, 1):
        top = rows[rows["half"] == half].nlargest(10, "score")
        assert planted.loc[top["sample_id"]].mean() >= 0.8, half


def test_the_summary_of_a_planted_blob_reports_its_held_out_gap():
    fold, points, member = planted_fold(seed=2)
    per_sample, summary = dataset_slices(
        [fold],
        [points],
        fold[["sample_id"]].assign(site=np.where(member, "B", "A")),
        task="classification",
        settings=SETTINGS,
        clustering=CLUSTERING,
        metadata_columns=["site"],
        seed=3,
    )
    assert (
        list(per_sample.columns)
        == PER_SAMPLE_COLUMNS
        == [
            "sample_id",
            "n",
            "fold",
            "method",
            "slice",
            "score",
            "half",
        ]
    )
    assert set(per_sample["method"]) == set(METHODS + BASELINES)
    worst = summary[(summary["method"] == "domino") & (summary["slice"] == 0)].iloc[0]
    assert worst["p_value"] < 0.001 and worst["gap"] > 0.3
    # Its confidence is as high as anywhere else: the excess is most of the gap.
    assert worst["excess_p_value"] < 0.001 and worst["underperforms"]
    assert worst["excess_gap"] > 0.5 * worst["gap"]
    assert worst["metric"] == pytest.approx(1 - worst["failure"])
    assert worst["profile"].startswith("site B ")
    assert summary.loc[summary["method"] == "loss", "outcome_defined"].all()
    assert not summary.loc[summary["method"] == "domino", "outcome_defined"].any()
    # The summary's numbers are the held-out rows' own.
    rows = per_sample[per_sample["method"] == "domino"].reset_index(drop=True)
    failure = 1 - fold["correct"].to_numpy()
    inside = rows["slice"].to_numpy() == 0
    assert worst["failure"] == pytest.approx(failure[inside].mean())
    assert worst["size"] == inside.sum()


def test_slice_summary_averages_the_halves_gaps():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "method": "m",
            "n": 100,
            "fold": np.repeat([0, 1], 50),
            "half": np.tile(np.repeat([0, 1], 25), 2),
            "slice": rng.choice([0, -1], 100),
            "failure": rng.integers(0, 2, 100).astype(float),
            "expected": rng.uniform(0.3, 0.7, 100),
        }
    )
    row = slice_summary(frame).iloc[0]
    groups = [p for _, p in frame.groupby(["fold", "half"])]
    parts = [gap_estimate(p["failure"].to_numpy(), p["slice"].to_numpy() == 0) for p in groups]
    sizes = np.array([(p["slice"] == 0).sum() for p in groups])
    expected = combined_gap(np.array([g for g, _ in parts]), np.array([v for _, v in parts]), sizes)
    assert row["gap"] == pytest.approx(expected["gap"]) and row["p_value"] == pytest.approx(
        expected["p_value"]
    )
    assert row["size"] == pytest.approx((frame["slice"] == 0).sum() / 2)
    residual = frame["failure"] - frame["expected"]
    parts = [gap_estimate(residual[p.index].to_numpy(), p["slice"].to_numpy() == 0) for p in groups]
    excess = combined_gap(np.array([g for g, _ in parts]), np.array([v for _, v in parts]), sizes)
    assert row["excess_gap"] == pytest.approx(excess["gap"])
    assert row["excess_p_value"] == pytest.approx(excess["p_value"])
    assert row["underperforms"] == (excess["p_value"] < 0.05)


def test_the_gap_interval_covers_a_fixed_slices_true_gap():
    # A fixed slice (20 % of 400) failing at 0.15 against 0.08: the combined two-half interval
    # covers the true gap 0.07 in about 95 % of 2,000 draws (90 % would be far outside).
    rng = np.random.default_rng(7)
    inside = np.arange(400) < 80
    half = np.arange(400) % 2
    covered = []
    for _ in range(2000):
        failure = (rng.random(400) < np.where(inside, 0.15, 0.08)).astype(float)
        parts = [gap_estimate(failure[half == h], inside[half == h]) for h in (0, 1)]
        found = combined_gap(
            np.array([g for g, _ in parts]), np.array([v for _, v in parts]), np.array([40, 40])
        )
        covered.append(found["gap_low"] <= 0.07 <= found["gap_high"])
    assert 0.93 <= np.mean(covered) <= 0.975


def test_with_nothing_planted_a_found_slice_is_significant_in_about_five_percent():
    # Failures independent of everything: whatever slice one half finds, the other half's
    # one-sided test of its gap rejects at about the nominal 5 %. The argument is the same
    # for every method, so the draws are pooled: 5 methods × 80 draws (5 % ± 2.2 points).
    rng = np.random.default_rng(11)
    rejected = []
    for draw in range(80):
        n = 200
        classes = rng.integers(0, 2, n)
        failure = (rng.random(n) < 0.15).astype(float)
        points = rng.normal(size=(n, 4))
        data = SliceInputs(points, classes, np.eye(2)[classes], failure, rng.random(n))
        half = halves(classes, rng)
        membership = np.eye(4)[rng.integers(0, 4, n)]
        for method in METHODS:
            settings = {"membership": membership} if method == "worst_cluster" else SETTINGS[method]
            found = cross_fitted(data, half, method, settings, draw)
            parts = [gap_estimate(failure[half == h], found.slice[half == h] == 0) for h in (0, 1)]
            sizes = np.array([np.sum(found.slice[half == h] == 0) for h in (0, 1)])
            gap = combined_gap(
                np.array([g for g, _ in parts]), np.array([v for _, v in parts]), sizes
            )
            rejected.append(gap["p_value"] < 0.05)
    print(f"\nnothing planted: {np.mean(rejected):.3f} of {len(rejected)} found slices significant")
    assert 0.025 <= np.mean(rejected) <= 0.08


def test_the_expected_failure_is_recalibrated_on_the_other_half():
    rng = np.random.default_rng(4)
    n = 400
    probability_1 = rng.uniform(0.05, 0.95, n)
    classes = (rng.random(n) < probability_1).astype(int)
    # An over-confident model: its logits doubled.
    logits = 2 * np.log(np.column_stack([1 - probability_1, probability_1]))
    stated = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    data = SliceInputs(rng.normal(size=(n, 3)), classes, stated, rng.random(n), rng.random(n))
    half = halves(classes, rng)
    expected = expected_failure(data, half, "classification")
    predicted = stated.argmax(axis=1)
    design = confidence_design(stated.max(axis=1), predicted, 2)
    correct = (predicted == classes).astype(float)
    for measured in (0, 1):
        other, rows = half != measured, half == measured
        coefficients = fit_recalibration(correct[other], design[other])[0][0]
        # The slope on logit(confidence) undoes the doubling: about ½.
        assert 0.3 < coefficients[-1] < 0.75
        assert expected[rows] == pytest.approx(1 - special.expit(design[rows] @ coefficients))
    assert np.isnan(expected_failure(data, half, "regression")).all()


def test_hard_images_are_no_slice_beyond_confidence_but_fail_the_raw_gap():
    # A calibrated model whose confidence is low in one region of the embedding: that region
    # fails more (the raw gap fires), exactly as its confidence says (the excess does not,
    # about 5 % of 150 folds). A region the model is confidently wrong on is found by both.
    rng = np.random.default_rng(5)
    raw, excess = [], []
    for draw in range(150):
        n = 300
        points = rng.normal(size=(n, 4))
        hard = points[:, 0] > 0.8
        confidence = np.where(hard, rng.uniform(0.55, 0.7, n), rng.uniform(0.9, 0.99, n))
        target = rng.integers(0, 2, n)
        wrong = rng.random(n) > confidence
        predicted = np.where(wrong, 1 - target, target)
        probability_1 = np.where(predicted == 1, confidence, 1 - confidence)
        fold = pd.DataFrame(
            {
                "sample_id": [f"s{i}" for i in range(n)],
                "n": n,
                "target": target,
                "prediction": predicted,
                "correct": (~wrong).astype(int),
                "loss": rng.random(n),
                "probability_0": 1 - probability_1,
                "probability_1": probability_1,
            }
        )
        found = fold_slices(
            fold,
            points,
            task="classification",
            settings=SETTINGS,
            clustering=CLUSTERING,
            seed=draw,
            methods=("error_predictor",),
        )
        row = slice_summary(found.assign(n=n, fold=0)).iloc[0]
        raw.append(row["p_value"] < 0.05)
        excess.append(row["underperforms"])
    print(
        f"\nhard images, calibrated model (N={len(raw)}): the raw gap fires in "
        f"{np.mean(raw):.3f}, the excess beyond recalibrated confidence in {np.mean(excess):.3f}"
    )
    assert np.mean(raw) > 0.5
    assert 0.01 <= np.mean(excess) <= 0.10


def test_regression_uses_quartiles_and_the_relative_squared_error():
    rng = np.random.default_rng(0)
    target = rng.normal(10, 2, 200)
    prediction = target + rng.normal(0, 1, 200)
    fold = pd.DataFrame(
        {
            "target": target,
            "prediction": prediction,
            "sq_error": (prediction - target) ** 2,
            "loss": (prediction - target) ** 2,
        }
    )
    scores = principal_scores(rng.normal(size=(200, 6)), 3)
    data = slice_inputs(fold, standardised(scores), "regression")
    assert np.bincount(data.classes).tolist() == [50, 50, 50, 50]
    assert data.probabilities.shape == (200, 4)
    assert data.failure == pytest.approx(fold["sq_error"] / target.var())
    assert data.embedding.std(axis=0) == pytest.approx(np.ones(3))


def test_slice_profile_names_the_over_represented_level_and_the_median():
    metadata = pd.DataFrame({"site": ["A"] * 6 + ["B"] * 4, "age": np.arange(10.0)})
    inside = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 0], dtype=bool)
    assert slice_profile(inside, metadata) == "site B 100 % (40 % overall); age 7 (4.5 overall)"
    assert slice_profile(inside, metadata.iloc[:, :0]) == ""


def test_slice_profile_within_each_class_names_what_the_overall_share_hides():
    # A shortcut slice: class 1 without the marker and class 0 with it. Overall its marker
    # share is the dataset's (50 %); within each class it is what sets the slice apart.
    classes = np.repeat([0, 1], 20)
    marker = np.array(["no"] * 18 + ["yes"] * 2 + ["yes"] * 18 + ["no"] * 2)
    inside = np.zeros(40, dtype=bool)
    inside[[18, 19, 38, 39]] = True
    metadata = pd.DataFrame({"marker": marker})
    text = slice_profile(inside, metadata, classes)
    assert text.startswith("marker ")
    assert "within class 0 (2 of them): marker yes 100 % (10 % in the class)" in text
    assert "within class 1 (2 of them): marker no 100 % (10 % in the class)" in text
    assert slice_profile(inside, metadata) == text.split("; within")[0]


def slice_rows(p_values, gaps=(0.2, 0.1, 0.05)):
    excess = [g - 0.05 for g in gaps]
    return pd.DataFrame(
        {
            "excess_gap": excess,
            "excess_low": [g - 0.1 for g in excess],
            "excess_high": [g + 0.1 for g in excess],
            "excess_p_value": [min(1.0, 2 * p) for p in p_values],
            "underperforms": [2 * p < 0.05 for p in p_values],
            "method": "domino",
            "n": 500,
            "slice": [0, 1, 2],
            "size": [40.0, 60.0, 80.0],
            "metric": [0.7, 0.8, 0.85],
            "rest_failure": [0.05, 0.06, 0.07],
            "gap": gaps,
            "gap_low": [g - 0.08 for g in gaps],
            "gap_high": [g + 0.08 for g in gaps],
            "p_value": p_values,
            "profile": ["site B 80 % (20 % overall)", "", ""],
        }
    )


def test_where_it_hurts_names_the_significant_slices_with_their_held_out_numbers():
    from hetcv.verdict import slices_lines

    # Slices 0 and 2 fail beyond the model's confidence (excess p 0.0008 and 0.02), slice 1
    # only by its raw gap (excess p 0.4): 0 and 2 are named.
    lines = slices_lines(slice_rows([0.0004, 0.2, 0.01]), "domino")
    assert lines[0] == "### Where it hurts (n = 500, domino slices)"
    assert lines[4:] == [
        "- Slice 0: about 40 held-out samples per fold, metric 0.700 against 0.950 for the "
        "rest; gap +20.0 points (95 % CI +12.0 to +28.0, p < 0.001); beyond its confidence "
        "+15.0 points (95 % CI +5.0 to +25.0, p < 0.001). It holds site B 80 % (20 % overall).",
        "- Slice 2: about 80 held-out samples per fold, metric 0.850 against 0.930 for the "
        "rest; gap +5.0 points (95 % CI -3.0 to +13.0, p = 0.010); beyond its confidence "
        "+0.0 points (95 % CI -10.0 to +10.0, p = 0.020).",
    ]
    quiet = slices_lines(slice_rows([0.3, 0.6, 0.9], gaps=(0.02, -0.01, -0.03)), "domino")
    assert quiet[4:] == [
        "- No slice underperforms beyond noise: the worst one's held-out gap is +2.0 points "
        "(95 % CI -6.0 to +10.0, p = 0.300); beyond its confidence -3.0 points (95 % CI "
        "-13.0 to +7.0, p = 0.600)."
    ]


def test_the_slices_figure_draws_one_bar_per_method_and_the_images(tmp_path):
    from hetcv.slices_figure import SLICE_IMAGES, figure_slices

    rows = pd.concat(
        [
            slice_rows([0.001, 0.2, 0.01]).assign(outcome_defined=False),
            slice_rows([0.5, 0.5, 0.5]).assign(method="loss", outcome_defined=True).iloc[:1],
        ]
    )
    images = {rank: [np.full((8, 8), 40 * rank, np.uint8)] * SLICE_IMAGES for rank in (0, 1, 2)}
    style = {"width": 6.4, "height": 4.2, "dpi": 60, "palette": "colorblind"}
    figure = figure_slices(rows, images, "domino", style, "toy")
    bars = figure.axes[0].patches
    assert len(bars) == 2
    assert sorted(round(bar.get_width(), 6) for bar in bars) == [20.0, 20.0]
    assert [bar.get_hatch() for bar in bars].count("//") == 1
    assert len(figure.axes) == 1 + 3 * SLICE_IMAGES
    features_only = figure_slices(rows, {}, "domino", style, "toy")
    assert len(features_only.axes) == 1
