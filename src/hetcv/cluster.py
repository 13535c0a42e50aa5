"""What the cluster rule computes for each fold and algorithm of one (dataset, n).

For every k, ``repeats`` seeded runs are aligned to the first (the reference) by the Hungarian
algorithm and renumbered canonically: cluster 0 is the reference's largest, and never a number
given by the outcomes, so that no cluster number carries a winner's curse. Each run then yields
per-sample assignments, per-cluster rows (size, metric, centre, point-to-centre distances),
per-pair rows (centre and closest-point distances) and one run row (CV, its permutation null,
validity indices, stability).

An empty cluster (no sample has its highest membership there, which fuzzy c-means and
mixtures allow) is a named state: its row has ``empty = True`` and a NaN metric, the run row
counts ``empty_clusters``, its CV is over the remaining clusters, and the log warns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from hetcv.clustering import (
    Partition,
    add_loss_dimension,
    canonical_labels,
    fit_partition,
    fit_partition_within,
    match_to_reference,
    pca_scores,
    silhouette_rows,
)
from hetcv.columns import feature_columns
from hetcv.errors import HetcvError
from hetcv.io import parquet_parts, write_parquet
from hetcv.metrics import ClusterMetric, dataset_metric
from hetcv.partition_measures import geometry, repeat_stability, validity
from hetcv.paths import FOLD_TABLES
from hetcv.seeding import derive_seed
from hetcv.stats import (
    cluster_metrics,
    coefficient_of_variation,
    permutation_p_value,
    permuted_cluster_metrics,
    permuted_values,
)

log = logging.getLogger(__name__)

CLUSTER_TABLES = ("assignments", "cluster_stats", "pairs", "runs")  # FoldClustering's, in order
# The cluster rule's output of each (hetcv.paths.PATHS keys).
OUTPUT_OF = dict(zip(CLUSTER_TABLES, FOLD_TABLES, strict=True))


@dataclass
class FoldClustering:
    """The four tables the cluster rule writes (schemas in config/README.md).

    Attributes
    ----------
    assignments : DataFrame
        One row per sample × k × repeat: ``sample_id, algorithm, k, repeat, cluster,
        membership, worst_membership``.
    cluster_stats : DataFrame
        One row per cluster × k × repeat, keyed by ``algorithm, k, repeat, cluster``: ``size,
        empty, size_pct, score_sum, metric, centroid`` and the :func:`geometry` distances.
    pairs : DataFrame
        One row per cluster pair × k × repeat: ``cluster_a, cluster_b, centroid_distance,
        closest_distance``.
    runs : DataFrame
        One row per k × repeat: the CV, its permutation null, validity indices, stability.
    """

    assignments: pd.DataFrame
    cluster_stats: pd.DataFrame
    pairs: pd.DataFrame
    runs: pd.DataFrame


def clustered_space(features: pd.DataFrame, pca_components: int, error_aware: bool) -> np.ndarray:
    """The space the samples are clustered in: PCA scores, plus the loss when error-aware.

    Parameters
    ----------
    features : DataFrame
        One fold's held-out rows with the feature columns (``f000`` …) and ``loss``.
    pca_components : int
        Principal components to keep (capped by :func:`hetcv.clustering.pca_scores`).
    error_aware : bool
        Append the standardised loss as one more dimension.

    Returns
    -------
    points : ndarray of shape (n_samples, n_dims)
        ``n_dims``: the components kept, plus one when ``error_aware``.
    """
    embedding = features[feature_columns(features.columns)].to_numpy()
    points = pca_scores(embedding, pca_components)
    if error_aware:
        points = add_loss_dimension(points, features["loss"].to_numpy(dtype=np.float64))
    return points


def aligned_runs(
    points: np.ndarray,
    groups: np.ndarray | None,
    algorithm: str,
    k: int,
    repeats: int,
    fcm: dict,
    seed: int,
) -> list[Partition]:
    """``repeats`` runs, matched to the first and numbered so that cluster 0 is the largest.

    Parameters
    ----------
    points : ndarray of shape (n_samples, n_dims)
        Samples in the clustered space.
    groups : ndarray of shape (n_samples,) or None
        Class of each sample, to cluster within each class; None clusters all together.
    algorithm, repeats, fcm : see :func:`clusterings_by_k`
    seed : int
        The fold's seed.
    k : int
        Number of clusters (per class when ``groups`` is given).

    Returns
    -------
    runs : list of Partition
        ``repeats`` aligned partitions; run r is seeded by ``derive_seed(seed, algorithm,
        k, r)``.
    """
    runs = []
    for repeat in range(repeats):
        run_seed = derive_seed(seed, algorithm, k, repeat)
        if groups is None:
            runs.append(fit_partition(points, algorithm, k, run_seed, fcm))
        else:
            runs.append(fit_partition_within(points, groups, algorithm, k, run_seed, fcm))
    reference = runs[0]
    total_k = reference.k
    runs = [reference] + [
        run.relabel(match_to_reference(reference.labels, run.labels, total_k)) for run in runs[1:]
    ]
    order = canonical_labels(np.bincount(reference.labels, minlength=total_k))
    return [run.relabel(order) for run in runs]


@dataclass
class FoldSpace:
    """What every clustering of one fold shares, computed once for all its algorithms.

    Attributes
    ----------
    points : ndarray of shape (n_samples, n_dims)
        The clustered space (:func:`clustered_space`).
    sampled : ndarray of int
        The rows the silhouette is computed on (:func:`hetcv.clustering.silhouette_rows`).
    sampled_distances : ndarray of shape (len(sampled), len(sampled))
        Their Euclidean distances.
    outcome : tuple of (ndarray, ndarray or None)
        Per-sample outcome and class codes (:meth:`hetcv.metrics.ClusterMetric.outcome`).
    groups : ndarray or None
        Each sample's class when clustering within class, else None.
    permuted_score : ndarray of shape (null_permutations, n_samples)
        The permutation null's scores, shared by every algorithm, k and repeat of the fold,
        so that the repeat-averaged null CV is a proper permutation distribution.
    """

    points: np.ndarray
    sampled: np.ndarray
    sampled_distances: np.ndarray
    outcome: tuple[np.ndarray, np.ndarray | None]
    groups: np.ndarray | None
    permuted_score: np.ndarray


def fold_space(
    features: pd.DataFrame,
    *,
    metric: ClusterMetric,
    pca_components: int,
    within: str,
    error_aware: bool,
    null_permutations: int,
    seed: int,
) -> FoldSpace:
    """The fold's clustered space, silhouette sample and permutation null; see :class:`FoldSpace`.

    Parameters
    ----------
    features : DataFrame of shape (n_samples, ...)
        The fold's held-out features table (``features.parquet``).
    metric : ClusterMetric
        The dataset's metric (:func:`hetcv.metrics.dataset_metric`).
    pca_components : int
        Components kept of the standardised features.
    within : {"all", "class"}
        Cluster all samples together, or each class separately.
    error_aware : bool
        Add the standardised per-sample loss as a clustered dimension.
    null_permutations : int
        Score permutations of the CV's permutation null.
    seed : int
        The fold's seed (already combined with dataset, n and fold).

    Returns
    -------
    FoldSpace
    """
    points = clustered_space(features, pca_components, error_aware)
    sampled = silhouette_rows(len(points), derive_seed(seed, "silhouette"))
    score, classes = metric.outcome(features)
    groups = features["target"].to_numpy() if within == "class" else None
    # Permuted within class when the clusters are built within class (a plain accuracy gap
    # between classes is not heterogeneity of the clusters), and always for the metrics
    # whose classes stay put.
    within_class = groups is not None or metric.uses_classes
    strata = features["target"].to_numpy() if within_class else np.zeros(len(features))
    null_rng = np.random.default_rng(derive_seed(seed, "null"))
    return FoldSpace(
        points=points,
        sampled=sampled,
        sampled_distances=cdist(points[sampled], points[sampled]),
        outcome=(score, classes),
        groups=groups,
        permuted_score=permuted_values(score, strata, null_permutations, null_rng),
    )


def clusterings_by_k(
    features: pd.DataFrame,
    space: FoldSpace,
    *,
    metric: ClusterMetric,
    algorithm: str,
    k: list[int],
    repeats: int,
    fcm: dict | None,
    error_aware: bool,
    seed: int,
) -> Iterator[FoldClustering]:
    """The four tables of each k in turn, so that a large fold's job can write as it goes.

    Parameters
    ----------
    features : DataFrame
        The fold's held-out features table.
    space : FoldSpace
        The fold's shared space (:func:`fold_space`).
    metric, error_aware, seed : see :func:`fold_space`
    algorithm : {"kmeans", "fcm", "gmm"}
    k : list of int
        The cluster numbers to fit.
    repeats : int
        Seeded runs per k, aligned to the first.
    fcm : dict or None
        Fuzzy c-means settings (``m``, ``error``, ``maxiter``); None for other algorithms.

    Yields
    ------
    FoldClustering
        Per-sample assignments, per-cluster rows, per-pair rows and one row per run, of one k.
    """
    score, classes = space.outcome
    fold_metric = metric.of_samples(score, classes)
    targets = None if metric.name in ("nrmse", "mean_score") else features["target"].to_numpy()
    for n_clusters in k:
        tables: dict[str, list] = {"assignments": [], "cluster_stats": [], "pairs": [], "runs": []}
        partitions = aligned_runs(
            space.points, space.groups, algorithm, n_clusters, repeats, fcm, seed
        )
        stability = repeat_stability([part.labels for part in partitions], partitions[0].k)
        for repeat, part in enumerate(partitions):
            values, size = cluster_metrics(part.labels, score, part.k, metric, classes)
            null_cv = coefficient_of_variation(
                permuted_cluster_metrics(
                    part.labels, space.permuted_score, part.k, metric, classes
                ),
                axis=1,
            )
            key = {"algorithm": algorithm, "k": n_clusters, "repeat": repeat}
            _warn_empty(key, size, values)
            tables["assignments"].append(_assignment_table(features, key, part, values))
            cluster_geometry, pair_geometry = geometry(space.points, part)
            tables["cluster_stats"] += _cluster_rows(
                key, part, values, size, score, targets, cluster_geometry
            )
            tables["pairs"] += [{**key, **pair} for pair in pair_geometry]
            cv = float(coefficient_of_variation(values))
            tables["runs"].append(
                {
                    **key,
                    "n_clusters": part.k,
                    "n_samples": len(features),
                    "fold_metric": fold_metric,
                    "cv": cv,
                    "empty_clusters": int((size == 0).sum()),
                    "null_cv": null_cv.tolist(),
                    "null_cv_mean": float(np.nanmean(null_cv)),
                    # Clusters built from the loss are not exchangeable with the scores.
                    "p_value": np.nan if error_aware else permutation_p_value(cv, null_cv),
                    "undefined_clusters": int((np.isnan(values) & (size > 0)).sum()),
                    "worst_cluster": int(np.nanargmin(values)),
                    **validity(space.points, part, space.sampled, space.sampled_distances),
                    "fpc": part.extra.get("fpc", np.nan),
                    "bic": part.extra.get("bic", np.nan),
                    "stability_ari": stability[repeat],
                }
            )
        log.info("%s k=%d: %d repeats done", algorithm, n_clusters, repeats)
        yield FoldClustering(
            assignments=pd.concat(tables["assignments"], ignore_index=True),
            cluster_stats=pd.DataFrame(tables["cluster_stats"]),
            pairs=pd.DataFrame(tables["pairs"]),
            runs=pd.DataFrame(tables["runs"]),
        )


def worst_cluster_runs(
    features: pd.DataFrame,
    *,
    metric: ClusterMetric,
    algorithm: str,
    k: int,
    repeats: int,
    pca_components: int,
    fcm: dict | None,
    within: str,
    error_aware: bool,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The assignments and worst clusters of one k's aligned runs, without the rest of a fold's
    analysis (geometry, validity, permutation null): what reading the clusters' make-up needs.

    Parameters are those of :func:`fold_space` and :func:`clusterings_by_k`, with a single
    ``k``.

    Returns
    -------
    assignments : DataFrame
        As :func:`clusterings_by_k`'s, for this k.
    runs : DataFrame
        ``algorithm, k, repeat, n_clusters, worst_cluster`` per run, as in :func:`clusterings_by_k`.
    """
    points = clustered_space(features, pca_components, error_aware)
    groups = features["target"].to_numpy() if within == "class" else None
    outcome = metric.outcome(features)
    partitions = aligned_runs(points, groups, algorithm, k, repeats, fcm, seed)
    assignments, runs = [], []
    for repeat, part in enumerate(partitions):
        values, _ = cluster_metrics(part.labels, outcome[0], part.k, metric, outcome[1])
        key = {"algorithm": algorithm, "k": k, "repeat": repeat}
        assignments.append(_assignment_table(features, key, part, values))
        runs.append({**key, "n_clusters": part.k, "worst_cluster": int(np.nanargmin(values))})
    return pd.concat(assignments, ignore_index=True), pd.DataFrame(runs)


