"""Each rule's params: the config slice its job's result depends on, and nothing else.

Snakemake re-runs a job whose params changed, so a slice holds every key that changes the
job's result (its seed included) and no other: a config change re-runs exactly the jobs it
touches. One function per rule, named after it; :data:`PARAMS` maps the rule's name to it.
They live here rather than beside each job because the Snakefile evaluates them: the job
modules import PyTorch, scikit-learn and matplotlib, which the Snakemake process does not need.
"""

from __future__ import annotations

import json

from hetcv.metrics import metric_name
from hetcv.seeding import derive_seed
from hetcv.study import Study


def rule_params(study: Study, rule: str, wildcards) -> str:
    """Canonical JSON of ``rule``'s params for one job (Snakemake compares params as text).

    Parameters
    ----------
    study : Study
    rule : str
        A key of :data:`PARAMS`.
    wildcards : object
        The job's wildcards (attributes ``dataset``, ``n``, ``fold``, ``algorithm`` as the rule
        has them).

    Returns
    -------
    str
        ``json.dumps(..., sort_keys=True)`` of the slice.
    """
    return json.dumps(PARAMS[rule](study, wildcards), sort_keys=True)


def _fold_seed(study: Study, dataset: str, n, fold) -> int:
    """The seed of one (dataset, n, fold): its train job's, and its clustering's (a view's is
    its multi-label dataset's, so that every label is read on the same clusters)."""
    parent = study.views.get(dataset, (dataset, None))[0]
    return derive_seed(study.config["seed"], parent, n, fold)


def _metric(study: Study, name: str) -> dict:
    """The metric slice: the normaliser matters for regression only, the choice for the rest."""
    task, config = study.dataset(name)["task"], study.config["metric"]
    normalizer = config["nrmse_normalizer"] if task == "regression" else None
    return {
        "task": task,
        "metric": metric_name(task, config["classification"]),
        "nrmse_normalizer": normalizer,
    }


def _dataset_keys(study: Study, w, *keys: str) -> dict:
    settings = study.dataset(w.dataset)
    return {key: settings[key] for key in keys}


def _prepare(study: Study, w) -> dict:
    return {
        **_dataset_keys(study, w, "source", "task", "image_size", "intensity", "resize"),
        "seed": study.config["seed"],
    }


def _import_features(study: Study, w) -> dict:
    source = study.dataset(w.dataset)["source"]
    task = study.dataset(w.dataset)["task"]
    params = {
        "task": task,
        "embedding": source["embedding"],
        "metadata_columns": source.get("metadata_columns", []),
        "pca_components": study.config["clustering"]["pca_components"],
    }
    if task == "multilabel":
        params["labels"] = source["target_columns"]
    if task == "score":
        params["score"] = {
            "column": source["score_column"],
            "range": source["score_range"],
            "higher_is_better": source["higher_is_better"],
        }
        params["nnunet"] = (
            {key: source[key] for key in ("nnunet_label", "nnunet_metric", "score_column")}
            if "nnunet_summary" in source
            else None
        )
    return params


def _fold_features(study: Study, w) -> dict:
    return {"n": int(w.n), "fold": int(w.fold)}


def _split(study: Study, w) -> dict:
    return {
        "dataset": w.dataset,
        "n": int(w.n),
        **_dataset_keys(study, w, "task", "folds"),
        "seed": study.config["seed"],
    }


def _train(study: Study, w) -> dict:
    train = study.dataset(w.dataset)["train"]
    return {
        "dataset": w.dataset,  # names the keys in the job's errors
        "n": int(w.n),
        "fold": int(w.fold),
        **_dataset_keys(study, w, "task", "model", "pretrained"),
        **train,
        "weight_decay": float(train["weight_decay"]),  # 0 and 0.0 are one setting
        "seed": _fold_seed(study, w.dataset, w.n, w.fold),
    }


def _cluster(study: Study, w) -> dict:
    clustering, folds = study.config["clustering"], study.folds(w.dataset)
    return {
        **_metric(study, w.dataset),
        "n": int(w.n),
        "folds": list(folds),
        "clustering": {
            "algorithms": study.algorithms,
            "k": sorted(clustering["k"]),
            **{key: clustering[key] for key in ("repeats", "pca_components", "within")},
            **{key: clustering[key] for key in ("error_aware", "null_permutations")},
            "fcm": clustering["fcm"] if "fcm" in study.algorithms else None,
            "seeds": [_fold_seed(study, w.dataset, w.n, fold) for fold in folds],
        },
    }


