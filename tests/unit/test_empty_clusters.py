"""An empty cluster (no sample's highest membership) is a named state at every step."""

import logging

import numpy as np
import pandas as pd
import pytest
from test_cluster import FCM, synthetic_features

import hetcv.analysis
from hetcv.analysis import analyse_fold
from hetcv.cluster import Partition
from hetcv.figures import figure2
from hetcv.summary import cluster_summary, cv_summary
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
    monkeypatch.setattr(hetcv.analysis, "fit_partition", partition_leaving_cluster_2_empty)
    caplog.set_level(logging.WARNING)
    features = synthetic_features(n=60)
    result = analyse_fold(
        features,
        task="classification",
        normaliser=1.0,
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
    clusters, runs = result.clusters, result.runs
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
    _, result, _ = empty_fold
    runs = result.runs.assign(n=100, fold=0, fold_metric=0.8)
    clusters = result.clusters.assign(n=100, fold=0)
    # A second sample size where cluster 2 is empty in one run of two.
    later = clusters.assign(n=300)
    filled = (later["cluster"] == 2) & (later["repeat"] == 1)
    later.loc[filled, ["size", "score_sum", "metric", "empty"]] = [6, 3.0, 0.5, False]
    summary = cluster_summary(pd.concat([clusters, later]), "classification")
    cv = cv_summary(pd.concat([runs, runs.assign(n=300)]))
    third = summary[summary["cluster"] == 2].set_index("n")
    assert third.loc[100, "empty_runs"] == 2 and third.loc[100, "runs"] == 2
    assert np.isnan(third.loc[100, "metric"]) and np.isnan(third.loc[100, "ci_low"])
    assert third.loc[300, "empty_runs"] == 1 and third.loc[300, "metric"] == 0.5
    assert list(cv["runs_with_empty_cluster"]) == [2, 2]
    assert list(table2(summary, SELECTED)["runs empty"]) == [0, 0, 0, 0, 2, 1]

    cv["cv_ci_low"], cv["cv_ci_high"] = cv["cv"] - 1, cv["cv"] + 1
    figure = figure2(summary, cv, SELECTED, "classification", STYLE, "demo")
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert "cluster 2 (empty at n = 100)" in labels
    correlation = pd.DataFrame({"level": ["sample_size"], "n_points": [2], "pearson": [np.nan]})
    text = dataset_verdict(
        "demo", "classification", cv, summary, correlation, pd.DataFrame(), SELECTED
    )
    assert "At n = 100, cluster 2 was empty (no sample's highest membership) in 2 of 2" in text
    assert "At n = 300, cluster 2 was empty (no sample's highest membership) in 1 of 2" in text
