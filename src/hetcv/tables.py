"""The paper's Table 1 and Table 2 and the CV table, laid out from the summary tables.

Every function takes the summary DataFrames of one dataset and returns a display table; the
writers put one table into CSV, Markdown and LaTeX.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.io import atomic_path
from hetcv.stats import METRIC_LABEL, SIGNIFICANCE


def select(summary: pd.DataFrame, selected: dict) -> pd.DataFrame:
    """Rows of the selected (algorithm, k)."""
    chosen = (summary["algorithm"] == selected["algorithm"]) & (summary["k"] == selected["k"])
    return summary[chosen]


def table1(pairs: pd.DataFrame, selected: dict) -> pd.DataFrame:
    """Centroid and closest-point distance of every cluster pair, one row per (distance, n)."""
    rows = select(pairs, selected).assign(
        pair=lambda t: t["cluster_a"].astype(str) + "-" + t["cluster_b"].astype(str)
    )
    blocks = []
    for column, label in (
        ("centroid_distance", "Centroid distance"),
        ("closest_distance", "Closest-point distance"),
    ):
        wide = rows.pivot(index="n", columns="pair", values=column)
        wide = wide[sorted(wide.columns, key=lambda p: tuple(int(x) for x in p.split("-")))]
        blocks.append(wide.reset_index().assign(distance=label))
    table = pd.concat(blocks, ignore_index=True)
    return table[["distance", "n", *[c for c in table.columns if "-" in str(c)]]]


def table2(clusters: pd.DataFrame, selected: dict) -> pd.DataFrame:
    """Min / max / mean / sd of point-to-own-centroid distances, per cluster and n, and in how
    many of the fold × repeat runs the cluster was empty (its distances average the others)."""
    rows = select(clusters, selected)
    table = rows[["cluster", "n", "dist_min", "dist_max", "dist_mean", "dist_sd", "empty_runs"]]
    table = table.rename(
        columns={
            "dist_min": "min",
            "dist_max": "max",
            "dist_mean": "mean",
            "dist_sd": "sd",
            "empty_runs": "runs empty",
        }
    )
    return table.sort_values(["cluster", "n"], ignore_index=True)


CV_COLUMNS = [
    "test_metric",
    "cv",
    "cv_ci_low",
    "cv_ci_high",
    "debiased_cv",
    "debiased_cv_ci_low",
    "debiased_cv_ci_high",
    "i_squared",
    "q_p_value",
    "null_cv",
    "excess_cv",
    "p_value",
    "p_holm",
    "p_calibrated",
    "p_holm_calibrated",
    "weakest_cluster",
    "weakest_metric",
    "weakest_ci_low",
    "weakest_ci_high",
    "runs_with_empty_cluster",
    "bootstrap_nonfinite",
]


def heterogeneity_reading(row: pd.Series) -> str:
    """What the two tests of the selected clustering say at one sample size, in words."""
    if not np.isfinite(row["p_holm"]):
        return "no valid test: the clusters were built from the loss"
    if row["p_holm"] < SIGNIFICANCE:
        reading = "clusters differ beyond sampling noise"
    else:
        reading = "within sampling noise: no evidence of heterogeneity"
    if np.isfinite(row["p_holm_calibrated"]):
        reading += (
            "; errors more uneven than the model's own confidence predicts"
            if row["p_holm_calibrated"] < SIGNIFICANCE
            else "; errors as uneven as the model's own confidence predicts"
        )
    return reading


def cv_table(cv: pd.DataFrame, selected: dict, task: str) -> pd.DataFrame:
    """Per sample size of the selected clustering: the test metric, the paper's raw CV and the
    debiased CV with their 95 % CIs, I², the tests (raw and Holm-adjusted p-values), the
    cross-fitted weakest cluster and the counts of empty-cluster runs and non-finite bootstrap
    replicates; ``reading`` puts the tests into words. Column names are those of
    ``cv.parquet`` (config/README.md), with ``test_metric`` named after the metric."""
    rows = select(cv, selected).sort_values("n")
    table = rows[["n", *CV_COLUMNS]].reset_index(drop=True)
    table["reading"] = [heterogeneity_reading(row) for _, row in rows.iterrows()]
    return table.rename(columns={"test_metric": f"test {METRIC_LABEL[task]}"})


def write_table(table: pd.DataFrame, csv: str, markdown: str, latex: str, caption: str) -> None:
    """One table as CSV (full precision), Markdown and LaTeX (3 significant decimals)."""
    with atomic_path(csv) as path:
        table.to_csv(path, index=False)
    with atomic_path(markdown) as path:
        path.write_text(f"{caption}\n\n{table.to_markdown(index=False, floatfmt='.3f')}\n")
    with atomic_path(latex) as path:
        path.write_text(
            table.to_latex(index=False, float_format="%.3f", caption=caption, escape=True)
        )
