import json
import os
import sys
from pathlib import Path

from snakemake.utils import validate

# The hetcv library lives in src/; jobs (local, conda or SLURM) find it through PYTHONPATH.
HETCV_SRC = str(Path(workflow.main_snakefile).parent / "src")
sys.path.insert(0, HETCV_SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [HETCV_SRC, os.environ.get("PYTHONPATH")]))
)

from hetcv.config import check_config_schema
from hetcv.data import PLANTED_VARIANTS, count_samples, source_has_subgroups
from hetcv.errors import HetcvError
from hetcv.seeding import derive_seed
from hetcv.splits import resolve_sample_sizes

try:
    check_config_schema(config, workflow.source_path("../schemas/config.schema.yaml"))
except HetcvError as error:
    raise ValueError(str(error)) from None
validate(config, schema="../schemas/config.schema.yaml")

DATASETS = sorted(config["datasets"])


def canonical(value):
    """Params as canonical JSON: Snakemake compares params textually to decide re-runs."""
    return json.dumps(value, sort_keys=True)


def dataset_config(name):
    return config["datasets"][name]


def check_pretrained(name):
    pretrained = dataset_config(name)["pretrained"]
    if pretrained not in ("none", "imagenet") and not Path(pretrained).is_file():
        raise ValueError(
            f"datasets.{name}.pretrained: checkpoint file {pretrained} does not exist"
        )


def resolved_sample_sizes(name):
    settings = dataset_config(name)
    try:
        total = count_samples(settings["source"], config["seed"])
        return resolve_sample_sizes(
            settings["sample_sizes"],
            total,
            settings["folds"],
            key=f"datasets.{name}.sample_sizes",
        )
    except HetcvError as error:
        message = str(error)
        # Source errors name their key from `source`; say which dataset it belongs to.
        if message.startswith("source."):
            message = f"datasets.{name}.{message}"
        raise ValueError(message) from None


def check_clustering():
    clustering = config["clustering"]
    selected = clustering["selected"]
    if selected["algorithm"] not in clustering["algorithms"]:
        raise ValueError(
            f"clustering.selected.algorithm: {selected['algorithm']} is not in "
            f"clustering.algorithms {clustering['algorithms']}"
        )
    if selected["k"] not in clustering["k"]:
        raise ValueError(
            f"clustering.selected.k: {selected['k']} is not in clustering.k {clustering['k']}"
        )
    for name in DATASETS:
        if (
            clustering["within"] == "class"
            and dataset_config(name)["task"] != "classification"
        ):
            raise ValueError(
                f"clustering.within: 'class' needs a classification task; "
                f"datasets.{name}.task is {dataset_config(name)['task']}"
            )
        smallest_fold = SAMPLE_SIZES[name][0] // dataset_config(name)["folds"]
        if max(clustering["k"]) >= smallest_fold:
            raise ValueError(
                f"clustering.k: k={max(clustering['k'])} is not smaller than the smallest "
                f"held-out fold of datasets.{name} ({smallest_fold} samples at "
                f"n={SAMPLE_SIZES[name][0]})"
            )


for _name in DATASETS:
    check_pretrained(_name)
SAMPLE_SIZES = {name: resolved_sample_sizes(name) for name in DATASETS}
check_clustering()
ALGORITHMS = config["clustering"]["algorithms"]


wildcard_constraints:
    dataset="|".join(DATASETS),
    n=r"\d+",
    fold=r"\d+",
    algorithm="|".join(ALGORITHMS),


def fold_outputs(name, pattern):
    return expand(
        pattern,
        dataset=name,
        n=SAMPLE_SIZES[name],
        fold=range(dataset_config(name)["folds"]),
    )


FIGURES = ["fig2", "fig3", "fig4", "fig5", "validity"]
PICTURES = ["scatter", "gallery"]
TABLES = ["table1", "table2", "cv"]
SUMMARY_TABLES = (
    "cv",
    "clusters",
    "table1",
    "validity",
    "fold_cv",
    "correlation",
    "subgroups",
)


