"""Clustering of held-out features: PCA, then K-Means, fuzzy c-means or a Gaussian mixture,
repeated with seeds and aligned so that cluster numbers mean the same in every repeat.

Shapes: ``points`` is ``(n_samples, n_dims)`` float64 in the clustered space (PCA scores, plus
the weighted loss column when ``error_aware``); memberships are ``(n_samples, k)`` with rows
summing to one; labels are hard labels, the argmax of the membership.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np
import skfuzzy
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from hetcv.errors import HetcvError

log = logging.getLogger(__name__)


@dataclass
class Partition:
    """One clustering run: memberships, hard labels and the algorithm's own cluster centres.

    Attributes
    ----------
    membership : ndarray of shape (n_samples, k)
        Membership of each sample in each cluster; rows sum to one (one-hot for K-Means).
    centers : ndarray of shape (k, n_dims)
        The algorithm's cluster centres in the clustered space.
    extra : dict
        Algorithm-specific quality figures: ``fpc`` (fuzzy c-means) or ``bic`` (GMM).
    """

    membership: np.ndarray  # (n_samples, k)
    centers: np.ndarray  # (k, n_dims)
    extra: dict = field(default_factory=dict)  # fpc (fcm) or bic (gmm)

    @property
    def labels(self) -> np.ndarray:
        """Hard labels: the argmax of each sample's membership.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self.membership.argmax(axis=1)

    @property
    def k(self) -> int:
        """Number of clusters, empty ones included.

        Returns
        -------
        k : int
        """
        return self.membership.shape[1]

    def relabel(self, new_label_of: np.ndarray) -> Partition:
        """Renumber the clusters: cluster ``j`` becomes cluster ``new_label_of[j]``.

        Parameters
        ----------
        new_label_of : ndarray of shape (k,)
            A permutation of ``0..k-1``, as from `match_to_reference` or `canonical_labels`.

        Returns
        -------
        partition : Partition
            A new partition with membership columns and centres reordered; ``extra`` copied.
        """
        order = np.argsort(new_label_of)
        return Partition(self.membership[:, order], self.centers[order], dict(self.extra))


def pca_scores(features: np.ndarray, n_components: int) -> np.ndarray:
    """Principal-component scores of the features, in float64, a block of rows at a time.

    The components are the leading eigenvectors of the scatter matrix, which is summed over
    blocks of :data:`PCA_BLOCK` rows: memory holds the features and a ``n_features²`` matrix,
    never a float64 copy of a large fold (a 50,000 × 512 fold's SVD needs about 1 GB more).
    Signs follow scikit-learn's ``PCA`` (each component's largest loading positive), whose
    scores these equal to rounding. Components are capped at ``min(n_samples - 1,
    n_features)`` with a warning in the log.

    Parameters
    ----------
    features : ndarray of shape (n_samples, n_features)
        Back-model features of the held-out samples (``n_features`` = 512).
    n_components : int
        Requested number of components (``pca_components``).

    Returns
    -------
    scores : ndarray of shape (n_samples, n_kept)
        ``n_kept = min(n_components, n_samples - 1, n_features)``.
    """
    cap = min(features.shape[0] - 1, features.shape[1])
    if n_components > cap:
        log.warning(
            "pca_components=%d capped at %d: the fold has %d samples",
            n_components,
            cap,
            features.shape[0],
        )
        n_components = cap
    mean = features.mean(axis=0, dtype=np.float64)
    blocks = range(0, len(features), PCA_BLOCK)
    scatter = np.zeros((features.shape[1], features.shape[1]))
    for start in blocks:
        centred = features[start : start + PCA_BLOCK].astype(np.float64) - mean
        scatter += centred.T @ centred
    components = np.linalg.eigh(scatter)[1][:, ::-1][:, :n_components]
    largest = np.abs(components).argmax(axis=0)
    components *= np.sign(components[largest, np.arange(n_components)])
    return np.concatenate(
        [(features[start : start + PCA_BLOCK] - mean) @ components for start in blocks]
    )


