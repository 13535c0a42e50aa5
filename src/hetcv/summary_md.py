"""Write results/summary.md: the verdict of every dataset (the summary_md rule)."""

from __future__ import annotations

import pandas as pd

from hetcv.columns import VERDICT_TABLES
from hetcv.io import atomic_path, read_tables
from hetcv.verdict import SUMMARY_INTRODUCTION, dataset_verdict, labels_verdict


def run_summary_md_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The summary_md rule: ``results/summary.md``, the verdict of every dataset.

    Parameters
    ----------
    inputs : dict
        ``{dataset}_{table}`` for each dataset and each of :data:`VERDICT_TABLES`.
    outputs : dict
        ``summary``.
    params : dict
        ``datasets`` (dataset → metric name), ``selected``, ``slice_method`` and
        ``multilabel`` (a multi-label dataset → its views; their sections follow its labels
        section).
    """
    parts = [SUMMARY_INTRODUCTION]
    for dataset in params.get("multilabel", {}):
        parts.append(labels_verdict(dataset, pd.read_parquet(inputs[f"{dataset}_labels"])))
    for dataset, metric in params["datasets"].items():
        paths = {table: inputs[f"{dataset}_{table}"] for table in VERDICT_TABLES}
        summary = read_tables(paths, VERDICT_TABLES)
        verdict_tables = (summary[table] for table in VERDICT_TABLES)
        parts.append(
            dataset_verdict(
                dataset,
                metric,
                *verdict_tables,
                params["selected"],
                slice_method=params["slice_method"],
            )
        )
    with atomic_path(outputs["summary"]) as path:
        path.write_text("\n".join(parts))
