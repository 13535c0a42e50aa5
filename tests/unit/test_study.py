"""The study module: one check per rule of the config, sizes resolved, params sliced."""

import copy
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import PROJECT, TINY_STUDY

from hetcv.errors import HetcvError
from hetcv.params import PARAMS, rule_params
from hetcv.sources import count_samples, npz_shapes
from hetcv.study import resolve_study

SCHEMA = PROJECT / "workflow/schemas/config.schema.yaml"
JOB = SimpleNamespace(dataset="udigits", n="200", fold="1", algorithm="fcm")


def resolved(change=lambda study: None):
    study = copy.deepcopy(TINY_STUDY)
    change(study)
    return resolve_study(study, SCHEMA)


def test_the_tiny_study_resolves_with_the_schema_defaults():
    study = resolved()
    assert study.config["report"] == {
        "dpi": 150,
        "width": 6.4,
        "height": 4.2,
        "palette": "colorblind",
    }
    assert study.config["validation"] == {"tuning_digit": 3, "embeddings": ["model", "pixels"]}
    assert study.config["slices"] == {
        "method": "neighbours",
        "embedding": "model",
        "pca_components": 10,
        "domino": {"components": 25, "gamma": 1},
        "george": {"components": 6},
        "error_predictor": {"c": 0.1},
        "neighbours": {"k": 10},
    }
    assert "report" not in TINY_STUDY
    assert study.datasets == ["digitvalue", "udigits"]
    assert study.sample_sizes == {"digitvalue": [100], "udigits": [200, 400]}
    assert list(study.folds("udigits")) == [0, 1]
    assert study.weights_file("udigits") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: (
                s["clustering"]["selected"].update(algorithm="gmm", k=3)
                or s["clustering"].update(algorithms=["kmeans", "fcm"])
            ),
            "clustering.selected.algorithm: gmm is not in clustering.algorithms",
        ),
        (
            lambda s: s["clustering"]["selected"].update(k=5),
            "clustering.selected.k: 5 is not in clustering.k [2, 3, 4]",
        ),
        (
            lambda s: s["clustering"].update(within="class"),
            "clustering.within: 'class' needs a classification task; "
            "datasets.digitvalue.task is regression",
        ),
        (
            lambda s: (
                s["clustering"].update(within="class")
                or s.setdefault("metric", {}).update(classification="auroc")
            ),
            "metric.classification: auroc is undefined in the one-class clusters of "
            "clustering.within: class",
        ),
        (
            lambda s: s.setdefault("metric", {}).update(classification="f1"),
            "config key metric.classification: 'f1' is not one of",
        ),
        (
            lambda s: s.setdefault("planning", {}).update(extra_sizes=[5000]),
            "planning.extra_sizes: 5000 is larger than the dataset",
        ),
        (
            lambda s: s["clustering"].update(k=[2, 3, 4, 50]),
            "clustering.k: k=50 is not smaller than the smallest held-out fold of "
            "datasets.digitvalue (50 samples at n=100)",
        ),
        (
            lambda s: s["datasets"]["udigits"].update(pretrained="no/such.pth"),
            "datasets.udigits.pretrained: checkpoint file no/such.pth does not exist",
        ),
        (
            lambda s: s["datasets"]["udigits"].update(
                source={"kind": "csv", "csv": "no/t.csv", "images": ".", "id_column": "id"}
                | {"target_column": "y"}
            ),
            "datasets.udigits.source.csv: table no/t.csv does not exist",
        ),
        (
            lambda s: s["datasets"]["udigits"].update(folds="two"),
            "config key datasets.udigits.folds: 'two' is not of type 'integer'",
        ),
        (
            lambda s: s["datasets"]["udigits"].pop("sample_sizes"),
            "datasets.udigits.sample_sizes: required for a digits source",
        ),
        (
            lambda s: s["datasets"]["udigits"].update(intensity={"percentiles": [99, 1]}),
            "datasets.udigits.intensity.percentiles: 99 is not below 1",
        ),
        (
            lambda s: s["datasets"]["udigits"].update(
                source={"kind": "features", "table": "no/e.parquet", "embedding": "emb_"}
            ),
            "datasets.udigits.sample_sizes: a features source takes its sample sizes from "
            "the table's n column; remove this key",
        ),
        (
            lambda s: (
                s["datasets"]["udigits"].update(
                    source={"kind": "features", "table": "no/e.parquet", "embedding": "emb_"}
                )
                or s["datasets"]["udigits"].pop("sample_sizes")
            ),
            "datasets.udigits.source.table: no/e.parquet does not exist",
        ),
    ],
)
def test_each_semantic_check_names_its_key_on_one_line(change, message):
    with pytest.raises(HetcvError) as raised:
        resolved(change)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_extra_sizes_join_the_sample_sizes():
    base = resolved()
    planned = resolved(lambda s: s.setdefault("planning", {}).update(extra_sizes=[150]))
    for name in base.image_datasets:
        assert planned.sample_sizes[name] == sorted({*base.sample_sizes[name], 150})


