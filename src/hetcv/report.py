"""Edges of the reporting rules: read the summaries, write tables, figures and exports."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv import figures, tables
from hetcv.cluster import pca_scores
from hetcv.columns import FEATURE_COLUMNS
from hetcv.io import atomic_path
from hetcv.verdict import dataset_verdict

GALLERY_IMAGES = 8


def read_summaries(paths: dict[str, str]) -> dict[str, pd.DataFrame]:
    """Each declared summary table, by name (``cv``, ``clusters`` …)."""
    return {name: pd.read_parquet(path) for name, path in paths.items()}


def run_tables_job(
    *, summary: dict[str, str], out: dict, dataset: str, task: str, selected: dict
) -> None:
    """``summary`` maps ``cv``, ``clusters`` and ``table1`` to their summary files."""
    summary = read_summaries(summary)
    caption = f"{dataset}, {selected['algorithm']} with k = {selected['k']}"
    for name, table, title in (
        (
            "table1",
            tables.table1(summary["table1"], selected),
            "Table 1: centroid and closest-point Euclidean distances between clusters (PCA space)",
        ),
        (
            "table2",
            tables.table2(summary["clusters"], selected),
            "Table 2: Euclidean distance between each cluster's centroid and its points",
        ),
        (
            "cv",
            tables.cv_table(summary["cv"], selected, task),
            "Raw and debiased coefficient of variation of the cluster metrics, with the tests",
        ),
    ):
        tables.write_table(
            table, out[f"{name}_csv"], out[f"{name}_md"], out[f"{name}_tex"], f"{title}; {caption}."
        )


def run_figures_job(
    *, summary: dict[str, str], out: dict, dataset: str, task: str, selected: dict, style: dict
) -> None:
    """``summary`` maps ``cv``, ``clusters``, ``fold_cv``, ``correlation`` and ``validity``
    to their summary files."""
    summary = read_summaries(summary)
    clusters, cv = summary["clusters"], summary["cv"]
    made = {
        "fig2": figures.figure2(clusters, cv, selected, task, style, dataset),
        "fig3": figures.figure3(clusters, selected, style, dataset),
        "fig4": figures.figure4(cv, selected, style, dataset),
        "fig5": figures.figure5(
            cv,
            summary["fold_cv"],
            summary["correlation"],
            selected,
            task,
            style,
            dataset,
        ),
        "validity": figures.figure_validity(summary["validity"], style, dataset),
    }
    for name, figure in made.items():
        figures.save(figure, out[f"{name}_png"], out[f"{name}_pdf"], style)


def error_flags(table: pd.DataFrame, task: str) -> np.ndarray:
    """Classification: wrong predictions; regression: the worst 10 % squared errors."""
    if task == "classification":
        return ~table["correct"].to_numpy(dtype=bool)
    return table["sq_error"].to_numpy() >= np.quantile(table["sq_error"], 0.9)


def run_pictures_job(
    *,
    export: str,
    first_folds: list[str],
    images: str,
    manifest: str,
    clusters: str,
    out: dict,
    dataset: str,
    task: str,
    selected: dict,
    pca_components: int,
    style: dict,
    seed: int,
) -> None:
    """PCA scatter (fold 0 per n) and cluster gallery (largest n)."""
    per_sample = pd.read_csv(export)
    points_by_n = {}
    for path in first_folds:
        fold = pd.read_parquet(path)
        n = int(fold["n"].iloc[0])
        coordinates = pca_scores(fold[FEATURE_COLUMNS].to_numpy(), max(2, pca_components), seed)
        labels = per_sample[(per_sample["n"] == n) & (per_sample["fold"] == 0)]
        labels = labels.set_index("sample_id").loc[fold["sample_id"], "cluster"].to_numpy()
        points_by_n[n] = pd.DataFrame(
            {
                "pc1": coordinates[:, 0],
                "pc2": coordinates[:, 1],
                "cluster": labels,
                "error": error_flags(fold, task),
            }
        )
    figures.save(
        figures.figure_scatter(points_by_n, style, dataset, selected),
        out["scatter_png"],
        out["scatter_pdf"],
        style,
    )

    pixels = np.load(images, mmap_mode="r")
    table = pd.read_parquet(manifest)
    row_of = pd.Series(np.arange(len(table)), index=table["sample_id"])
    largest = per_sample["n"].max()
    at_largest = per_sample[per_sample["n"] == largest].assign(error=lambda t: error_flags(t, task))
    cluster_stats = tables.select(pd.read_parquet(clusters), selected)
    cluster_stats = cluster_stats[cluster_stats["n"] == largest].set_index("cluster")
    rows = []
    for cluster, members in at_largest.groupby("cluster"):
        typical = members.sort_values("membership", ascending=False).head(GALLERY_IMAGES)
        errors = members[members["error"]]
        worst = (
            errors.sort_values("membership", ascending=False)
            if task == "classification"
            else errors.sort_values("sq_error", ascending=False)
        ).head(GALLERY_IMAGES)
        rows.append(
            {
                "cluster": cluster,
                "metric": cluster_stats.loc[cluster, "metric"],
                "size_pct": cluster_stats.loc[cluster, "size_pct"],
                "typical": [pixels[row_of[s]] for s in typical["sample_id"]],
                "worst": [pixels[row_of[s]] for s in worst["sample_id"]],
            }
        )
    figures.save(
        figures.figure_gallery(rows, style, dataset, largest),
        out["gallery_png"],
        out["gallery_pdf"],
        style,
    )


def run_subgroups_job(
    *,
    export: str,
    manifest: str,
    out: dict,
    dataset: str,
    task: str,
    selected: dict,
    style: dict,
) -> None:
    """Heat map of the share of each subgroup in each consensus cluster, per sample size."""
    per_sample = pd.read_csv(export)
    subgroup = pd.read_parquet(manifest).set_index("sample_id")["subgroup"]
    labelled = per_sample.assign(subgroup=subgroup.loc[per_sample["sample_id"]].to_numpy())
    counts = labelled.groupby(["n", "cluster", "subgroup"]).size().rename("count").reset_index()
    counts["share"] = (
        100 * counts["count"] / counts.groupby(["n", "cluster"])["count"].transform("sum")
    )
    figures.save(
        figures.figure_subgroups(counts, style, dataset),
        out["subgroups_png"],
        out["subgroups_pdf"],
        style,
    )


def run_summary_md_job(
    *, summaries: dict[str, dict[str, str]], out: str, datasets: dict, selected: dict
) -> None:
    """``summaries`` maps dataset to its ``cv``, ``clusters``, ``correlation`` and
    ``subgroups`` files; ``datasets`` maps it to its task."""
    parts = [
        "# hetcv: heterogeneity verdicts",
        "",
        "CV = coefficient of variation of the per-cluster test metric (%). The raw CV (the "
        "paper's) mixes two things: real differences between the clusters and the sampling "
        "noise of small clusters (for accuracy a and m samples a cluster, about "
        "√((1 − a)/(a·m)) on its own). The debiased CV removes the noise (method of moments, "
        "as in meta-analysis); I² is the share of the spread that is real. p (Holm): "
        "permutation test of the raw CV, adjusted over the sample sizes. p calibrated: "
        "are the errors more uneven over the clusters than the model's own (temperature-"
        "scaled) confidence predicts? A model's errors always gather on hard images, so the "
        "first test is nearly always significant with enough data; the second asks whether "
        "a cluster fails beyond what the model knows about it. Guide: CV < 10 % very good, "
        "10–20 good, 20–30 acceptable, > 30 not acceptable (clinical chemistry, quoted by "
        "the paper); the paper recommends CV < 5 %.",
        "",
    ]
    for dataset, paths in summaries.items():
        summary = read_summaries(paths)
        parts.append(
            dataset_verdict(
                dataset,
                datasets[dataset],
                *(summary[name] for name in ("cv", "clusters", "correlation", "subgroups")),
                selected,
            )
        )
    with atomic_path(out) as path:
        path.write_text("\n".join(parts))


def run_validation_figure_job(*, table: str, out_png: str, out_pdf: str, style: dict) -> None:
    figure = figures.figure_validation(pd.read_csv(table), style)
    figures.save(figure, out_png, out_pdf, style)
