"""What is measured of one partition: its validity indices, geometry and stability over repeats."""

from __future__ import annotations

import numpy as np

from hetcv.clustering import (
    Partition,
    adjusted_rand,
    closest_distances,
    partition_indices,
    silhouette,
)


def validity(
    points: np.ndarray, part: Partition, sampled: np.ndarray, sampled_distances: np.ndarray
) -> dict[str, float]:
    """Elbow SSE, silhouette, Calinski–Harabasz, Davies–Bouldin and the smallest cluster.

    Parameters
    ----------
    points : ndarray of shape (n_samples, n_dims)
        Samples in the clustered space.
    part : Partition
        The run to score.
    sampled : ndarray of int
        The rows the silhouette is computed on (:func:`hetcv.clustering.silhouette_rows`).
    sampled_distances : ndarray of shape (len(sampled), len(sampled))
        Their Euclidean distances, computed once per fold.

    Returns
    -------
    indices : dict of str to float
        ``sse`` (within-cluster sum of squares), ``min_cluster_fraction`` (0 with an empty
        cluster), and ``silhouette``, ``calinski_harabasz`` and ``davies_bouldin``, which are
        NaN unless 2 to n_samples − 1 clusters are non-empty.
    """
    labels = part.labels
    size = np.bincount(labels, minlength=part.k)
    used = np.count_nonzero(size)
    indices = {"min_cluster_fraction": float(size.min() / len(labels))}
    if 2 <= used <= len(labels) - 1:
        indices.update(partition_indices(points, labels, part.k))
        indices["silhouette"] = silhouette(sampled_distances, labels[sampled], part.k)
    else:  # one cluster, or one sample in each
        sse = ((points - points.mean(axis=0)) ** 2).sum() if used == 1 else 0.0
        indices.update(
            sse=float(sse), silhouette=np.nan, calinski_harabasz=np.nan, davies_bouldin=np.nan
        )
    return indices


def geometry(points: np.ndarray, part: Partition) -> tuple[list[dict], list[dict]]:
    """Per-cluster point-to-centre distances (Table 2) and per-pair distances (Table 1).

    Parameters
    ----------
    points : ndarray of shape (n_samples, n_dims)
        Samples in the clustered space.
    part : Partition
        The run whose clusters and centres are measured.

    Returns
    -------
    clusters : list of dict
        One per cluster (k): ``dist_min, dist_max, dist_mean, dist_sd`` of its points'
        Euclidean distances to its centre; NaN when empty (``dist_sd`` below two points).
    pairs : list of dict
        One per pair a < b: ``cluster_a, cluster_b``, ``centroid_distance`` and
        ``closest_distance`` (closest points, one in each; NaN if either is empty).
    """
    labels = part.labels
    members = [np.flatnonzero(labels == c) for c in range(part.k)]
    clusters = []
    for c, rows in enumerate(members):
        to_centre = np.linalg.norm(points[rows] - part.centers[c], axis=1)
        clusters.append(
            {
                "dist_min": to_centre.min() if len(rows) else np.nan,
                "dist_max": to_centre.max() if len(rows) else np.nan,
                "dist_mean": to_centre.mean() if len(rows) else np.nan,
                "dist_sd": to_centre.std(ddof=1) if len(rows) > 1 else np.nan,
            }
        )
    closest = closest_distances([points[rows] for rows in members])
    pairs = [
        {
            "cluster_a": a,
            "cluster_b": b,
            "centroid_distance": float(np.linalg.norm(part.centers[a] - part.centers[b])),
            "closest_distance": float(closest[a, b]),
        }
        for a in range(part.k)
        for b in range(a + 1, part.k)
    ]
    return clusters, pairs


def repeat_stability(labels: list[np.ndarray], k: int) -> list[float]:
    """Each repeat's mean adjusted Rand index with the other repeats (NaN for one repeat).

    Parameters
    ----------
    labels : list of ndarray of shape (n_samples,)
        Aligned hard labels of each repeat, in ``0..k-1``.
    k : int
        Number of clusters.

    Returns
    -------
    stability : list of float
        One value per repeat, in the order of ``labels``.
    """
    if len(labels) < 2:
        return [np.nan] * len(labels)
    ari = np.eye(len(labels))
    for a in range(len(labels)):
        for b in range(a + 1, len(labels)):
            ari[a, b] = ari[b, a] = adjusted_rand(labels[a], labels[b], k)
    return list((ari.sum(axis=1) - 1) / (len(labels) - 1))
