import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_STUDY

from hetcv.columns import FEATURE_COLUMNS
from hetcv.stats import wilson_interval


def fold_dirs(workdir, dataset):
    settings = TINY_STUDY["datasets"][dataset]
    for n in settings["sample_sizes"]:
        for fold in range(settings["folds"]):
            yield n, fold, workdir / "results" / dataset / f"n{n}" / f"fold{fold}"


def test_prepare_writes_uint8_images_in_manifest_order(tiny_study):
    images = np.load(tiny_study / "results/udigits/data/images.npy")
    manifest = pd.read_parquet(tiny_study / "results/udigits/data/manifest.parquet")
    assert images.shape == (1667, 32, 32) and images.dtype == np.uint8
    assert list(manifest.columns) == ["sample_id", "target", "subgroup"]
    assert len(manifest) == len(images)


def test_splits_are_nested_and_each_fold_is_held_out_once(tiny_study):
    small = pd.read_parquet(tiny_study / "results/udigits/splits/n200.parquet")
    large = pd.read_parquet(tiny_study / "results/udigits/splits/n400.parquet")
    assert list(small.columns) == ["sample_id", "index", "fold"]
    assert set(small["sample_id"]) < set(large["sample_id"])
    for n, split in ((200, small), (400, large)):
        features = pd.concat(
            pd.read_parquet(d / "features.parquet")
            for m, _, d in fold_dirs(tiny_study, "udigits")
            if m == n
        )
        assert sorted(features["sample_id"]) == sorted(split["sample_id"])


def test_every_fold_writes_model_history_and_features(tiny_study):
    for dataset, metric in (("udigits", "heldout_accuracy"), ("digitvalue", "heldout_rmse")):
        epochs = TINY_STUDY["datasets"][dataset]["train"]["epochs"]
        for _, fold, directory in fold_dirs(tiny_study, dataset):
            history = pd.read_csv(directory / "history.csv")
            assert list(history["epoch"]) == list(range(1, epochs + 1))
            assert history[metric].notna().all()
            checkpoint = torch.load(directory / "model.pt", weights_only=True)
            assert checkpoint["arch"] == "resnet18"
            features = pd.read_parquet(directory / "features.parquet")
            assert list(features.columns[-512:]) == FEATURE_COLUMNS
            assert (features["fold"] == fold).all()
            assert np.isfinite(features[FEATURE_COLUMNS].to_numpy()).all()
            assert features["f000"].dtype == np.float32


def test_classification_features_schema_and_accuracy_beats_chance(tiny_study):
    features = pd.concat(
        pd.read_parquet(d / "features.parquet")
        for n, _, d in fold_dirs(tiny_study, "udigits")
        if n == 400
    )
    assert list(features.columns[:11]) == [
        "sample_id",
        "n",
        "fold",
        "target",
        "prediction",
        "predicted_label",
        "correct",
        "loss",
        "probability_0",
        "probability_1",
        "f000",
    ]
    assert np.allclose(features["probability_1"], features["prediction"])
    assert np.allclose(features[["probability_0", "probability_1"]].sum(axis=1), 1)
    assert features["prediction"].between(0, 1).all()
    assert (features["correct"] == (features["predicted_label"] == features["target"])).all()
    majority = max(features["target"].mean(), 1 - features["target"].mean())
    assert features["correct"].mean() > majority + 0.1


def test_regression_features_carry_squared_errors(tiny_study):
    features = pd.read_parquet(tiny_study / "results/digitvalue/n100/fold0/features.parquet")
    assert list(features.columns[:7]) == [
        "sample_id",
        "n",
        "fold",
        "target",
        "prediction",
        "sq_error",
        "loss",
    ]
    assert np.allclose(features["sq_error"], (features["prediction"] - features["target"]) ** 2)


