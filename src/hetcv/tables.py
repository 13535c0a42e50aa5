"""The paper's Table 1 and Table 2 and the CV table, laid out from the summary tables.

Every function takes the summary DataFrames of one dataset and returns a display table; the
writers put one table into CSV, Markdown and LaTeX.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.columns import P_VALUE_COLUMNS
from hetcv.io import atomic_path, read_tables
from hetcv.metrics import LABEL
from hetcv.stats import SIGNIFICANCE


def select(summary: pd.DataFrame, selected: dict) -> pd.DataFrame:
    """Rows of the selected (algorithm, k).

    Parameters
    ----------
    summary : DataFrame
        Any summary table with ``algorithm`` and ``k`` columns.
    selected : dict
        The config's ``selected``: ``{"algorithm": str, "k": int}``.

    Returns
    -------
    rows : DataFrame
        The matching rows, original index kept.
    """
    chosen = (summary["algorithm"] == selected["algorithm"]) & (summary["k"] == selected["k"])
    return summary[chosen]


def table1(pairs: pd.DataFrame, selected: dict) -> pd.DataFrame:
    """The paper's Table 1: centroid and closest-point distance of every cluster pair.

    Parameters
    ----------
    pairs : DataFrame
        ``table1.parquet``: ``algorithm, k, n, cluster_a, cluster_b, centroid_distance,
        closest_distance``.
    selected : dict
        Which (algorithm, k) to lay out; see `select`.

    Returns
    -------
    table : DataFrame
        One row per (distance, n): columns ``distance, n`` then one per pair ``0-1``, ``0-2``,
        … in numeric order.
    """
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
    """The paper's Table 2: point-to-own-centroid distances per cluster and n.

    Min / max / mean / sd of the distances, and in how many of the fold × repeat runs the
    cluster was empty (its distances average the others).

    Parameters
    ----------
    clusters : DataFrame
        ``clusters.parquet``, with ``dist_min, dist_max, dist_mean, dist_sd, empty_runs``.
    selected : dict
        The reported (algorithm, k).

    Returns
    -------
    table : DataFrame
        Columns ``cluster, n, min, max, mean, sd, runs empty``, sorted by cluster then n.
    """
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
    "debiased_cv_upper",
    "error_cv",
    "error_cv_ci_low",
    "error_cv_ci_high",
    "error_cv_upper",
    "p_no_spread",
    "debiased_method",
    "noise_cv",
    "i_squared",
    "q_p_value",
    "null_cv",
    "excess_cv",
    *P_VALUE_COLUMNS,
    "weakest_cluster",
    "weakest_metric",
    "weakest_ci_low",
    "weakest_ci_high",
    "weakest_error_ratio",
    "weakest_error_ratio_ci_low",
    "weakest_error_ratio_ci_high",
    "runs_with_empty_cluster",
    "runs_with_undefined_cluster",
    "bootstrap_nonfinite",
]


def heterogeneity_reading(row: pd.Series) -> str:
    """What the two tests of the selected clustering say at one sample size, in words.

    Parameters
    ----------
    row : Series
        One row of ``cv.parquet``; reads ``p_holm`` and ``p_holm_calibrated`` (NaN: no test).

    Returns
    -------
    reading : str
        The plain test's verdict, then the calibrated test's when it exists.
    """
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


def cv_table(cv: pd.DataFrame, selected: dict, metric: str) -> pd.DataFrame:
    """The CV table: one row per sample size of the selected clustering.

    Columns: the test metric, the paper's raw CV (its 95 % CI is for the expected raw CV) and
    the debiased CV with their 95 % CIs, the error-scale CV (accuracy), I²,
    the tests (raw and Holm-adjusted p-values), the cross-fitted weakest cluster and the
    counts of empty-cluster runs and non-finite bootstrap replicates; ``reading`` puts the
    tests into words. Column names are those of ``cv.parquet`` (config/README.md), with
    ``test_metric`` named after the metric.

    Parameters
    ----------
    cv : DataFrame
        ``cv.parquet`` of one dataset, holding every column of `CV_COLUMNS`.
    selected : dict
        The reported (algorithm, k); only its rows carry the CIs and tests.
    metric : str
        The metric's name (:data:`hetcv.metrics.METRICS`); names the metric column (``test
        accuracy``, ``test AUROC`` …).

    Returns
    -------
    table : DataFrame
        Columns ``n``, ``test <metric>``, the rest of `CV_COLUMNS` and ``reading``, by n.
    """
    rows = select(cv, selected).sort_values("n")
    table = rows[["n", *CV_COLUMNS]].reset_index(drop=True)
    table["reading"] = [heterogeneity_reading(row) for _, row in rows.iterrows()]
    return table.rename(columns={"test_metric": f"test {LABEL[metric]}"})


def metadata_table(profile: pd.DataFrame) -> pd.DataFrame:
    """The metadata profile as a table: per n, column and cluster, what it holds and the test.

    Parameters
    ----------
    profile : DataFrame
        ``metadata.parquet`` (:func:`hetcv.profiles.metadata_profiles`); may be empty.

    Returns
    -------
    table : DataFrame
        ``n, column, cluster, level`` (categorical) with ``share %, overall %, lift``, or
        ``median, q1, q3, overall median`` (numeric), then ``test, effect, p (Holm)``.
    """
    names = {
        "share": "share %",
        "overall_share": "overall %",
        "overall_median": "overall median",
        "p_holm": "p (Holm)",
    }
    shown = ["n", "column", "cluster", "level", "count", "share", "overall_share", "lift"]
    shown += ["median", "q1", "q3", "overall_median", "test", "effect", "p_holm"]
    present = [column for column in shown if column in profile]
    return profile[present].rename(columns=names).reset_index(drop=True)


PLANNING_COLUMNS = [
    "quantity",
    "target",
    "n_star",
    "n_star_low",
    "n_star_high",
    "status",
    "families",
    "lack_of_fit_p",
    "size_sd",
    "backtest_error",
    "observed",
    "largest_n",
    "asymptote",
    "rate",
]


def planning_table(planning: pd.DataFrame) -> pd.DataFrame:
    """The planning table: per quantity and target, n* with its interval, status and backtest.

    Parameters
    ----------
    planning : DataFrame
        ``planning.parquet`` (:func:`hetcv.plan.planning_table`).

    Returns
    -------
    table : DataFrame
        The :data:`PLANNING_COLUMNS`, without the figure's curve lists.
    """
    return planning[PLANNING_COLUMNS].reset_index(drop=True)


def write_table(table: pd.DataFrame, csv: str, markdown: str, latex: str, caption: str) -> None:
    """Write one table as CSV (full precision), Markdown and LaTeX (3 decimals), atomically.

    Parameters
    ----------
    table : DataFrame
        The display table; its index is not written.
    csv, markdown, latex : str
        Destination paths of the three formats.
    caption : str
        First line of the Markdown file and the LaTeX table's caption; not in the CSV.
    """
    with atomic_path(csv) as path:
        table.to_csv(path, index=False)
    with atomic_path(markdown) as path:
        path.write_text(f"{caption}\n\n{table.to_markdown(index=False, floatfmt='.3f')}\n")
    with atomic_path(latex) as path:
        path.write_text(
            table.to_latex(index=False, float_format="%.3f", caption=caption, escape=True)
        )


def run_tables_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The tables rule: Tables 1 and 2 and the CV table, each as CSV, Markdown and LaTeX.

    Parameters
    ----------
    inputs : dict
        The summary tables ``cv``, ``cluster_stats``, ``cluster_pairs``, ``metadata`` and
        ``planning``.
    outputs : dict
        ``{table1,table2,cv,metadata,planning}_{csv,md,tex}``.
    params : dict
        ``dataset``, ``task``, ``metric`` and ``selected`` (``algorithm``, ``k``).
    """
    summary = read_tables(inputs, ("cv", "cluster_stats", "cluster_pairs", "metadata", "planning"))
    selected = params["selected"]
    caption = f"{params['dataset']}, {selected['algorithm']} with k = {selected['k']}"
    for name, table, title in (
        (
            "table1",
            table1(summary["cluster_pairs"], selected),
            "Table 1: centroid and closest-point Euclidean distances between clusters (PCA space)",
        ),
        (
            "table2",
            table2(summary["cluster_stats"], selected),
            "Table 2: Euclidean distance between each cluster's centroid and its points",
        ),
        (
            "cv",
            cv_table(summary["cv"], selected, params["metric"]),
            "Raw and debiased coefficient of variation of the cluster metrics, with the tests",
        ),
        (
            "metadata",
            metadata_table(summary["metadata"]),
            "What each consensus cluster holds, per metadata column, with the tests",
        ),
        (
            "planning",
            planning_table(summary["planning"]),
            "Sample size n* at which each quantity meets its target, from learning curves",
        ),
    ):
        paths = [outputs[f"{name}_{extension}"] for extension in ("csv", "md", "tex")]
        write_table(table, *paths, f"{title}; {caption}.")
