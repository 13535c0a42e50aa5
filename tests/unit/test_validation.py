import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hetcv.errors import HetcvError
from hetcv.validation import (
    PlantedDataset,
    candidate_settings,
    ceiling,
    chosen_settings,
    half_recovery,
    scored_table,
    setting_label,
    split_roles,
    tune,
)
from hetcv.validation_report import paired_difference, summary_markdown

CLUSTERING = {"algorithm": "kmeans", "k": 4, "fcm": {"m": 2.0, "error": 1e-5, "maxiter": 100}}


def test_setting_labels():
    assert setting_label({"variant": "rare", "prevalence": 0.05}) == "rare 5%"
    assert setting_label({"variant": "noisy", "flip_rate": 0.3}) == "noisy 30%"
    assert setting_label({"variant": "balanced"}) == "nothing planted"


def test_ceiling_by_hand():
    fold = pd.DataFrame(
        {"sample_id": list("abcdefghij"), "correct": [0, 0, 1, 1, 1, 1, 1, 1, 0, 1]}
    )
    planted = pd.Series([True] * 4 + [False] * 6, index=list("abcdefghij"))
    found = ceiling([fold.iloc[:5], fold.iloc[5:]], planted)
    assert found["planted_accuracy"] == 0.5 and found["other_accuracy"] == pytest.approx(5 / 6)
    assert found["planted_error_share"] == pytest.approx(2 / 3)
    assert found["planted_share"] == 0.4
    expected = stats.fisher_exact([[2, 2], [1, 5]], alternative="greater").pvalue
    assert found["planted_gap_p"] == pytest.approx(expected)


def test_half_recovery_scores_each_evaluation_half_separately():
    # Half 0 ranks the planted samples first, half 1 last.
    per_sample = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(40)],
            "fold": 0,
            "half": np.repeat([0, 1], 20),
            "slice": 0,
            "score": np.r_[np.arange(20, 0, -1), np.arange(20)],
        }
    )
    planted = pd.Series(np.tile(np.arange(20) < 10, 2), index=per_sample["sample_id"])
    found = half_recovery(per_sample, planted)
    assert found["precision_at_10"] == pytest.approx((1.0 + 0.0) / 2)
    assert found["auroc"] == pytest.approx((1.0 + 0.0) / 2)
    assert np.isnan(half_recovery(per_sample, planted & False)["auroc"])


def test_chosen_settings_take_the_best_mean_precision_and_name_the_default():
    tuning = pd.DataFrame(
        {
            "method": ["domino"] * 4 + ["george"] * 2,
            "settings": [json.dumps({"gamma": g}) for g in (1, 1, 10, 10)]
            + ['{"components": 3}'] * 2,
            "dataset": ["a", "b"] * 3,
            "precision_at_10": [0.2, 0.4, 0.6, 0.8, 0.9, 0.9],
            "auroc": [0.5] * 6,
        }
    )
    settings, default = chosen_settings(tuning)
    assert settings == {"domino": {"gamma": 10}, "george": {"components": 3}}
    assert default == "george"


def test_candidates_cover_the_grid_and_both_embeddings():
    candidates = candidate_settings("domino", ["model", "pixels"])
    assert len(candidates) == 4 * 2 * 2
    assert {c["embedding"] for c in candidates} == {"model", "pixels"}
    assert candidate_settings("worst_cluster", ["model"]) == [
        {"embedding": "model", "pca_components": 10},
        {"embedding": "model", "pca_components": 25},
    ]


def test_paired_difference_is_a_t_interval_over_seeds():
    table = pd.DataFrame(
        {
            "setting": "rare 10%",
            "draw": np.repeat([1, 2, 3], 2),
            "method": ["a", "b"] * 3,
            "precision_at_10": [0.9, 0.5, 0.8, 0.6, 1.0, 0.4],
        }
    )
    row = paired_difference(table, "a", "b").iloc[0]
    difference = np.array([0.4, 0.2, 0.6])
    half = stats.t.ppf(0.975, 2) * difference.std(ddof=1) / np.sqrt(3)
    assert row["difference"] == pytest.approx(0.4)
    assert row["low"] == pytest.approx(0.4 - half) and row["seeds"] == 3