def add_loss_dimension(points: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Append the standardised per-sample loss as a column scaled to the first component's sd.

    The scale makes the loss as influential as the strongest feature direction (error-aware
    clustering, in the spirit of Domino, Eyuboglu et al. 2022). A constant loss gives a
    column of zeros.

    Parameters
    ----------
    points : ndarray of shape (n_samples, n_dims)
        PCA scores; column 0 sets the scale.
    loss : ndarray of shape (n_samples,)
        Per-sample loss of the model.

    Returns
    -------
    points : ndarray of shape (n_samples, n_dims + 1)
    """
    spread = loss.std()
    standardised = (loss - loss.mean()) / spread if spread > 0 else np.zeros_like(loss)
    return np.column_stack([points, standardised * points[:, 0].std()])


def fit_partition(points: np.ndarray, algorithm: str, k: int, seed: int, fcm: dict) -> Partition:
    """One seeded run of ``algorithm`` with ``k`` clusters.

    K-Means uses one initialisation and one-hot memberships; fuzzy c-means starts from a
    seeded random membership; the Gaussian mixture has diagonal covariances.

    Parameters
    ----------
    points : ndarray of shape (n_samples, n_dims)
        Samples in the clustered space.
    algorithm : {"kmeans", "fcm", "gmm"}
        Clustering algorithm.
    k : int
        Number of clusters.
    seed : int
        Seed of this run.
    fcm : dict
        Fuzzy c-means settings ``m``, ``error`` and ``maxiter``; used only by ``"fcm"``.

    Returns
    -------
    partition : Partition
        With ``extra["fpc"]`` for ``"fcm"`` and ``extra["bic"]`` for ``"gmm"``.

    Raises
    ------
    HetcvError
        If ``algorithm`` is unknown.
    """
    if algorithm == "kmeans":
        model = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(points)
        return Partition(np.eye(k)[model.labels_], model.cluster_centers_)
    if algorithm == "fcm":
        rng = np.random.default_rng(seed)
        start = rng.random((k, len(points)))
        centers, membership, *_, fpc = skfuzzy.cmeans(
            points.T,
            c=k,
            m=fcm["m"],
            error=fcm["error"],
            maxiter=fcm["maxiter"],
            init=start / start.sum(axis=0),
        )
        return Partition(membership.T, centers, {"fpc": float(fpc)})
    if algorithm == "gmm":
        # Diagonal covariances: folds of a few dozen samples cannot support full 10×10 ones.
        model = GaussianMixture(
            n_components=k, covariance_type="diag", reg_covar=1e-6, random_state=seed
        ).fit(points)
        return Partition(
            model.predict_proba(points), model.means_, {"bic": float(model.bic(points))}
        )
    raise HetcvError(f"clustering.algorithms: unknown algorithm {algorithm!r}")


def fit_partition_within(
    points: np.ndarray, groups: np.ndarray, algorithm: str, k: int, seed: int, fcm: dict
) -> Partition:
    """``k`` clusters inside each group (true class), as GEORGE does: ``k × n_groups`` in all.

    Cluster ``g * k + j`` is cluster ``j`` of the ``g``-th group (groups in sorted order);
    memberships outside a sample's own group are zero. Group ``g`` is fitted with seed
    ``seed + g``.

    Parameters
    ----------
    points : ndarray of shape (n_samples, n_dims)
        Samples in the clustered space.
    groups : ndarray of shape (n_samples,)
        Group (true class) of each sample.
    algorithm : {"kmeans", "fcm", "gmm"}
        Passed to `fit_partition` for each group.
    k : int
        Clusters per group.
    seed : int
        Seed of the first group.
    fcm : dict
        Fuzzy c-means settings, as for `fit_partition`.

    Returns
    -------
    partition : Partition
        ``k * n_groups`` clusters; ``extra`` holds the mean ``fpc`` or the summed ``bic``.

    Raises
    ------
    HetcvError
        If a group has ``k`` samples or fewer.
    """
    values = np.unique(groups)
    membership = np.zeros((len(points), k * len(values)))
    centers, extra = [], {}
    for g, value in enumerate(values):
        rows = np.flatnonzero(groups == value)
        if len(rows) <= k:
            raise HetcvError(
                f"clustering.k: {k} clusters need more than {k} samples in class {value!r} "
                f"of the held-out fold, which has {len(rows)}"
            )
        part = fit_partition(points[rows], algorithm, k, seed + g, fcm)
        membership[np.ix_(rows, np.arange(g * k, (g + 1) * k))] = part.membership
        centers.append(part.centers)
        for key, value_ in part.extra.items():
            extra[key] = extra.get(key, 0.0) + value_ / (len(values) if key == "fpc" else 1)
    return Partition(membership, np.vstack(centers), extra)


def contingency(first: np.ndarray, second: np.ndarray, k: int) -> np.ndarray:
    """Count the samples with label ``i`` in ``first`` and ``j`` in ``second``.

    (scikit-learn's ``contingency_matrix`` drops absent labels and costs ~1 ms a call in
    input validation; the analysis makes tens of thousands of these calls.)

    Parameters
    ----------
    first, second : ndarray of shape (n_samples,)
        Integer labelings with labels in ``0..k-1``.
    k : int
        Number of labels; absent labels keep their zero row or column.

    Returns
    -------
    table : ndarray of shape (k, k)
        Integer counts, rows indexed by ``first``.
    """
    return np.bincount(first * k + second, minlength=k * k).reshape(k, k)


def adjusted_rand(first: np.ndarray, second: np.ndarray, k: int) -> float:
    """Adjusted Rand index of two labelings with labels in ``0..k-1`` (Hubert & Arabie).

    Parameters
    ----------
    first, second : ndarray of shape (n_samples,)
        The labelings to compare.
    k : int
        Upper bound (exclusive) of the labels.

    Returns
    -------
    ari : float
        1 for identical partitions, about 0 for chance agreement; 1 also in the degenerate
        case where both are trivial (expected index equals its maximum).
    """
    table = contingency(first, second, k).astype(np.float64)
    pairs = lambda counts: (counts * (counts - 1) / 2).sum()  # noqa: E731
    index = pairs(table)
    rows, columns = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = rows * columns / pairs(np.array([len(first)], dtype=np.float64))
    maximum = (rows + columns) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


PCA_BLOCK = 4096  # rows of the features centred in float64 at once
SILHOUETTE_EXACT_LIMIT = 5000  # above it, a seeded subsample of this size (silhouette_rows)
CLOSEST_PROBES = 32  # points that set closest_distances' first upper bound


def silhouette(distances: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean silhouette coefficient (as scikit-learn's) from the samples' distance matrix.

    Samples alone in their cluster score 0; empty clusters are ignored. The matrix is computed
    once per fold on at most :data:`SILHOUETTE_EXACT_LIMIT` samples (:func:`silhouette_rows`)
    and serves every clustering of the fold; one clustering costs a matrix product.

    Parameters
    ----------
    distances : ndarray of shape (n_samples, n_samples)
        Euclidean distances between the samples in the clustered space.
    labels : ndarray of shape (n_samples,)
        Hard labels in ``0..k-1``.
    k : int
        Number of clusters.

    Returns
    -------
    score : float
        Between -1 and 1.
    """
    size = np.bincount(labels, minlength=k).astype(np.float64)
    totals = distances @ np.eye(k)[labels]
    own_size = size[labels]
    with np.errstate(invalid="ignore", divide="ignore"):
        inner = totals[np.arange(len(labels)), labels] / (own_size - 1)
        means = np.where(size > 0, totals / size, np.inf)
    means[np.arange(len(labels)), labels] = np.inf
    nearest = means.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = (nearest - inner) / np.maximum(inner, nearest)
    return float(np.nan_to_num(np.where(own_size > 1, score, 0.0)).mean())


def partition_indices(points: np.ndarray, labels: np.ndarray, k: int) -> dict[str, float]:
    """Within-cluster sum of squares, Calinski–Harabasz and Davies–Bouldin, in one pass.

    The same values as scikit-learn's ``calinski_harabasz_score`` and
    ``davies_bouldin_score`` (over the non-empty clusters, with their conventions for
    degenerate partitions), from the clusters' sums: a clustering costs one matrix product
    instead of their per-cluster distance calls and input checks (2.4 s of an 11 s cluster job).

    Parameters
    ----------
    points : ndarray of shape (n_samples, n_dims)
        Samples in the clustered space.
    labels : ndarray of shape (n_samples,)
        Hard labels in ``0..k-1``; at least two clusters and fewer than ``n_samples``
        non-empty.
    k : int
        Number of clusters.

    Returns
    -------
    indices : dict of str to float
        ``sse``, ``calinski_harabasz`` and ``davies_bouldin``.
    """
    size = np.bincount(labels, minlength=k)
    present = np.flatnonzero(size)
    one_hot = np.eye(k)[labels][:, present]
    centres = (one_hot.T @ points) / size[present, None]
    to_centre = np.linalg.norm(points - centres[np.searchsorted(present, labels)], axis=1)
    sse = float((to_centre**2).sum())
    between = float((size[present] * ((centres - points.mean(axis=0)) ** 2).sum(axis=1)).sum())
    used, n_samples = len(present), len(labels)
    calinski_harabasz = 1.0 if sse == 0 else between * (n_samples - used) / (sse * (used - 1))
    spread = (one_hot.T @ to_centre) / size[present]
    centre_distances = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    if np.allclose(spread, 0) or np.allclose(centre_distances, 0):
        davies_bouldin = 0.0
    else:
        centre_distances[centre_distances == 0] = np.inf
        ratios = (spread[:, None] + spread[None]) / centre_distances
        davies_bouldin = float(ratios.max(axis=1).mean())
    return {"sse": sse, "calinski_harabasz": calinski_harabasz, "davies_bouldin": davies_bouldin}


def silhouette_rows(n_samples: int, seed: int) -> np.ndarray:
    """The samples the silhouette is computed on: all, or a seeded subsample above the limit.

    The subsample's mean silhouette estimates the exact one with a standard error of about
    sd(s_i) / √:data:`SILHOUETTE_EXACT_LIMIT` (under 0.01 for silhouettes' usual spread;
    checked against the exact value in the tests). One subsample per fold keeps the runs of a
    fold comparable.

    Parameters
    ----------
    n_samples : int
    seed : int

    Returns
    -------
    ndarray of int
        Sorted row indices.
    """
    if n_samples <= SILHOUETTE_EXACT_LIMIT:
        return np.arange(n_samples)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_samples, SILHOUETTE_EXACT_LIMIT, replace=False))


