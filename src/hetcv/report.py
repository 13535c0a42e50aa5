"""Edges of the reporting rules: read the summaries, write tables, figures and exports.

Every job here has the signature of :mod:`hetcv.jobs`: ``run_x_job(inputs, outputs, params)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv import figures, tables
from hetcv.columns import VERDICT_TABLES
from hetcv.io import atomic_path, optional_file
from hetcv.pictures import gallery_samples, scatter_points
from hetcv.subgroups import subgroup_shares
from hetcv.verdict import SUMMARY_INTRODUCTION, dataset_verdict, labels_verdict


def read_tables(paths: dict[str, str], names) -> dict[str, pd.DataFrame]:
    """The Parquet files ``paths[name]`` for each of ``names``, read, by name."""
    return {name: pd.read_parquet(paths[name]) for name in names}


def read_per_sample(path: str) -> pd.DataFrame:
    """A per-sample CSV with ``sample_id`` as text: ids such as RSNA's ``1377`` stay ids."""
    return pd.read_csv(path, dtype={"sample_id": str})


def save_figures(made: dict, outputs: dict, style: dict) -> None:
    """Write each figure of ``made`` to its ``{name}_png`` and ``{name}_pdf`` outputs."""
    for name, figure in made.items():
        figures.save(figure, outputs[f"{name}_png"], outputs[f"{name}_pdf"], style)


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
            tables.table1(summary["cluster_pairs"], selected),
            "Table 1: centroid and closest-point Euclidean distances between clusters (PCA space)",
        ),
        (
            "table2",
            tables.table2(summary["cluster_stats"], selected),
            "Table 2: Euclidean distance between each cluster's centroid and its points",
        ),
        (
            "cv",
            tables.cv_table(summary["cv"], selected, params["metric"]),
            "Raw and debiased coefficient of variation of the cluster metrics, with the tests",
        ),
        (
            "metadata",
            tables.metadata_table(summary["metadata"]),
            "What each consensus cluster holds, per metadata column, with the tests",
        ),
        (
            "planning",
            tables.planning_table(summary["planning"]),
            "Sample size n* at which each quantity meets its target, from learning curves",
        ),
    ):
        paths = [outputs[f"{name}_{extension}"] for extension in ("csv", "md", "tex")]
        tables.write_table(table, *paths, f"{title}; {caption}.")


def run_figures_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The figures rule: Figures 2–5 and the cluster-number exploration (``validity``).

    Parameters
    ----------
    inputs : dict
        The summary tables ``cv``, ``cluster_stats``, ``fold_cv``, ``correlation``,
        ``validity``, ``metadata`` and ``planning``.
    outputs : dict
        ``{fig2,fig3,fig4,fig5,validity,metadata,planning}_{png,pdf}``.
    params : dict
        ``dataset``, ``task``, ``metric``, ``selected`` and ``style`` (the ``report`` config).
    """
    names = ("cv", "cluster_stats", "fold_cv", "correlation", "validity", "metadata", "planning")
    summary = read_tables(inputs, names)
    dataset, metric, selected, style = (
        params[k] for k in ("dataset", "metric", "selected", "style")
    )
    clusters, cv = summary["cluster_stats"], summary["cv"]
    made = {
        "fig2": figures.figure2(clusters, cv, selected, metric, style, dataset),
        "fig3": figures.figure3(clusters, selected, style, dataset),
        "fig4": figures.figure4(cv, selected, style, dataset),
        "fig5": figures.figure5(
            cv, summary["fold_cv"], summary["correlation"], selected, metric, style, dataset
        ),
        "validity": figures.figure_validity(summary["validity"], style, dataset),
        "metadata": figures.figure_metadata(summary["metadata"], style, dataset),
        "planning": figures.figure_planning(
            summary["planning"], summary["fold_cv"], selected, metric, style, dataset
        ),
    }
    save_figures(made, outputs, params["style"])


def run_pictures_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The cluster_pictures rule: the PCA scatter (fold 0 per n) and the galleries (largest n).

    Parameters
    ----------
    inputs : dict
        ``export`` (``clusters_per_sample.csv``), ``first_folds`` (fold 0's features per n),
        ``images``, ``manifest`` and ``cluster_stats`` (the summary table).
    outputs : dict
        ``{scatter,gallery}_{png,pdf}``.
    params : dict
        ``dataset``, ``task``, ``selected``, ``style`` and ``pca_components``.
    """
    dataset, task, selected, style = (params[k] for k in ("dataset", "task", "selected", "style"))
    per_sample = read_per_sample(inputs["export"])
    points_by_n = {}
    for path in inputs["first_folds"]:
        fold = pd.read_parquet(path)
        n = int(fold["n"].iloc[0])
        at_fold0 = per_sample[(per_sample["n"] == n) & (per_sample["fold"] == 0)]
        points_by_n[n] = scatter_points(fold, at_fold0, task, params["pca_components"])

    largest = int(per_sample["n"].max())
    pixels = np.load(inputs["images"], mmap_mode="r")
    row_of = pd.Series(
        np.arange(len(pixels)), index=pd.read_parquet(inputs["manifest"])["sample_id"]
    )
    stats = tables.select(pd.read_parquet(inputs["cluster_stats"]), selected)
    stats = stats[stats["n"] == largest].set_index("cluster")
    gallery = [
        {
            "cluster": cluster,
            "metric": stats.loc[cluster, "metric"],
            "size_pct": stats.loc[cluster, "size_pct"],
            "typical": [pixels[row_of[sample]] for sample in typical],
            "worst": [pixels[row_of[sample]] for sample in worst],
        }
        for cluster, (typical, worst) in gallery_samples(
            per_sample[per_sample["n"] == largest], task
        ).items()
    ]
    made = {
        "scatter": figures.figure_scatter(points_by_n, style, dataset, selected),
        "gallery": figures.figure_gallery(gallery, dataset, largest),
    }
    save_figures(made, outputs, style)