def _warn_empty(key: dict, size: np.ndarray, values: np.ndarray) -> None:
    undefined = np.flatnonzero(np.isnan(values) & (size > 0))
    if len(undefined):
        log.warning(
            "%s k=%d repeat %d: cluster(s) %s hold one class only, so their metric is "
            "undefined; CV over the other %d clusters",
            key["algorithm"],
            key["k"],
            key["repeat"],
            undefined.tolist(),
            int(np.isfinite(values).sum()),
        )
    empty = np.flatnonzero(size == 0)
    if len(empty):
        log.warning(
            "%s k=%d repeat %d: cluster(s) %s empty (no sample has its highest membership "
            "there); CV over the other %d clusters",
            key["algorithm"],
            key["k"],
            key["repeat"],
            empty.tolist(),
            len(size) - len(empty),
        )


def _assignment_table(
    features: pd.DataFrame, key: dict, part: Partition, metric: np.ndarray
) -> pd.DataFrame:
    """Each sample's hard cluster, its top membership and its membership of the worst cluster."""
    return pd.DataFrame(
        {
            "sample_id": features["sample_id"].to_numpy(),
            **key,
            "cluster": part.labels,
            "membership": part.membership.max(axis=1),
            "worst_membership": part.membership[:, int(np.nanargmin(metric))],
        }
    )