def blob_dataset(name, source, seed, planted=50, n=600):
    """A two-fold planted dataset: a failing blob of class 1 in both embeddings."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"{name}{i}" for i in range(n)])
    member = (np.arange(n) < planted) & (source["variant"] != "balanced")
    target = np.where(member, 1, rng.integers(0, 2, n))
    failure = rng.random(n) < np.where(member, 0.6, 0.05)
    predicted = np.where(failure, 1 - target, target)
    points = rng.normal(size=(n, 12))
    points[member, :3] += 4
    images = (np.clip(points.reshape(n, 3, 4) * 30 + 128, 0, 255)).astype(np.uint8)
    fold_of = rng.permutation(np.arange(n) % 2)
    folds = []
    for fold in (0, 1):
        rows = fold_of == fold
        frame = pd.DataFrame(
            {
                "sample_id": ids[rows],
                "n": n,
                "fold": fold,
                "target": target[rows],
                "prediction": predicted[rows],
                "predicted_label": predicted[rows],
                "correct": (~failure[rows]).astype(int),
                "loss": rng.random(rows.sum()) + failure[rows],
                "probability_0": np.where(predicted[rows] == 0, 0.8, 0.2),
                "probability_1": np.where(predicted[rows] == 1, 0.8, 0.2),
            }
        )
        features = pd.DataFrame(points[rows], columns=[f"f{i:03d}" for i in range(12)])
        folds.append(pd.concat([frame, features], axis=1))
    manifest = pd.DataFrame({"sample_id": ids, "planted": member})
    return PlantedDataset(name, source, manifest, images, folds)


def test_the_benchmark_tunes_on_one_digit_and_scores_the_other():
    rare = {"kind": "digits", "variant": "rare", "prevalence": 0.1}
    datasets = [
        blob_dataset("tune", {**rare, "digit": 3, "draw": 1}, 0),
        *(blob_dataset(f"test{d}", {**rare, "digit": 8, "draw": d}, d) for d in (1, 2)),
        blob_dataset("null", {"kind": "digits", "variant": "balanced", "draw": 1}, 9),
    ]
    tuning_sets, test_sets = split_roles(datasets, 3)
    assert [d.name for d in tuning_sets] == ["tune"]
    tuning = tune(tuning_sets, ["model"], CLUSTERING, seed=0)
    assert set(tuning["dataset"]) == {"tune"}
    settings, default = chosen_settings(tuning)
    table = scored_table(test_sets, settings, CLUSTERING, seed=0)
    assert set(table["dataset"]) == {"test1", "test2", "null"}
    planted = table[table["setting"] == "rare 10%"].set_index(["draw", "method"])
    assert planted.loc[(1, default), "precision_at_10"] >= 0.8
    assert planted.loc[(1, "random"), "precision_at_10"] < 0.5
    assert planted.loc[(1, default), "significant"]
    null = table[table["setting"] == "nothing planted"]
    assert null["precision_at_10"].isna().all()
    summary = summary_markdown(table, tuning, settings, default)
    assert f"**{default}**" in summary and "Paired across seeds" in summary
    assert "nothing planted" in summary


def test_roles_need_a_tuning_digit_a_test_digit_and_a_null():
    rare = {"kind": "digits", "variant": "rare", "prevalence": 0.1}
    tuning = blob_dataset("tune", {**rare, "digit": 3}, 0, n=60)
    test = blob_dataset("test", {**rare, "digit": 8}, 1, n=60)
    null = blob_dataset("null", {"kind": "digits", "variant": "balanced"}, 2, n=60)
    with pytest.raises(HetcvError, match="validation.tuning_digit: no planted dataset"):
        split_roles([test, null], 3)
    with pytest.raises(HetcvError, match="'balanced'"):
        split_roles([tuning, test], 3)
    with pytest.raises(HetcvError, match="nothing is left to test"):
        split_roles([tuning, null], 3)


def test_digit_spread_is_the_chi_square_of_correctness_by_digit():
    from hetcv.validation import digit_spread

    digit = np.repeat([3, 5, 9], [40, 40, 40])
    correct = np.r_[np.arange(40) < 36, np.arange(40) < 38, np.arange(40) < 20]
    found = digit_spread(correct, digit)
    table = [[4, 36], [2, 38], [20, 20]]
    assert found["digits_differ_p"] == pytest.approx(stats.chi2_contingency(table)[1])
    assert found["hardest_digit"] == 9 and found["hardest_digit_accuracy"] == 0.5