def run_subgroups_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The subgroup_heatmap rule: each subgroup's share of each consensus cluster, per n.

    Parameters
    ----------
    inputs : dict
        ``export`` (``clusters_per_sample.csv``) and ``manifest`` (with ``subgroup``).
    outputs : dict
        ``subgroups_png`` and ``subgroups_pdf``.
    params : dict
        ``dataset``, ``style`` (and the reporting keys it ignores).
    """
    subgroup = pd.read_parquet(inputs["manifest"]).set_index("sample_id")["subgroup"]
    shares = subgroup_shares(read_per_sample(inputs["export"]), subgroup)
    made = {"subgroups": figures.figure_subgroups(shares, params["style"], params["dataset"])}
    save_figures(made, outputs, params["style"])


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


def run_slices_figure_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The slices_figure rule: each method's worst slice and ``slices.method``'s images.

    Parameters
    ----------
    inputs : dict
        ``per_sample`` (``slices_per_sample.csv``), ``slices`` (the summary), ``manifest`` and
        ``images`` (empty for a features source).
    outputs : dict
        ``slices_png`` and ``slices_pdf``.
    params : dict
        ``dataset``, ``style`` and ``method`` (``slices.method``).
    """
    summary = pd.read_parquet(inputs["slices"])
    largest = int(summary["n"].max())
    summary = summary[summary["n"] == largest]
    images_by_slice = {}
    if images := optional_file(inputs["images"]):
        pixels = np.load(images, mmap_mode="r")
        row_of = pd.Series(
            np.arange(len(pixels)), index=pd.read_parquet(inputs["manifest"])["sample_id"]
        )
        per_sample = read_per_sample(inputs["per_sample"])
        shown = per_sample[per_sample["n"] == largest].query("method == @params['method']")
        for rank in sorted(summary.loc[summary["method"] == params["method"], "slice"]):
            top = shown[shown["slice"] == rank].nlargest(figures.SLICE_IMAGES, "score")
            images_by_slice[int(rank)] = [pixels[row_of[sample]] for sample in top["sample_id"]]
    figure = figures.figure_slices(
        summary, images_by_slice, params["method"], params["style"], params["dataset"]
    )
    save_figures({"slices": figure}, outputs, params["style"])


def run_validation_figure_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The validation_figure rule: the planted-subgroup benchmark's figure.

    Parameters
    ----------
    inputs : dict
        ``table`` (``results/validation/table.csv``).
    outputs : dict
        ``png`` and ``pdf``.
    params : dict
        ``style``.
    """
    figure = figures.figure_validation(pd.read_csv(inputs["table"]), params["style"])
    figures.save(figure, outputs["png"], outputs["pdf"], params["style"])
