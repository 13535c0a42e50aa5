"""Does the worst cluster find a known subgroup? (The dcbench protocol, Eyuboglu et al. 2022.)

For each run, the worst cluster is the one with the lowest metric; samples are ranked by their
membership in it. Against each subgroup's indicator: precision and recall of worst-cluster
membership, lift (precision / prevalence), AUROC of the membership degree, and precision@10 /
@25 of the ranking.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.cluster import worst_cluster_runs
from hetcv.io import write_parquet
from hetcv.metrics import ClusterMetric, dataset_metric
from hetcv.seeding import derive_seed

TOP_K = (10, 25)
# hetcv's AUROC, not scikit-learn's roc_auc_score: its input checks cost 9 ms a call, and the
# subgroup and slice benchmarks make thousands.
MEMBERSHIP_AUROC = ClusterMetric("auroc")


def recovery(in_worst: np.ndarray, worst_membership: np.ndarray, member: np.ndarray) -> dict:
    """Recovery of one subgroup (``member``, boolean) by one run's worst cluster.

    Parameters
    ----------
    in_worst : ndarray of shape (n_samples,)
        Boolean: the sample's hard cluster is the worst one.
    worst_membership : ndarray of shape (n_samples,)
        Ranking score, e.g. the membership in the worst cluster; higher ranks first.
    member : ndarray of shape (n_samples,)
        Boolean indicator of the subgroup.

    Returns
    -------
    dict
        ``prevalence, precision, recall, lift`` (precision / prevalence), ``auroc`` (of
        ``worst_membership``) and ``precision_at_10, precision_at_25`` (of the ranking);
        NaN where undefined (empty worst cluster or subgroup, or every sample a member).
    """
    prevalence = member.mean()
    precision = member[in_worst].mean() if in_worst.any() else np.nan
    ranking = np.argsort(-worst_membership, kind="stable")
    row = {
        "prevalence": prevalence,
        "precision": precision,
        "recall": in_worst[member].mean() if member.any() else np.nan,
        "lift": precision / prevalence if prevalence > 0 else np.nan,
        "auroc": (
            MEMBERSHIP_AUROC.of_samples(worst_membership, member.astype(int))
            if 0 < member.sum() < len(member)
            else np.nan
        ),
    }
    for top in TOP_K:
        row[f"precision_at_{top}"] = member[ranking[:top]].mean()
    return row


def subgroup_recovery(
    assignments: pd.DataFrame, runs: pd.DataFrame, subgroup: pd.Series
) -> pd.DataFrame:
    """Recovery of every subgroup value, per run.

    Parameters
    ----------
    assignments : DataFrame
        ``sample_id, fold, repeat, cluster, worst_membership`` of one clustering.
    runs : DataFrame
        ``fold, repeat, worst_cluster`` of the same runs.
    subgroup : Series
        Subgroup of each sample, indexed by ``sample_id``; every value is scored.

    Returns
    -------
    per_run : DataFrame
        One row per (fold, repeat, subgroup): those three columns, then the
        :func:`recovery` ones.
    """
    rows = []
    worst_of = runs.set_index(["fold", "repeat"])["worst_cluster"]
    for (fold, repeat), run in assignments.groupby(["fold", "repeat"], sort=True):
        in_worst = run["cluster"].to_numpy() == worst_of.loc[(fold, repeat)]
        membership = run["worst_membership"].to_numpy()
        groups = subgroup.loc[run["sample_id"]].to_numpy()
        for value in np.unique(subgroup.to_numpy()):
            rows.append(
                {
                    "fold": fold,
                    "repeat": repeat,
                    "subgroup": value,
                    **recovery(in_worst, membership, groups == value),
                }
            )
    return pd.DataFrame(rows)


VARIANTS = {
    "plain": {"within": "all", "error_aware": False},
    "within_class": {"within": "class", "error_aware": False},
    "error_aware": {"within": "all", "error_aware": True},
    "within_class_error_aware": {"within": "class", "error_aware": True},
}


def compare_variants(
    folds: dict[tuple[int, int], pd.DataFrame],
    subgroup: pd.Series,
    *,
    metric: ClusterMetric,
    algorithm: str,
    k: int,
    repeats: int,
    pca_components: int,
    fcm: dict,
    seed: int,
) -> pd.DataFrame:
    """Subgroup recovery of the plain method and of the within-class / error-aware options.

    Each variant of :data:`VARIANTS` reclusters every fold with
    :func:`hetcv.cluster.worst_cluster_runs` (the runs the cluster job would fit). The
    within-class variants need a classification metric that is defined in one-class clusters:
    accuracy or balanced accuracy, not 1 − NRMSE or AUROC.

    Parameters
    ----------
    folds : dict of (int, int) to DataFrame
        ``(n, fold)`` → that fold's features table.
    subgroup : Series
        The manifest's ``subgroup``, indexed by ``sample_id``.
    metric, algorithm, repeats, pca_components, fcm : see :func:`hetcv.cluster.fold_space` and
        :func:`hetcv.cluster.clusterings_by_k`
    k : int
        The number of clusters; with ``within_class`` the clustering has ``k`` per class.
    seed : int
        The config's seed; fold ``(n, fold)`` uses ``derive_seed(seed, n, fold)``.

    Returns
    -------
    DataFrame
        Per (variant, n, subgroup): the :func:`recovery` columns averaged over folds and
        repeats, and the number of clusters ``n_clusters``.
    """

    variants = {
        name: options
        for name, options in VARIANTS.items()
        if metric.name in ("accuracy", "balanced_accuracy") or options["within"] == "all"
    }
    rows = []
    for name, options in variants.items():
        for (n, fold), table in sorted(folds.items()):
            assignments, runs = worst_cluster_runs(
                table,
                metric=metric,
                algorithm=algorithm,
                k=k,
                repeats=repeats,
                pca_components=pca_components,
                fcm=fcm,
                seed=derive_seed(seed, n, fold),
                **options,
            )
            per_run = subgroup_recovery(
                assignments.assign(fold=fold), runs.assign(fold=fold), subgroup
            )
            rows.append(
                per_run.assign(variant=name, n=n, n_clusters=int(runs["n_clusters"].iloc[0]))
            )
    return mean_recovery(pd.concat(rows, ignore_index=True), ["variant", "n", "subgroup"])


def mean_recovery(per_run: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Recovery averaged over folds and repeats within each group of ``by`` columns.

    Parameters
    ----------
    per_run : DataFrame
        Per-run rows with ``fold`` and ``repeat`` (:func:`subgroup_recovery`).
    by : list of str
        Grouping columns, e.g. ``["n", "subgroup"]``.

    Returns
    -------
    DataFrame
        The ``by`` columns, then the mean of every other numeric column; groups in order
        of first appearance.
    """
    mean = per_run.groupby(by, sort=False).mean(numeric_only=True)
    return mean.drop(columns=["fold", "repeat"]).reset_index()


