import numpy as np
import pandas as pd
import pytest

from hetcv.cluster_pictures import GALLERY_IMAGES, error_flags, gallery_samples, scatter_points
from hetcv.columns import FEATURE_COLUMNS


def test_errors_are_wrong_answers_or_the_worst_tenth_of_squared_errors():
    classified = pd.DataFrame({"correct": [True, False, True]})
    assert list(error_flags(classified, "classification")) == [False, True, False]
    regressed = pd.DataFrame({"sq_error": np.arange(20.0)})
    # The 90th percentile of 0..19 is 17.1: 18 and 19 are the errors.
    assert np.flatnonzero(error_flags(regressed, "regression")).tolist() == [18, 19]


def test_scatter_points_are_the_first_two_components_in_the_folds_order():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, len(FEATURE_COLUMNS)))
    features[:, 0] *= 20  # the first principal direction is feature 0
    fold = pd.DataFrame(features, columns=FEATURE_COLUMNS)
    fold.insert(0, "sample_id", [f"s{i}" for i in range(30)])
    fold.insert(1, "correct", np.arange(30) % 3 > 0)
    clusters = pd.DataFrame(
        {"sample_id": fold["sample_id"][::-1], "cluster": np.arange(30)[::-1] % 4}
    )
    points = scatter_points(fold, clusters, "classification", pca_components=1)
    assert list(points.columns) == ["pc1", "pc2", "cluster", "error"]
    assert list(points["cluster"]) == list(np.arange(30) % 4)
    assert list(points["error"]) == list(np.arange(30) % 3 == 0)
    centred = features[:, 0] - features[:, 0].mean()
    assert abs(np.corrcoef(points["pc1"], centred)[0, 1]) == pytest.approx(1.0, abs=1e-3)


def test_gallery_shows_the_most_typical_and_the_worst_per_cluster():
    clusters = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(12)],
            "cluster": [0] * 10 + [1] * 2,
            "membership": np.linspace(0.1, 1.0, 12),
            "sq_error": [0.0] * 9 + [5.0, 9.0, 1.0],
        }
    )
    samples = gallery_samples(clusters, "regression")
    typical, worst = samples[0]
    assert typical == [f"s{i}" for i in range(9, 9 - GALLERY_IMAGES, -1)]
    # The 90th percentile of the 12 squared errors is 1 + 0.9 · (5 − 1) = 4.6: s9 and s10.
    assert worst == ["s9"] and samples[1] == (["s11", "s10"], ["s10"])