def test_planted_datasets_need_a_planted_variant():
    with pytest.raises(HetcvError, match="validate: no dataset has source.variant"):
        resolved().planted_datasets()
    planted = resolved(
        lambda s: s["datasets"]["udigits"].update(
            source={"kind": "digits", "variant": "rare", "prevalence": 0.05}
        )
    )
    assert planted.planted_datasets() == ["udigits"]


def params_of(study, rule, job=JOB):
    return json.loads(rule_params(study, rule, job))


def test_params_hold_the_slice_that_changes_a_result():
    base = resolved()
    cluster = params_of(base, "cluster")
    # One cluster job per sample size runs every fold and algorithm, each fold with the seed
    # its train job has; fcm's settings matter only with fcm.
    assert cluster["clustering"]["algorithms"] == TINY_STUDY["clustering"]["algorithms"]
    assert cluster["clustering"]["fcm"] == TINY_STUDY["clustering"]["fcm"]
    assert cluster["task"] == "classification" and (cluster["n"], cluster["folds"]) == (200, [0, 1])
    fold_seeds = [
        params_of(base, "train", SimpleNamespace(**{**vars(JOB), "fold": f}))["seed"] for f in "01"
    ]
    assert cluster["clustering"]["seeds"] == fold_seeds and fold_seeds[0] != fold_seeds[1]
    without_fcm = resolved(
        lambda s: s["clustering"].update(
            algorithms=["kmeans", "gmm"], selected={"algorithm": "gmm", "k": 2}
        )
    )
    assert params_of(without_fcm, "cluster")["clustering"]["fcm"] is None
    assert params_of(base, "train")["epochs"] == 3
    # Each change reaches exactly the rules whose results depend on it.
    changes = {
        "epochs": lambda s: s["datasets"]["udigits"]["train"].update(epochs=4),
        "repeats": lambda s: s["clustering"].update(repeats=5),
        "style": lambda s: s.setdefault("report", {}).update(dpi=72),
        "bootstrap": lambda s: s["clustering"].update(bootstrap=300),
        "metric": lambda s: s.setdefault("metric", {}).update(classification="auroc"),
        "cv_target": lambda s: s.setdefault("planning", {}).update(cv_target=3),
        "slice_method": lambda s: s.setdefault("slices", {}).update(method="george"),
        "slice_setting": lambda s: s.setdefault("slices", {}).update(domino={"gamma": 10}),
    }
    touched = {
        "epochs": {"train"},
        "repeats": {"cluster", "subgroup_variants"},
        "style": {
            "figures",
            "subgroup_heatmap",
            "cluster_pictures",
            "validation_figure",
            "validation_dose_response",
            "slices_figure",
        },
        "bootstrap": {"summarize"},
        # The metric changes every result from clustering on, never training.
        "metric": {
            "cluster",
            "summarize",
            "subgroup_variants",
            "tables",
            "figures",
            "summary_md",
            "subgroup_heatmap",
            "cluster_pictures",
        },
        "cv_target": {"plan"},
        # Every method runs in `slices`: choosing the one shown touches only the reports.
        "slice_method": {"slices_figure", "summary_md"},
        "slice_setting": {"slices"},
    }
    # The benchmark, the features-table import and the per-label rules (multi-label views
    # only) do not apply to the demo's image datasets.
    not_applicable = ("validation", "import_features", "label_manifest", "label_view", "labels")
    study_rules = [rule for rule in PARAMS if rule not in not_applicable]
    for name, change in changes.items():
        changed = resolved(change)
        differs = {
            rule
            for rule in study_rules
            if rule_params(base, rule, JOB) != rule_params(changed, rule, JOB)
        }
        assert differs == touched[name], name


