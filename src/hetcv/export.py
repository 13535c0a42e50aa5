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

    ``assignments``: ``sample_id, n, fold, repeat, cluster, membership`` of one (algorithm, k).
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
    """The export: ``sample_id, n, fold, cluster, membership, prediction`` and ``correct``
    (classification) or ``sq_error`` (regression)."""
    score = SCORE_COLUMN[task]
    table = consensus_clusters(assignments).merge(
        features[["sample_id", "n", "fold", "prediction", score]],
        on=["sample_id", "n", "fold"],
        how="left",
        validate="one_to_one",
    )
    columns = ["sample_id", "n", "fold", "cluster", "membership", "prediction", score]
    return table[columns].sort_values(["n", "fold", "sample_id"], ignore_index=True)


def run_export_job(
    *, assignments: list[str], features: list[str], out: str, task: str, selected: dict
) -> None:
    """The export_clusters rule: read the selected clustering and the features, write the CSV."""
    chosen = pd.concat(pd.read_parquet(path) for path in assignments)
    chosen = chosen[chosen["k"] == selected["k"]]
    columns = [
        "sample_id",
        "n",
        "fold",
        "prediction",
        SCORE_COLUMN[task],
    ]
    held_out = pd.concat(pd.read_parquet(path, columns=columns) for path in features)
    write_csv(clusters_per_sample(chosen, held_out, task), out)