def recovery_by_size(
    assignments: pd.DataFrame, runs: pd.DataFrame, subgroup: pd.Series
) -> pd.DataFrame:
    """The selected clustering's recovery of each subgroup, per sample size.

    Parameters
    ----------
    assignments : DataFrame
        The selected clustering's assignments at every n (see :func:`subgroup_recovery`).
    runs : DataFrame
        Its run rows (``n``, ``fold``, ``repeat``, ``worst_cluster``).
    subgroup : Series
        Each sample's subgroup, indexed by ``sample_id``.

    Returns
    -------
    recovered : DataFrame
        One row per (n, subgroup), sorted: the :func:`recovery` columns averaged over folds
        and repeats.
    """
    per_run = pd.concat(
        subgroup_recovery(at_n, runs[runs["n"] == n], subgroup).assign(n=n)
        for n, at_n in assignments.groupby("n", sort=True)
    )
    recovered = mean_recovery(per_run, ["n", "subgroup"])
    return recovered.sort_values(["n", "subgroup"], ignore_index=True)


def subgroup_shares(clusters: pd.DataFrame, subgroup: pd.Series) -> pd.DataFrame:
    """Each subgroup's share (%) of each consensus cluster, per sample size.

    Parameters
    ----------
    clusters : DataFrame
        ``clusters_per_sample.csv`` (``sample_id``, ``n``, ``cluster``).
    subgroup : Series
        Each sample's subgroup, indexed by ``sample_id``.

    Returns
    -------
    DataFrame
        ``n, cluster, subgroup, count, share``; shares sum to 100 within each (n, cluster).
    """
    labelled = clusters.assign(subgroup=subgroup.loc[clusters["sample_id"]].to_numpy())
    counts = labelled.groupby(["n", "cluster", "subgroup"]).size().rename("count").reset_index()
    total = counts.groupby(["n", "cluster"])["count"].transform("sum")
    return counts.assign(share=100 * counts["count"] / total)


def run_subgroup_variants_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The subgroup_variants rule: compare the clustering options on a dataset's subgroups.

    Parameters
    ----------
    inputs : dict
        ``features`` (every fold's features) and ``manifest`` (with ``subgroup``).
    outputs : dict
        ``variants`` (Parquet path).
    params : dict
        ``metric``, ``nrmse_normalizer`` and ``variants``, the keyword arguments of
        :func:`compare_variants` after ``metric``.
    """

    table = pd.read_parquet(inputs["manifest"])
    metric = dataset_metric(
        params["metric"], table["target"].to_numpy(), params["nrmse_normalizer"]
    )
    folds = {}
    for path in inputs["features"]:
        fold_table = pd.read_parquet(path)
        folds[(int(fold_table["n"].iloc[0]), int(fold_table["fold"].iloc[0]))] = fold_table
    subgroup = table.set_index("sample_id")["subgroup"]
    compared = compare_variants(folds, subgroup, metric=metric, **params["variants"])
    write_parquet(compared, outputs["variants"])
