import numpy as np
import pandas as pd
import pytest

from hetcv.validation import (
    confusion_cell_ranking,
    null_calibration,
    random_partition_ranking,
    setting_label,
    setting_table,
)


def test_setting_labels():
    assert setting_label({"variant": "rare", "prevalence": 0.05}) == "rare 5%"
    assert setting_label({"variant": "noisy", "flip_rate": 0.3}) == "noisy 30%"
    assert setting_label({"variant": "balanced"}) == "nothing planted"


def test_confusion_cell_baseline_picks_the_largest_error_cell_and_ranks_it_by_loss():
    fold = pd.DataFrame(
        {
            "target": [0, 0, 1, 1, 1, 1],
            "predicted_label": [0, 1, 1, 0, 0, 1],
            "loss": [0.1, 2.0, 0.2, 0.9, 3.0, 0.3],
        }
    )
    fold["correct"] = (fold["target"] == fold["predicted_label"]).astype(int)
    in_worst, score = confusion_cell_ranking(fold, np.random.default_rng(0))
    # Cells 0→1 (1 sample) and 1→0 (2 samples) both have accuracy 0: the larger one is worst.
    assert in_worst.tolist() == [False, False, False, True, True, False]
    assert np.argsort(-score)[:2].tolist() == [4, 3]  # the higher loss first
    assert (score[~in_worst] < 0.5).all()


def test_random_partition_keeps_the_cluster_sizes_and_takes_its_least_accurate_cluster():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    correct = rng.integers(0, 2, 100).astype(float)
    in_worst, score = random_partition_ranking(labels, correct, 3, np.random.default_rng(1))
    shuffled = np.random.default_rng(1).permutation(labels)
    accuracy = [correct[shuffled == c].mean() for c in range(3)]
    assert np.array_equal(in_worst, shuffled == np.argmin(accuracy))
    assert in_worst.sum() == np.bincount(labels)[np.argmin(accuracy)]
    assert (score[in_worst] >= 1).all() and (score[~in_worst] < 1).all()


def planted_study(n_per_fold=120, folds=2, repeats=3, seed=0):
    """Features, assignments and runs where cluster 3 is exactly the planted, failing group."""
    rng = np.random.default_rng(seed)
    features, assignments, runs = [], [], []
    for fold in range(folds):
        ids = [f"s{fold}_{i}" for i in range(n_per_fold)]
        planted = np.arange(n_per_fold) < 15
        target = rng.integers(0, 2, n_per_fold)
        correct = np.where(planted, rng.random(n_per_fold) < 0.2, rng.random(n_per_fold) < 0.9)
        predicted = np.where(correct, target, 1 - target)
        features.append(
            pd.DataFrame(
                {
                    "sample_id": ids,
                    "n": 240,
                    "fold": fold,
                    "target": target,
                    "predicted_label": predicted,
                    "correct": correct.astype(int),
                    "loss": rng.random(n_per_fold),
                    "planted": planted,
                }
            )
        )
        labels = np.where(planted, 3, rng.integers(0, 3, n_per_fold))
        for repeat in range(repeats):
            assignments.append(
                pd.DataFrame(
                    {
                        "sample_id": ids,
                        "n": 240,
                        "fold": fold,
                        "repeat": repeat,
                        "cluster": labels,
                        "worst_membership": np.where(planted, 0.9, 0.1)
                        + 0.01 * rng.random(n_per_fold),
                    }
                )
            )
            runs.append(
                {"n": 240, "fold": fold, "repeat": repeat, "worst_cluster": 3, "n_clusters": 4}
            )
    features = pd.concat(features, ignore_index=True)
    planted = features.set_index("sample_id")["planted"]
    return features.drop(columns="planted"), pd.concat(assignments), pd.DataFrame(runs), planted


def cv_row(**values) -> pd.DataFrame:
    """A summary CV row at n = 240 with the given test columns (the rest fixed)."""
    row = {"n": 240, "debiased_cv": 25.0, "p_holm": 0.004, "p_calibrated": 0.02}
    row["p_holm_calibrated"] = 0.04
    return pd.DataFrame([{**row, **values}])


def test_setting_table_scores_a_perfect_worst_cluster_against_the_baselines():
    features, assignments, runs, planted = planted_study()
    cv = cv_row(cv=30.0, null_cv=10.0, excess_cv=np.sqrt(800.0), p_value=0.002)
    table = setting_table(
        "rare", "toy", features, assignments, runs, cv, planted, seed=0
    ).set_index("method")
    method = table.loc["hetcv"]
    assert method["auroc"] == 1.0
    assert method["precision_at_10"] == 1.0
    assert method["precision"] == 1.0 and method["recall"] == 1.0
    assert method["lift"] == pytest.approx(120 / 15)
    assert method["excess_cv"] == np.sqrt(800.0) and method["p_value"] == 0.002
    assert method["p_holm_calibrated"] == 0.04 and method["debiased_cv"] == 25.0
    assert table.loc["random_partition", "auroc"] == pytest.approx(0.5, abs=0.12)
    assert np.isnan(table.loc["random_partition", "cv"])
    correct = features["correct"].to_numpy(bool)
    member = planted.loc[features["sample_id"]].to_numpy()
    assert method["planted_accuracy"] == pytest.approx(correct[member].mean())
    assert method["accuracy"] == pytest.approx(correct.mean())


def test_setting_table_leaves_recovery_empty_when_nothing_is_planted():
    features, assignments, runs, planted = planted_study()
    planted[:] = False
    cv = cv_row(cv=5.0, null_cv=5.0, excess_cv=0.0, p_value=0.5)
    table = setting_table(
        "nothing planted", "toy", features, assignments, runs, cv, planted, seed=0
    )
    assert table[["auroc", "precision_at_10", "lift"]].isna().all().all()
    assert table["planted_share"].eq(0).all()


def test_null_calibration_rejects_about_five_percent():
    features, assignments, _, _ = planted_study(n_per_fold=150, folds=2, repeats=2, seed=3)
    calibration = null_calibration(features, assignments, replicates=300, permutations=99, seed=0)
    row = calibration.iloc[0]
    assert row["replicates"] == 300
    # Binomial sd at 300 replicates is 1.3 points: a correct test lands within 2–9 %.
    assert 0.02 <= row["false_positive_rate"] <= 0.09
    assert row["mean_p_value"] == pytest.approx(0.5, abs=0.06)
    # √(CV² − null CV²) is 0 when the CV is below its null mean (about half the time) and
    # small otherwise; the null CV of 75-sample clusters at 80 % accuracy is about 6 points.
    assert 0 < row["mean_excess_cv"] < 4.0
