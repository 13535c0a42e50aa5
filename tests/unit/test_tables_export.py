import numpy as np
import pandas as pd
import pytest

from hetcv.export_clusters import consensus_clusters
from hetcv.tables import CV_COLUMNS, cv_table, table1, table2

SELECTED = {"algorithm": "fcm", "k": 3}


def test_consensus_takes_the_majority_label_over_repeats():
    assignments = pd.DataFrame(
        {
            "sample_id": ["a"] * 3 + ["b"] * 2,
            "n": 100,
            "fold": 0,
            "repeat": [0, 1, 2, 0, 1],
            "cluster": [2, 1, 2, 0, 1],
            "membership": [0.9, 0.6, 0.7, 0.8, 0.8],
        }
    )
    table = consensus_clusters(assignments).set_index("sample_id")
    assert table.loc["a", "cluster"] == 2
    assert table.loc["a", "membership"] == pytest.approx(0.8)
    assert table.loc["b", "cluster"] == 0  # a tie goes to the lower cluster number


def test_table1_lays_out_pairs_as_columns_per_distance_and_n():
    pairs = pd.DataFrame(
        {
            "algorithm": "fcm",
            "k": 3,
            "n": [100] * 3 + [300] * 3,
            "cluster_a": [0, 0, 1] * 2,
            "cluster_b": [1, 2, 2] * 2,
            "centroid_distance": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "closest_distance": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        }
    )
    other = pairs.assign(algorithm="kmeans", centroid_distance=99.0)
    table = table1(pd.concat([pairs, other]), SELECTED)
    assert list(table.columns) == ["distance", "n", "0-1", "0-2", "1-2"]
    assert table.iloc[1][["0-1", "0-2", "1-2"]].tolist() == [4.0, 5.0, 6.0]
    assert table.iloc[2]["distance"] == "Closest-point distance"
    assert table.iloc[3]["1-2"] == 0.6


def test_table2_and_cv_table_pick_the_selected_clustering():
    clusters = pd.DataFrame(
        {
            "algorithm": ["fcm", "fcm", "gmm"],
            "k": 3,
            "n": 100,
            "cluster": [1, 0, 0],
            "dist_min": [1.0, 2.0, 9.0],
            "dist_max": [3.0, 4.0, 9.0],
            "dist_mean": [2.0, 3.0, 9.0],
            "dist_sd": [0.5, 0.6, 9.0],
            "empty_runs": [0, 2, 0],
        }
    )
    table = table2(clusters, SELECTED)
    assert table.to_dict("list") == {
        "cluster": [0, 1],
        "n": [100, 100],
        "min": [2.0, 1.0],
        "max": [4.0, 3.0],
        "mean": [3.0, 2.0],
        "sd": [0.6, 0.5],
        "runs empty": [2, 0],
    }
    selected_columns = dict.fromkeys(CV_COLUMNS, 0.5)
    cv = pd.DataFrame(
        {
            **selected_columns,
            "algorithm": "fcm",
            "k": [3, 3, 3],
            "n": [300, 100, 50],
            "test_metric": [0.9, 0.8, 0.7],
            "cv": [4.0, 12.0, 20.0],
            "p_holm": [0.3, 0.01, np.nan],
            "p_holm_calibrated": [np.nan, 0.02, 0.2],
            "runs_with_empty_cluster": [0, 3, 0],
        }
    )
    table = cv_table(pd.concat([cv, cv.assign(algorithm="gmm")]), SELECTED, "accuracy")
    assert list(table.columns) == ["n", "test accuracy", *CV_COLUMNS[1:], "reading"]
    assert list(table["n"]) == [50, 100, 300]
    assert list(table["test accuracy"]) == [0.7, 0.8, 0.9]
    assert list(table["runs_with_empty_cluster"]) == [0, 3, 0]
    assert list(table["reading"]) == [
        "no valid test: the clusters were built from the loss",
        "clusters differ beyond sampling noise; errors more uneven than the model's own "
        "confidence predicts",
        "within sampling noise: no evidence of heterogeneity",
    ]


def test_per_sample_csvs_keep_numeric_ids_as_text(tmp_path):
    from hetcv.io import read_per_sample

    path = tmp_path / "clusters_per_sample.csv"
    pd.DataFrame({"sample_id": ["1377", "0042"], "cluster": [0, 1]}).to_csv(path, index=False)
    assert read_per_sample(path)["sample_id"].tolist() == ["1377", "0042"]