def closest_distances(groups: list[np.ndarray]) -> np.ndarray:
    """The smallest Euclidean distance between a point of each group and one of each other.

    Exact, without a distance matrix. For each pair, the line through the two groups' means
    gives a first answer and a filter: the closest points of each group along it, against
    every point of the other (:data:`CLOSEST_PROBES` each), bound the answer from above, and a
    pair of points can only be closer than that bound if their positions along the line are
    (the projection onto a unit vector shortens every distance). Only the points with a
    partner that near along the line enter a k-d tree query, within the bound. Clusters that
    touch, as a partition's do, leave a thin slab on each side; far-apart, tight clusters
    leave more, and cost more.

    Parameters
    ----------
    groups : list of ndarray of shape (n_i, n_dims)
        The points of each group (cluster).

    Returns
    -------
    ndarray of shape (n_groups, n_groups)
        Symmetric; NaN on the diagonal and where either group is empty.
    """

    distances = np.full((len(groups), len(groups)), np.nan)
    for a, b in itertools.combinations(range(len(groups)), 2):
        first, second = groups[a], groups[b]
        if not len(first) or not len(second):
            continue
        direction = second.mean(axis=0) - first.mean(axis=0)
        length = np.linalg.norm(direction)
        direction = direction / length if length > 0 else np.eye(first.shape[1])[0]
        along_first, along_second = first @ direction, second @ direction
        bound = min(
            cdist(first[np.argsort(along_first)[-CLOSEST_PROBES:]], second).min(),
            cdist(second[np.argsort(along_second)[:CLOSEST_PROBES]], first).min(),
        )
        # Slack for rounding: cdist, the projections and the tree each round differently.
        reach = bound * (1 + 1e-9) + 1e-12
        near_first = _has_partner_within(along_first, along_second, reach)
        near_second = _has_partner_within(along_second, along_first, reach)
        found = cKDTree(second[near_second]).query(
            first[near_first], k=1, distance_upper_bound=reach
        )[0]
        distances[a, b] = distances[b, a] = found.min()
    return distances