def final_outputs():
    outputs = []
    for name in DATASETS:
        outputs += expand(
            "results/{dataset}/summary/{table}.parquet",
            dataset=name,
            table=SUMMARY_TABLES,
        )
        outputs += [path.format(dataset=name) for path in table_paths().values()]
        outputs += [
            path.format(dataset=name)
            for path in figure_paths(FIGURES + PICTURES).values()
        ]
        outputs.append(f"results/{name}/clusters_per_sample.csv")
        if source_has_subgroups(dataset_config(name)["source"]):
            outputs.append(f"results/{name}/summary/subgroup_variants.parquet")
            outputs += [
                path.format(dataset=name)
                for path in figure_paths(["subgroups"]).values()
            ]
    return outputs + ["results/summary.md"]


def dataset_cluster_outputs(kind, algorithms=None):
    """One dataset's per-fold cluster tables of one kind, for the summarize rule."""

    def inputs(wildcards):
        return expand(
            f"results/{{dataset}}/n{{n}}/fold{{fold}}/{kind}_{{algorithm}}.parquet",
            dataset=wildcards.dataset,
            n=SAMPLE_SIZES[wildcards.dataset],
            fold=range(dataset_config(wildcards.dataset)["folds"]),
            algorithm=algorithms or ALGORITHMS,
        )

    return inputs


def dataset_features(wildcards):
    return fold_outputs(
        wildcards.dataset, "results/{dataset}/n{n}/fold{fold}/features.parquet"
    )


def prepare_params(wildcards):
    settings = dataset_config(wildcards.dataset)
    return canonical(
        {
            "source": settings["source"],
            "task": settings["task"],
            "image_size": settings["image_size"],
            "seed": config["seed"],
        }
    )


def source_inputs(wildcards):
    """The source's table or archive, so that editing it re-runs prepare."""
    source = dataset_config(wildcards.dataset)["source"]
    files = {"csv": source.get("csv"), "npz": source.get("path")}
    return {"source": files[source["kind"]]} if source["kind"] in files else {}


def split_params(wildcards):
    settings = dataset_config(wildcards.dataset)
    return canonical(
        {"task": settings["task"], "folds": settings["folds"], "seed": config["seed"]}
    )


def train_inputs(wildcards):
    inputs = {
        "images": f"results/{wildcards.dataset}/data/images.npy",
        "manifest": f"results/{wildcards.dataset}/data/manifest.parquet",
        "split": f"results/{wildcards.dataset}/splits/n{wildcards.n}.parquet",
    }
    pretrained = dataset_config(wildcards.dataset)["pretrained"]
    if pretrained not in ("none", "imagenet"):
        inputs["weights"] = pretrained
    return inputs


def train_params(wildcards):
    settings = dataset_config(wildcards.dataset)
    return canonical(
        {
            "task": settings["task"],
            "model": settings["model"],
            "pretrained": settings["pretrained"],
            **settings["train"],
            "seed": derive_seed(
                config["seed"], wildcards.dataset, wildcards.n, wildcards.fold
            ),
        }
    )


def metric_settings(name):
    """The metric config slice that matters for a dataset: the normaliser for regression."""
    task = dataset_config(name)["task"]
    normalizer = config["metric"]["nrmse_normalizer"] if task == "regression" else None
    return {"task": task, "nrmse_normalizer": normalizer}


def cluster_params(wildcards):
    clustering = config["clustering"]
    return canonical(
        {
            **metric_settings(wildcards.dataset),
            "algorithm": wildcards.algorithm,
            "k": sorted(clustering["k"]),
            "repeats": clustering["repeats"],
            "pca_components": clustering["pca_components"],
            "fcm": clustering["fcm"] if wildcards.algorithm == "fcm" else None,
            "within": clustering["within"],
            "error_aware": clustering["error_aware"],
            "null_permutations": clustering["null_permutations"],
            "seed": derive_seed(
                config["seed"], wildcards.dataset, wildcards.n, wildcards.fold
            ),
        }
    )


def summarize_params(wildcards):
    clustering = config["clustering"]
    return canonical(
        {
            **metric_settings(wildcards.dataset),
            "selected": clustering["selected"],
            "within": clustering["within"],
            "error_aware": clustering["error_aware"],
            "bootstrap": clustering["bootstrap"],
            "null_permutations": clustering["null_permutations"],
            "seed": derive_seed(config["seed"], wildcards.dataset, "summary"),
        }
    )


def variants_params(wildcards):
    clustering = config["clustering"]
    return canonical(
        {
            **metric_settings(wildcards.dataset),
            **clustering["selected"],
            "repeats": clustering["repeats"],
            "pca_components": clustering["pca_components"],
            "fcm": clustering["fcm"],
            "seed": derive_seed(config["seed"], wildcards.dataset, "variants"),
        }
    )


