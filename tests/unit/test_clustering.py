import itertools

import numpy as np
import pandas as pd
import pytest
from helpers import FCM, clustered_fold, synthetic_features
from scipy.spatial.distance import cdist
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)

from hetcv.cluster import aligned_runs, worst_cluster_runs
from hetcv.clustering import (
    PCA_BLOCK,
    SILHOUETTE_EXACT_LIMIT,
    Partition,
    adjusted_rand,
    canonical_labels,
    closest_distances,
    fit_partition,
    fit_partition_within,
    match_to_reference,
    partition_indices,
    pca_scores,
    silhouette,
    silhouette_rows,
)
from hetcv.metrics import ClusterMetric
from hetcv.partition_measures import geometry


@pytest.mark.parametrize("algorithm", ["kmeans", "fcm", "gmm"])
def test_each_algorithm_recovers_well_separated_blobs(algorithm):
    points, truth = make_blobs(
        n_samples=300,
        centers=4,
        n_features=5,
        cluster_std=1.0,
        center_box=(-20, 20),
        random_state=3,
    )
    part = fit_partition(points, algorithm, 4, seed=0, fcm=FCM)
    assert adjusted_rand_score(truth, part.labels) > 0.95
    assert np.allclose(part.membership.sum(axis=1), 1.0)
    assert part.centers.shape == (4, 5)
    if algorithm == "fcm":
        assert 0.25 < part.extra["fpc"] <= 1.0
    if algorithm == "gmm":
        assert np.isfinite(part.extra["bic"])


@pytest.mark.parametrize("seed", range(5))
def test_adjusted_rand_and_silhouette_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(60, 3))
    first, second = rng.integers(0, 4, size=60), rng.integers(0, 4, size=60)
    second[:30] = first[:30]
    first[first == 3] = 2  # an empty cluster
    assert adjusted_rand(first, second, 4) == pytest.approx(adjusted_rand_score(first, second))
    assert adjusted_rand(first, first, 4) == pytest.approx(1.0)
    distances = cdist(points, points)
    assert silhouette(distances, first, 4) == pytest.approx(silhouette_score(points, first))
    singleton = first.copy()
    singleton[0] = 3
    assert silhouette(distances, singleton, 4) == pytest.approx(silhouette_score(points, singleton))


@pytest.mark.parametrize("seed", range(5))
def test_partition_indices_match_scikit_learn_with_empty_and_degenerate_clusters(seed):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(80, 4)) + 3 * rng.integers(0, 2, size=(80, 1))
    labels = rng.integers(0, 5, size=80)
    labels[labels == 2] = 4  # an empty cluster
    indices = partition_indices(points, labels, 5)
    centred = [points[labels == c] - points[labels == c].mean(axis=0) for c in np.unique(labels)]
    assert indices["sse"] == pytest.approx(sum(float((c**2).sum()) for c in centred))
    assert indices["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(points, labels))
    assert indices["davies_bouldin"] == pytest.approx(davies_bouldin_score(points, labels))
    # Two clusters of coincident points (no spread), and two clusters with one centre.
    stacked = np.repeat(rng.normal(size=(2, 4)), 5, axis=0)
    split = np.repeat([0, 1], 5)
    symmetric = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    for cloud, groups in ((stacked, split), (symmetric, np.array([0, 0, 1, 1]))):
        ours = partition_indices(cloud, groups, 2)
        assert ours["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(cloud, groups))
        # scikit-learn's distances carry rounding of about 1e-8 where ours are exactly 0.
        expected = davies_bouldin_score(cloud, groups)
        assert ours["davies_bouldin"] == pytest.approx(expected, abs=1e-6)


def test_the_silhouette_of_a_subsample_is_within_a_hundredth_of_the_exact_one():
    # 12,000 samples in 5 overlapping blobs: the exact silhouette (scikit-learn's, which
    # works in row chunks) against ours over the seeded 5,000-sample subsample.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 12_000)
    points = rng.normal(scale=2.0, size=(5, 10))[labels] + rng.normal(size=(12_000, 10))
    exact = silhouette_score(points, labels)
    for seed in range(3):
        rows = silhouette_rows(len(points), seed)
        assert len(rows) == SILHOUETTE_EXACT_LIMIT and len(np.unique(rows)) == len(rows)
        sampled = silhouette(cdist(points[rows], points[rows]), labels[rows], 5)
        assert abs(sampled - exact) < 0.01
    assert np.array_equal(silhouette_rows(800, 0), np.arange(800))


def test_closest_distances_match_the_brute_force_minimum():
    rng = np.random.default_rng(1)
    groups = [
        rng.normal(size=(300, 4)),
        rng.normal(loc=3.0, size=(50, 4)),
        rng.normal(loc=-1.0, scale=2.0, size=(400, 4)),
        np.empty((0, 4)),
    ]
    closest = closest_distances(groups)
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        brute = np.linalg.norm(groups[a][:, None] - groups[b][None], axis=2).min()
        assert closest[a, b] == closest[b, a] == pytest.approx(brute)
    assert np.isnan(closest[3]).all() and np.isnan(np.diag(closest)).all()


def test_matching_undoes_any_relabelling():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 5, size=200)
    shuffle = rng.permutation(5)
    relabelled = shuffle[reference]
    new_label_of = match_to_reference(reference, relabelled, 5)
    assert np.array_equal(new_label_of[relabelled], reference)


def test_matching_handles_a_cluster_missing_from_the_run():
    reference = np.array([0, 0, 1, 1, 2, 2])
    run = np.array([2, 2, 0, 0, 0, 0])  # the run never uses label 1
    new_label_of = match_to_reference(reference, run, 3)
    assert sorted(new_label_of) == [0, 1, 2]
    assert new_label_of[2] == 0


def test_canonical_labels_number_clusters_by_size_and_never_by_their_metric():
    size = np.array([10, 5, 0, 8, 5])
    new = canonical_labels(size)
    assert list(new) == [0, 2, 4, 1, 3]  # largest first; ties by label; the empty one last


def test_aligned_runs_do_not_depend_on_label_permutation():
    points, _ = make_blobs(n_samples=120, centers=3, n_features=4, random_state=1)
    runs = aligned_runs(points, None, "kmeans", 3, 4, FCM, 7)
    for run in runs[1:]:
        assert adjusted_rand_score(runs[0].labels, run.labels) > 0.99
        assert np.array_equal(runs[0].labels, run.labels)
    sizes = np.bincount(runs[0].labels, minlength=3)
    assert list(sizes) == sorted(sizes, reverse=True)


def test_relabel_moves_memberships_and_centres_together():
    part = Partition(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[0.0], [5.0]]))
    swapped = part.relabel(np.array([1, 0]))
    assert list(swapped.labels) == [1, 0]
    assert swapped.centers[1, 0] == 0.0 and swapped.membership[0, 1] == 0.9


