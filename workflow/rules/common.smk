import os
import sys
import threading
from pathlib import Path

# The library is src/ beside these rules (also when another workflow uses hetcv as a module);
# jobs (local, conda or SLURM) find it through PYTHONPATH.
HETCV_SRC = str(Path(workflow.current_basedir).parents[1] / "src")
sys.path.insert(0, HETCV_SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [HETCV_SRC, os.environ.get("PYTHONPATH")]))
)

from hetcv.columns import SUMMARY_TABLES, VERDICT_TABLES
from hetcv.data import source_files, source_has_subgroups
from hetcv.study import one_of, resolve_study, rule_params

# A HetcvError here reaches the user as one line naming the config key.
STUDY = resolve_study(config, workflow.source_path("../schemas/config.schema.yaml"))


wildcard_constraints:
    dataset=one_of(STUDY.datasets),
    n=r"\d+",
    fold=r"\d+",


# Every file name, once. {dataset}, {n}, {fold}: the rules' wildcards; {algorithm}: expanded.
DATA = "results/{dataset}/data"
SIZE = "results/{dataset}/n{n}"
FOLD = f"{SIZE}/fold{{fold}}"
SUMMARY = "results/{dataset}/summary"
PATHS = {
    "images": f"{DATA}/images.npy",
    "manifest": f"{DATA}/manifest.parquet",
    "held_out": f"{DATA}/held_out.parquet",
    "split": "results/{dataset}/splits/n{n}.parquet",
    "model": f"{FOLD}/model.pt",
    "features": f"{FOLD}/features.parquet",
    "history": f"{FOLD}/history.csv",
    # One cluster job per (dataset, n): each table holds every fold, with a fold column.
    "assignments": f"{SIZE}/assignments_{{algorithm}}.parquet",
    "cluster_stats": f"{SIZE}/cluster_stats_{{algorithm}}.parquet",
    "cluster_pairs": f"{SIZE}/cluster_pairs_{{algorithm}}.parquet",
    "cluster_runs": f"{SIZE}/cluster_runs_{{algorithm}}.parquet",
    "summary": f"{SUMMARY}/{{table}}.parquet",
    "variants": f"{SUMMARY}/subgroup_variants.parquet",
    "export": "results/{dataset}/clusters_per_sample.csv",
    "slices": "results/{dataset}/slices_per_sample.csv",
    "table": "results/tables/{dataset}_{name}.{extension}",
    "figure": "results/figures/{dataset}_{name}.{extension}",
}
FIGURES = ["fig2", "fig3", "fig4", "fig5", "validity", "metadata", "planning"]
PICTURES = ["scatter", "gallery"]
TABLES = ["table1", "table2", "cv", "metadata", "planning"]


def params_of(name):
    """Rule ``name``'s config slice as canonical JSON (:func:`hetcv.study.rule_params`)."""
    return lambda wildcards: rule_params(STUDY, name, wildcards)


def each_algorithm(kind):
    """One job's files of one kind, one per algorithm (clustering.algorithms' order)."""
    return expand(PATHS[kind], algorithm=STUDY.algorithms, allow_missing=True)


def each_fold(kind):
    """One sample size's files of one kind, one per fold (an input function)."""
    return lambda w: expand(
        PATHS[kind], dataset=w.dataset, n=w.n, fold=STUDY.folds(w.dataset)
    )


def summary_tables(*names):
    return {t: PATHS["summary"].format(dataset="{dataset}", table=t) for t in names}


def dataset_files(kind, algorithms=None, dataset=None, folds=None):
    """A dataset's files of one kind, every n (and fold); an input function if no dataset."""

    def files(wildcards):
        name = dataset or wildcards.dataset
        return expand(
            PATHS[kind],
            dataset=name,
            n=STUDY.sample_sizes[name],
            fold=folds or STUDY.folds(name),
            algorithm=algorithms or STUDY.algorithms,
        )

    return files if dataset is None else files(None)


def source_inputs(wildcards):
    """The source's files (:func:`hetcv.data.source_files`): editing one re-runs its rule."""
    return source_files(STUDY.dataset(wildcards.dataset)["source"])


def view_parent(kind):
    """An input function: a view's file of ``kind`` is its multi-label dataset's."""
    return lambda w: PATHS[kind].format(
        **(dict(w.items()) | {"dataset": STUDY.views[w.dataset][0]})
    )


def images_of(wildcards):
    """The prepared images of an image dataset; a features source has none."""
    return [PATHS["images"]] if wildcards.dataset in STUDY.image_datasets else []


def train_inputs(wildcards):
    inputs = {key: PATHS[key] for key in ("images", "manifest", "split")}
    weights = STUDY.weights_file(wildcards.dataset)
    return inputs | ({"weights": weights} if weights else {})


def output_files(pattern, names):
    """PNG and PDF of each figure, or CSV, Markdown and LaTeX of each table."""
    extensions = ("csv", "md", "tex") if pattern == "table" else ("png", "pdf")
    return {
        f"{n}_{e}": PATHS[pattern].format(dataset="{dataset}", name=n, extension=e)
        for n in names
        for e in extensions
    }


# Snakemake's parser reads a line starting with `report(` as its `report:` directive.
report_flag = report


def registered(paths, subcategory):
    """Register each CSV and PNG in the HTML report, with its caption, under the dataset."""
    return {
        key: (
            report_flag(path, f"../report/{key[:-4]}.rst", "{dataset}", subcategory)
            if key.endswith(("_csv", "_png"))
            else path
        )
        for key, path in paths.items()
    }


def summary_md_inputs(wildcards):
    """The verdict tables, ``{dataset}_{table}``; a multi-label dataset's: its labels table."""
    tables = [(name, table) for name in STUDY.analysed for table in VERDICT_TABLES]
    tables += [(name, "labels") for name in STUDY.multilabel_datasets]
    return {f"{n}_{t}": PATHS["summary"].format(dataset=n, table=t) for n, t in tables}


def validation_inputs(wildcards):
    """Per planted dataset: its manifest and images, and every fold's features."""
    inputs = {}
    for name in STUDY.planted_datasets():
        inputs[f"{name}_features"] = dataset_files("features", dataset=name)
        for kind in ("manifest", "images"):
            inputs[f"{name}_{kind}"] = [PATHS[kind].format(dataset=name)]
    return inputs


def final_outputs():
    outputs = ["results/summary.md"]  # through it, each multi-label dataset's labels
    for name in STUDY.analysed:
        products = summary_tables(*SUMMARY_TABLES) | output_files("table", TABLES)
        products |= output_files("figure", FIGURES + ["slices"])  # slices: its own rule
        if name in STUDY.image_datasets:  # the galleries show images
            products |= output_files("figure", PICTURES)
        products["export"] = PATHS["export"]
        if source_has_subgroups(STUDY.dataset(name)["source"]):
            products |= {"variants": PATHS["variants"]}
            products |= output_files("figure", ["subgroups"])
        outputs += [path.format(dataset=name) for path in products.values()]
    return outputs


def stop_rescheduling_timers():
    """Cancel every pending ``threading.Timer``: Snakemake 9's scheduler re-runs (the only ones),
    which would keep it alive up to one rate-limit timespan after the workflow has ended.
    """
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()
