import os
from pathlib import Path

from hetcv.columns import SUMMARY_TABLES
from hetcv.paths import FIGURES, PATHS, PICTURES, TABLES
from hetcv.paths import final_outputs, output_files, summary_tables, verdict_inputs
from hetcv.params import rule_params
from hetcv.sources import source_files, source_has_subgroups
from hetcv.study import one_of, resolve_study

# hetcv is installed in the environment that runs Snakemake (make run: .venv); each rule's
# conda env installs it from here (workflow/envs/*.post-deploy.sh).
os.environ.setdefault("HETCV_SOURCE", str(Path(workflow.basedir).parent))

# A HetcvError here reaches the user as one line naming the config key.
STUDY = resolve_study(config, workflow.source_path("../schemas/config.schema.yaml"))


wildcard_constraints:
    dataset=one_of(STUDY.datasets),
    n=r"\d+",
    fold=r"\d+",


def params_of(name):
    """Rule ``name``'s config slice as canonical JSON (:func:`hetcv.params.rule_params`)."""
    return lambda wildcards: rule_params(STUDY, name, wildcards)


def each_algorithm(kind):
    """One job's files of one kind, one per algorithm (clustering.algorithms' order)."""
    return expand(PATHS[kind], algorithm=STUDY.algorithms, allow_missing=True)


def each_fold(kind):
    """One sample size's files of one kind, one per fold (an input function)."""
    return lambda w: expand(
        PATHS[kind], dataset=w.dataset, n=w.n, fold=STUDY.folds(w.dataset)
    )


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
    """The source's files (:func:`hetcv.sources.source_files`): editing one re-runs its rule."""
    return source_files(STUDY.dataset(wildcards.dataset)["source"])


def view_parent(kind):
    """An input function: a view's file of ``kind`` is its multi-label dataset's."""
    return lambda w: PATHS[kind].format(
        **(dict(w.items()) | {"dataset": STUDY.views[w.dataset][0]})
    )


def view_tables(table):
    """An input function: one summary table of each of a multi-label dataset's views."""
    return lambda w: [
        summary_tables(table, dataset=view)[table] for view in STUDY.views_of(w.dataset)
    ]


def images_of(wildcards):
    """The prepared images of an image dataset; a features source has none."""
    return [PATHS["images"]] if wildcards.dataset in STUDY.image_datasets else []


def train_inputs(wildcards):
    inputs = {key: PATHS[key] for key in ("images", "manifest", "split")}
    weights = STUDY.weights_file(wildcards.dataset)
    return inputs | ({"weights": weights} if weights else {})


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
    """The tables summary.md reads (:func:`hetcv.paths.verdict_inputs`)."""
    return verdict_inputs(STUDY)


def validation_inputs(wildcards):
    """Per planted dataset: its manifest and images, and every fold's features."""
    inputs = {}
    for name in STUDY.planted_datasets():
        inputs[f"{name}_features"] = dataset_files("features", dataset=name)
        for kind in ("manifest", "images"):
            inputs[f"{name}_{kind}"] = [PATHS[kind].format(dataset=name)]
    return inputs


def all_outputs():
    return final_outputs(STUDY, source_has_subgroups)