def _summarize(study: Study, w) -> dict:
    clustering = study.config["clustering"]
    return {
        **_metric(study, w.dataset),
        "metadata_columns": study.dataset(w.dataset)["source"].get("metadata_columns", []),
        "summary": {
            **{key: clustering[key] for key in ("selected", "within", "error_aware")},
            **{key: clustering[key] for key in ("bootstrap", "null_permutations")},
            "seed": derive_seed(study.config["seed"], w.dataset, "summary"),
        },
    }


def _variants(study: Study, w) -> dict:
    clustering = study.config["clustering"]
    return {
        **_metric(study, w.dataset),
        "variants": {
            **study.selected,
            **{key: clustering[key] for key in ("repeats", "pca_components", "fcm")},
            "seed": derive_seed(study.config["seed"], w.dataset, "variants"),
        },
    }


def _slices(study: Study, w) -> dict:
    clustering = study.config["clustering"]
    return {
        "task": study.dataset(w.dataset)["task"],
        "metadata_columns": study.dataset(w.dataset)["source"].get("metadata_columns", []),
        # The method shown (slices.method) is for the reports: every method runs here.
        "slices": {key: value for key, value in study.config["slices"].items() if key != "method"},
        "clustering": {**study.selected, "fcm": clustering["fcm"]},
        "seed": derive_seed(study.config["seed"], w.dataset, "slices"),
    }


def _reporting(study: Study, w) -> dict:
    task = study.dataset(w.dataset)["task"]
    return {
        "dataset": w.dataset,
        "task": task,
        "metric": metric_name(task, study.config["metric"]["classification"]),
        "selected": study.selected,
    }


def _plan(study: Study, w) -> dict:
    planning = study.config["planning"]
    return {
        "selected": study.selected,
        "planning": {key: planning[key] for key in ("cv_target", "metric_target")}
        | {"max_extrapolation": planning["max_extrapolation"]},
        "seed": derive_seed(study.config["seed"], w.dataset, "planning"),
    }


def _figures(study: Study, w) -> dict:
    return {**_reporting(study, w), "style": study.config["report"]}


def _slices_figure(study: Study, w) -> dict:
    return {
        "dataset": w.dataset,
        "method": study.config["slices"]["method"],
        "style": study.config["report"],
    }


def _export(study: Study, w) -> dict:
    return {"task": study.dataset(w.dataset)["task"], "selected": study.selected}


def _pictures(study: Study, w) -> dict:
    return {
        **_figures(study, w),
        "pca_components": study.config["clustering"]["pca_components"],
    }


def _summary_md(study: Study, w) -> dict:
    return {
        "selected": study.selected,
        "slice_method": study.config["slices"]["method"],
        "datasets": {
            name: metric_name(study.dataset(name)["task"], study.config["metric"]["classification"])
            for name in study.analysed
        },
        "multilabel": {name: study.views_of(name) for name in study.multilabel_datasets},
    }


def _validation(study: Study, w) -> dict:
    planted = study.planted_datasets()
    return {
        "settings": {name: study.dataset(name)["source"] for name in planted},
        **study.config["validation"],
        "clustering": {
            **study.selected,
            "fcm": study.config["clustering"]["fcm"],
            "pca_components": study.config["clustering"]["pca_components"],
        },
        "seed": derive_seed(study.config["seed"], "validation"),
    }


def _label_manifest(study: Study, w) -> dict:
    return {"label": study.views[w.dataset][1]}


def _label_view(study: Study, w) -> dict:
    return {
        "dataset": w.dataset,
        "label": study.views[w.dataset][1],
        "n": int(w.n),
        "fold": int(w.fold),
    }


def _labels(study: Study, w) -> dict:
    return {"labels": [study.views[view][1] for view in study.views_of(w.dataset)]}


def _style(study: Study, w) -> dict:
    return {"style": study.config["report"]}


PARAMS = {
    "prepare": _prepare,
    "import_features": _import_features,
    "fold_features": _fold_features,
    "split": _split,
    "train": _train,
    "cluster": _cluster,
    "summarize": _summarize,
    "plan": _plan,
    "slices": _slices,
    "slices_figure": _slices_figure,
    "subgroup_variants": _variants,
    "tables": _reporting,
    "figures": _figures,
    "subgroup_heatmap": _figures,
    "export_clusters": _export,
    "cluster_pictures": _pictures,
    "summary_md": _summary_md,
    "label_manifest": _label_manifest,
    "label_view": _label_view,
    "labels": _labels,
    "validation": _validation,
    "validation_figure": _style,
    "validation_dose_response": _style,
}
