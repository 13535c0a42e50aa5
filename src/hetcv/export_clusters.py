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
    assignments: pd.DataFrame, features: pd.DataFrame, manifest: pd.DataFrame, task: str
) -> pd.DataFrame:
    """The export: one row per held-out sample with its consensus cluster and what is known.

    Parameters
    ----------
    assignments : DataFrame
        The selected clustering's assignments (see :func:`consensus_clusters`).
    features : DataFrame
        Held-out rows: ``sample_id, n, fold, target, prediction``, the task's score column
        and ``loss``.
    manifest : DataFrame
        ``sample_id`` and the source's metadata (``label``, ``subgroup``, ``group``, the
        ``metadata_columns`` …); its ``target`` is not read again.
    task : {"classification", "regression"}
        Which score column to export.

    Returns
    -------
    DataFrame
        ``sample_id, n, fold, cluster, membership, target, prediction``, ``correct``
        (classification) or ``sq_error`` (regression), ``loss``, then the manifest's other
        columns; sorted by n, fold and sample_id. ``sample_id`` is the id, or the image path,
        the source gave.
    """
    score = SCORE_COLUMN[task]
    per_sample = ["target", "prediction", score, "loss"]
    table = consensus_clusters(assignments).merge(
        features[["sample_id", "n", "fold", *per_sample]],
        on=["sample_id", "n", "fold"],
        how="left",
        validate="one_to_one",
    )
    metadata = manifest.drop(columns="target")
    table = table.merge(metadata, on="sample_id", how="left", validate="many_to_one")
    columns = ["sample_id", "n", "fold", "cluster", "membership", *per_sample]
    columns += [column for column in metadata.columns if column != "sample_id"]
    return table[columns].sort_values(["n", "fold", "sample_id"], ignore_index=True)


def run_export_clusters_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The export_clusters rule: the selected clustering's consensus label per sample.

    Parameters
    ----------
    inputs : dict
        ``assignments`` (the selected algorithm's, every fold), ``features`` (every fold)
        and ``manifest``.
    outputs : dict
        ``export`` (``clusters_per_sample.csv``).
    params : dict
        ``task`` and ``selected`` (``algorithm``, ``k``).
    """
    chosen = pd.concat(pd.read_parquet(path) for path in inputs["fold_assignments"])
    chosen = chosen[chosen["k"] == params["selected"]["k"]]
    score = SCORE_COLUMN[params["task"]]
    columns = ["sample_id", "n", "fold", "target", "prediction", score, "loss"]
    held_out = pd.concat(pd.read_parquet(path, columns=columns) for path in inputs["features"])
    manifest = pd.read_parquet(inputs["manifest"])
    export = clusters_per_sample(chosen, held_out, manifest, params["task"])
    write_csv(export, outputs["clusters_per_sample"])