def test_within_class_clustering_never_mixes_classes():
    points, _ = make_blobs(n_samples=200, centers=4, n_features=3, random_state=2)
    groups = np.arange(200) % 2
    part = fit_partition_within(points, groups, "kmeans", 3, seed=0, fcm=FCM)
    assert part.k == 6
    assert set(part.labels[groups == 0]) <= {0, 1, 2}
    assert set(part.labels[groups == 1]) <= {3, 4, 5}


def test_pca_scores_in_blocks_equal_scikit_learns_full_svd():
    # More rows than one block, float32 features as the features tables hold them, and
    # components of distinct variance, as PCA needs for a well-defined answer.
    rng = np.random.default_rng(0)
    rows = PCA_BLOCK + 1500
    features = (rng.normal(size=(rows, 40)) * np.linspace(3.0, 0.5, 40)).astype(np.float32)
    expected = PCA(n_components=6, svd_solver="full").fit_transform(features.astype(np.float64))
    assert np.allclose(pca_scores(features, 6), expected, atol=1e-8)


def test_pca_is_capped_by_the_fold_size(caplog):
    scores = pca_scores(np.random.default_rng(0).normal(size=(6, 512)), 10)
    assert scores.shape == (6, 5)
    assert "capped at 5" in caplog.text


def test_geometry_matches_hand_computed_distances():
    points = np.array([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [13.0, 4.0]])
    part = Partition(np.eye(2)[[0, 0, 1, 1]], np.array([[0.0, 1.0], [10.0, 0.0]]))
    clusters, pairs = geometry(points, part)
    assert clusters[0] == pytest.approx(
        {"dist_min": 1.0, "dist_max": 1.0, "dist_mean": 1.0, "dist_sd": 0.0}
    )
    assert clusters[1] == pytest.approx(
        {"dist_min": 0.0, "dist_max": 5.0, "dist_mean": 2.5, "dist_sd": np.sqrt(12.5)}
    )
    assert pairs == [
        pytest.approx(
            {
                "cluster_a": 0,
                "cluster_b": 1,
                "centroid_distance": np.sqrt(101.0),
                "closest_distance": 10.0,
            }
        )
    ]


