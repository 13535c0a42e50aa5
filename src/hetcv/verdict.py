"""``results/summary.md``: a short, plain-language verdict per dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.stats import METRIC_LABEL, PAPER_CV_GUIDELINE
from hetcv.tables import heterogeneity_reading, select

CORRELATION_LEVELS = {
    "sample_size": "raw CV, over the sample sizes",
    "sample_size_debiased": "debiased CV, over the sample sizes",
    "fold": "raw CV, over the (n, fold) points, permuted within each n",
}


def interval(value: float, low: float, high: float, digits: int = 1) -> str:
    if not np.isfinite(value):
        return "–"
    return f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def p_text(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "–"


def correlation_line(row: pd.Series, metric: str) -> str:
    where = CORRELATION_LEVELS[row["level"]]
    if not pd.notna(row["pearson"]):
        return f"- {where} against test {metric}: too few points (or no spread) for a correlation."
    ci = (
        f"95 % CI {row['pearson_ci_low']:.2f} to {row['pearson_ci_high']:.2f}"
        if pd.notna(row["pearson_ci_low"])
        else "no bootstrap CI: too few points"
    )
    return (
        f"- {where} ({row['n_points']} points) against test {metric}: Pearson r = "
        f"{row['pearson']:.2f} (permutation p = {row['pearson_perm_p']:.3g}, {ci}); "
        f"Spearman ρ = {row['spearman']:.2f}."
    )


def dataset_verdict(
    dataset: str,
    task: str,
    cv: pd.DataFrame,
    clusters: pd.DataFrame,
    correlation: pd.DataFrame,
    subgroups: pd.DataFrame,
    selected: dict,
) -> str:
    metric = METRIC_LABEL[task]
    rows = select(cv, selected).sort_values("n")
    lines = [
        f"## {dataset}",
        "",
        f"Selected clustering: {selected['algorithm']} with k = {selected['k']}; metric: {metric}. "
        "The headline is the debiased CV: the spread of the clusters' true metrics, with the "
        "sampling noise of small clusters removed. The paper's raw CV includes that noise.",
        "",
        "| n | test metric | debiased CV % (95 % CI) | I² | raw CV % (95 % CI) | p (Holm) "
        "| p calibrated (Holm) | reading |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, row in rows.iterrows():
        lines.append(
            f"| {row['n']} | {row['test_metric']:.3f} | "
            f"{interval(row['debiased_cv'], row['debiased_cv_ci_low'], row['debiased_cv_ci_high'])}"
            f" | {row['i_squared']:.2f} | "
            f"{interval(row['cv'], row['cv_ci_low'], row['cv_ci_high'])} | "
            f"{p_text(row['p_holm'])} | {p_text(row['p_holm_calibrated'])} | "
            f"{heterogeneity_reading(row)} |"
        )
    lines.append("")
    largest = rows.iloc[-1]
    for name, column in (("debiased", "debiased_cv"), ("raw", "cv")):
        where = "below" if 0 <= largest[column] < PAPER_CV_GUIDELINE else "not below"
        lines.append(
            f"- At n = {largest['n']} the {name} CV is {largest[column]:.1f} %: {where} the "
            f"paper's {PAPER_CV_GUIDELINE:.0f} % guideline."
        )
    lines += [correlation_line(row, metric) for _, row in correlation.iterrows()]
    for row in select(clusters, selected).query("empty_runs > 0").itertuples():
        lines.append(
            f"- At n = {row.n}, cluster {row.cluster} was empty (no sample's highest "
            f"membership) in {row.empty_runs} of {row.runs} fold × repeat runs; its metric "
            "averages the other runs, and those runs' CV is over the remaining clusters."
        )
    weakest = interval(
        largest["weakest_metric"], largest["weakest_ci_low"], largest["weakest_ci_high"], 3
    )
    lines.append(
        f"- Weakest cluster at n = {largest['n']} (cross-fitted: ranked on one half of each "
        f"fold's held-out samples, measured on the other): cluster "
        f"{largest['weakest_cluster']:.0f}, {metric} {weakest} against "
        f"{largest['test_metric']:.3f} overall."
    )
    if len(subgroups):
        top = subgroups[subgroups["n"] == largest["n"]].sort_values("lift", ascending=False).head(3)
        described = ", ".join(
            f"subgroup {row.subgroup} (lift {row.lift:.1f}, precision "
            f"{row.precision:.2f}, AUROC {row.auroc:.2f})"
            for row in top.itertuples()
        )
        lines.append(f"- What the worst cluster holds at n = {largest['n']}: {described}.")
    lines.append("")
    return "\n".join(lines)