def summary_inputs(*names):
    return {name: f"results/{{dataset}}/summary/{name}.parquet" for name in names}


def table_paths():
    """CSV, Markdown and LaTeX of each table."""
    return {
        f"{name}_{extension}": f"results/tables/{{dataset}}_{name}.{extension}"
        for name in TABLES
        for extension in ("csv", "md", "tex")
    }


def figure_paths(names):
    """PNG and PDF of each figure."""
    return {
        f"{name}_{extension}": f"results/figures/{{dataset}}_{name}.{extension}"
        for name in names
        for extension in ("png", "pdf")
    }


# Snakemake's parser reads a line starting with `report(` as its `report:` directive.
report_flag = report


def registered(paths, subcategory):
    """Register each CSV and PNG in the HTML report, with its caption, under the dataset."""
    return {
        key: (
            report_flag(
                path,
                caption=f"../report/{key.rsplit('_', 1)[0]}.rst",
                category="{dataset}",
                subcategory=subcategory,
            )
            if key.endswith(("_csv", "_png"))
            else path
        )
        for key, path in paths.items()
    }


def first_fold_features(wildcards):
    return expand(
        "results/{dataset}/n{n}/fold0/features.parquet",
        dataset=wildcards.dataset,
        n=SAMPLE_SIZES[wildcards.dataset],
    )


def reporting_settings(wildcards):
    return {
        "dataset": wildcards.dataset,
        "task": dataset_config(wildcards.dataset)["task"],
        "selected": config["clustering"]["selected"],
    }


def tables_params(wildcards):
    return canonical(reporting_settings(wildcards))


def figures_params(wildcards):
    return canonical({**reporting_settings(wildcards), "style": config["report"]})


def export_params(wildcards):
    settings = reporting_settings(wildcards)
    return canonical({"task": settings["task"], "selected": settings["selected"]})


def pictures_params(wildcards):
    return canonical(
        {
            **reporting_settings(wildcards),
            "style": config["report"],
            "pca_components": config["clustering"]["pca_components"],
            "seed": derive_seed(config["seed"], wildcards.dataset, "pictures"),
        }
    )


def summary_md_params(wildcards):
    return canonical(
        {
            "selected": config["clustering"]["selected"],
            "datasets": {name: dataset_config(name)["task"] for name in DATASETS},
            "summaries": {name: f"results/{name}/summary" for name in DATASETS},
        }
    )


def validation_datasets():
    """The datasets of the planted-subgroup benchmark: digits settings with a known group."""
    names = [
        name
        for name in DATASETS
        if dataset_config(name)["source"].get("variant") in PLANTED_VARIANTS
    ]
    if not names:
        raise ValueError(
            "validate: no dataset has source.variant rare, noisy or balanced "
            "(run it with --configfile config/validation.yaml)"
        )
    return names


def validation_inputs(wildcards):
    """Per planted dataset: manifest, features, selected clustering and its CV summary."""
    algorithm = config["clustering"]["selected"]["algorithm"]
    fold_files = {
        "features": "results/{dataset}/n{n}/fold{fold}/features.parquet",
        "assignments": f"results/{{dataset}}/n{{n}}/fold{{fold}}/clusters_{algorithm}.parquet",
        "runs": f"results/{{dataset}}/n{{n}}/fold{{fold}}/cluster_runs_{algorithm}.parquet",
    }
    inputs = {}
    for name in validation_datasets():
        inputs[f"{name}_manifest"] = [f"results/{name}/data/manifest.parquet"]
        inputs[f"{name}_cv"] = [f"results/{name}/summary/cv.parquet"]
        for kind, pattern in fold_files.items():
            inputs[f"{name}_{kind}"] = fold_outputs(name, pattern)
    return inputs


def validation_params(wildcards):
    return canonical(
        {
            "settings": {
                name: dataset_config(name)["source"] for name in validation_datasets()
            },
            "selected": config["clustering"]["selected"],
            "replicates": config["validation"]["calibration_replicates"],
            "permutations": config["clustering"]["null_permutations"],
            "seed": derive_seed(config["seed"], "validation"),
        }
    )


def validation_figure_params(wildcards):
    return canonical({"style": config["report"]})
