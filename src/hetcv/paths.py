"""Every file the workflow writes, named once, and the targets of ``rule all``.

The rules (``workflow/rules/*.smk``) take their inputs and outputs from :data:`PATHS`; the
tests check that no path is written by two rules and that no name means two tables. What each
table holds: :mod:`hetcv.columns` and config/README.md.
"""

from __future__ import annotations

from hetcv.columns import SUMMARY_TABLES, VERDICT_TABLES

# {dataset}, {n}, {fold}: the rules' wildcards; {algorithm}, {table}, {name}, {extension}:
# expanded by the rules.
DATA = "results/{dataset}/data"
SIZE = "results/{dataset}/n{n}"
FOLD = f"{SIZE}/fold{{fold}}"
SUMMARY = "results/{dataset}/summary"
VALIDATION = "results/validation"
PATHS = {
    # prepare (or import_features): the dataset
    "images": f"{DATA}/images.npy",
    "manifest": f"{DATA}/manifest.parquet",
    "held_out": f"{DATA}/held_out.parquet",
    # split, train
    "split": "results/{dataset}/splits/n{n}.parquet",
    "model": f"{FOLD}/model.pt",
    "features": f"{FOLD}/features.parquet",
    "history": f"{FOLD}/history.csv",
    # cluster: one job per (dataset, n); each table holds every fold, with a fold column
    "fold_assignments": f"{SIZE}/assignments_{{algorithm}}.parquet",
    "fold_cluster_stats": f"{SIZE}/cluster_stats_{{algorithm}}.parquet",
    "fold_cluster_pairs": f"{SIZE}/cluster_pairs_{{algorithm}}.parquet",
    "fold_cluster_runs": f"{SIZE}/cluster_runs_{{algorithm}}.parquet",
    # summarize, plan, slices, labels: the summary tables (hetcv.columns.SUMMARY_TABLES)
    "summary_table": f"{SUMMARY}/{{table}}.parquet",
    "subgroup_variants": f"{SUMMARY}/subgroup_variants.parquet",
    "clusters_per_sample": "results/{dataset}/clusters_per_sample.csv",
    "slices_per_sample": "results/{dataset}/slices_per_sample.csv",
    # the reports
    "table": "results/tables/{dataset}_{name}.{extension}",
    "figure": "results/figures/{dataset}_{name}.{extension}",
    "summary_md": "results/summary.md",
    # the planted benchmark (make validate)
    "validation_table": f"{VALIDATION}/table.csv",
    "validation_tuning": f"{VALIDATION}/tuning.csv",
    "validation_summary": f"{VALIDATION}/summary.md",
    "validation_figure": f"{VALIDATION}/figure.{{extension}}",
    "validation_dose_response": f"{VALIDATION}/dose_response.{{extension}}",
}
# The per-(dataset, n) tables of the cluster rule (PATHS keys), in FoldClustering's order.
FOLD_TABLES = ("fold_assignments", "fold_cluster_stats", "fold_cluster_pairs", "fold_cluster_runs")
FIGURES = ["fig2", "fig3", "fig4", "fig5", "validity", "metadata", "planning"]
PICTURES = ["scatter", "gallery"]
TABLES = ["table1", "table2", "cv", "metadata", "planning"]


def summary_tables(*names: str, dataset: str = "{dataset}") -> dict[str, str]:
    """The summary tables ``names`` of one dataset (or of the ``{dataset}`` wildcard).

    Parameters
    ----------
    *names : str
        Names from :data:`hetcv.columns.SUMMARY_TABLES` (or ``planning``, ``slices``,
        ``labels``).
    dataset : str
        A dataset's name, or the wildcard.

    Returns
    -------
    dict
        Name → path.
    """
    return {name: PATHS["summary_table"].format(dataset=dataset, table=name) for name in names}


def output_files(pattern: str, names: list[str], dataset: str = "{dataset}") -> dict[str, str]:
    """PNG and PDF of each figure, or CSV, Markdown and LaTeX of each table.

    Parameters
    ----------
    pattern : {"figure", "table"}
    names : list of str
    dataset : str

    Returns
    -------
    dict
        ``{name}_{extension}`` → path.
    """
    extensions = ("csv", "md", "tex") if pattern == "table" else ("png", "pdf")
    return {
        f"{name}_{extension}": PATHS[pattern].format(
            dataset=dataset, name=name, extension=extension
        )
        for name in names
        for extension in extensions
    }


def verdict_inputs(study) -> dict[str, str]:
    """The tables ``summary.md`` reads: each analysed dataset's verdict tables
    (:data:`hetcv.columns.VERDICT_TABLES`), and each multi-label dataset's labels table.

    Parameters
    ----------
    study : hetcv.study.Study

    Returns
    -------
    dict
        ``{dataset}_{table}`` → path.
    """
    tables = [(name, table) for name in study.analysed for table in VERDICT_TABLES]
    tables += [(name, "labels") for name in study.multilabel_datasets]
    return {f"{name}_{table}": summary_tables(table, dataset=name)[table] for name, table in tables}


def final_outputs(study, has_subgroups) -> list[str]:
    """What ``rule all`` asks for: ``summary.md`` and every analysed dataset's products.

    Parameters
    ----------
    study : hetcv.study.Study
    has_subgroups : callable
        A ``source`` config → whether its manifest has a ``subgroup`` column
        (:func:`hetcv.sources.source_has_subgroups`).

    Returns
    -------
    list of str
    """
    outputs = [PATHS["summary_md"]]  # through it, each multi-label dataset's labels table
    for name in study.analysed:
        products = summary_tables(*SUMMARY_TABLES, dataset=name)
        products |= output_files("table", TABLES, name)
        products |= output_files("figure", [*FIGURES, "slices"], name)
        if name in study.image_datasets:  # the galleries show images
            products |= output_files("figure", PICTURES, name)
        products["clusters"] = PATHS["clusters_per_sample"].format(dataset=name)
        if has_subgroups(study.dataset(name)["source"]):
            products["variants"] = PATHS["subgroup_variants"].format(dataset=name)
            products |= output_files("figure", ["subgroups"], name)
        outputs += products.values()
    return outputs
