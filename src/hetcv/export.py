"""``clusters_per_sample.csv``: one row per held-out sample of the selected clustering.

The cluster of a sample is its majority (aligned) label over the repeats; ``membership`` is
the mean membership in that cluster over the repeats that agree. The table can be read by
pandas, Fairlearn's ``MetricFrame`` (``sensitive_features=table["cluster"]``), cleanlab
(``cluster_ids``) or a spreadsheet.
"""

from __future__ import annotations

import pandas as pd

from hetcv.io import write_csv
from hetcv.stats import SCORE_COLUMN


def consensus_clusters(assignments: pd.DataFrame) -> pd.DataFrame:
    """Majority label over repeats per (n, fold, sample); ties go to the lower cluster number.

    Parameters
    ----------
    assignments : DataFrame
        ``sample_id, n, fold, repeat, cluster, membership`` of one (algorithm, k).

    Returns
    -------
    DataFrame
        ``n, fold, sample_id, cluster, membership``: the majority cluster and the mean
        membership in it over the repeats that chose it.
    """
    keys = ["n", "fold", "sample_id"]
    votes = assignments.groupby([*keys, "cluster"], sort=True).agg(
        votes=("repeat", "size"), membership=("membership", "mean")
    )
    votes = votes.reset_index().sort_values(
        [*keys, "votes", "cluster"], ascending=[True, True, True, False, True]
    )
    return votes.drop_duplicates(keys).drop(columns="votes").reset_index(drop=True)


def clusters_per_sample(
    assignments: pd.DataFrame, features: pd.DataFrame, task: str
) -> pd.DataFrame:
    """The export: one row per held-out sample with its consensus cluster.

    Parameters
    ----------
    assignments : DataFrame
        The selected clustering's assignments (see :func:`consensus_clusters`).
    features : DataFrame
        Held-out rows: ``sample_id, n, fold, prediction`` and the task's score column.
    task : {"classification", "regression"}
        Which score column to export.

    Returns
    -------
    DataFrame
        ``sample_id, n, fold, cluster, membership, prediction`` and ``correct``
        (classification) or ``sq_error`` (regression), sorted by n, fold and sample_id.
    """
    score = SCORE_COLUMN[task]
    table = consensus_clusters(assignments).merge(
        features[["sample_id", "n", "fold", "prediction", score]],
        on=["sample_id", "n", "fold"],
        how="left",
        validate="one_to_one",
    )
    columns = ["sample_id", "n", "fold", "cluster", "membership", "prediction", score]
    return table[columns].sort_values(["n", "fold", "sample_id"], ignore_index=True)


def run_export_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The export_clusters rule: the selected clustering's consensus label per sample.

    Parameters
    ----------
    inputs : dict
        ``assignments`` (the selected algorithm's, every fold) and ``features`` (every fold).
    outputs : dict
        ``export`` (``clusters_per_sample.csv``).
    params : dict
        ``task`` and ``selected`` (``algorithm``, ``k``).
    """
    chosen = pd.concat(pd.read_parquet(path) for path in inputs["assignments"])
    chosen = chosen[chosen["k"] == params["selected"]["k"]]
    score = SCORE_COLUMN[params["task"]]
    columns = ["sample_id", "n", "fold", "prediction", score]
    held_out = pd.concat(pd.read_parquet(path, columns=columns) for path in inputs["features"])
    write_csv(clusters_per_sample(chosen, held_out, params["task"]), outputs["export"])
