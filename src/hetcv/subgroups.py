"""Does the worst cluster find a known subgroup? (The dcbench protocol, Eyuboglu et al. 2022.)

For each run, the worst cluster is the one with the lowest metric; samples are ranked by their
membership in it. Against each subgroup's indicator: precision and recall of worst-cluster
membership, lift (precision / prevalence), AUROC of the membership degree, and precision@10 /
@25 of the ranking.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

TOP_K = (10, 25)


def recovery(in_worst: np.ndarray, worst_membership: np.ndarray, member: np.ndarray) -> dict:
    """Recovery of one subgroup (``member``, boolean) by one run's worst cluster."""
    prevalence = member.mean()
    precision = member[in_worst].mean() if in_worst.any() else np.nan
    ranking = np.argsort(-worst_membership, kind="stable")
    row = {
        "prevalence": prevalence,
        "precision": precision,
        "recall": in_worst[member].mean() if member.any() else np.nan,
        "lift": precision / prevalence if prevalence > 0 else np.nan,
        "auroc": (
            roc_auc_score(member, worst_membership) if 0 < member.sum() < len(member) else np.nan
        ),
    }
    for top in TOP_K:
        row[f"precision_at_{top}"] = member[ranking[:top]].mean()
    return row


def subgroup_recovery(
    assignments: pd.DataFrame, runs: pd.DataFrame, subgroup: pd.Series
) -> pd.DataFrame:
    """Recovery of every subgroup value, per run.

    ``assignments``: ``sample_id, fold, repeat, cluster, worst_membership`` of one clustering;
    ``runs``: ``fold, repeat, worst_cluster``; ``subgroup``: indexed by ``sample_id``.
    Returns one row per (fold, repeat, subgroup).
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
    task: str,
    normaliser: float,
    algorithm: str,
    k: int,
    repeats: int,
    pca_components: int,
    fcm: dict,
    seed: int,
) -> pd.DataFrame:
    """Subgroup recovery of the plain method and of the within-class / error-aware options.

    ``folds`` maps ``(n, fold)`` to that fold's features table. With ``within_class`` the
    clustering has ``k`` clusters per class. Returns per (variant, n, subgroup) the recovery
    averaged over folds and repeats, and the number of clusters.
    """
    from hetcv.analysis import analyse_fold
    from hetcv.seeding import derive_seed

    variants = {
        name: options
        for name, options in VARIANTS.items()
        if task == "classification" or options["within"] == "all"
    }
    rows = []
    for name, options in variants.items():
        for (n, fold), table in sorted(folds.items()):
            result = analyse_fold(
                table,
                task=task,
                normaliser=normaliser,
                algorithm=algorithm,
                k=[k],
                repeats=repeats,
                pca_components=pca_components,
                fcm=fcm,
                # The comparison reads only the assignments: the smallest null will do.
                null_permutations=19,
                seed=derive_seed(seed, n, fold),
                **options,
            )
            per_run = subgroup_recovery(
                result.assignments.assign(fold=fold), result.runs.assign(fold=fold), subgroup
            )
            rows.append(
                per_run.assign(variant=name, n=n, n_clusters=int(result.runs["n_clusters"].iloc[0]))
            )
    table = pd.concat(rows, ignore_index=True)
    summary = table.groupby(["variant", "n", "subgroup"], sort=False).mean(numeric_only=True)
    return summary.drop(columns=["fold", "repeat"]).reset_index()


def run_variants_job(
    *,
    features: list[str],
    manifest: str,
    out: str,
    task: str,
    nrmse_normalizer: str | None,
    **settings,
) -> None:
    """The subgroup_variants rule: compare the clustering options on a dataset's subgroups."""
    from hetcv.io import write_parquet
    from hetcv.stats import task_normaliser

    table = pd.read_parquet(manifest)
    normaliser = task_normaliser(task, table["target"].to_numpy(), nrmse_normalizer)
    folds = {}
    for path in features:
        fold_table = pd.read_parquet(path)
        folds[(int(fold_table["n"].iloc[0]), int(fold_table["fold"].iloc[0]))] = fold_table
    subgroup = table.set_index("sample_id")["subgroup"]
    write_parquet(
        compare_variants(folds, subgroup, task=task, normaliser=normaliser, **settings), out
    )