def test_train_jobs_are_benchmarked(tiny_study):
    tables = list((tiny_study / "logs/benchmarks/train").rglob("*.tsv"))
    assert len(tables) == 4 + 2
    assert all(pd.read_csv(t, sep="\t")["s"].iloc[0] > 0 for t in tables)


def test_summaries_aggregate_the_fold_tables(tiny_study):
    summary = tiny_study / "results/udigits/summary"
    runs = pd.concat(
        pd.read_parquet(tiny_study / f"results/udigits/n{n}/cluster_runs_{algorithm}.parquet")
        for n in TINY_STUDY["datasets"]["udigits"]["sample_sizes"]
        for algorithm in TINY_STUDY["clustering"]["algorithms"]
    )
    cv = pd.read_parquet(summary / "cv.parquet")
    assert len(cv) == 3 * 3 * 2  # algorithms × k × sample sizes
    at = (cv["algorithm"] == "fcm") & (cv["k"] == 3)
    assert set(cv.loc[at, "role"]) == {"selected"} and set(cv.loc[~at, "role"]) == {"exploratory"}
    assert cv.loc[~at, "above_noise_floor"].isna().all()  # exploration: no significance flag

    # Exploration: the cluster jobs' permutation nulls, averaged over folds × repeats.
    row = cv[(cv["algorithm"] == "kmeans") & (cv["k"] == 2) & (cv["n"] == 400)].iloc[0]
    explored = runs[(runs["algorithm"] == "kmeans") & (runs["k"] == 2) & (runs["n"] == 400)]
    assert row["cv"] == pytest.approx(explored["cv"].mean())
    null = np.vstack(explored["null_cv"].to_numpy()).mean(axis=0)
    assert row["null_cv"] == pytest.approx(null.mean())
    assert row["excess_cv"] == pytest.approx(np.sqrt(max(0, row["cv"] ** 2 - (null**2).mean())))
    assert row["p_value"] == pytest.approx((1 + (null >= row["cv"]).sum()) / (1 + len(null)))
    assert np.isnan(row["debiased_cv"]) and np.isnan(row["cv_ci_low"])

    # The selected clustering: intervals that contain their estimates, Holm across sizes.
    chosen = cv[at].sort_values("n")
    runs = runs[(runs["algorithm"] == "fcm") & (runs["k"] == 3)]
    assert chosen["cv"].to_numpy() == pytest.approx(runs.groupby("n")["cv"].mean().to_numpy())
    assert (chosen["cv_ci_low"] <= chosen["cv"]).all() and (
        chosen["cv"] <= chosen["cv_ci_high"]
    ).all()
    assert (chosen["debiased_cv_ci_low"] <= chosen["debiased_cv"]).all()
    assert (chosen["debiased_cv"] <= chosen["debiased_cv_ci_high"]).all()
    assert (chosen["debiased_cv"] <= chosen["debiased_cv_upper"]).all()
    assert (chosen["debiased_cv_upper"] <= chosen["debiased_cv_ci_high"]).all()
    # The parametric bootstrap from mean accuracy 0.95, with its test of "no spread".
    parametric = chosen["debiased_method"] == "parametric bootstrap"
    assert chosen["debiased_method"].isin(["parametric bootstrap", "normal model"]).all()
    assert chosen.loc[parametric, "p_no_spread"].between(0, 1).all()
    assert chosen.loc[~parametric, "p_no_spread"].isna().all()
    # The same τ on the error scale: τ/mean error ≥ τ/mean accuracy when accuracy > ½.
    assert (chosen["error_cv"] >= chosen["debiased_cv"]).all()
    assert (chosen["error_cv_ci_low"] <= chosen["error_cv"]).all()
    assert (chosen["error_cv"] <= chosen["error_cv_ci_high"]).all()
    assert (chosen["weakest_error_ratio"] >= 0).all()
    assert chosen["i_squared"].between(0, 1).all() and chosen["q_p_value"].between(0, 1).all()
    smaller, larger = sorted(chosen["p_value"])
    assert sorted(chosen["p_holm"]) == pytest.approx(
        sorted([min(1, 2 * smaller), max(min(1, 2 * smaller), larger)])
    )
    assert (chosen["above_noise_floor"] == (chosen["p_holm"] < 0.05)).all()
    assert chosen["p_calibrated"].between(0, 1).all()
    assert chosen["weakest_cluster"].isin([0, 1, 2]).all()
    assert (chosen["weakest_ci_low"] <= chosen["weakest_ci_high"]).all()
    row = chosen[chosen["n"] == 400].iloc[0]
    assert row["test_metric"] == pytest.approx(
        runs[runs["n"] == 400].groupby("fold")["fold_metric"].first().mean()
    )
    clusters = pd.read_parquet(summary / "cluster_stats.parquet")
    selected = clusters[(clusters["algorithm"] == "fcm") & (clusters["k"] == 3)]
    assert selected.groupby("n")["size_pct"].sum().round(6).eq(100).all()
    assert (selected["ci_method"] == "wilson").all()
    assert (selected["null_band_low"] <= selected["null_band_high"]).all()
    # Wilson intervals on the counts pooled over folds, exploration and selection alike.
    stats = pd.read_parquet(tiny_study / "results/udigits/n400/cluster_stats_fcm.parquet")
    pooled = (
        stats[stats["k"] == 2]
        .groupby(["cluster", "repeat"])[["score_sum", "size"]]
        .sum()
        .groupby("cluster")
        .mean()
    )
    explored = clusters[(clusters["algorithm"] == "fcm") & (clusters["k"] == 2)]
    worst = explored[explored["n"] == 400].iloc[-1]
    assert (worst["ci_low"], worst["ci_high"]) == pytest.approx(
        wilson_interval(*pooled.loc[1, ["score_sum", "size"]])
    )
    table1 = pd.read_parquet(summary / "cluster_pairs.parquet")
    assert len(table1[(table1["algorithm"] == "fcm") & (table1["k"] == 3)]) == 3 * 2
    subgroups = pd.read_parquet(summary / "subgroups.parquet")
    assert set(subgroups["subgroup"]) == set(range(10))
    assert subgroups["auroc"].between(0, 1).all()
    correlation = pd.read_parquet(summary / "correlation.parquet")
    assert list(correlation["level"]) == ["sample_size", "sample_size_debiased", "fold"]
    assert list(correlation["n_points"]) == [2, 2, 4]


