"""``results/summary.md``: a short, plain-language verdict per dataset."""

from __future__ import annotations

import pandas as pd

from hetcv.stats import METRIC_LABEL
from hetcv.tables import select


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
        f"Selected clustering: {selected['algorithm']} with k = {selected['k']}; metric: {metric}.",
        "",
        "| n | test metric | CV % (95 % CI) | null CV % | excess CV % | p | reading |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, row in rows.iterrows():
        reading = (
            "heterogeneous beyond chance"
            if row["above_noise_floor"]
            else "within the noise floor: no evidence of heterogeneity"
        )
        if row["cv"] < 0:
            reading = "mean cluster metric below 0 (errors beyond the target range): CV undefined"
        guideline = "meets" if 0 <= row["cv"] < 5 else "misses"
        lines.append(
            f"| {row['n']} | {row['test_metric']:.3f} | {row['cv']:.1f} "
            f"({row['cv_ci_low']:.1f}–{row['cv_ci_high']:.1f}) | {row['null_cv']:.1f} | "
            f"{row['excess_cv']:+.1f} | {row['p_value']:.3f} | {reading}; {guideline} the "
            f"paper's CV < 5 % |"
        )
    lines.append("")
    for _, row in correlation.iterrows():
        level = "sample sizes" if row["level"] == "sample_size" else "(n, fold) points"
        if not pd.notna(row["pearson"]):
            lines.append(
                f"- CV against test {metric} over {row['n_points']} {level}: too few "
                "points (or no spread) for a correlation."
            )
            continue
        lines.append(
            f"- CV against test {metric} over {row['n_points']} {level}: Pearson r = "
            f"{row['pearson']:.2f} (permutation p = {row['pearson_perm_p']:.3g}, 95 % CI "
            f"{row['pearson_ci_low']:.2f} to {row['pearson_ci_high']:.2f}); Spearman ρ = "
            f"{row['spearman']:.2f}."
        )
    for row in select(clusters, selected).query("empty_runs > 0").itertuples():
        lines.append(
            f"- At n = {row.n}, cluster {row.cluster} was empty (no sample's highest "
            f"membership) in {row.empty_runs} of {row.runs} fold × repeat runs; its metric "
            "averages the other runs, and those runs' CV is over the remaining clusters."
        )
    largest = rows["n"].max()
    at_largest = select(clusters, selected)
    at_largest = at_largest[at_largest["n"] == largest].sort_values("metric")
    weakest = at_largest.iloc[0]
    lines.append(
        f"- Weakest cluster at n = {largest}: cluster {weakest['cluster']} "
        f"({weakest['size_pct']:.0f} % of held-out samples), {metric} "
        f"{weakest['metric']:.3f} against {rows['test_metric'].iloc[-1]:.3f} overall."
    )
    if len(subgroups):
        top = subgroups[subgroups["n"] == largest].sort_values("lift", ascending=False).head(3)
        described = ", ".join(
            f"subgroup {row.subgroup} (lift {row.lift:.1f}, precision "
            f"{row.precision:.2f}, AUROC {row.auroc:.2f})"
            for row in top.itertuples()
        )
        lines.append(f"- What the worst cluster holds at n = {largest}: {described}.")
    lines.append("")
    return "\n".join(lines)
