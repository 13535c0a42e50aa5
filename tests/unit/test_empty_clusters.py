"""An empty cluster (no sample's highest membership) is a named state at every step."""

import logging

import numpy as np
import pandas as pd
import pytest
from helpers import FCM, clustered_fold, synthetic_features

import hetcv.cluster
from hetcv.clustering import Partition
from hetcv.figures import figure2
from hetcv.metrics import ClusterMetric
from hetcv.selected import summarize_selected
from hetcv.summarize import cluster_summary, cv_summary
from hetcv.tables import table2
from hetcv.verdict import dataset_verdict

SELECTED = {"algorithm": "fcm", "k": 3}
STYLE = {"dpi": 50, "width": 4, "height": 3, "palette": "colorblind"}


def partition_leaving_cluster_2_empty(points, algorithm, k, seed, fcm):
    """Memberships whose argmax is cluster 0 or 1 only: cluster 2 gets no sample."""
    n = len(points)
    membership = np.full((n, k), 0.1)
    membership[np.arange(n), np.arange(n) % 2] = 0.8
    return Partition(membership, np.arange(k * points.shape[1], dtype=float).reshape(k, -1))


@pytest.fixture
def empty_fold(monkeypatch, caplog):
    monkeypatch.setattr(hetcv.cluster, "fit_partition", partition_leaving_cluster_2_empty)
    caplog.set_level(logging.WARNING)
    features = synthetic_features(n=60)
    result = clustered_fold(
        features,
        metric=ClusterMetric("accuracy"),
        algorithm="fcm",
        k=[3],
        repeats=2,
        pca_components=4,
        fcm=FCM,
        within="all",
        error_aware=False,
        null_permutations=19,
        seed=0,
    )
    return features, result, caplog.text


def test_an_empty_cluster_is_flagged_and_its_run_cv_is_over_the_others(empty_fold):
    features, result, log_text = empty_fold
    clusters, runs = result.cluster_stats, result.runs
    empty = clusters[clusters["empty"]]
    assert len(empty) == 2 and (empty["size"] == 0).all() and empty["metric"].isna().all()
    with_empty = result.pairs[result.pairs["cluster_b"] == 2]
    assert with_empty["closest_distance"].isna().all()
    assert with_empty["centroid_distance"].notna().all()
    assert (runs["empty_clusters"] == 1).all()
    correct = features["correct"].to_numpy(dtype=float)
    halves = [correct[np.arange(60) % 2 == c].mean() for c in (0, 1)]
    expected = np.std(halves, ddof=1) / np.mean(halves) * 100
    assert runs["cv"].to_numpy() == pytest.approx([expected, expected])
    assert "cluster(s) [2] empty" in log_text and "CV over the other 2 clusters" in log_text


def test_summary_tables_figure_and_verdict_name_the_empty_cluster(empty_fold):
    features, result, _ = empty_fold
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.6, 0.99, size=len(features))
    features = features.assign(
        probability_0=np.where(features["target"] == 0, confidence, 1 - confidence),
        probability_1=np.where(features["target"] == 1, confidence, 1 - confidence),
    )
    # Two folds of the same partition at n = 100 and n = 300; at n = 300 cluster 2 has
    # samples in one run of the four.
    runs, clusters, assignments, held_out = [], [], [], []
    for n in (100, 300):
        for fold in (0, 1):
            key = {"n": n, "fold": fold}
            runs.append(result.runs.assign(**key, fold_metric=0.8))
            clusters.append(result.cluster_stats.assign(**key))
            assignments.append(result.assignments.assign(**key))
            held_out.append(features.assign(**key))
    clusters = pd.concat(clusters, ignore_index=True)
    filled = (clusters["n"] == 300) & (clusters["cluster"] == 2) & (clusters["repeat"] == 1)
    filled &= clusters["fold"] == 0
    clusters.loc[filled, ["size", "score_sum", "metric", "empty"]] = [6, 3.0, 0.5, False]
    summary = cluster_summary(clusters, "accuracy")
    cv = cv_summary(pd.concat(runs))
    cv, summary, _ = summarize_selected(
        cv,
        summary,
        pd.concat(assignments),
        pd.concat(held_out),
        metric=ClusterMetric("accuracy", classes=(0, 1)),
        selected=SELECTED,
        within="all",
        error_aware=False,
        bootstrap=50,
        null_permutations=19,
        seed=0,
    )
    third = summary[summary["cluster"] == 2].set_index("n")
    assert third.loc[100, "empty_runs"] == 4 and third.loc[100, "runs"] == 4
    assert np.isnan(third.loc[100, "metric"]) and np.isnan(third.loc[100, "ci_low"])
    assert third.loc[300, "empty_runs"] == 3 and third.loc[300, "metric"] == 0.5
    assert list(cv["runs_with_empty_cluster"]) == [4, 4]
    assert list(table2(summary, SELECTED)["runs empty"]) == [0, 0, 0, 0, 4, 3]
    # Every statistic is computed over the clusters that exist, and says how many runs lacked one.
    assert (
        cv[["cv", "debiased_cv", "p_value", "p_calibrated", "weakest_metric"]].notna().all().all()
    )
    assert (cv["cv_ci_low"] <= cv["cv"]).all() and (cv["cv"] <= cv["cv_ci_high"]).all()

    figure = figure2(summary, cv, SELECTED, "accuracy", STYLE, "demo")
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert "cluster 2 (empty at n = 100)" in labels
    correlation = pd.DataFrame({"level": ["sample_size"], "n_points": [2], "pearson": [np.nan]})
    text = dataset_verdict(
        "demo",
        "accuracy",
        cv,
        summary,
        correlation,
        pd.DataFrame(),
        pd.DataFrame(),
        pd.DataFrame(),
        pd.DataFrame(),
        SELECTED,
        slice_method="domino",
    )
    assert "At n = 100, cluster 2 was empty (no sample's highest membership) in 4 of 4" in text
    assert "At n = 300, cluster 2 was empty (no sample's highest membership) in 3 of 4" in text