def test_regression_summary_uses_bootstrap_cluster_intervals(tiny_study):
    clusters = pd.read_parquet(tiny_study / "results/digitvalue/summary/cluster_stats.parquet")
    selected = clusters[(clusters["algorithm"] == "fcm") & (clusters["k"] == 3)]
    assert (selected["ci_method"] == "fold bootstrap").all()
    # 1 − NRMSE is at most 1 in every cluster that had samples; a cluster empty in every run
    # has no metric at all, and says so.
    everywhere_empty = selected["empty_runs"] == selected["runs"]
    assert (selected.loc[~everywhere_empty, "metric"] <= 1).all()
    assert selected.loc[everywhere_empty, "metric"].isna().all()
    assert pd.read_parquet(tiny_study / "results/digitvalue/summary/subgroups.parquet").empty


def test_subgroup_variants_compare_the_clustering_options(tiny_study):
    variants = pd.read_parquet(tiny_study / "results/udigits/summary/subgroup_variants.parquet")
    assert set(variants["variant"]) == {
        "plain",
        "within_class",
        "error_aware",
        "within_class_error_aware",
    }
    assert set(variants["n"]) == {200, 400}
    counts = variants.groupby("variant")["n_clusters"].first()
    assert counts["plain"] == 3 and counts["within_class"] == 6
    eights = variants[variants["subgroup"] == 8]
    assert eights["lift"].notna().all() and eights["auroc"].between(0, 1).all()
    assert not (tiny_study / "results/digitvalue/summary/subgroup_variants.parquet").exists()
