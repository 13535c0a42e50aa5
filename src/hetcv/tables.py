"""The paper's Table 1 and Table 2 and the CV table, laid out from the summary tables.

Every function takes the summary DataFrames of one dataset and returns a display table; the
writers put one table into CSV, Markdown and LaTeX.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.io import atomic_path
from hetcv.stats import METRIC_LABEL


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


def cv_table(cv: pd.DataFrame, selected: dict, task: str) -> pd.DataFrame:
    """Per sample size: test metric, CV with its 95 % CI, null CV, excess CV and p-value."""
    rows = select(cv, selected).sort_values("n")
    metric = METRIC_LABEL[task]
    return pd.DataFrame(
        {
            "n": rows["n"].to_numpy(),
            f"test {metric}": rows["test_metric"].to_numpy(),
            "CV %": rows["cv"].to_numpy(),
            "CV 95% CI low": rows["cv_ci_low"].to_numpy(),
            "CV 95% CI high": rows["cv_ci_high"].to_numpy(),
            "null CV %": rows["null_cv"].to_numpy(),
            "excess CV %": rows["excess_cv"].to_numpy(),
            "p-value": rows["p_value"].to_numpy(),
            "runs with an empty cluster": rows["runs_with_empty_cluster"].to_numpy(),
            "verdict": np.where(
                rows["above_noise_floor"], "above noise floor", "within noise floor"
            ),
        }
    )


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