def _cluster_rows(
    key: dict,
    part: Partition,
    metric: np.ndarray,
    size: np.ndarray,
    score: np.ndarray,
    targets: np.ndarray | None,
    cluster_geometry: list[dict],
) -> list[dict]:
    return [
        {
            **key,
            "cluster": c,
            "size": int(size[c]),
            "empty": bool(size[c] == 0),
            "undefined": bool(size[c] > 0 and np.isnan(metric[c])),
            "classes_present": (
                -1 if targets is None else len(np.unique(targets[part.labels == c]))
            ),
            "size_pct": 100.0 * size[c] / len(part.labels),
            "score_sum": float(score[part.labels == c].sum()),
            "metric": float(metric[c]),
            "centroid": part.centers[c].tolist(),
            **cluster_geometry[c],
        }
        for c in range(part.k)
    ]


def check_k_fits(k: list[int], n_samples: int, where: str) -> None:
    """Raise unless every k is smaller than the ``n_samples`` of the fold in ``where``.

    Parameters
    ----------
    k : list of int
        The configured cluster numbers (``clustering.k``).
    n_samples : int
        Held-out samples of the fold.
    where : str
        The fold's features path, named in the error.

    Raises
    ------
    HetcvError
        If ``max(k) >= n_samples``.
    """
    if max(k) >= n_samples:
        raise HetcvError(
            f"clustering.k: k={max(k)} is not smaller than the held-out fold "
            f"({n_samples} samples) of {where}"
        )