def test_fold_analysis_tables_are_consistent():
    result = clustered_fold(
        synthetic_features(),
        metric=ClusterMetric("accuracy"),
        algorithm="fcm",
        k=[2, 3],
        repeats=3,
        pca_components=5,
        fcm=FCM,
        within="all",
        error_aware=True,
        null_permutations=49,
        seed=1,
    )
    assert len(result.assignments) == 80 * 2 * 3
    assert len(result.runs) == 2 * 3 and len(result.cluster_stats) == (2 + 3) * 3
    assert len(result.pairs) == (1 + 3) * 3
    sizes = result.cluster_stats.groupby(["k", "repeat"])["size"].sum()
    assert (sizes == 80).all()
    for _, run in result.runs.iterrows():
        assert len(run["null_cv"]) == 49
        clusters = result.cluster_stats[
            (result.cluster_stats["k"] == run["k"])
            & (result.cluster_stats["repeat"] == run["repeat"])
        ]
        metric = clusters["metric"].to_numpy()
        assert run["cv"] == pytest.approx(np.std(metric, ddof=1) / np.mean(metric) * 100)
        assert run["worst_cluster"] == np.argmin(metric)
    assert len(result.cluster_stats["centroid"].iloc[0]) == 6  # 5 components + the loss column


@pytest.mark.parametrize("within, error_aware", [("all", False), ("class", True)])
def test_worst_cluster_runs_are_the_fold_analysis_runs(within, error_aware):
    options = {
        "metric": ClusterMetric("accuracy"),
        "algorithm": "fcm",
        "repeats": 3,
        "pca_components": 5,
        "fcm": FCM,
        "within": within,
        "error_aware": error_aware,
        "seed": 4,
    }
    full = clustered_fold(synthetic_features(), k=[3], null_permutations=19, **options)
    assignments, runs = worst_cluster_runs(synthetic_features(), k=3, **options)
    pd.testing.assert_frame_equal(assignments, full.assignments)
    pd.testing.assert_frame_equal(runs, full.runs[list(runs.columns)])


def test_clusters_built_from_the_loss_get_no_p_value():
    result = clustered_fold(
        synthetic_features(),
        metric=ClusterMetric("accuracy"),
        algorithm="kmeans",
        k=[2],
        repeats=2,
        pca_components=5,
        fcm=FCM,
        within="all",
        error_aware=True,
        null_permutations=19,
        seed=1,
    )
    assert result.runs["p_value"].isna().all() and result.runs["cv"].notna().all()


def test_within_class_null_keeps_the_accuracy_gap_between_classes():
    # Class 0 always right, class 1 right half the time, clusters unrelated to correctness
    # within each class: the only spread is the class gap, which within-class clustering
    # builds in and a within-class null must reproduce. Two clusters per class: any
    # within-class permutation keeps class 0's clusters at accuracy 1 and class 1's near 0.5,
    # a CV of about 38 %; permuting across classes would give about 10 %.
    features = synthetic_features(n=120, seed=4)
    target = np.arange(120) % 2
    features["target"] = target
    features["correct"] = (target == 0) | (np.arange(120) % 4 == 1)
    result = clustered_fold(
        features,
        metric=ClusterMetric("accuracy"),
        algorithm="kmeans",
        k=[2],
        repeats=1,
        pca_components=5,
        fcm=FCM,
        within="class",
        error_aware=False,
        null_permutations=199,
        seed=0,
    )
    run = result.runs.iloc[0]
    assert run["n_clusters"] == 4
    assert min(run["null_cv"]) > 30
    assert run["p_value"] > 0.01


@pytest.mark.parametrize("algorithm", ["kmeans", "gmm"])
def test_closest_distances_of_a_partition_match_the_brute_force_minimum(algorithm):
    # Touching clusters (a partition of one cloud), where the slab filter prunes most points,
    # and a mixture's, whose clusters overlap along the line between their means.
    rng = np.random.default_rng(2)
    points = rng.normal(size=(1500, 5)) * np.array([3.0, 2.0, 1.0, 1.0, 0.5])
    labels = fit_partition(points, algorithm, 5, seed=0, fcm=FCM).labels
    groups = [points[labels == c] for c in range(5)]
    closest = closest_distances(groups)
    brute = cdist(points, points)
    for a, b in itertools.combinations(range(5), 2):
        assert closest[a, b] == pytest.approx(brute[np.ix_(labels == a, labels == b)].min())


def test_closest_distances_survive_pairs_lying_along_the_line_between_the_means():
    # Points on one line: every distance equals the gap between projections, where rounding
    # decides whether the bound's own pair passes the filter.
    rng = np.random.default_rng(3)
    line = np.array([0.6, 0.8, 0.0])
    first = rng.uniform(-5.0, 0.0, size=(400, 1)) * line
    second = rng.uniform(0.3, 5.0, size=(300, 1)) * line
    brute = cdist(first, second).min()
    assert closest_distances([first, second])[0, 1] == pytest.approx(brute, rel=1e-9)