def test_params_are_canonical_json():
    text = rule_params(resolved(), "summarize", JOB)
    assert text == json.dumps(json.loads(text), sort_keys=True)


def write_npz(path, sizes, label_sizes=None):
    arrays = {}
    for (split, n), labels in zip(sizes.items(), label_sizes or sizes.values(), strict=True):
        arrays[f"{split}_images"] = np.zeros((n, 4, 4, 3), np.uint8)
        arrays[f"{split}_labels"] = np.zeros((labels, 1), np.int64)
    np.savez(path, **arrays)


def test_npz_samples_are_counted_from_the_headers(tmp_path):
    path = tmp_path / "images.npz"
    write_npz(path, {"train": 7, "val": 2, "test": 3})
    assert npz_shapes(path)["train_images"] == (7, 4, 4, 3)
    source = {"kind": "npz", "path": str(path)}
    assert count_samples(source, 0) == 12
    assert count_samples({**source, "splits": ["train", "test"]}, 0) == 10


@pytest.mark.parametrize(
    ("sizes", "labels", "message"),
    [
        ({"train": 4, "val": 2}, [4, 3], "val_images has 2 images but val_labels 3"),
        ({"train": 4}, None, "array 'val_images' not found (has train_images, train_labels)"),
    ],
)
def test_npz_count_errors_name_the_file(tmp_path, sizes, labels, message):
    path = tmp_path / "images.npz"
    write_npz(path, sizes, labels)
    with pytest.raises(HetcvError) as raised:
        count_samples({"kind": "npz", "path": str(path), "splits": ["train", "val"]}, 0)
    assert str(raised.value) == f"{path}: {message}"


def test_a_file_that_is_not_an_npz_is_one_error(tmp_path):
    path = tmp_path / "images.npz"
    path.write_text("not a zip")
    with pytest.raises(HetcvError, match=r"images.npz: cannot read as .npz"):
        count_samples({"kind": "npz", "path": str(path)}, 0)


def test_a_pixel_embedding_is_refused_for_a_features_source(tmp_path):
    table = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(40)],
            "n": 40,
            "fold": np.arange(40) % 2,
            "target": np.arange(40) % 2,
            "prediction": np.linspace(0.1, 0.9, 40),
            **{f"emb_{j}": np.random.default_rng(j).normal(size=40) for j in range(12)},
        }
    )
    table.to_parquet(tmp_path / "mine.parquet")
    source = {"kind": "features", "table": str(tmp_path / "mine.parquet"), "embedding": "emb_"}
    study = {
        "datasets": {"mine": {"source": source, "task": "classification"}},
        "clustering": {"k": [2], "selected": {"algorithm": "fcm", "k": 2}},
        "slices": {"embedding": "pixels"},
    }
    with pytest.raises(
        HetcvError, match=r"^slices.embedding: 'pixels' needs images, and datasets.mine "
    ):
        resolve_study(study, SCHEMA)
    study["slices"]["embedding"] = "model"
    assert resolve_study(study, SCHEMA).config["slices"]["embedding"] == "model"