def run_cluster_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The cluster rule: one sample size's folds, each with every algorithm, k and repeat.

    One job per (dataset, n) rather than per fold: a job's start-up (interpreter, Snakemake's
    preamble, scikit-learn's import) costs about 2 s, more than clustering a small fold. Each
    fold is still analysed on its own, with its own seed, exactly as a job of its own would.
    A fold's space, silhouette sample and permutation null are computed once for all the
    algorithms; assignments are written a k at a time, so that memory holds one k's rows, not
    a large fold's ``n × k's × repeats``.

    Parameters
    ----------
    inputs : dict
        ``features`` (one held-out features table per fold, in the order of ``folds``) and
        ``manifest`` (its targets give the dataset-wide NRMSE normaliser and class list).
    outputs : dict
        ``fold_assignments``, ``fold_cluster_stats``, ``fold_cluster_pairs`` and
        ``fold_cluster_runs`` (:data:`hetcv.paths.FOLD_TABLES`): Parquet paths, one per
        algorithm, in the order of ``clustering["algorithms"]``; each holds every fold, with
        ``n`` and ``fold`` columns.
    params : dict
        ``n``, ``folds``, ``metric``, ``nrmse_normalizer`` and ``clustering``: the keyword
        arguments of :func:`fold_space` and :func:`clusterings_by_k`, with ``algorithms`` for
        ``algorithm`` and
        ``seeds`` (one per fold) for ``seed``.
    """
    clustering = params["clustering"]
    targets = pd.read_parquet(inputs["manifest"], columns=["target"])["target"].to_numpy()
    metric = dataset_metric(params["metric"], targets, params["nrmse_normalizer"])
    shared = ("pca_components", "within", "error_aware", "null_permutations")
    algorithms = clustering["algorithms"]
    settings = {key: clustering[key] for key in shared}
    collected = {algorithm: {name: [] for name in CLUSTER_TABLES[1:]} for algorithm in algorithms}
    with ExitStack() as files:
        write_assignments = [
            files.enter_context(parquet_parts(path)) for path in outputs["fold_assignments"]
        ]
        for path, fold, seed in zip(
            inputs["features"], params["folds"], clustering["seeds"], strict=True
        ):
            table = pd.read_parquet(path)
            check_k_fits(clustering["k"], len(table), path)
            space = fold_space(table, metric=metric, **settings, seed=seed)
            fold_keys = {"n": params["n"], "fold": fold}
            for algorithm, write in zip(algorithms, write_assignments, strict=True):
                for part in clusterings_by_k(
                    table,
                    space,
                    metric=metric,
                    algorithm=algorithm,
                    k=clustering["k"],
                    repeats=clustering["repeats"],
                    fcm=clustering["fcm"] if algorithm == "fcm" else None,
                    error_aware=clustering["error_aware"],
                    seed=seed,
                ):
                    write(part.assignments.assign(**fold_keys))
                    for name, frames in collected[algorithm].items():
                        frames.append(getattr(part, name).assign(**fold_keys))
        for position, algorithm in enumerate(algorithms):
            for name, frames in collected[algorithm].items():
                write_parquet(
                    pd.concat(frames, ignore_index=True), outputs[OUTPUT_OF[name]][position]
                )