def _has_partner_within(positions: np.ndarray, others: np.ndarray, reach: float) -> np.ndarray:
    """Whether each of ``positions`` has one of ``others`` within ``reach`` (1-d)."""
    others = np.sort(others)
    below = np.searchsorted(others, positions - reach, side="left")
    above = np.searchsorted(others, positions + reach, side="right")
    return above > below


def match_to_reference(reference: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """New label of each of ``labels``' clusters: the reference cluster it overlaps most.

    Hungarian algorithm (maximum total overlap) on the ``k × k`` contingency table, so the
    matching is one-to-one.

    Parameters
    ----------
    reference : ndarray of shape (n_samples,)
        Hard labels of the reference run (the first repeat).
    labels : ndarray of shape (n_samples,)
        Hard labels of the run to align, same samples in the same order.
    k : int
        Number of clusters in both runs.

    Returns
    -------
    new_label_of : ndarray of shape (k,)
        Permutation for `Partition.relabel`.
    """
    ref_index, run_index = linear_sum_assignment(contingency(reference, labels, k), maximize=True)
    new_label_of = np.empty(k, dtype=np.int64)
    new_label_of[run_index] = ref_index
    return new_label_of


def canonical_labels(size: np.ndarray) -> np.ndarray:
    """New label of each cluster so that cluster 0 is the largest (ties: lower label first).

    The numbering never looks at the clusters' outcomes: numbering them by their measured
    metric (as cluster 0 = best) would make "cluster 0" the one whose estimate is highest
    by chance, and its estimate and interval would carry that winner's curse. Empty clusters
    come last.

    Parameters
    ----------
    size : ndarray of shape (k,)
        Number of samples in each cluster.

    Returns
    -------
    new_label_of : ndarray of shape (k,)
        Rank of each cluster, a permutation for `Partition.relabel`.
    """
    order = np.argsort(-np.asarray(size), kind="stable")
    new_label_of = np.empty(len(order), dtype=np.int64)
    new_label_of[order] = np.arange(len(order))
    return new_label_of
